"""Masking operators, picked by name: Presidio's ``replace``, ``mask`` and ``redact``, Warden's ``hash``
(keyed) and ``pseudonymize``. Each is a Presidio ``Operator``: validation apart from operation.

``Masker`` applies one profile's operators to a text given the analyzer's spans: it keeps the
spans the profile asks for (entity, score, allow-lists), resolves overlaps (the longest span
wins, so more is hidden rather than less), and returns the new text with what it did; ``mask``
does so for every slot of a payload.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING

from addons.masking.protocol import Span
from addons.masking.pseudonyms import Vault, token_spans
from addons.rules.masking import OperatorSpec, Profile

if TYPE_CHECKING:
    from presidio_anonymizer.operators import Operator

    from addons.masking.payloads import Payload


@cache
def operators() -> dict[str, Operator]:
    """The operators by name. Imported on first use: presidio_anonymizer pulls in spaCy."""
    from presidio_anonymizer.operators import Mask, Redact, Replace

    from addons.masking.operators.keyed_hash import KeyedHash
    from addons.masking.operators.pseudonymize import Pseudonymize

    return {"replace": Replace(), "mask": Mask(), "redact": Redact(), "hash": KeyedHash(),
            "pseudonymize": Pseudonymize()}


@dataclass(frozen=True)
class Piece:
    """A replacement decided before a text is masked: ``text`` in place of ``[start, end)``, recorded as ``applied``."""

    start: int
    end: int
    text: str
    applied: Applied


@dataclass(frozen=True)
class Applied:
    """One masked value: where it was in the original text, and how it was masked. Never the value."""

    entity: str
    start: int
    end: int
    score: float
    operator: str


def _params(spec: OperatorSpec, entity: str, text: str, vault: Vault, hash_key: bytes) -> dict:
    match spec.type:
        case "replace":
            return {"new_value": spec.value if spec.value is not None else f"<{entity}>"}
        case "mask":
            return {"masking_char": spec.char, "chars_to_mask": max(0, len(text) - spec.keep_last), "from_end": False}
        case "hash":
            return {"key": hash_key}
        case "pseudonymize":
            return {"vault": vault}
    return {}


class Masker:
    """One profile's masking for one flow (the vault is the flow's)."""

    def __init__(self, profile: Profile, vault: Vault, hash_key: bytes, allow_list: Sequence[str] = (),
                 allow_regex: Sequence[str] = (), reversible: bool = True) -> None:
        self.profile = profile
        self.vault = vault
        self.hash_key = hash_key
        self._allowed = {v.casefold() for v in allow_list}
        self._allowed_re = [re.compile(r, re.IGNORECASE) for r in allow_regex]
        self.reversible = reversible  # False for what the upstream sends: nothing there is restored

    def _operator(self, entity: str) -> OperatorSpec:
        spec = self.profile.operators[entity]
        if spec.type == "pseudonymize" and not self.reversible:
            return OperatorSpec(type="replace")
        return spec

    def keep(self, text: str, spans: list[Span]) -> list[Span]:
        """The spans this profile masks, without overlaps, in text order."""
        protected = token_spans(text)
        wanted = []
        for entity, start, end, score in spans:
            if entity not in self.profile.entities or score < self.profile.thresholds[entity]:
                continue
            value = text[start:end]
            if not value.strip() or value.casefold() in self._allowed:
                continue
            if any(r.fullmatch(value) for r in self._allowed_re):
                continue
            if any(start < p_end and p_start < end for p_start, p_end in protected):
                continue  # a pseudonym (ours or the caller's text) is not PII
            wanted.append((entity, start, end, score))
        wanted.sort(key=lambda s: (s[1], -(s[2] - s[1]), -s[3]))
        chosen: list[Span] = []
        for span in wanted:
            if chosen and span[1] < chosen[-1][2]:
                continue
            chosen.append(span)
        return chosen

    def replacement(self, entity: str, value: str) -> tuple[str, str]:
        """What the profile puts in place of ``value`` found as ``entity``, and the operator's name."""
        spec = self._operator(entity)
        params = _params(spec, entity, value, self.vault, self.hash_key)
        params["entity_type"] = entity
        operator = operators()[spec.type]
        operator.validate(params)
        return operator.operate(value, params), spec.type

    def apply(self, text: str, spans: list[Span], escape: Callable[[str], str] | None = None,
              pieces: Sequence[Piece] = ()) -> tuple[str, list[Applied]]:
        """``text`` masked, and what was masked. ``escape`` makes replacements safe where they land (JSON text).
        ``pieces`` are replacements already decided (a value's share when it spans several texts): they win over
        the spans they overlap."""
        chosen: list[tuple[int, int, Piece | Span]] = [
            (span[1], span[2], span) for span in self.keep(text, spans)
            if not any(span[1] < p.end and p.start < span[2] for p in pieces)]
        chosen += [(p.start, p.end, p) for p in pieces]
        out, applied, last = [], [], 0
        for start, end, what in sorted(chosen, key=lambda c: c[0]):
            if isinstance(what, Piece):
                replacement, done = what.text, what.applied
            else:
                entity, _, _, score = what
                replacement, operator = self.replacement(entity, text[start:end])
                done = Applied(entity, start, end, score, operator)
            out += [text[last:start], escape(replacement) if escape and replacement else replacement]
            applied.append(done)
            last = end
        out.append(text[last:])
        return "".join(out), applied

    def mask(self, payload: Payload, spans: list[list[Span]],
             pieces: Mapping[int, Sequence[Piece]] | None = None) -> list[tuple[str, list[Applied]]]:
        """Mask ``payload``'s slots with the analyzer's ``spans`` (one list per slot) and the ``pieces`` decided for
        some of them (by slot index). What was masked, by the path it has in the rendered body (a masked key renames
        the paths beneath it)."""
        masked = []
        pieces = pieces or {}
        for i, (slot, found) in enumerate(zip(payload.slots, spans, strict=True)):
            if found or pieces.get(i):
                text, applied = self.apply(slot.text, found, pieces=pieces.get(i, ()))
                if applied:
                    slot.set(text)
                    masked.append((slot.path, applied))
        return [(payload.sent_path(path), applied) for path, applied in masked]
