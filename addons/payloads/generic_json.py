"""Any other JSON: every string value, walked (keys are left alone). In a stream, every event is a whole."""

from __future__ import annotations

from typing import Any

from addons.payloads.base import Adapter, Payload


class GenericJson(Adapter):
    name = "json"

    def matches(self, path: str) -> bool:
        return True

    def request(self, document: Any) -> Payload:
        payload = Payload(document)
        payload.walk(document, "$")
        return payload


ADAPTER = GenericJson()
