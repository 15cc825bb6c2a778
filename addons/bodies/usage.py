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
