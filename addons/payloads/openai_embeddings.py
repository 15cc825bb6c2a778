"""OpenAI embeddings (``/v1/embeddings``): ``input`` is a string or a list of strings (token arrays are
numbers and pass as they are). The response holds vectors only: nothing to mask or restore."""

from __future__ import annotations

from typing import Any

from addons.payloads.base import Adapter, Payload, items


class OpenAIEmbeddings(Adapter):
    name = "openai-embeddings"

    def matches(self, path: str) -> bool:
        return path.endswith("/embeddings")

    def request(self, document: Any) -> Payload:
        payload = Payload(document)
        if not isinstance(document, dict):
            payload.walk(document, "$")
            return payload
        payload.add(document, "input", "$.input")
        for i, value in items(document.get("input")):
            if isinstance(value, str):
                payload.add(document["input"], i, f"$.input[{i}]")
        payload.add(document, "user", "$.user")
        return payload

    def response(self, document: Any) -> Payload:
        payload = Payload(document)
        if isinstance(document, dict) and "error" in document:
            payload.walk(document, "$")
        return payload


ADAPTER = OpenAIEmbeddings()
