"""Finding what answer rules look for in a text, and where a match may still be in progress at its end.

``Patterns`` searches a text with every pattern of the rules that apply: complete matches are ``Hit``s; unless
the text is final, a match that runs into its end (``regex``'s partial matching: ``rm -r`` of ``rm\\s+-rf\\s+/``,
``AKIA12`` of ``AKIA[0-9A-Z]{16}``) marks where the tail that may still grow into one begins (``Scan.hold``), and
so does a mask rule's complete match that touches the end (a greedy one may grow). A stream holds back only that
tail. A search that runs past ``TIMEOUT`` (a pattern that backtracks without end) counts as a block: fail closed.

``RunningText`` is one running text of a stream (a choice's content, a tool call's arguments) screened as it
grows. Pieces of a JSON document (tool-call arguments) are searched as a JSON parser reads them (``json_view``:
``\\u002f`` is ``/``), and masked in their raw form.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

from addons.rules.answers import AnswerCheck

TIMEOUT = 1.0  # seconds one search may take before the answer is blocked
CONTEXT = 64  # characters of released text kept before the held tail, for look-behind and \b
MAX_HELD = 16384  # characters a running text may hold while a match may be in progress; past it: blocked


@dataclass(frozen=True)
class Hit:
    """A complete match of a rule's pattern in a text: never the text."""

    rule: str
    block: bool
    start: int
    end: int
    why: str = ""  # set when the hit is not a match but a failure (a timeout, a hold too long)


@dataclass
class Scan:
    """What ``Patterns.scan`` found: its hits, and where a match may still be in progress (``hold``: the end)."""

    hits: list[Hit]
    hold: int
    holding: str | None = None  # the rule whose possible match begins at ``hold``

    def blocking(self) -> Hit | None:
        return next((hit for hit in self.hits if hit.block), None)


class Patterns:
    """The patterns of the answer rules that apply to one answer."""

    def __init__(self, checks: Iterable[AnswerCheck]) -> None:
        self.checks = [check for check in checks if check.patterns]
        self.marks = {check.name: check.rule.mark for check in self.checks if check.rule.action == "mask"}

    def __bool__(self) -> bool:
        return bool(self.checks)

    def scan(self, text: str, *, final: bool, pos: int = 0) -> Scan:
        """Hits in ``text`` from ``pos`` (what comes before it is context only); unless ``final``, where a match may
        still be in progress."""
        found = Scan([], len(text))
        for check in self.checks:
            block = check.rule.action == "block"
            for pattern in check.patterns:
                try:
                    for match in pattern.finditer(text, pos, partial=not final, timeout=TIMEOUT):
                        start, end = match.span()
                        if not match.partial and end > start:
                            found.hits.append(Hit(check.name, block, start, end))
                        if (match.partial and end > start) or (not final and not block and end == len(text)):
                            if start < found.hold:
                                found.hold, found.holding = start, check.name
                except TimeoutError:
                    found.hits.append(Hit(check.name, True, pos, len(text),
                                          f"its pattern {pattern.pattern!r} took longer than {TIMEOUT:g} s"))
        found.hits.sort(key=lambda hit: (hit.start, not hit.block))
        return found


def masked(text: str, hits: Sequence[Hit], marks: dict[str, str],
           escape: Callable[[str], str] | None = None, spans: Callable[[Hit], tuple[int, int]] | None = None
           ) -> tuple[str, Counter[str]]:
    """``text`` with each mask hit replaced by its rule's mark (overlapping hits once, by the first rule's mark);
    ``spans`` maps a hit to the span of ``text`` it covers (default: its own), ``escape`` the mark (JSON)."""
    out: list[str] = []
    done = 0
    count: Counter[str] = Counter()
    for hit in sorted((h for h in hits if not h.block), key=lambda h: h.start):
        start, end = spans(hit) if spans is not None else (hit.start, hit.end)
        count[hit.rule] += 1
        if end <= done:
            continue
        if start >= done:
            out += [text[done:start], escape(marks[hit.rule]) if escape else marks[hit.rule]]
        done = end
    out.append(text[done:])
    return "".join(out), count


_ESCAPES = {'"': '"', "\\": "\\", "/": "/", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t"}
_HEX = frozenset("0123456789abcdefABCDEF")


def _hex4(raw: str, at: int) -> int | None:
    digits = raw[at:at + 4]
    return int(digits, 16) if len(digits) == 4 and set(digits) <= _HEX else None


def _may_become(raw: str, at: int, shape: str) -> bool:
    """``raw[at:]`` is cut off and may still become text of ``shape`` (``h``: a hex digit, ``d``: a hex digit of a
    low surrogate's first, D; any other character: itself)."""
    rest = raw[at:]
    if len(rest) >= len(shape):
        return False
    for c, want in zip(rest, shape, strict=False):
        if not (c in _HEX if want == "h" else c in "dD" if want == "d" else c == want):
            return False
    return True


def _escape(raw: str, i: int, final: bool) -> tuple[str, int] | None:
    """The character the escape at ``raw[i]`` stands for and its width; None to wait for more (it is cut off); an
    invalid escape is read as it stands (its backslash, one character)."""
    kind = raw[i + 1:i + 2]
    if kind == "u":
        code = _hex4(raw, i + 2)
        if code is None:
            return None if not final and _may_become(raw, i + 2, "hhhh") else ("\\", 1)
        if 0xD800 <= code < 0xDC00:  # a high surrogate: with a low one after it, both make one character
            low = _hex4(raw, i + 8) if raw[i + 6:i + 8] == "\\u" else None
            if low is not None and 0xDC00 <= low < 0xE000:
                return chr(0x10000 + ((code - 0xD800) << 10) + (low - 0xDC00)), 12
            if not final and _may_become(raw, i + 6, "\\udhhh"):
                return None
        return chr(code), 6
    if kind in _ESCAPES:
        return _ESCAPES[kind], 2
    return None if not kind and not final else ("\\", 1)


def json_view(raw: str, in_string: bool, final: bool) -> tuple[str, list[int], list[bool]]:
    """What a JSON parser reads in ``raw``, a piece of a JSON document that begins inside a string or not: escapes
    decoded inside strings. Returns (view, where each character of it starts in ``raw`` and then where the view
    ends, whether each of those places is inside a string). An escape cut off at the end is left out of the view
    (its start is where the view ends), unless ``final``: then it is read as it stands."""
    view: list[str] = []
    starts: list[int] = []
    states: list[bool] = []
    i, n = 0, len(raw)
    while i < n:
        c = raw[i]
        if in_string and c == "\\":
            escape = _escape(raw, i, final)
            if escape is None:
                break
            char, width = escape
        else:
            char, width = c, 1
        starts.append(i)
        states.append(in_string)
        if char == '"' and width == 1:
            in_string = not in_string
        view.append(char)
        i += width
    starts.append(i)
    states.append(in_string)
    return "".join(view), starts, states


def _json_escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


@dataclass
class RunningText:
    """One running text of a stream, screened as it grows: what may still become a match is held back."""

    json_fragment: bool = False  # pieces of a JSON document (tool-call arguments)
    held: str = ""  # raw text not yet released
    before: str = ""  # the end of what was released (as read), context for the next search
    in_string: bool = False  # a JSON fragment: whether ``held`` begins inside a string
    template: tuple | None = field(default=None, repr=False)  # the last event that carried it, for a flush event

    def feed(self, text: str, patterns: Patterns, final: bool) -> tuple[str, Scan, Counter[str]]:
        """(what can be released now, masked; the scan, whose block hit means: release nothing; masks applied)."""
        raw = self.held + text
        starts: Sequence[int]
        if self.json_fragment:
            view, starts, states = json_view(raw, self.in_string, final)
        else:
            view, starts, states = raw, range(len(raw) + 1), []  # read as it stands: one place per character
        context = len(self.before)
        found = patterns.scan(self.before + view, final=final, pos=context)
        hits = [Hit(h.rule, h.block, h.start - context, h.end - context, h.why) for h in found.hits]
        found = Scan(hits, found.hold - context, found.holding)
        if found.blocking() is not None:
            return "", found, Counter()
        cut = len(view) if final else found.hold
        moved = True
        while moved:  # never cut through a match
            moved = False
            for hit in hits:
                if hit.start < cut < hit.end:
                    cut, moved = hit.start, True
        done = [hit for hit in hits if hit.end <= cut]
        raw_cut = starts[cut]
        released, count = masked(raw[:raw_cut], done, patterns.marks, _json_escape if self.json_fragment else None,
                                 lambda hit: (starts[hit.start], starts[hit.end]))
        self.held = raw[raw_cut:]
        self.before = (self.before + view[:cut])[-CONTEXT:]
        if self.json_fragment:
            self.in_string = states[cut]
        if len(self.held) > MAX_HELD:
            found.hits.append(Hit(found.holding or "?", True, cut, len(view),
                                  f"a possible match grew past {MAX_HELD} characters"))
            return "", found, Counter()
        return released, found, count
