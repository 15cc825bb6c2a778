"""The analysis-result cache: spans by content, so a text already analysed costs no worker round trip.

A chat request resends the whole conversation every turn; each text (and each NER chunk of a long
text) is analysed once and its spans kept under a hash of the text, so a turn costs only what is new.
"""

from __future__ import annotations

import hashlib

from cachetools import LRUCache

from addons.masking.protocol import Span, Unit

CACHE_ENTRIES = 50_000


class AnalysisCache:
    """Spans by (kind of analysis, SHA-256 of the text), the least recently used dropped past ``size``
    entries. Holds no text. Not thread-safe: the pool uses it on the event loop only."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._entries: LRUCache[bytes, list[Span]] = LRUCache(maxsize=size)

    @staticmethod
    def key(unit: Unit) -> bytes:
        """The key of ``unit``'s result: what was run on the text, and the text's digest."""
        kind = b"%d%d" % (unit.ner, unit.patterns)
        return kind + hashlib.sha256(unit.text.encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> list[Span] | None:
        return self._entries.get(key)

    def put(self, key: bytes, spans: list[Span]) -> None:
        self._entries[key] = spans

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
