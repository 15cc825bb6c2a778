"""OpenAI embeddings (``/v1/embeddings``): ``input`` is a string or a list of strings (token arrays are
numbers and pass as they are); anything else but ``STRUCTURAL`` is analysed as a field. The response holds
vectors only: nothing to mask or restore."""

from __future__ import annotations

from typing import Any

from addons.masking.payloads.base import Adapter, Payload, everything, items, structural

STRUCTURAL = structural("""
    $.model
    $.encoding_format
""")


class OpenAIEmbeddings(Adapter):
    name = "openai-embeddings"
    path_suffix = "/embeddings"
    structural = STRUCTURAL

    def conversation(self, document: dict) -> Payload:
        payload = Payload(document)
        payload.add(document, "input", "$.input")
        for i, value in items(document.get("input")):
            if isinstance(value, str):
                payload.add(document["input"], i, f"$.input[{i}]")
        payload.add(document, "user", "$.user")
        return payload

    def response(self, document: Any) -> Payload:
        if isinstance(document, dict) and "error" in document:
            return everything(document)
        return Payload(document)  # vectors only


ADAPTER = OpenAIEmbeddings()
