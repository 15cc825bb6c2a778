"""How texts become analysis work: long texts cut for NER, the units packed into batches, one per worker.

Presidio's cost grows faster than the text, and one long text would occupy one worker. Texts over
``SPLIT_AT`` characters are cut at paragraph, line, sentence or word boundaries for NER and spread
over the workers in batches (``nlp.pipe``); the pattern recognizers still see the whole text, so
nothing they look for (an IBAN with spaces, a PEM block) is cut in two.
"""

from __future__ import annotations

import re

from addons.masking.protocol import Unit

SPLIT_AT = 1500  # characters: longer texts are chunked for NER
CHUNK = 1000  # target NER chunk size
MIN_BATCH = 1200  # characters of work below which a batch is not split further
_BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))


def split_text(text: str, limit: int = CHUNK) -> list[tuple[int, str]]:
    """``text`` as (offset, chunk) pieces of at most about ``limit`` characters, cut at the coarsest boundary."""
    if len(text) <= limit:
        return [(0, text)]
    pieces, start = [], 0
    while len(text) - start > limit:
        window_end = start + limit
        cut = None
        for boundary in _BOUNDARIES:
            # the last boundary in the window's second half, so chunks stay reasonably large
            found = [m.end() for m in boundary.finditer(text, start + limit // 2, window_end)]
            if found:
                cut = found[-1]
                break
        cut = cut or window_end  # one unbroken run: cut it (patterns see the whole text anyway)
        pieces.append((start, text[start:cut]))
        start = cut
    pieces.append((start, text[start:]))
    return pieces


def plan(texts: list[str], has_ner: bool | list[bool]) -> list[list[tuple[Unit, int]]]:
    """For each text, the units to analyse and the offset of each unit in the text. ``has_ner``: whether NER runs,
    on every text or per text."""
    out = []
    flags = has_ner if isinstance(has_ner, list) else [has_ner] * len(texts)
    for text, ner in zip(texts, flags, strict=True):
        if not ner or len(text) <= SPLIT_AT:
            out.append([(Unit(text, ner=ner, patterns=True), 0)])
        else:
            units = [(Unit(text, ner=False, patterns=True), 0)]
            units += [(Unit(chunk, ner=True, patterns=False), offset) for offset, chunk in split_text(text)]
            out.append(units)
    return out


def cost(unit: Unit) -> float:
    """What analysing ``unit`` costs a worker, in characters of work, round trip included."""
    # Weights measured on the bench's prose (ARCHITECTURE.md): the pattern pass costs about what windowed NER does.
    return len(unit.text) * ((1.0 if unit.ner else 0.0) + (0.9 if unit.patterns else 0.0)) + 50


def batches(units: list[Unit], workers: int) -> list[list[int]]:
    """Indexes of ``units`` packed into at most one batch per worker, balanced by cost (largest first onto the
    lightest batch). Work under ``MIN_BATCH`` characters per batch is not spread: a round trip costs more."""
    total = sum(cost(u) for u in units)
    count = max(1, min(workers, len(units), int(total // MIN_BATCH)))
    bins: list[list[int]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for index in sorted(range(len(units)), key=lambda i: cost(units[i]), reverse=True):
        lightest = loads.index(min(loads))
        bins[lightest].append(index)
        loads[lightest] += cost(units[index])
    return [b for b in bins if b]
