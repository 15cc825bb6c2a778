"""Model and token usage read from OpenAI- and Anthropic-shaped bodies, plain JSON or SSE."""

from __future__ import annotations

from dataclasses import dataclass

from addons.bodies.jsonlimits import loads_bounded
from addons.bodies.sse import events, parse_event


@dataclass
class Usage:
    tokens_in: int | None = None
    tokens_out: int | None = None


def request_model(body: bytes | None, content_type: str) -> str | None:
    """The ``model`` field of a JSON request body, if any. Never raises (deep or broken bodies give None)."""
    if not body or "json" not in content_type:
        return None
    data = loads_bounded(body)
    model = data.get("model") if isinstance(data, dict) else None
    return model if isinstance(model, str) else None


@dataclass(frozen=True)
class RequestShape:
    """What a JSON request asks for, as rule conditions read it (``request.model``, ``messages``, ``tools``)."""

    model: str | None = None
    messages: int = 0
    tools: tuple[str, ...] = ()
    stream: bool = False


def _tool_name(tool: object) -> str | None:
    if not isinstance(tool, dict):
        return None
    function = tool.get("function")
    name = function.get("name") if isinstance(function, dict) else tool.get("name")  # OpenAI chat; others
    return name if isinstance(name, str) else None


def request_shape(document: object) -> RequestShape:
    """Model, message count (OpenAI ``messages`` or Responses ``input`` list, Anthropic ``messages``) and tool names
    of a parsed JSON request body; empty for anything else."""
    if not isinstance(document, dict):
        return RequestShape()
    model = document.get("model")
    messages = document.get("messages", document.get("input"))
    tools = document.get("tools")
    names = tuple(n for n in map(_tool_name, tools) if n) if isinstance(tools, list) else ()
    return RequestShape(model if isinstance(model, str) else None,
                        len(messages) if isinstance(messages, list) else (1 if isinstance(messages, str) else 0),
                        names, document.get("stream") is True)


def _merge(usage: Usage, found: dict) -> None:
    """OpenAI chat: prompt/completion_tokens; OpenAI responses and Anthropic: input/output_tokens."""
    for key_in in ("prompt_tokens", "input_tokens"):
        if isinstance(found.get(key_in), int):
            usage.tokens_in = found[key_in]
    for key_out in ("completion_tokens", "output_tokens"):
        if isinstance(found.get(key_out), int):
            usage.tokens_out = found[key_out]


def _usage_objects(data: object):
    if not isinstance(data, dict):
        return
    if isinstance(data.get("usage"), dict):
        yield data["usage"]
    for nested in ("message", "response"):  # Anthropic message_start, OpenAI response.completed
        inner = data.get(nested)
        if isinstance(inner, dict) and isinstance(inner.get("usage"), dict):
            yield inner["usage"]


def response_usage(body: bytes | None, content_type: str) -> Usage:
    """Token counts of a JSON or SSE answer. Never raises: what cannot be read counts as unknown."""
    usage = Usage()
    if not body:
        return usage
    if "text/event-stream" in content_type:
        for raw in events(body):
            for found in _usage_objects(loads_bounded(parse_event(raw)[1])):
                _merge(usage, found)
    elif "json" in content_type:
        for found in _usage_objects(loads_bounded(body)):
            _merge(usage, found)
    return usage
