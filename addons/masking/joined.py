"""Values split across the text parts of one message (``[{"type": "text", "text": "card 4111 1111"},
{"type": "text", "text": " 1111 1111"}]``): each part alone shows nothing, the model reads them one after the other.

The parts of one message are the text slots whose paths differ only in the part's index (``$.messages[0].content[0]
.text``, ``$.messages[0].content[1].text``; Anthropic's blocks and the Responses API's parts alike), in the order the
adapter found them. ``windows`` gives the joined text around each place where two parts meet (``WIDTH`` characters
either side: the cost follows the number of parts, not their length), to be analysed beside the parts themselves;
``pieces`` turns what was found there across a meeting point into each part's share of the replacement: the
replacement in the first part and nothing in the others (a pseudonym restored in the answer gives the whole value
back), or, where the replacement is as long as the value (``mask``), its characters where the value's were. The
spans found in each part alone are masked as before; one that overlaps a value across parts is folded into it, so
nothing of either is left.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from addons.masking.operators import Applied, Masker, Piece
from addons.masking.payloads import TextSlot
from addons.masking.protocol import Span

WIDTH = 256  # characters either side of a meeting point: longer than an e-mail address, a card or a phone number
_PART = re.compile(r"(.*)\[(\d+)\]\.text")


@dataclass(frozen=True)
class Window:
    """The joined text of one message's parts around where they meet."""

    slots: tuple[int, ...]  # the parts, as indexes of the payload's slots, in order
    starts: tuple[int, ...]  # where each part starts in the joined text (one more: where it ends)
    offset: int  # where ``text`` starts in the joined text
    text: str


def messages(slots: Sequence[TextSlot]) -> list[tuple[int, ...]]:
    """The payload's messages of two text parts or more, as indexes of their slots."""
    groups: list[list[int]] = []
    previous = None
    for i, slot in enumerate(slots):
        match = _PART.fullmatch(slot.path) if slot.kind == "text" else None
        message = match.group(1) if match else None
        if message is not None and message == previous:
            groups[-1].append(i)
        elif message is not None:
            groups.append([i])
        previous = message
    return [tuple(g) for g in groups if len(g) > 1]


def windows(slots: Sequence[TextSlot], width: int = WIDTH) -> list[Window]:
    """The joined text around every place where two parts of a message meet, neighbouring places in one window."""
    out = []
    for group in messages(slots):
        texts = [slots[i].text for i in group]
        starts = [0]
        for text in texts:
            starts.append(starts[-1] + len(text))
        joined = "".join(texts)
        spans: list[list[int]] = []
        for meeting in starts[1:-1]:
            start, end = max(0, meeting - width), min(len(joined), meeting + width)
            if spans and start <= spans[-1][1]:
                spans[-1][1] = end
            else:
                spans.append([start, end])
        out += [Window(group, tuple(starts), start, joined[start:end]) for start, end in spans]
    return out


def _crosses(window: Window, start: int, end: int) -> bool:
    return any(start < meeting < end for meeting in window.starts[1:-1])


def crossing(windows_: Sequence[Window], found: Sequence[Sequence[Span]]) -> list[list[Span]]:
    """Of what was found in each window, the spans across a meeting point (values no part shows alone), in the
    window's offsets: what a count of findings must add to the parts' own."""
    return [[s for s in in_window if _crosses(window, s[1] + window.offset, s[2] + window.offset)]
            for window, in_window in zip(windows_, found, strict=True)]


def pieces(masker: Masker, slots: Sequence[TextSlot], spans: Sequence[Sequence[Span]], found: Sequence[Sequence[Span]],
           windows_: Sequence[Window]) -> dict[int, list[Piece]]:
    """Each slot's share of the values found across parts (``found``: the spans of each window of ``windows_``),
    by slot index; ``spans`` are what was found in each slot alone."""
    out: dict[int, list[Piece]] = {}
    for window, across in zip(windows_, crossing(windows_, found), strict=True):
        if not across:
            continue
        joined = "".join(slots[i].text for i in window.slots)
        wanted = [(entity, start + window.offset, end + window.offset, score)
                  for entity, start, end, score in masker.keep(window.text, across)]
        alone = [(start + window.starts[k], end + window.starts[k]) for k, i in enumerate(window.slots)
                 for _, start, end, _ in masker.keep(slots[i].text, list(spans[i]))]
        for entity, start, end, score in _merged(wanted, alone):
            _share(masker, window, joined, (entity, start, end, score), out)
    return out


def _merged(wanted: list[Span], alone: list[tuple[int, int]]) -> list[Span]:
    """``wanted`` grown over every span they overlap (their own, and ``alone``), overlapping ones made one."""
    grown: list[Span] = []
    for entity, start, end, score in sorted(wanted, key=lambda s: s[1]):
        changed = True
        while changed:
            changed = False
            for other_start, other_end in alone:
                if other_start < end and start < other_end and (other_start < start or other_end > end):
                    start, end, changed = min(start, other_start), max(end, other_end), True
        if grown and start < grown[-1][2]:
            first = grown[-1]
            grown[-1] = (first[0], first[1], max(first[2], end), max(first[3], score))
        else:
            grown.append((entity, start, end, score))
    return grown


def _share(masker: Masker, window: Window, joined: str, span: Span, out: dict[int, list[Piece]]) -> None:
    """Put each part's share of the replacement of ``span`` (in the joined text) into ``out``."""
    entity, start, end, score = span
    value = joined[start:end]
    replacement, operator = masker.replacement(entity, value)
    aligned = len(replacement) == len(value)  # a character for a character (mask): each part keeps its own
    first = True
    for k, i in enumerate(window.slots):
        part_start, part_end = window.starts[k], window.starts[k + 1]
        lo, hi = max(start, part_start), min(end, part_end)
        if lo >= hi:
            continue
        if aligned:
            text = replacement[lo - start:hi - start]
        else:
            text = replacement if first else ""
        first = False
        out.setdefault(i, []).append(Piece(lo - part_start, hi - part_start, text,
                                           Applied(entity, lo - part_start, hi - part_start, score, operator)))
