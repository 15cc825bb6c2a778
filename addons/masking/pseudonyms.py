"""Pseudonyms: ``<EMAIL_ADDRESS_1>`` in place of a value on the way out, the value again on the way back.

A ``Vault`` lives in one flow's memory only and is never recorded. Within a request the same
value (case and spacing aside) always gets the same pseudonym, numbered per entity in order of
first appearance; a chat resends the whole conversation every turn, so a value keeps its
pseudonym across turns without any state outside the flow. Numbers already present literally
in the request are skipped, so a pseudonym never collides with text the caller wrote.

Where the provider keeps the conversation, the vault outlives the flow (``conversations.py``): ``state``
and ``from_state`` carry it from one turn to the next. A vault opened for a conversation the gateway no
longer knows numbers in a ``series`` of its own (``<PERSON_QXJMTB_1>``), so none of its pseudonyms can be
one the provider already holds for another value.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable
from typing import Any

TOKEN = re.compile(r"<([A-Z][A-Z0-9_]*?)_(\d+)>")
# The longest tail that could still grow into a pseudonym: "<", "<EMAIL_AD", "<PERSON_1"...
_PARTIAL = re.compile(r"<[A-Z0-9_]{0,40}$")


def _written(value: str) -> set[str]:
    """The ways ``value`` stands in a text a client reads: plain, JSON-escaped once and twice, either ASCII-only or
    not (the forms shorter than 2 characters are left out: concealing them would rewrite ordinary text)."""
    once = {json.dumps(value, ensure_ascii=ascii)[1:-1] for ascii in (False, True)}
    twice = {json.dumps(form, ensure_ascii=ascii)[1:-1] for form in once for ascii in (False, True)}
    return {form for form in {value} | once | twice if len(form) > 1}


def _normal(value: str) -> str:
    return " ".join(value.split()).casefold()


class Vault:
    """Value <-> pseudonym for one flow (or one conversation: ``state``). ``series``: pseudonyms read
    ``<ENTITY_SERIES_N>`` (upper-case letters), a numbering no vault without that series hands out."""

    def __init__(self, reserved_texts: Iterable[str] = (), series: str = "") -> None:
        if series and not (series.isascii() and series.isalpha() and series.isupper()):
            raise ValueError(f"a pseudonym series is upper-case letters, not {series!r}")
        self.series = series
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
                token = f"<{entity}_{self.series}_{self._counters[entity]}>" if self.series else \
                    f"<{entity}_{self._counters[entity]}>"
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

    def conceal(self, text: str) -> str:
        """``text`` with each value this vault restores replaced by its pseudonym again, where it stands as written,
        or JSON-escaped once or twice (in a JSON string; in JSON held in one): the record's form of what a client
        read after ``restore``."""
        forms: dict[str, str] = {}
        for token, value in self._value_of.items():
            for form in _written(value):
                forms.setdefault(form, token)
        if not forms or not any(form in text for form in forms):
            return text
        pattern = re.compile("|".join(re.escape(form) for form in sorted(forms, key=len, reverse=True)))
        return pattern.sub(lambda match: forms[match.group(0)], text)

    def state(self) -> dict[str, Any]:
        """Everything the vault knows, as JSON-ready values (the caller's values among them: seal it)."""
        return {"series": self.series, "counters": self._counters, "reserved": sorted(self._reserved),
                "tokens": [[entity, normal, token] for (entity, normal), token in self._token_of.items()],
                "values": self._value_of}

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> Vault:
        """The vault ``state`` describes: the same pseudonyms, numbering on where it stopped."""
        vault = cls(series=state["series"])
        vault._counters = {str(e): int(n) for e, n in state["counters"].items()}
        vault._reserved = set(state["reserved"])
        vault._token_of = {(entity, normal): token for entity, normal, token in state["tokens"]}
        vault._value_of = dict(state["values"])
        return vault


def merged_state(kept: dict[str, Any], new: dict[str, Any]) -> dict[str, Any] | None:
    """One vault's ``state`` that holds both (every pseudonym of either, each entity numbering on past both), or
    None where they disagree: another series, a pseudonym standing for two values or a value given two, or one's
    pseudonym the other's reserved text. Merging never hands a pseudonym a second meaning."""
    if kept["series"] != new["series"]:
        return None
    key_of: dict[str, tuple[str, str]] = {}
    token_of: dict[tuple[str, str], str] = {}
    for entity, normal, token in (*kept["tokens"], *new["tokens"]):
        if key_of.setdefault(token, (entity, normal)) != (entity, normal) or \
                token_of.setdefault((entity, normal), token) != token:
            return None
    reserved = set(kept["reserved"]) | set(new["reserved"])
    if reserved & key_of.keys():
        return None
    counters = dict(kept["counters"])
    for entity, n in new["counters"].items():
        counters[entity] = max(counters.get(entity, 0), n)
    return {"series": kept["series"], "counters": counters, "reserved": sorted(reserved),
            "tokens": [[entity, normal, token] for (entity, normal), token in token_of.items()],
            "values": {**new["values"], **kept["values"]}}


def partial_token_start(text: str) -> int | None:
    """Where a trailing, possibly unfinished pseudonym starts in ``text`` (None if it cannot end in one)."""
    match = _PARTIAL.search(text)
    return match.start() if match else None


def token_spans(text: str) -> list[tuple[int, int]]:
    """Spans of everything pseudonym-shaped in ``text`` (analysis must leave them alone)."""
    return [m.span() for m in TOKEN.finditer(text)]
