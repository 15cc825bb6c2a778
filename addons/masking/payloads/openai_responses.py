"""OpenAI responses (``/v1/responses``).

Request: conversation text is ``instructions``, ``input`` (a string, or items whose content is a string or
``input_text``/``output_text`` parts), function-call arguments and outputs; audio parts are binary; everything
else but ``STRUCTURAL`` is analysed as a field (``Payload.cover``: ``input_file`` names and data, image data
URIs, reasoning summaries, ...). Response: every ``output`` item's text and arguments. Stream: every
``response.*.delta`` event's ``delta`` is a running text per item and part (output text, refusal, reasoning
and its summary, transcripts, tool arguments and inputs; ``response.audio.delta`` is audio, not text);
``*.done`` events end them.
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
_JSON_DELTAS = ("response.function_call_arguments.delta", "response.mcp_call_arguments.delta")  # pieces of JSON
_AUDIO_DELTAS = ("response.audio.delta",)  # base64 audio: a whole value per event, never a running text
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
    path_suffix = "/responses"
    structural = STRUCTURAL

    def conversation(self, document: dict) -> Payload:
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
        if not isinstance(kind, str):
            return out
        part = event.get("content_index", event.get("summary_index"))
        channel = ("item", event.get("item_id") or event.get("output_index"), part)
        if kind.endswith(".delta") and kind not in _AUDIO_DELTAS:
            if slot := stream_slot(event, "delta", (*channel, kind), json_fragment=kind in _JSON_DELTAS):
                out.deltas.append(slot)
        elif kind.endswith(".done"):
            out.closes.append(channel)
        return out


ADAPTER = OpenAIResponses()
