"""What the analysis found in a request, counted for policy: the ``pii`` of rule conditions.

Before the deciding rule (and so its masking profile) is known, the analyzer looks for every entity any
profile masks; a value counts if some profile would mask it (its score reaches the lowest threshold any
profile sets for that entity, and no allow-list spares it). Overlapping findings count once, the longest
winning, as masking resolves them. Counts, never values.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

from addons.masking.operators import Masker
from addons.masking.protocol import Span
from addons.masking.pseudonyms import Vault
from addons.rules.masking import Masking, OperatorSpec, Profile


@dataclass(frozen=True)
class Census:
    """``counts`` holds every entity the rules mask (0 if none was found), so conditions may index any of them."""

    counts: dict[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def facts(self, *, inspected: bool = True) -> dict:
        """The ``pii`` variable of rule conditions; ``inspected``: all of the body was read."""
        return {"counts": self.counts, "total": self.total,
                "entities": sorted(e for e, n in self.counts.items() if n), "inspected": inspected}


def widest(masking: Masking) -> Profile:
    """A profile that masks what any profile masks, at the lowest threshold any sets."""
    thresholds: dict[str, float] = {}
    for profile in masking.all_profiles():
        for entity in profile.entities:
            thresholds[entity] = min(thresholds.get(entity, 1.0), profile.thresholds[entity])
    return Profile("(any)", frozenset(thresholds), {e: OperatorSpec(type="redact") for e in thresholds}, thresholds,
                   "mask")


def census(masking: Masking, texts: Sequence[str], spans: Sequence[list[Span]]) -> Census:
    """Count what some profile would mask in ``texts`` (the analyzer's ``spans``, one list per text)."""
    profile = widest(masking)
    keeper = Masker(profile, Vault(), b"", masking.allow_list, masking.allow_regex)
    counts = Counter({entity: 0 for entity in profile.entities})
    for text, found in zip(texts, spans, strict=True):
        counts.update(entity for entity, _, _, _ in keeper.keep(text, found))
    return Census(dict(sorted(counts.items())))
