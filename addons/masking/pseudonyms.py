"""Pseudonyms: ``<EMAIL_ADDRESS_1>`` in place of a value on the way out, the value again on the way back.

A ``Vault`` lives in one flow's memory only and is never recorded. Within a request the same
value (case and spacing aside) always gets the same pseudonym, numbered per entity in order of
first appearance; a chat resends the whole conversation every turn, so a value keeps its
pseudonym across turns without any state outside the flow. Numbers already present literally
in the request are skipped, so a pseudonym never collides with text the caller wrote.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

TOKEN = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
# The longest tail that could still grow into a pseudonym: "<", "<EMAIL_AD", "<PERSON_1"...
_PARTIAL = re.compile(r"<[A-Z0-9_]{0,40}$")


def _normal(value: str) -> str:
    return " ".join(value.split()).casefold()


class Vault:
    """Value <-> pseudonym for one flow."""

    def __init__(self, reserved_texts: Iterable[str] = ()) -> None:
        self._token_of: dict[tuple[str, str], str] = {}
        self._value_of: dict[str, str] = {}
        self._counters: dict[str, int] = {}
        self._reserved = {m.group(0) for text in reserved_texts for m in TOKEN.finditer(text)}

    def __len__(self) -> int:
        return len(self._value_of)

    def __repr__(self) -> str:  # never show values
        return f"Vault({len(self)} pseudonyms)"

    def reserve(self, texts: Iterable[str]) -> None:
        """Keep pseudonym-shaped text in later messages (a WebSocket's) from being handed out as a pseudonym."""
        self._reserved |= {m.group(0) for text in texts for m in TOKEN.finditer(text)} - self._value_of.keys()

    def pseudonym(self, entity: str, value: str) -> str:
        key = (entity, _normal(value))
        token = self._token_of.get(key)
        if token is None:
            while True:
                self._counters[entity] = self._counters.get(entity, 0) + 1
                token = f"<{entity}_{self._counters[entity]}>"
                if token not in self._reserved:
                    break
            self._token_of[key] = token
            self._value_of[token] = value
        return token

    def restore(self, text: str, escape: Callable[[str], str] | None = None) -> str:
        """``text`` with every pseudonym of this vault replaced by its value (``escape``d, e.g. for JSON)."""
        if not self._value_of or "<" not in text:
            return text

        def back(match: re.Match) -> str:
            value = self._value_of.get(match.group(0))
            if value is None:
                return match.group(0)
            return escape(value) if escape else value

        return TOKEN.sub(back, text)


def partial_token_start(text: str) -> int | None:
    """Where a trailing, possibly unfinished pseudonym starts in ``text`` (None if it cannot end in one)."""
    match = _PARTIAL.search(text)
    return match.start() if match else None


def token_spans(text: str) -> list[tuple[int, int]]:
    """Spans of everything pseudonym-shaped in ``text`` (analysis must leave them alone)."""
    return [m.span() for m in TOKEN.finditer(text)]
