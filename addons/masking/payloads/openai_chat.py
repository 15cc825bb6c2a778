"""OpenAI chat completions (``/v1/chat/completions``, and every API that copies its shape).

Request: conversation text is ``messages[].content`` (a string or parts, of which ``text`` and ``refusal``
parts), tool-call arguments (JSON in a string), ``prediction.content`` and ``user``; audio parts are binary;
everything else but ``STRUCTURAL`` is analysed as a field (``Payload.cover``). Response: ``choices[].message``
content, refusal, tool-call arguments. Stream: ``chat.completion.chunk`` deltas, one running text per choice
and field (every string of the delta but its role: content, refusal, reasoning, a provider's own field; the
audio transcript, each tool call's arguments); a choice's ``finish_reason`` ends its texts.
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

STRUCTURAL = structural("""
    $.model
    $.messages[*].role
    $.messages[*].tool_call_id
    $.messages[*].content[*].type
    $.messages[*].content[*].image_url.detail
    $.messages[*].content[*].input_audio.format
    $.messages[*].content[*].file.file_id
    $.messages[*].tool_calls[*].id
    $.messages[*].tool_calls[*].type
    $.messages[*].tool_calls[*].function.name
    $.messages[*].function_call.name
    $.messages[*].audio.id
    $.tools[*].type
    $.tools[*].function.name
    $.functions[*].name
    $.tool_choice
    $.tool_choice.type
    $.tool_choice.function.name
    $.function_call
    $.function_call.name
    $.response_format.type
    $.response_format.json_schema.name
    $.reasoning_effort
    $.service_tier
    $.modalities[*]
    $.audio.voice
    $.audio.format
    $.prediction.type
    $.verbosity
    $.web_search_options.search_context_size
""")


def _tool_calls(payload: Payload, message: dict, path: str) -> None:
    for k, call in items(message.get("tool_calls")):
        function = call.get("function") if isinstance(call, dict) else None
        if isinstance(function, dict):
            payload.add_embedded_json(function, "arguments", f"{path}.tool_calls[{k}].function.arguments")
    function_call = message.get("function_call")
    if isinstance(function_call, dict):
        payload.add_embedded_json(function_call, "arguments", f"{path}.function_call.arguments")


def _parts(payload: Payload, message: dict, path: str) -> None:
    add_content(payload, message, "content", f"{path}.content")
    for i, part in items(message.get("content")):
        if not isinstance(part, dict):
            continue
        if part.get("type") == "refusal":
            payload.add(part, "refusal", f"{path}.content[{i}].refusal")
        audio = part.get("input_audio")
        if part.get("type") == "input_audio" and isinstance(audio, dict):
            payload.add_base64(audio, "data", f"audio/{audio.get('format') or 'unknown'}",
                               f"{path}.content[{i}].input_audio.data")


class OpenAIChat(Adapter):
    name = "openai-chat"
    path_suffix = "/chat/completions"
    structural = STRUCTURAL

    def conversation(self, document: dict) -> Payload:
        payload = Payload(document)
        for i, message in items(document.get("messages")):
            if isinstance(message, dict):
                _parts(payload, message, f"$.messages[{i}]")
                _tool_calls(payload, message, f"$.messages[{i}]")
        if isinstance(document.get("prediction"), dict):
            add_content(payload, document["prediction"], "content", "$.prediction.content")
        payload.add(document, "user", "$.user")
        return payload

    def response(self, document: Any) -> Payload:
        if not isinstance(document, dict) or "choices" not in document:
            return everything(document)  # an error body, or something else: every string
        payload = Payload(document)
        for i, choice in items(document.get("choices")):
            message = choice.get("message") if isinstance(choice, dict) else None
            if isinstance(message, dict):
                path = f"$.choices[{i}].message"
                add_content(payload, message, "content", f"{path}.content")
                payload.add(message, "refusal", f"{path}.refusal")
                _tool_calls(payload, message, path)
        return payload

    def stream(self, event: Any) -> StreamEvent:
        if not isinstance(event, dict) or "choices" not in event:
            return super().stream(event)
        out = StreamEvent()
        for _, choice in items(event.get("choices")):
            if not isinstance(choice, dict):
                continue
            index = choice.get("index", 0)
            delta = choice.get("delta")
            if isinstance(delta, dict):
                # a delta is an increment of the message: each of its texts (content, refusal, reasoning, a
                # field a provider adds) is a running text, so a value split across events is found whole
                for field in delta:
                    if field != "role" and (slot := stream_slot(delta, field, ("choice", index, field))):
                        out.deltas.append(slot)
                if slot := stream_slot(delta.get("audio"), "transcript", ("choice", index, "audio")):
                    out.deltas.append(slot)
                if slot := stream_slot(delta.get("function_call"), "arguments", ("choice", index, "function_call"),
                                       json_fragment=True):
                    out.deltas.append(slot)
                for k, call in items(delta.get("tool_calls")):
                    function = call.get("function") if isinstance(call, dict) else None
                    position = call.get("index", k) if isinstance(call, dict) else k
                    channel = ("choice", index, "tool", position)
                    if slot := stream_slot(function, "arguments", channel, json_fragment=True):
                        out.deltas.append(slot)
            if choice.get("finish_reason"):
                out.closes.append(("choice", index))
        return out


ADAPTER = OpenAIChat()
