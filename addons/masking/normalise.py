"""Text as a reader reads it, for the recognizers: obfuscations undone, with a map back to the original.

A value can be written so that a pattern misses it while a model still reads it. ``normalise`` undoes, in order:

* compatibility forms (Unicode NFKC, character by character: full-width ``４１１１`` and
  ``ｊａｎｅ＠ａｃｍｅ．ｃｏｍ``, ligatures, non-breaking spaces), digits of other scripts (``٤١١١``) and Unicode tag
  characters (invisible ASCII); invisible characters inside a value are dropped (zero-width space and joiners,
  word joiner, byte-order mark, soft hyphen, bidirectional controls);
* percent-encoding (``jane%40acme.com``) and HTML character references (``jane&#64;acme.com``);
* the ``at``/``dot`` spellings of an e-mail address: bracketed (``jane[at]acme[dot]com``, ``jane (at) acme (dot)
  com``, ``[@]``, ``[.]``) wherever the whole reads as an address; bare words (``jane at acme dot com``) only where
  that is unambiguous: a bare ``dot`` names the domain, the last label is a top-level domain
  (``TOP_LEVEL``) and the word before a bare ``at`` is no word prose puts there (``look at``, ``good at``); a bare
  ``dot`` in the mailbox too (``jane dot doe at gmail dot com``); a bare ``at`` before a dotted domain
  (``jane.doe at acme.com``) only after a mailbox with ``.``, ``_`` or ``+`` in it that names no file;
* a card number's digits grouped anyhow (``4111 11 1111 111 111``, ``4111.1111.1111.1111``): a run of three or more
  digit groups with one kind of separator, 13 to 19 digits that pass the Luhn check, reads as the digits alone.

``Normalised.text`` is what the recognizers read; ``Normalised.span`` maps a span of it to the smallest span of the
original that covers it (a dropped character belongs to the character before it), so a replacement hides the
whole obfuscated value, brackets and invisible characters included. Text that needs none of this (ASCII with no
``%``, ``&``, bracket or ``dot`` marker and no long digit run: most text) costs a few regular-expression scans and
no map. Phone numbers and SSNs need no digit rule: their recognizers read separators already.
"""

from __future__ import annotations

import functools
import html
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from addons.masking.protocol import Span

Edit = tuple[int, int, str]  # replace text[start:end] with the string (empty: drop it)

# Invisible characters a value can carry without a reader seeing them: dropped.
_INVISIBLE = re.compile("[\u00ad\u034f\u061c\u115f\u1160\u17b4\u17b5\u180b-\u180f\u200b-\u200f\u202a-\u202e"
                        "\u2060-\u206f\u3164\ufe00-\ufe0f\ufeff\uffa0\U000e0001\U000e007f]")
_TAG = re.compile("[\U000e0020-\U000e007e]")  # Unicode tag characters: invisible ASCII
# The blocks that hold every character NFKC changes or that is a digit of another script (Unicode 15).
_COMPATIBILITY_BLOCKS = ((0x80, 0xD800), (0xF900, 0x10000), (0x10400, 0x12000), (0x16A00, 0x16C00), (0x1D100, 0x1D800),
                         (0x1E000, 0x1EF00), (0x1F100, 0x1F300), (0x1FB00, 0x1FC00), (0x2F800, 0x2FA20))


def _class_of(codes: list[int]) -> str:
    """A regular-expression character class of ``codes`` (sorted), consecutive ones as ranges."""
    ranges: list[list[int]] = []
    for code in codes:
        if ranges and code == ranges[-1][1] + 1:
            ranges[-1][1] = code
        else:
            ranges.append([code, code])
    return "[" + "".join(re.escape(chr(lo)) + ("-" + re.escape(chr(hi)) if hi > lo else "") for lo, hi in ranges) + "]"


# Read as "-" and ".": the hyphens and dashes (NFKC keeps them, or makes U+2011 a U+2010) and the minus sign; the
# ideographic full stop.
_AS = str.maketrans({**{c: "-" for c in "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63"},
                     "\u3002": ".", "\uff61": "."})
# Combining marks after an ASCII letter or digit (``4̲1̲1̲1̲``): composed by NFKC where a character exists, else dropped.
_AS_CHARS = "\u2010\u2011\u2012\u2013\u2014\u2015\u2212\ufe58\ufe63\u3002\uff61"
_MARKS = "".join(chr(c) for c in range(0x300, 0x10000) if unicodedata.category(chr(c)) == "Mn")


def _unread() -> tuple[re.Pattern, re.Pattern]:
    """The characters a reader reads as others: NFKC changes them, or a digit of another script. Built once."""
    codes = {code for lo, hi in _COMPATIBILITY_BLOCKS for code in range(lo, hi)
             if unicodedata.normalize("NFKC", chr(code)) != chr(code) or chr(code).isdecimal() and code > 0x7F}
    codes |= {code for code in range(0x80, 0x10000) if _INVISIBLE.match(chr(code))}
    codes |= {ord(c) for c in _AS_CHARS}
    codes |= {*range(0xE0000, 0xE0080)}  # tags, and the invisible ones among them
    # One class each (far faster than alternatives), the astral one apart: its ranges are tried one by one.
    return re.compile(_class_of(sorted(c for c in codes if c < 0x10000))), \
        re.compile(_class_of(sorted(c for c in codes if c >= 0x10000)))


_UNREAD, _UNREAD_ASTRAL = _unread()
_MARK_AFTER_ASCII = re.compile(f"(?<=[0-9A-Za-z])[{re.escape(_MARKS)}]+")
# Each opens with its literal, so a text without one is scanned fast.
_PERCENT = re.compile(r"%[0-9A-Fa-f]{2}(?:%[0-9A-Fa-f]{2})*")
_REFERENCE = re.compile(r"&(?:#[0-9]{1,7};?|#[xX][0-9A-Fa-f]{1,6};?|[A-Za-z][A-Za-z0-9]{1,31};)")

# The at/dot spellings of an e-mail address.
# Where an address may be spelled out (a bare "dot" or a bracketed at/dot): looked for around these only.
_MARKER = re.compile(r"\s[dD][oO][tT]\s|[\[({<]\s*(?:[aA][tT]|[dD][oO][tT]|@|\.)\s*[\])}>]|\s@|@\s"
                     r"|[._+]\w+\s[aA][tT]\s")  # "jane.doe at acme.com"
ADDRESS_REACH = 320  # characters an address may take either side of a marker (a 64-character local part, labels)
_BRACKET_AT = r"\s*[\[({<]\s*(?:at|@)\s*[\])}>]\s*"
_BRACKET_DOT = r"\s*[\[({<]\s*(?:dot|\.)\s*[\])}>]\s*"
_LABEL = r"[^\W_](?:[\w-]{0,62}[^\W_])?"
_ADDRESS = re.compile(
    rf"(?i)(?<![\w.%+-])(?P<local>[^\W_][\w.+-]{{0,63}}(?:\s+dot\s+[\w+-]{{1,63}}){{0,3}})"
    rf"(?P<at>{_BRACKET_AT}|\s+at\s+|[ \t]*@[ \t]*)"
    rf"(?P<domain>{_LABEL}(?:(?:{_BRACKET_DOT}|\s+dot\s+|\.){_LABEL}){{1,8}})(?![\w-])")
_DOMAIN_DOT = re.compile(rf"(?i){_BRACKET_DOT}|\s+dot\s+|\.")
# Top-level domains a bare "dot" may end with: the common generic ones, and any two letters (a country's).
TOP_LEVEL = frozenset("com org net edu gov mil int info biz io co ai app dev me email mail online site tech cloud "
                      "xyz name pro mobi asia eu".split())
# A dotted word before a bare "at" that names a file, not a mailbox ("README.md at github.com").
_FILE_SUFFIXES = frozenset("md txt rst py js ts tsx jsx json yaml yml toml cfg ini conf html htm css csv tsv log sh "
                           "xml pdf png jpg jpeg gif svg zip gz tar tgz whl lock env sql ipynb go rs java kt c h cpp "
                           "rb php swift parquet avro orc git db sqlite bin exe dll so jar war tf tfvars hcl".split())
_LOCAL_DOT = re.compile(r"(?i)\s+dot\s+")
_VERSION = re.compile(r"(?i)v?\d|.*\.\d+(?:\.|$)")  # opens with a digit or v1, or has a part of digits only
# Words that prose puts before "at" ("look at", "good at", "arrive at"): never an address's local part.
_PROSE_BEFORE_AT = frozenset("""a am an and are arrive arrived arrives at be been being bad best better busy but by
    close do does did down during else even eat eating for from get go good great here him her hers home i in is it
    its just laugh laughed look looked looking looks me meet met more no not now of off on or our out point pointed
    right shot so stare stared staring stay stayed than that the them then there these they this those to up us
    very was we were what when where which who why work worked works working yell yes you your""".split())

# A card number's digit groups: one kind of separator (spaces, dashes or dots), three groups or more.
_DIGITS = re.compile(r"\d[\d \t./_\-]{13,}\d")  # fast: where a run of 13 digits and two separators may be
_DIGIT_RUN = re.compile(r"(?<![\w.,/-])(?:\d+(?:[ \t]{1,3}\d+){2,}|\d+(?: ?- ?\d+){2,}|\d+(?:\.\d+){2,}|"
                        r"\d+(?:/\d+){2,}|\d+(?:_\d+){2,})(?![\w/-]|[.,]\d)")
CARD_DIGITS = (13, 19)


@dataclass
class Normalised:
    """``text`` as the recognizers read it, and how its positions map to ``original``'s."""

    original: str
    text: str
    _starts: list[int] | None = field(default=None, repr=False)  # per character of text: where it starts in original
    _ends: list[int] | None = field(default=None, repr=False)  # and where it ends (None: text is original)

    @property
    def changed(self) -> bool:
        return self._starts is not None

    def span(self, start: int, end: int) -> tuple[int, int]:
        """The smallest span of ``original`` that covers ``text[start:end]``."""
        if self._starts is None or self._ends is None:
            return start, end
        if end <= start:
            position = self._starts[start] if start < len(self._starts) else len(self.original)
            return position, position
        return self._starts[start], self._ends[end - 1]

    def _apply(self, edits: list[Edit]) -> None:
        """Apply ``edits`` (in text's positions, in order, not overlapping), keeping the map."""
        if not edits:
            return
        if self._starts is None or self._ends is None:
            self._starts, self._ends = list(range(len(self.text))), list(range(1, len(self.text) + 1))
        starts, ends, text = self._starts, self._ends, self.text
        parts: list[str] = []
        new_starts: list[int] = []
        new_ends: list[int] = []
        last, pending = 0, None  # pending: where text dropped before any kept character begins
        for start, end, replacement in [*edits, (len(text), len(text), "")]:
            if last < start:
                parts.append(text[last:start])
                new_starts += starts[last:start]
                new_ends += ends[last:start]
                if pending is not None:
                    new_starts[last - start], pending = pending, None
            if replacement:
                parts.append(replacement)
                new_starts += [starts[start] if pending is None else pending] * len(replacement)
                new_ends += [ends[end - 1]] * len(replacement)
                pending = None
            elif start < end and new_ends:
                new_ends[-1] = ends[end - 1]  # a dropped character belongs to the one before it
            elif start < end and pending is None:
                pending = starts[start]
            last = end
        self.text, self._starts, self._ends = "".join(parts), new_starts, new_ends


def normalise(text: str) -> Normalised:
    """``text`` with its obfuscations undone (see the module's docstring), and the map back."""
    out = Normalised(text, text)
    if not text.isascii():
        out._apply(list(_compatibility_edits(out.text)))
        out._apply([(m.start(), m.end(), "") for m in _MARK_AFTER_ASCII.finditer(out.text)])
    for _ in range(3):  # encoded twice (%2540) is still read: up to three layers
        if "%" not in out.text and "&" not in out.text:
            break
        before = out.text
        out._apply(list(_decoding_edits(out.text)))
        if not out.text.isascii():
            out._apply(list(_compatibility_edits(out.text)))
        if out.text == before:
            break
    out._apply(list(_address_edits(out.text)))
    out._apply(list(_card_edits(out.text)))
    if out.text == text:
        return Normalised(text, text)
    return out


def plain(text: str) -> bool:
    """Whether ``normalise`` leaves ``text`` as it is (True is certain; False may be wrong), cheaply, for short
    values."""
    return text.isascii() and "%" not in text and "&" not in text and not _MARKER.search(text) \
        and not _DIGITS.search(text)


def _compatibility_edits(text: str) -> list[Edit]:
    matches = list(_UNREAD.finditer(text))
    if max(text) > "\uffff":
        matches = sorted(matches + list(_UNREAD_ASTRAL.finditer(text)), key=lambda m: m.start())
    return [(m.start(), m.end(), read) for m in matches if (read := _read(m.group())) != m.group()]


@functools.lru_cache(maxsize=4096)
def _read(char: str) -> str:
    """One character as a reader reads it."""
    read = unicodedata.normalize("NFKC", char)
    if any(c.isdecimal() and not c.isascii() for c in read):  # NFKC keeps other scripts' digits
        read = "".join(str(unicodedata.decimal(c)) if c.isdecimal() else c for c in read)
    read = _TAG.sub(lambda tag: chr(ord(tag.group()) - 0xE0000), read)
    return _INVISIBLE.sub("", read).translate(_AS)


def _decoding_edits(text: str) -> list[Edit]:
    edits: list[Edit] = []
    if "%" in text:
        for match in _PERCENT.finditer(text):
            edits += _percent_edits(match.start(), bytes.fromhex(match.group().replace("%", "")))
    if "&" in text:
        for match in _REFERENCE.finditer(text):
            decoded = html.unescape(match.group())
            if decoded != match.group():
                edits.append((match.start(), match.end(), decoded))
    return sorted(edits)  # the two kinds never overlap: a reference holds no "%", a percent escape no "&"


def _percent_edits(start: int, data: bytes) -> Iterable[Edit]:
    """Percent-encoded bytes at ``start`` as UTF-8, character by character; bytes that are no UTF-8 stay encoded."""
    position = start
    while data:
        for size in (1, 2, 3, 4):
            try:
                char = data[:size].decode("utf-8")
            except UnicodeDecodeError:
                continue
            yield position, position + 3 * size, char
            break
        else:
            size = 1  # not UTF-8: left as written
        data = data[size:]
        position += 3 * size


def _address_edits(text: str) -> Iterable[Edit]:
    reaches: list[list[int]] = []
    for marker in _MARKER.finditer(text):
        start, end = max(0, marker.start() - ADDRESS_REACH), min(len(text), marker.end() + ADDRESS_REACH)
        if reaches and start <= reaches[-1][1]:
            reaches[-1][1] = end
        else:
            reaches.append([start, end])
    for start, end in reaches:
        yield from _addresses(text, start, end)


def _addresses(text: str, start: int, end: int) -> Iterable[Edit]:
    for match in _ADDRESS.finditer(text, start, end):
        at, domain = match.group("at"), match.group("domain")
        dots = list(_DOMAIN_DOT.finditer(domain))
        bare_at = at.strip().lower() == "at" or (at.strip() == "@" and at != "@")  # "jane @ acme.com": as bare
        bare_dots = [d for d in dots if d.group().strip().lower() == "dot"]
        if at == "@" and all(d.group() == "." for d in dots):
            continue  # a plain address
        if bare_at or bare_dots:
            top = domain[dots[-1].end():].lower()
            if not (top in TOP_LEVEL or (len(top) == 2 and top.isascii() and top.isalpha())):
                continue
            if at.strip().lower() == "at" and not _spelled_local(match.group("local"), bool(bare_dots)):
                continue
        for dot in _LOCAL_DOT.finditer(match.group("local")):
            yield match.start("local") + dot.start(), match.start("local") + dot.end(), "."
        yield match.start("at"), match.end("at"), "@"
        offset = match.start("domain")
        for dot in dots:
            if dot.group() != ".":
                yield offset + dot.start(), offset + dot.end(), "."


def _spelled_local(local: str, bare_dots: bool) -> bool:
    """Whether the words before a bare "at" are a mailbox: not a word prose puts there ("look at"); with no bare
    "dot" in the domain, one that reads as a mailbox and no file name (``jane.doe``, ``j_doe``, ``jane+x``)."""
    last = _LOCAL_DOT.split(local)[-1].lower()
    if last in _PROSE_BEFORE_AT:
        return False
    if bare_dots or _LOCAL_DOT.search(local):
        return True
    if not re.search(r"[._+]", last) or last.rsplit(".", 1)[-1] in _FILE_SUFFIXES:
        return False
    return not _VERSION.match(last)  # "3.12 at python.org", "v1.2 at example.com": a release, not a mailbox


_GROUP = re.compile(r"\d+")
_CARD_FIRST = "23456"  # the major industry digits of payment cards


def _card_edits(text: str) -> Iterable[Edit]:
    low, high = CARD_DIGITS
    for candidate in _DIGITS.finditer(text):
        # two characters past the candidate, so that the run's look-ahead sees what follows it
        for match in _DIGIT_RUN.finditer(text, candidate.start(), min(len(text), candidate.end() + 2)):
            digits = "".join(c for c in match.group() if c.isdigit())
            if low <= len(digits) <= high and luhn(digits):
                yield match.start(), match.end(), digits
            else:  # a card among other numbers ("ref 1001 4000 0000 0000 0002"): its groups, a run within the run
                yield from _card_within(match)


def _card_within(run: re.Match) -> Iterable[Edit]:
    """Runs of whole groups inside ``run`` that read as a card number (13-19 digits in groups of three or more, a
    card's first digit, Luhn), left to right, none overlapping. Small numbers in a row ("1 2 3 ...") are no card."""
    low, high = CARD_DIGITS
    groups = list(_GROUP.finditer(run.group()))
    i = 0
    while i < len(groups):
        found = None
        if groups[i].group()[0] in _CARD_FIRST:
            digits = ""
            for j in range(i, len(groups)):
                digits += groups[j].group()
                if len(digits) > high or len(groups[j].group()) < 3:
                    break
                if len(digits) >= low and j > i and luhn(digits):
                    found = j, digits
        if found is None:
            i += 1
            continue
        j, digits = found
        yield run.start() + groups[i].start(), run.start() + groups[j].end(), digits
        i = j + 1


def luhn(digits: str) -> bool:
    """Whether ``digits`` (ASCII) pass the Luhn check card numbers carry."""
    total = 0
    for i, c in enumerate(reversed(digits)):
        d = ord(c) - 48
        if i % 2:
            d = d * 2 - 9 if d > 4 else d * 2
        total += d
    return total % 10 == 0


def spans_back(reading: Normalised, spans: Iterable[Span]) -> list[Span]:
    """``spans`` found in ``reading.text``, as spans of ``reading.original`` (each covering what it was read from)."""
    if not reading.changed:
        return list(spans)
    return [(entity, *reading.span(start, end), score) for entity, start, end, score in spans]


def analysed(text: str, analyse: Callable[[str], list[Span]], reading: Normalised | None = None) -> list[Span]:
    """What ``analyse`` finds in ``text`` as written and, where normalising changes it, as read (``reading``, if
    already made): spans of ``text``. Both, so that undoing an obfuscation never hides what the text as written
    shows."""
    found = analyse(text)
    reading = reading or normalise(text)
    if reading.changed:
        found += spans_back(reading, analyse(reading.text))
    return found
