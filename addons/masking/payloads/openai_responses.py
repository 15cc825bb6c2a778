"""OpenAI responses (``/v1/responses``).

Request: conversation text is ``instructions``, ``input`` (a string, or items whose content is a string or
``input_text``/``output_text`` parts), function-call arguments and outputs; audio parts are binary; everything
else but ``STRUCTURAL`` is analysed as a field (``Payload.cover``: ``input_file`` names and data, image data URIs,
reasoning summaries, ...). Response: every
``output`` item's text and arguments. Stream: ``response.output_text.delta``,
``response.refusal.delta`` and ``response.function_call_arguments.delta`` are running texts per
item and part; ``*.done`` events end them and carry the whole text, as do ``output_item`` and
``response.*`` events.
"""

from __future__ import annotations

from typing import Any

from addons.masking.payloads.base import (
    Adapter,
    Payload,
    StreamEvent,
    add_content,
    everything,
    items,
    stream_slot,
    structural,
)

TEXT_PARTS = ("input_text", "output_text", "text", "refusal")
_DELTAS = {
    "response.output_text.delta": ("text", False),
    "response.refusal.delta": ("refusal", False),
    "response.function_call_arguments.delta": ("arguments", True),
}
STRUCTURAL = structural("""
    $.model
    $.previous_response_id
    $.conversation
    $.conversation.id
    $.input[*].type
    $.input[*].role
    $.input[*].id
    $.input[*].call_id
    $.input[*].status
    $.input[*].name
    $.input[*].encrypted_content
    $.input[*].content[*].type
    $.input[*].content[*].detail
    $.input[*].content[*].file_id
    $.input[*].content[*].input_audio.format
    $.input[*].summary[*].type
    $.tools[*].type
    $.tools[*].name
    $.tool_choice
    $.tool_choice.type
    $.tool_choice.name
    $.text.format.type
    $.text.format.name
    $.text.verbosity
    $.reasoning.effort
    $.reasoning.summary
    $.service_tier
    $.truncation
    $.include[*]
    $.prompt.id
    $.prompt.version
""")
_DONE = ("response.output_text.done", "response.refusal.done", "response.function_call_arguments.done")


def _item(payload: Payload, item: Any, path: str) -> None:
    if not isinstance(item, dict):
        return
    add_content(payload, item, "content", f"{path}.content", TEXT_PARTS)
    for i, part in items(item.get("content")):
        if isinstance(part, dict) and part.get("type") == "refusal":
            payload.add(part, "refusal", f"{path}.content[{i}].refusal")
        audio = part.get("input_audio") if isinstance(part, dict) else None
        if isinstance(audio, dict):
            payload.add_base64(audio, "data", f"audio/{audio.get('format') or 'unknown'}",
                               f"{path}.content[{i}].input_audio.data")
    payload.add_embedded_json(item, "arguments", f"{path}.arguments")
    payload.add(item, "output", f"{path}.output")


class OpenAIResponses(Adapter):
    name = "openai-responses"
    structural = STRUCTURAL

    def matches(self, path: str) -> bool:
        return path.endswith("/responses")

    def request(self, document: Any) -> Payload:
        if not isinstance(document, dict):
            return everything(document)
        payload = Payload(document)
        payload.add(document, "instructions", "$.instructions")
        if isinstance(document.get("input"), str):
            payload.add(document, "input", "$.input")
        for i, item in items(document.get("input")):
            _item(payload, item, f"$.input[{i}]")
        return payload

    def response(self, document: Any) -> Payload:
        if not isinstance(document, dict) or "output" not in document:
            return everything(document)
        payload = Payload(document)
        for i, item in items(document.get("output")):
            _item(payload, item, f"$.output[{i}]")
        return payload

    def stream(self, event: Any) -> StreamEvent:
        kind = event.get("type") if isinstance(event, dict) else None
        out = StreamEvent()
        channel = ("item", event.get("item_id") or event.get("output_index"), event.get("content_index")) if kind else ()
        if kind in _DELTAS:
            field, fragment = _DELTAS[kind]
            if slot := stream_slot(event, "delta", (*channel, field), json_fragment=fragment):
                out.deltas.append(slot)
            return out
        if kind in _DONE:
            out.closes.append(channel)
        whole = Payload(event)
        for key in ("text", "refusal"):
            whole.add(event, key, f"$.{key}")
        whole.add_embedded_json(event, "arguments", "$.arguments")
        part = event.get("part")
        if isinstance(part, dict):
            whole.add(part, "text", "$.part.text")
            whole.add(part, "refusal", "$.part.refusal")
        _item(whole, event.get("item"), "$.item")
        response = event.get("response")
        if isinstance(response, dict):
            for i, item in items(response.get("output")):
                _item(whole, item, f"$.response.output[{i}]")
        if kind == "error" or (kind is None and isinstance(event, dict)):
            whole.walk(event, "$")
        out.whole = whole
        return out


ADAPTER = OpenAIResponses()
