"""Anthropic messages (``/v1/messages``).

Request: conversation text is ``system`` (a string or text blocks), ``messages[].content`` (a string or
blocks: text, tool_use ``input``, tool_result content, documents whose source is text or content blocks);
base64 sources are decoded where they hold text, else binary; everything else but ``STRUCTURAL`` is analysed
as a field (``Payload.cover``: ``metadata.user_id``, tool descriptions, document titles, thinking). Response:
``content[]`` text and tool_use input. Stream: ``content_block_delta`` with ``text_delta`` (text),
``thinking_delta`` (thinking) or ``input_json_delta`` (pieces of JSON) per block index, and any other text
of a delta (a field a provider adds) as a running text of its own;
``content_block_stop`` ends a block's text.
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
    $.messages[*].content[*].type
    $.messages[*].content[*].id
    $.messages[*].content[*].name
    $.messages[*].content[*].tool_use_id
    $.messages[*].content[*].signature
    $.messages[*].content[*].data
    $.messages[*].content[*].source.type
    $.messages[*].content[*].source.media_type
    $.messages[*].content[*].source.file_id
    $.messages[*].content[*].cache_control.type
    $.messages[*].content[*].cache_control.ttl
    $.messages[*].content[*].content[*].type
    $.messages[*].content[*].content[*].source.type
    $.messages[*].content[*].content[*].source.media_type
    $.messages[*].content[*].content[*].cache_control.type
    $.system[*].type
    $.system[*].cache_control.type
    $.system[*].cache_control.ttl
    $.tools[*].type
    $.tools[*].name
    $.tools[*].cache_control.type
    $.tool_choice.type
    $.tool_choice.name
    $.thinking.type
    $.service_tier
    $.container
""")


def _source(payload: Payload, block: dict, path: str) -> None:
    """A document's or an image's ``source``: text, content blocks, or base64 (decoded if it holds text)."""
    source = block.get("source")
    if not isinstance(source, dict):
        return
    if source.get("type") == "text":
        payload.add(source, "data", f"{path}.source.data")
    elif source.get("type") == "content":
        _blocks(payload, source, "content", f"{path}.source.content")
    elif source.get("type") == "base64":
        payload.add_base64(source, "data", source.get("media_type"), f"{path}.source.data")


def _blocks(payload: Payload, container: Any, key: str, path: str) -> None:
    add_content(payload, container, key, path)
    for i, block in items(container.get(key) if isinstance(container, dict) else None):
        if not isinstance(block, dict):
            continue
        if block.get("type") == "tool_use" and "input" in block:
            payload.walk(block["input"], f"{path}[{i}].input")
        elif block.get("type") == "tool_result":
            _blocks(payload, block, "content", f"{path}[{i}].content")
        elif block.get("type") in ("document", "image"):
            _source(payload, block, f"{path}[{i}]")


_DELTA_KNOWN = frozenset({"type", "text", "thinking", "partial_json", "signature"})  # signature: opaque, whole


class AnthropicMessages(Adapter):
    name = "anthropic-messages"
    path_suffix = "/v1/messages"
    structural = STRUCTURAL

    def conversation(self, document: dict) -> Payload:
        payload = Payload(document)
        _blocks(payload, document, "system", "$.system")
        for i, message in items(document.get("messages")):
            _blocks(payload, message, "content", f"$.messages[{i}].content")
        return payload

    def response(self, document: Any) -> Payload:
        if not isinstance(document, dict) or document.get("type") != "message":
            return everything(document)
        payload = Payload(document)
        _blocks(payload, document, "content", "$.content")
        return payload

    def stream(self, event: Any) -> StreamEvent:
        kind = event.get("type") if isinstance(event, dict) else None
        out = StreamEvent()
        if kind == "content_block_delta":
            delta = event.get("delta")
            index = event.get("index", 0)
            if slot := stream_slot(delta, "text", ("block", index)) or stream_slot(delta, "thinking", ("block", index)):
                out.deltas.append(slot)
            elif slot := stream_slot(delta, "partial_json", ("block", index), json_fragment=True):
                out.deltas.append(slot)
            # any other text of a delta (a field a provider adds) is a running text of the block too
            for field in delta if isinstance(delta, dict) else ():
                if field not in _DELTA_KNOWN and (slot := stream_slot(delta, field, ("block", index, field))):
                    out.deltas.append(slot)
        elif kind == "content_block_stop":
            out.closes.append(("block", event.get("index", 0)))
        return out


ADAPTER = AnthropicMessages()
