"""hash: ``<ENTITY:16 hex>``, an HMAC-SHA256 under the gateway's key.

Keyed, so the same value gives the same hash everywhere in the log (an auditor can see that two
flows carried the same card number) while nobody without the key can test guesses against it:
Presidio's own ``hash`` is unkeyed (or salted per value, which loses the linking).
"""

from __future__ import annotations

import hashlib
import hmac

from presidio_anonymizer.entities import InvalidParamError
from presidio_anonymizer.operators import Operator, OperatorType

DIGEST_HEX = 16


class KeyedHash(Operator):
    """Replace the value with ``<ENTITY:hmac>`` under ``params["key"]``."""

    def operate(self, text: str, params: dict | None = None) -> str:
        assert params is not None
        normal = " ".join(text.split()).casefold()
        mac = hmac.new(params["key"], f"{params['entity_type']}\0{normal}".encode(), hashlib.sha256).hexdigest()
        return f"<{params['entity_type']}:{mac[:DIGEST_HEX]}>"

    def validate(self, params: dict | None = None) -> None:
        key = (params or {}).get("key")
        if not isinstance(key, bytes) or len(key) < 16:
            raise InvalidParamError("hash needs a key of at least 16 bytes")

    def operator_name(self) -> str:
        return "hash"

    def operator_type(self) -> OperatorType:
        return OperatorType.Anonymize
