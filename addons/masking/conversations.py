"""Pseudonyms that stay the same for the whole of a conversation the provider keeps.

A chat resends its history every turn, so a flow's vault numbers the same value the same way each time. Where the
provider keeps the conversation instead (OpenAI Responses ``previous_response_id`` and ``conversation``, the
Conversations API, Assistants threads), a turn carries only what is new: numbered afresh, ``<PERSON_1>`` would name
someone else than in the turns the provider holds, and the answer would be restored to the wrong value.

So a request that names a conversation (``references``) opens the vault saved under that name and numbers on. Its
vault is merged into each conversation it names that the gateway keeps already, at once (``update``), so that a
turn sent meanwhile numbers on from it; an id the gateway does not keep yet is kept only once a 2xx answer confirms
it, with the ids the answer gives (``save``; ``answered``: a response's id and conversation, a thread's or a
conversation's id; ``IdWatcher`` finds them in a stream). Saving merges with what is kept (``merged_state``): a
mapping is never lost and a counter never goes back, so a late answer cannot hand a later turn a pseudonym already
given; two states that disagree (a pseudonym given two meanings) are never merged: the conversation is forgotten,
and its next turn numbers in a new series. An entry's key is the caller (the identity's ``sub``), the upstream host
and the id: another caller naming the same id opens nothing of the first one's.

Memory only, sealed, bounded: an entry is the vault's state (the caller's values), AES-GCM-encrypted by the
``Sealer`` the pii addon gives (the originals' primitive, under a key made at start and written nowhere) and bound
to its key, an HMAC of (sub, host, id) under a second such key, so neither values nor ids are kept in the clear.
An entry expires ``ttl`` seconds after the turn that saved it last; past ``limit`` entries or ``memory`` bytes (the
sealed states, and a little for each entry's keeping) the least recently used go first. One entry holds at most
``ENTRY_BYTES`` sealed: a conversation that outgrows it (thousands of values, or a flood of pseudonym-shaped text,
which is reserved) is forgotten, logged, and its next turn numbers in a new series.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import re
import secrets
import string
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Protocol

from cachetools import TTLCache

from addons.bodies.jsonlimits import parse_json
from addons.bodies.sse import EventSplitter, EventTooLong, parse_event
from addons.flow.errors import MalformedBody
from addons.masking.pseudonyms import Vault, merged_state

log = logging.getLogger("warden.pii")

SERIES_LETTERS = 6
# Ids in a path: a thread's messages and runs, a conversation's items, a stored response (``/threads/runs`` creates)
_PATH_IDS = (re.compile(r"/threads/([^/]+)"), re.compile(r"/conversations/([^/]+)"),
             re.compile(r"/responses/([^/]+)"))
_NOT_IDS = {"runs"}
_ANSWER_OBJECTS = {"response", "conversation", "thread"}  # an answer of these kinds names a conversation by its id
WATCHED_EVENTS = 16  # a stream names its response or thread in its first events
WATCHED_BYTES = 1 << 20
MEMORY = 64 << 20  # masking.conversation_memory's default
# About 2,500 values of a typical length: more than a conversation names, little enough that the default memory
# holds hundreds even of entries that large.
ENTRY_BYTES = 256 << 10
ENTRY_OVERHEAD = 256  # what the cache spends to keep one entry besides its sealed state: its name, links, timer


class Sealer(Protocol):
    """Authenticated encryption bound to a name (``OriginalsKey``)."""

    def encrypt(self, plaintext: bytes, bound_to: str, /) -> bytes: ...

    def decrypt(self, blob: bytes, bound_to: str, /) -> bytes: ...


@dataclass(frozen=True)
class Conversation:
    """Where a request stands: who asks (None: no identity, nothing is kept), which upstream, which ids it names."""

    sub: str | None
    host: str
    ids: tuple[str, ...] = ()


def _id(value: Any) -> str | None:
    if isinstance(value, dict):
        value = value.get("id")
    return value if isinstance(value, str) and value else None


def keeps_conversations(path: str) -> bool:
    """Whether answers to ``path`` may name a conversation later requests continue (Responses, threads)."""
    path = path.split("?", 1)[0]
    return any(part in path for part in ("/responses", "/threads", "/conversations"))


def references(path: str, document: Any) -> tuple[str, ...]:
    """The conversations a request continues: ids in its path (a thread, a conversation, a stored response) and,
    to the Responses API, its ``previous_response_id`` and ``conversation`` (an id, or an object with one)."""
    path = path.split("?", 1)[0].rstrip("/")
    ids = [m.group(1) for pattern in _PATH_IDS if (m := pattern.search(path)) and m.group(1) not in _NOT_IDS]
    if path.endswith("/responses") and isinstance(document, dict):
        ids += [i for i in (_id(document.get("previous_response_id")), _id(document.get("conversation"))) if i]
    return tuple(dict.fromkeys(ids))


def answered(document: Any) -> tuple[str, ...]:
    """The conversations an answer names: its id if it is a response, conversation or thread; the thread a run or
    message belongs to; the conversation a response is part of."""
    if not isinstance(document, dict):
        return ()
    ids = [_id(document.get("id")) if document.get("object") in _ANSWER_OBJECTS else None,
           _id(document.get("thread_id")), _id(document.get("conversation"))]
    return tuple(dict.fromkeys(i for i in ids if i))


def event_answered(data: str) -> tuple[str, ...]:
    """The conversations one streamed event names (``response.created``: its response; ``thread.created``)."""
    try:
        event = parse_json(data)
    except MalformedBody:
        return ()
    return tuple(dict.fromkeys(answered(event) + answered(event.get("response") if isinstance(event, dict) else None)))


class IdWatcher:
    """A stream stage that passes every byte on unchanged and hands ``found`` the ids the first events name."""

    def __init__(self, found: Callable[[tuple[str, ...]], None]) -> None:
        self._found = found
        self._splitter: EventSplitter | None = EventSplitter(limit=WATCHED_BYTES)
        self._events = 0

    def __call__(self, data: bytes) -> bytes:
        if self._splitter is not None:
            try:
                self._look(self._splitter.feed(data) if data else [self._splitter.finish()])
            except EventTooLong:
                self._splitter = None
        return data

    def _look(self, events: list[bytes]) -> None:
        for raw in events:
            self._events += 1
            data = parse_event(raw)[1]
            ids = event_answered(data) if data else ()
            if ids:
                self._found(ids)
            if ids or self._events >= WATCHED_EVENTS:
                self._splitter = None
                return


def new_series() -> str:
    return "".join(secrets.choice(string.ascii_uppercase) for _ in range(SERIES_LETTERS))


class Conversations:
    """The sealed vaults of the conversations providers keep, for ``ttl`` seconds after their last turn, at most
    ``limit`` of them and ``memory`` bytes."""

    def __init__(self, sealer: Sealer, ttl: float, limit: int, timer: Callable[[], float] = time.monotonic, *,
                 memory: int = MEMORY) -> None:
        self.ttl, self.limit, self.memory = ttl, limit, memory
        self.entry_bytes = min(ENTRY_BYTES, memory)
        self._sealer = sealer
        self._names = os.urandom(32)  # the HMAC key of entry names: made here, kept nowhere else
        self._sealed: TTLCache[bytes, bytes] = TTLCache(memory, ttl, timer, getsizeof=_size)

    def __len__(self) -> int:
        return len(self._sealed)

    def __repr__(self) -> str:  # never show names or values
        return f"Conversations({len(self)} kept, {self._sealed.currsize} bytes, ttl {self.ttl:g}s)"

    def _name(self, conversation: Conversation, conversation_id: str) -> bytes:
        parts = json.dumps([conversation.sub, conversation.host, conversation_id]).encode()
        return hmac.new(self._names, parts, hashlib.sha256).digest()

    def open(self, conversation: Conversation, texts: Iterable[str]) -> Vault:
        """The vault for a request (``texts``: its strings, whose pseudonym-shaped words are reserved): the saved one
        of the first conversation it names that is known, numbering on; a new one if it names none; one in a new
        series if none it names is known."""
        texts = list(texts)
        if not conversation.ids:
            return Vault(texts)
        for conversation_id in conversation.ids if conversation.sub is not None else ():
            state = self._state(self._name(conversation, conversation_id))
            if state is not None:
                vault = Vault.from_state(state)
                vault.reserve(texts)
                return vault
        return Vault(texts, series=new_series())

    def _state(self, name: bytes) -> dict[str, Any] | None:
        sealed = self._sealed.get(name)
        if sealed is None:
            return None
        try:
            return json.loads(self._sealer.decrypt(sealed, name.hex()))
        except ValueError:  # cannot happen but for a bug; a new series is safe, a wrong vault would not be
            log.warning("a conversation's pseudonyms did not unseal; it numbers in a new series")
            return None

    def update(self, conversation: Conversation, vault: Vault) -> tuple[str, ...]:
        """At a request: ``vault`` merged into each conversation the request names that is kept already, so that a
        turn sent meanwhile numbers on from it. The ids it names that are not kept: ``save`` them once the upstream
        confirms them."""
        if conversation.sub is None:
            return ()
        state, unknown = vault.state(), []
        for conversation_id in conversation.ids:
            name = self._name(conversation, conversation_id)
            if name in self._sealed:
                self._merge(name, state)
            else:
                unknown.append(conversation_id)
        return tuple(unknown)

    def save(self, conversation: Conversation, vault: Vault, ids: Iterable[str] = ()) -> None:
        """Keep ``vault`` under the conversations the request named and ``ids`` (those its answer gave), merged with
        what each holds already, for ``ttl`` seconds from now. Nothing is kept for a caller without an identity."""
        if conversation.sub is None:
            return
        state = vault.state()
        for conversation_id in dict.fromkeys((*conversation.ids, *ids)):
            self._merge(self._name(conversation, conversation_id), state)

    def _merge(self, name: bytes, state: dict[str, Any]) -> None:
        if name in self._sealed:
            kept = self._state(name)
            merged = merged_state(kept, state) if kept is not None else None
            if merged is None:
                self._forget(name, "two turns gave its pseudonyms different meanings")
                return
            state = merged
        sealed = self._sealer.encrypt(json.dumps(state).encode(), name.hex())
        if _size(sealed) > self.entry_bytes:
            self._forget(name, f"its pseudonyms outgrew {self.entry_bytes} bytes")
            return
        self._sealed[name] = sealed
        while len(self._sealed) > self.limit:
            self._sealed.popitem()

    def _forget(self, name: bytes, why: str) -> None:
        self._sealed.pop(name, None)
        log.warning("a conversation is no longer kept (%s): its next turn numbers its pseudonyms in a new series", why)


def _size(sealed: bytes) -> int:
    return len(sealed) + ENTRY_OVERHEAD
