"""Server-sent event streams, masked and restored event by event without buffering the stream.

``StreamRewriter`` is the callable set on ``flow.response.stream``. It cuts the bytes into events
(chunks arrive cut anywhere, even inside an event), asks the API's adapter which fields of each
event continue a running text (a *channel*: a choice's content or reasoning, a block's text, a tool
call's arguments), and passes each delta through that channel's ``Channel``, which holds back only
the tail that could still grow into a pseudonym (``<PERSON_`` ...) or a pattern entity (a word in
progress, a run of digit groups, a PEM block), masks what it releases and restores pseudonyms in
it. Every other string of the event (a tool's name, an error's message, a field the provider adds,
a comment, a ``data:`` that is not JSON) arrives whole in that event and is scanned as a whole value;
structural values (ids, enums, model names: ``event_fields``) pass as sent. Events that end a
channel, ``[DONE]`` and the end of the stream release what was held, in a flush event that carries
only the released text (``event_fields.alone``). Every event is produced twice, from what was
scanned (never the upstream's bytes: they may say more than their parse, with a duplicate key):
for the client (pseudonyms restored) and for the record (masked, pseudonyms left in).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from addons.bodies.sse import EventSplitter, Fields, parse_event, render_event
from addons.masking.event_fields import Hole, alone, rebuild, rebuild_fields, structural
from addons.masking.operators import Applied, Masker, Span
from addons.masking.payloads import Adapter, StreamEvent, StreamSlot
from addons.masking.pseudonyms import Vault, partial_token_start

log = logging.getLogger("warden.pii")
Scanner = Callable[[str], list[Span]]  # pattern entities in a text

MAX_NUMERIC_TAIL = 64  # characters: longer than any card number, IBAN or phone number with its separators
MAX_HELD = 16384  # characters a channel may hold (an unterminated PEM block) before it must release
_PEM_BEGIN = re.compile(r"-----BEGIN")
_PEM_PARTIAL = re.compile(r"-{1,5}(?:B(?:E(?:G(?:I)?)?)?)?$")  # what may become "-----BEGIN"
_PEM_END = re.compile(r"-----END [A-Z0-9 ]*-----")


def _numeric_ish(token: str) -> bool:
    """A token that may be one group of a card, phone, IBAN or SSN written with spaces."""
    return any(c.isdigit() for c in token) or (len(token) <= 4 and token.isalnum() and token.isupper()) or \
        token in ("(", "+", "-")


_WORD = re.compile(r"\S+")
_AT_WORD = re.compile(r"(?i)[\[({<]?(?:at|@)[\])}>]?")  # "at", "(at)", "[@]": an address spelled out may follow
_AT_BEGUN = re.compile(r"(?i)[\[({<]|[\[({<]?at?")  # what may still become one
_LOCAL = re.compile(r"[^\W_](?:[\w.+-]*[\w+-])?")  # a word an address's mailbox may be (none ends with a dot)
SPELLED_WORDS = 14  # words an address spelled with at/dot may take (jane dot m dot doe (at) mail (dot) acme (dot) com)
_DOT_WORD = re.compile(r"(?i)dot")
_DOT_BEGUN = re.compile(r"(?i)d(?:ot?)?")  # what may still become a bare "dot"


def _mailbox_start(words: list[re.Match[str]], last: int) -> int:
    """The index of the first word of a mailbox that ends at ``words[last]``, bare dots included (``jane dot doe``)."""
    i = last
    if i > 0 and _DOT_WORD.fullmatch(words[i].group()):
        i -= 1
    while i >= 2 and _DOT_WORD.fullmatch(words[i - 1].group()) and _LOCAL.fullmatch(words[i - 2].group()):
        i -= 2
    return i


def _spelled_address(text: str) -> int | None:
    """Where an e-mail address spelled with at/dot words (``jane (at) acme (dot) com``, ``jane dot doe at gmail dot
    com``) may be starting in the tail of ``text``: the mailbox before the first ``at`` of the last ``SPELLED_WORDS``
    words (normalise.py reads it); else the mailbox a word still arriving (``a``, ``(a``, ``d``, ``do``) or a word a
    delta just ended with may be part of."""
    offset = max(0, len(text) - 64 * SPELLED_WORDS)
    words = list(_WORD.finditer(text, offset))[-SPELLED_WORDS:]
    if any("@" in word.group()[1:-1] for word in words):
        return None  # an address written plainly: the word in progress covers it
    for k in range(1, len(words)):
        if _AT_WORD.fullmatch(words[k].group()):
            return words[_mailbox_start(words, k - 1)].start()
    if not words:
        return None
    last = len(words) - 1
    if words[last].end() == len(text):  # a word still arriving
        if last > 0 and (_AT_BEGUN.fullmatch(words[last].group()) or _DOT_BEGUN.fullmatch(words[last].group())):
            return words[_mailbox_start(words, last - 1)].start()  # it may become an "at" or a "dot"
        first = _mailbox_start(words, last)
        return words[first].start() if first < last else None  # it may end a mailbox spelled with dots
    if _LOCAL.fullmatch(words[last].group()):
        return words[_mailbox_start(words, last)].start()  # a word a delta ended with: an "at" may follow
    return None


def hold_from(text: str) -> int:
    """Where the tail that could still grow into an entity starts (``len(text)``: nothing to hold)."""
    spelled = _spelled_address(text)
    if spelled is not None:
        return min(spelled, _hold_from(text[:spelled]))
    return _hold_from(text)


def _hold_from(text: str) -> int:
    end = len(text)
    start = end
    # the word in progress: any word may turn out to be an e-mail address, a key or a pseudonym
    while start > 0 and not text[start - 1].isspace():
        start -= 1
    last_word = text[start:end]
    if last_word and not _numeric_ish(last_word) and start < end:
        return start
    # a run of digit groups (4111 1111 ...) may continue after a space
    position = start
    while position > 0 and end - position < MAX_NUMERIC_TAIL:
        space = position
        while space > 0 and text[space - 1] == " ":
            space -= 1
        word_start = space
        while word_start > 0 and not text[word_start - 1].isspace():
            word_start -= 1
        word = text[word_start:space]
        if not word or not _numeric_ish(word) or end - word_start > MAX_NUMERIC_TAIL:
            break
        position = word_start
    return min(start, position)


def read_data(adapter: Adapter, data: str | None) -> tuple[Any, bool, StreamEvent]:
    """An SSE event's data, parsed if it is JSON; whether it is; what ``adapter`` reads in it."""
    if data is None:
        return None, False, StreamEvent()
    try:
        document = json.loads(data)
    except ValueError:
        return data, False, StreamEvent()  # plain text: one whole value
    return document, True, adapter.stream(document)


@dataclass
class Channel:
    """One running text of a stream (a choice's content, a block's text, a tool call's arguments)."""

    escape: Callable[[str], str] | None = None
    held: str = ""
    template: tuple[Fields, Any, Hole] | None = None  # the last delta event and its hole, for the flush

    def feed(self, text: str, masker: Masker | None, scanner: Scanner | None, vault: Vault,
             final: bool = False) -> tuple[str, str, list[Applied]]:
        """(record text, client text, what was masked) for what can be released now."""
        buffer = self.held + text
        spans = scanner(buffer) if scanner is not None and masker is not None else []
        if final:
            cut = len(buffer)
        else:
            cut = self._cut(buffer, spans, masking=masker is not None and scanner is not None)
        released, self.held = buffer[:cut], buffer[cut:]
        if masker is not None:
            masked, applied = masker.apply(released, [s for s in spans if s[2] <= cut], self.escape)
        else:
            masked, applied = released, []
        return masked, vault.restore(masked, self.escape), applied

    @staticmethod
    def _cut(buffer: str, spans: list[Span], masking: bool) -> int:
        partial = partial_token_start(buffer)
        cut = len(buffer) if partial is None else partial
        if masking:
            cut = min(cut, hold_from(buffer))
            pem = _unfinished_pem(buffer)
            if pem is not None:
                cut = min(cut, pem)
            crossing = True
            while crossing:  # never cut through an entity, even one that an earlier move made cross
                crossing = False
                for _, start, end, _ in spans:
                    if start < cut < end:
                        cut, crossing = start, True
        if len(buffer) - cut > MAX_HELD:
            cut = len(buffer) - MAX_HELD
        return cut


def _unfinished_pem(text: str) -> int | None:
    """Where a PEM block (a private key) starts that has not ended yet, or what may become its start."""
    for begin in _PEM_BEGIN.finditer(text):
        if not _PEM_END.search(text, begin.end()):
            return begin.start()
    partial = _PEM_PARTIAL.search(text)
    return partial.start() if partial else None


def _json_escape(value: str) -> str:
    return json.dumps(value, ensure_ascii=False)[1:-1]


def _escape_for(value: str) -> Callable[[str], str] | None:
    """JSON text held in a string (a tool call's whole arguments): what lands in it is JSON-escaped."""
    if value.lstrip()[:1] not in ("{", "["):
        return None
    try:
        return _json_escape if isinstance(json.loads(value), dict | list) else None
    except ValueError:
        return None


MAX_EVENT = 16 * 1024 * 1024  # bytes one unfinished event may hold: past it the stream is cut off


@dataclass
class StreamRewriter:
    """The ``flow.response.stream`` callable for one SSE response."""

    adapter: Adapter
    vault: Vault
    masker: Masker | None  # None: restore pseudonyms only
    scanner: Scanner | None
    record: bytearray = field(default_factory=bytearray)  # the masked stream, for the recorder
    original: bytearray = field(default_factory=bytearray)  # the stream as the upstream sent it
    applied: list[Applied] = field(default_factory=list)
    capture_limit: int = 16 * 1024 * 1024
    restored: bool = False  # the client's stream differs from the record's (pseudonyms were restored)
    error: str | None = None  # set when rewriting failed: nothing more goes out, the flow is killed
    _events: EventSplitter = field(default_factory=lambda: EventSplitter(limit=MAX_EVENT))
    _channels: dict[tuple, Channel] = field(default_factory=dict)

    def __call__(self, data: bytes) -> list[bytes]:
        if self.error is not None:
            return []
        try:
            return self._rewrite(data)
        except Exception as e:  # fail closed: stop the stream rather than pass text unmasked
            self.error = f"{type(e).__name__}: {e}"
            log.error("warden: rewriting a stream failed, it is cut off: %s", self.error, exc_info=e)
            return []

    def _rewrite(self, data: bytes) -> list[bytes]:
        if len(self.original) < self.capture_limit:
            self.original += data[: self.capture_limit - len(self.original)]
        client: list[bytes] = []
        for raw in self._events.feed(data):
            self._event(raw, client)
        if data == b"":  # the end of the stream
            if rest := self._events.finish():
                self._event(rest, client)
            self._flush(lambda channel: True, client)
        out = b"".join(client)
        return [out] if out else []  # never b"": an empty chunk would end an HTTP/1.1 body early

    # -- one event ------------------------------------------------------------------------------------

    def _emit(self, client: list[bytes], client_bytes: bytes, record_bytes: bytes) -> None:
        client.append(client_bytes)
        self.restored = self.restored or client_bytes != record_bytes
        if len(self.record) < self.capture_limit:
            self.record += record_bytes

    def _event(self, raw: bytes, client: list[bytes]) -> None:
        fields, data = parse_event(raw)
        if data is not None and data.strip() == "[DONE]":
            self._flush(lambda channel: True, client)
        document, is_json, parsed = read_data(self.adapter, data)

        def closing(channel: tuple) -> bool:
            return any(channel[: len(prefix)] == prefix for prefix in parsed.closes)

        in_event = {slot.channel for slot in parsed.deltas}
        self._flush(lambda channel: closing(channel) and channel not in in_event, client)
        for slot in parsed.deltas:
            slot.set(Hole(slot))
        leaves: list = []

        def collect(leaf: Any) -> Any:
            leaves.append(leaf)
            return leaf

        rebuild_fields(fields, collect)
        rebuild(document, collect)
        if sum(isinstance(leaf, Hole) for leaf in leaves) != len(parsed.deltas):
            raise RuntimeError(f"the {self.adapter.name} adapter read a delta outside its event")
        template_fields = [(name, value) for name, value in fields if name == "event" and structural(name, value)]
        record, shown = self._texts(leaves, closing, (template_fields, document))
        # Always rendered from what was scanned: raw bytes may say more than their parse (a duplicate key).
        record_event = self._render(fields, document, is_json, record)
        self._emit(client, record_event if shown == record else self._render(fields, document, is_json, shown),
                   record_event)

    def _texts(self, leaves: list, closing: Callable[[tuple], bool],
               template: tuple[Fields, Any]) -> tuple[list[str], list[str]]:
        """(record, client) texts of an event's deltas (through their channels) and whole values."""
        record, client = [], []
        for leaf in leaves:
            if isinstance(leaf, Hole):
                channel = self._channel(leaf.slot)
                channel.template = (*template, leaf)
                masked, restored, applied = channel.feed(leaf.slot.text, self.masker, self.scanner, self.vault,
                                                         final=closing(leaf.slot.channel))
            else:
                masked, restored, applied = Channel(escape=_escape_for(leaf)).feed(
                    leaf, self.masker, self.scanner, self.vault, final=True)
            self.applied += applied
            record.append(masked)
            client.append(restored)
        return record, client

    @staticmethod
    def _render(fields: Fields, document: Any, is_json: bool, texts: list[str]) -> bytes:
        """The event with ``texts`` in the order ``rebuild`` found its leaves: fields first, then the data."""
        given = iter(texts)

        def text(_: Any) -> str:
            return next(given)

        new_fields = rebuild_fields(fields, text)
        data = rebuild(document, text)
        if is_json:
            data = json.dumps(data, ensure_ascii=False)
        return render_event(new_fields, data)

    def _channel(self, slot: StreamSlot) -> Channel:
        channel = self._channels.get(slot.channel)
        if channel is None:
            channel = Channel(escape=_json_escape if slot.json_fragment else None)
            self._channels[slot.channel] = channel
        return channel

    def _flush(self, selected: Callable[[tuple], bool], client: list[bytes]) -> None:
        """Release what the selected channels hold, each in an event that carries only the released text."""
        for key, channel in list(self._channels.items()):
            if not selected(key) or not channel.held or channel.template is None:
                continue
            masked, restored, applied = channel.feed("", self.masker, self.scanner, self.vault, final=True)
            self.applied += applied
            fields, document, hole = channel.template
            record, shown = (render_event(fields, json.dumps(alone(document, hole, text), ensure_ascii=False))
                             for text in (masked, restored))
            self._emit(client, shown, record)
