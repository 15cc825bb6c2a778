"""The request beside its body: the query, the fragment, the path's segments and the headers, as texts to analyse.

``RequestParts.read`` takes a request target and its headers apart into ``Part``s, each a text as a server reads it:

- **query**: every parameter's name and value, percent-decoded (``+`` as a space, and also as itself: both readings
  are analysed), decoded again while escapes remain (``%2540`` is ``@``). All recognizers, NER included.
- **fragment** (a ``#`` in a target is not HTTP, but a server may read it): decoded, all recognizers.
- **path segments** (``;`` parameters included), decoded: pattern entities and secrets only (NER on an id is noise).
- **headers**: the value of every header but the structural ones (``STRUCTURAL_HEADERS``) and those the caller
  says should be skipped (the credential headers, which the credentials addon strips or passes); and every name,
  lower case. Pattern entities and secrets only.

Values no recognizer can flag (``inert``) and whole UUIDs are not analysed. In segments and headers, a bare run of
digits is an id, not a phone number. After masking, ``target`` renders the request target again: a part that was
masked is encoded anew, every other one stays as it came (each was analysed in every reading a server may make),
so order, repeated names and blank values are kept. Finding paths name the part as it left: ``query.email``,
``fragment``, ``path[2]``, ``header.x-note``. Nothing here holds a value once the flow is gone; nothing is logged.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import quote, quote_plus, unquote

from addons.flow.errors import PiiInHeader, PiiInPath, WardenError
from addons.flow.meta import Finding
from addons.masking.operators import Masker
from addons.masking.protocol import Span
from addons.rules.masking import Profile

PartKind = Literal["query", "fragment", "segment", "header"]

# Not analysed: framing and negotiation the HTTP layer and the gateway read and set (a grammar with no room for
# text, and a changed value breaks the exchange), the body's media type (a multipart boundary is a random token),
# the client's software (its version numbers read as IP addresses) and the providers' API versions and betas.
STRUCTURAL_HEADERS = frozenset({
    "host", "content-length", "content-type", "content-encoding", "transfer-encoding", "te", "trailer", "connection",
    "keep-alive", "upgrade", "expect", "accept", "accept-encoding", "accept-language", "accept-charset", "user-agent",
    "anthropic-version", "anthropic-beta", "openai-beta",
    "sec-websocket-key", "sec-websocket-version", "sec-websocket-extensions", "sec-websocket-protocol",
})
_UUID = re.compile(r"[0-9a-fA-F]{8}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{4}-?[0-9a-fA-F]{12}")
_ESCAPE = re.compile(r"%[0-9A-Fa-f]{2}")
_MAX_DECODINGS = 4  # escapes of escapes: a server decodes once; the analyzer reads what any decoding would show
_SEGMENT_SAFE = "!$&'()*+,;=:@-._~"  # RFC 3986 pchar, but the escapes themselves
_QUERY_SAFE = "!$'()*,;:@/?-._~"


def _decoded(raw: str, plus: bool) -> str:
    """``raw`` percent-decoded until no escape is left (at most a few times); ``plus``: ``+`` is a space first."""
    text = unquote(raw.replace("+", " ") if plus else raw, errors="replace")
    for _ in range(_MAX_DECODINGS - 1):
        if not _ESCAPE.search(text):
            break
        text = unquote(text, errors="replace")
    return text


def _readings(raw: str, plus: bool) -> tuple[str, ...]:
    """How servers may read ``raw``: decoded with ``+`` as a space, and, if it holds one, with ``+`` as itself (the
    same length: spans of one apply to the other)."""
    if not plus or "+" not in raw:
        return (_decoded(raw, plus),)
    spaced, literal = _decoded(raw, True), _decoded(raw, False)
    return (spaced, literal) if len(spaced) == len(literal) else (spaced,)


@dataclass
class Part:
    """One text of the request line or the headers: where it is, how it reads, and what masking made of it."""

    kind: PartKind
    index: int  # the query parameter's, the segment's or the header field's position
    name: bool  # a query parameter's or a header's name, not its value
    readings: tuple[str, ...]  # the text as analysed, then any other reading of the same length
    masked: str | None = None  # the text once masking changed it

    @property
    def text(self) -> str:
        return self.readings[0]

    @property
    def ner(self) -> bool:
        return self.kind in ("query", "fragment")


@dataclass
class _Param:
    name: str  # as sent
    value: str | None  # as sent; None without "="


class RequestParts:
    """A request's target and headers taken apart for analysis, and put together again once masked."""

    def __init__(self, segments: list[str], params: list[_Param], query: str | None, fragment: str | None,
                 headers: list[tuple[str, str]], parts: list[Part]) -> None:
        self._segments = segments
        self._params = params
        self._query = query  # as sent, when it is kept whole (nothing in it was masked)
        self._fragment = fragment
        self._headers = headers
        self.parts = parts

    @classmethod
    def read(cls, target: str, headers: Iterable[tuple[str, str]], skip_header: Callable[[str, str], bool],
             inert: Callable[[str], bool] = lambda _: False) -> RequestParts:
        """The parts of ``target`` (a request's path, query and fragment) and ``headers`` worth analysing: not
        those ``inert`` says no recognizer can flag, whole UUIDs, structural headers, or headers ``skip_header``
        (name, value) names."""
        rest, hash_, fragment = target.partition("#")
        path, question, query = rest.partition("?")
        segments = path.split("/")
        params = [_Param(*piece.split("=", 1)) if "=" in piece else _Param(piece, None)
                  for piece in query.split("&")] if question else []
        fields = list(headers)
        parts: list[Part] = []

        def add(kind: PartKind, index: int, name: bool, readings: tuple[str, ...]) -> None:
            text = readings[0]
            if text.strip() and not inert(text) and not _UUID.fullmatch(text):
                parts.append(Part(kind, index, name, readings))

        for i, segment in enumerate(segments[1:]):
            add("segment", i, False, (_decoded(segment, plus=False),))
        for i, param in enumerate(params):
            add("query", i, True, _readings(param.name, plus=True))
            if param.value is not None:
                add("query", i, False, _readings(param.value, plus=True))
        if hash_:
            add("fragment", 0, False, (_decoded(fragment, plus=False),))
        for i, (name, value) in enumerate(fields):
            add("header", i, True, (name.lower(),))
            if name.lower() not in STRUCTURAL_HEADERS and not skip_header(name, value):
                add("header", i, False, (value,))
        return cls(segments, params, query if question else None, fragment if hash_ else None, fields, parts)

    @property
    def texts(self) -> list[str]:
        """Every reading of every part, in order: what the analyzer is asked about."""
        return [text for part in self.parts for text in part.readings]

    @property
    def ner(self) -> list[bool]:
        """For each of ``texts``: whether NER runs on it (query and fragment), or only the pattern recognizers."""
        return [part.ner for part in self.parts for _ in part.readings]

    def spans(self, found: list[list[Span]], ner_entities: Iterable[str] = ()) -> list[list[Span]]:
        """The analyzer's answer for ``texts``, as spans per part: every reading's, joined. In the parts read by the
        pattern recognizers only, ``ner_entities`` are dropped, and so is a phone number that is a bare run of
        digits (an id)."""
        named = frozenset(ner_entities)
        out, at = [], 0
        for part in self.parts:
            spans = sorted({span for reading in found[at:at + len(part.readings)] for span in reading})
            at += len(part.readings)
            if not part.ner:
                spans = [s for s in spans if s[0] not in named and not _bare_digits(part.text, s)]
            out.append(spans)
        return out

    def where(self, part: Part) -> str:
        """The path a finding in ``part`` is recorded under: the part as it left (a masked name renames it)."""
        if part.kind == "segment":
            return f"path[{part.index}]"
        if part.kind == "fragment":
            return "fragment"
        name = self._name(part.kind, part.index)
        return f"{part.kind}.{name}"

    def _name(self, kind: PartKind, index: int) -> str:
        for part in self.parts:
            if part.kind == kind and part.index == index and part.name:
                return part.masked if part.masked is not None else part.text
        return _decoded(self._params[index].name, plus=True) if kind == "query" else self._headers[index][0].lower()

    def target(self, keep: Iterable[PartKind] = ()) -> str:
        """The request target again, with every masked part but those of the kinds in ``keep`` encoded anew."""
        kept = frozenset(keep)
        masked = {(p.kind, p.index, p.name): p.masked for p in self.parts
                  if p.masked is not None and p.kind not in kept}
        segments = [self._segments[0]] + [
            quote(masked[("segment", i, False)], safe=_SEGMENT_SAFE) if ("segment", i, False) in masked else segment
            for i, segment in enumerate(self._segments[1:])]
        target = "/".join(segments)
        if self._query is not None:
            target += "?" + self._rendered_query(masked)
        if self._fragment is not None:
            new = masked.get(("fragment", 0, False))
            target += "#" + (quote(new, safe=_QUERY_SAFE) if new is not None else self._fragment)
        return target

    def _rendered_query(self, masked: dict[tuple[PartKind, int, bool], str]) -> str:
        if not any(kind == "query" for kind, _, _ in masked):
            return self._query or ""
        pieces = []
        for i, param in enumerate(self._params):
            name, value = masked.get(("query", i, True)), masked.get(("query", i, False))
            piece = quote_plus(name, safe=_QUERY_SAFE) if name is not None else param.name
            if param.value is not None:
                piece += "=" + (quote_plus(value, safe=_QUERY_SAFE) if value is not None else param.value)
            pieces.append(piece)
        return "&".join(pieces)

    def headers(self, fields: list[tuple[str, str]] | None = None) -> list[tuple[str, str]]:
        """The header fields as read (or ``fields``, the same ones since changed elsewhere, appended to at most),
        with every masked name and value in place."""
        fields = list(self._headers if fields is None else fields)
        for part in self.parts:
            if part.kind == "header" and part.masked is not None:
                name, value = fields[part.index]
                fields[part.index] = (part.masked, value) if part.name else (name, part.masked)
        return fields


WITHHELD = "[withheld]"
_PLAIN_SEGMENT = re.compile(r"[A-Za-z0-9._~-]{0,80}")
_LONG_DIGITS = re.compile(r"\d{9,}")


def unread_target(target: str) -> str:
    """A request target masking never read, as a record may show it: no query, no fragment, and only the path
    segments that plainly carry no value (letters, digits, ``.``, ``_``, ``~``, ``-``; no run of nine digits or
    more); every other segment ``[withheld]``."""
    path = target.split("#", 1)[0].split("?", 1)[0]
    return "/".join(segment if _PLAIN_SEGMENT.fullmatch(segment) and not _LONG_DIGITS.search(segment) else WITHHELD
                    for segment in path.split("/"))


def unread_headers(pairs: Iterable[list[str]]) -> list[list[str]]:
    """Header ``[name, value]`` pairs masking never read, as a record may show them: structural values kept, every
    other value ``[withheld]`` (names kept)."""
    return [[name, value if name.lower() in STRUCTURAL_HEADERS else WITHHELD] for name, value in pairs]


def _bare_digits(text: str, span: Span) -> bool:
    entity, start, end, _ = span
    return entity == "PHONE_NUMBER" and text[start:end].isdigit()


@dataclass
class MaskedParts:
    """What masking found in a request's parts, and what the profile says of it. Never a value."""

    findings: list[Finding] = field(default_factory=list)
    refusal: WardenError | None = None  # the first part the profile refuses
    passed: list[str] = field(default_factory=list)  # segments passed unmasked by policy: where, and what entities


def mask_parts(parts: RequestParts, found: list[list[Span]], masker: Masker, profile: Profile,
               ner_entities: Iterable[str] = ()) -> MaskedParts:
    """Mask every part where ``found`` (the analyzer's answer for ``parts.texts``) has something the profile masks,
    setting ``Part.masked``. A segment with PII is refused, passed (its findings' operator ``pass``) or masked as the
    profile's ``path`` says; a header value refused or masked as its ``headers`` says; a header name is refused
    (no masked text is a valid name). Query values and the fragment are always masked."""
    out = MaskedParts()
    for part, spans in zip(parts.parts, parts.spans(found, ner_entities), strict=True):
        text, applied = masker.apply(part.text, spans) if spans else (part.text, [])
        if not applied:
            continue
        part.masked = text
        where, entities = parts.where(part), ", ".join(sorted({a.entity for a in applied}))
        operator = None
        if part.kind == "segment" and profile.path == "pass":
            operator = "pass"
            out.passed.append(f"{where} ({entities})")
        elif part.kind == "segment" and profile.path == "refuse":
            out.refusal = out.refusal or PiiInPath(
                f"path segment [{part.index}] carries {entities}; masking profile {profile.name!r} refuses a path "
                "that names personal data (path: refuse): send the value in the body, or ask an operator for a "
                "profile with path: mask or pass")
        elif part.kind == "header" and (part.name or profile.headers == "refuse"):
            why = "a header's name cannot be masked" if part.name else \
                f"masking profile {profile.name!r} refuses such headers (headers: refuse)"
            out.refusal = out.refusal or PiiInHeader(f"{where} carries {entities}; {why}: send the value in the body")
        out.findings += [Finding(a.entity, where, a.start, a.end, a.score, operator or a.operator) for a in applied]
    return out
