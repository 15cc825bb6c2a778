"""Server-sent event streams screened as they pass, never buffered whole.

``StreamScreen`` is composed onto ``flow.response.stream`` after masking, so it reads what the client will read. It
cuts the bytes into events (chunks arrive cut anywhere), asks the API's adapter which fields continue a running
text (a choice's content, a tool call's arguments: ``addons/masking/payloads``), and feeds each delta to its
``RunningText``, which holds back only the tail that may still become a match: a pattern split across deltas is
found whole. Every other string of the event, every key and every SSE field is searched as a whole value (JSON
inside one too, ``documents.screen_value``). Events are written again from what was searched (never the
upstream's bytes, which may say more than their parse). Text held back goes out in the next delta of its channel,
or in a flush event when the channel ends (``event_fields.alone``), at ``[DONE]`` and at the end of the stream.

A block ends the stream: what was screened before it goes out, then one error event in the provider's shape
(``error_event``), and nothing after it; held text is dropped. ``before`` and ``after`` keep what reached the
screen and what it passed on (bounded), for the record.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from addons.bodies.sse import EventSplitter, parse_event, render_event
from addons.flow.errors import AnswerBlocked
from addons.masking.event_fields import SSE_FIELDS, Hole, alone
from addons.masking.payloads import Adapter, StreamSlot
from addons.masking.stream import read_data
from addons.screening.documents import screen_value
from addons.screening.patterns import RunningText
from addons.screening.screen import Screen

log = logging.getLogger("warden.answers")
MAX_EVENT = 16 * 1024 * 1024  # bytes one unfinished event may hold: past it the stream is cut off
CLEAN_KEPT = 512  # short values found clean that a stream remembers (keys, ids, the model: in every event)
CLEAN_LENGTH = 256


def error_event(adapter: str, error: AnswerBlocked) -> bytes:
    """The event that ends a blocked stream, in the shape the provider's SDK raises as an error: OpenAI chat's
    ``data: {"error": ...}``, Responses' and Anthropic's ``event: error``; any other stream ``event: error``."""
    body = error.body()["error"]
    if adapter == "openai-chat":
        return render_event([], json.dumps({"error": {**body, "code": error.type, "param": None}}))
    if adapter == "openai-responses":
        data = {"type": "error", "code": error.type, "message": error.message, "param": None, "error": body}
        return render_event([("event", "error")], json.dumps(data))
    if adapter == "anthropic-messages":
        return render_event([("event", "error")], json.dumps({"type": "error", "error": body}))
    return render_event([("event", "error")], json.dumps({"error": body}))


def _rebuild(node: Any, text: Callable[[Any], Any]) -> Any:
    """A copy of ``node`` with ``text`` applied to every string, hole and key, in document order."""
    if isinstance(node, str | Hole):
        return text(node)
    if isinstance(node, list):
        return [_rebuild(item, text) for item in node]
    if isinstance(node, dict):
        out: dict = {}
        for name, value in node.items():
            new = text(name)
            while new in out:  # two keys masked alike: both kept
                new = f"{new}_"
            out[new] = _rebuild(value, text)
        return out
    return node


def _fill(node: Any, released: dict[int, str]) -> Any:
    """``node`` with each hole replaced by the text its channel released."""
    if isinstance(node, Hole):
        return released[id(node)]
    if isinstance(node, list):
        return [_fill(item, released) for item in node]
    if isinstance(node, dict):
        return {name: _fill(value, released) for name, value in node.items()}
    return node


@dataclass
class StreamScreen:
    """The ``flow.response.stream`` callable that screens one SSE answer."""

    adapter: Adapter
    screen: Screen
    capture_limit: int = 16 * 1024 * 1024
    before: bytearray = field(default_factory=bytearray)  # what reached the screen
    after: bytearray = field(default_factory=bytearray)  # what it passed on
    failure: str | None = None  # set when screening failed: nothing more goes out, the flow is cut
    ended: bool = False
    _events: EventSplitter = field(default_factory=lambda: EventSplitter(limit=MAX_EVENT))
    _channels: dict[tuple, RunningText] = field(default_factory=dict)
    _clean: set[str] = field(default_factory=set)  # short whole values the patterns in force found nothing in
    _clean_for: object = None  # the patterns they were searched with

    def __call__(self, data: bytes) -> list[bytes]:
        if self.ended:
            return []
        try:
            out = self._pass(data)
        except Exception as e:  # fail closed: stop the stream rather than pass what was not screened
            self.failure, self.ended = f"{type(e).__name__}: {e}", True
            log.error("warden: screening a stream failed, it is cut off: %s", self.failure, exc_info=e)
            return []
        self._keep(self.after, out)
        return [out] if out else []  # never b"": an empty chunk would end an HTTP/1.1 body early

    def _keep(self, into: bytearray, data: bytes) -> None:
        if len(into) < self.capture_limit:
            into += data[: self.capture_limit - len(into)]

    @property
    def blocked(self) -> bool:
        return self.screen.blocked is not None

    def _pass(self, data: bytes) -> bytes:
        self._keep(self.before, data)
        out: list[bytes] = []
        self.screen.refresh()  # masking has already read this chunk: what it found counts now
        events = self._events.feed(data) if not self.blocked else []
        if data == b"" and not self.blocked:  # the end of the stream
            if rest := self._events.finish():
                events.append(rest)
        for raw in events:
            self._event(raw, out)
            if self.blocked:
                break
        if data == b"" and not self.blocked:
            self._flush(lambda channel: True, out)
        if self.blocked:
            self.ended = True
            out.append(error_event(self.adapter.name, self.screen.error()))
        return b"".join(out)

    # -- one event ------------------------------------------------------------------------------------

    def _event(self, raw: bytes, out: list[bytes]) -> None:
        fields, data = parse_event(raw)
        if data is not None and data.strip() == "[DONE]":
            self._flush(lambda channel: True, out)
        document, is_json, parsed = read_data(self.adapter, data)

        def closing(channel: tuple) -> bool:
            return any(channel[: len(prefix)] == prefix for prefix in parsed.closes)

        in_event = {slot.channel for slot in parsed.deltas}
        self._flush(lambda channel: closing(channel) and channel not in in_event, out)
        if self.blocked:
            return
        for slot in parsed.deltas:
            slot.set(Hole(slot))
        released: dict[int, str] = {}
        holes: list[Hole] = []

        def text(leaf: Any) -> Any:
            if self.blocked:
                return leaf
            if isinstance(leaf, Hole):
                holes.append(leaf)
                released[id(leaf)] = self._delta(leaf.slot, closing(leaf.slot.channel))
                return leaf
            return self._whole(leaf)

        new_fields = [(name, text(value) if value else value) for name, value in fields if name in SSE_FIELDS]
        screened = _rebuild(document, text)
        if self.blocked:
            return
        template = ([(name, value) for name, value in new_fields if name == "event"], screened)
        for hole in holes:
            self._channel(hole.slot).template = (*template, hole)
        body = _fill(screened, released)
        out.append(render_event(new_fields, json.dumps(body, ensure_ascii=False) if is_json else body))

    def _whole(self, value: str) -> str:
        """A whole value screened; the short ones found clean are remembered (the same keys and ids come in every
        event) while the same patterns are in force."""
        if self._clean_for is not self.screen.patterns:
            self._clean, self._clean_for = set(), self.screen.patterns
        if value in self._clean:
            return value
        masked_before = sum(self.screen.masked.values())
        screened = screen_value(value, self.screen)
        if screened == value and len(value) <= CLEAN_LENGTH and len(self._clean) < CLEAN_KEPT and \
                not self.blocked and sum(self.screen.masked.values()) == masked_before:
            self._clean.add(value)
        return screened

    def _delta(self, slot: StreamSlot, final: bool) -> str:
        released, found, count = self._channel(slot).feed(slot.text, self.screen.patterns, final)
        self.screen.hit(found.hits, count)
        return released

    def _channel(self, slot: StreamSlot) -> RunningText:
        channel = self._channels.get(slot.channel)
        if channel is None:
            channel = self._channels[slot.channel] = RunningText(json_fragment=slot.json_fragment)
        return channel

    def _flush(self, selected: Callable[[tuple], bool], out: list[bytes]) -> None:
        """Release what the selected channels hold, each in an event that carries only the released text."""
        for key, channel in list(self._channels.items()):
            if self.blocked:
                return
            if not selected(key) or not channel.held or channel.template is None:
                continue
            released, found, count = channel.feed("", self.screen.patterns, final=True)
            if self.screen.hit(found.hits, count) or not released:
                continue
            fields, document, hole = channel.template
            out.append(render_event(fields, json.dumps(alone(document, hole, released), ensure_ascii=False)))
