"""Pseudonyms that stay the same for the whole of a conversation the provider keeps.

A chat resends its history every turn, so a flow's vault numbers the same value the same way each time. Where the
provider keeps the conversation instead (OpenAI Responses ``previous_response_id`` and ``conversation``, the
Conversations API, Assistants threads), a turn carries only what is new: numbered afresh, ``<PERSON_1>`` would name
someone else than in the turns the provider holds, and the answer would be restored to the wrong value.

So a request that names a conversation (``references``) opens the vault saved under that name and numbers on, and
the vault is saved again under it and under every id the answer gives (``answered``: a response's id and
conversation, a thread's or a conversation's id; ``IdWatcher`` finds them in a stream). An entry's key is the caller
(the identity's ``sub``), the upstream host and the id: another caller naming the same id opens nothing of the
first one's.

Memory only, sealed, bounded: an entry is the vault's state (the caller's values), AES-GCM-encrypted by the
``Sealer`` the pii addon gives (the originals' primitive, under a key made at start and written nowhere) and bound
to its key, an HMAC of (sub, host, id) under a second such key, so neither values nor ids are kept in the clear.
An entry expires ``ttl`` seconds after the turn that saved it last; past ``limit`` entries the least recently used
go first.

A conversation the gateway does not know (never seen, expired, forgotten, from before a restart, another
caller's) opens a vault in a new random series (``<PERSON_QXJMTB_1>``): its pseudonyms are new to the provider,
and one of an earlier numbering in an answer is left as it is, never restored to another value.
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
from addons.masking.pseudonyms import Vault

log = logging.getLogger("warden.pii")

SERIES_LETTERS = 6
# Ids in a path: a thread's messages and runs, a conversation's items, a stored response (``/threads/runs`` creates)
_PATH_IDS = (re.compile(r"/threads/([^/]+)"), re.compile(r"/conversations/([^/]+)"),
             re.compile(r"/responses/([^/]+)"))
_NOT_IDS = {"runs"}
_ANSWER_OBJECTS = {"response", "conversation", "thread"}  # an answer of these kinds names a conversation by its id
WATCHED_EVENTS = 16  # a stream names its response or thread in its first events
WATCHED_BYTES = 1 << 20


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
    """The sealed vaults of the conversations providers keep, for ``ttl`` seconds after their last turn."""

    def __init__(self, sealer: Sealer, ttl: float, limit: int, timer: Callable[[], float] = time.monotonic) -> None:
        self.ttl, self.limit = ttl, limit
        self._sealer = sealer
        self._names = os.urandom(32)  # the HMAC key of entry names: made here, kept nowhere else
        self._sealed: TTLCache[bytes, bytes] = TTLCache(limit, ttl, timer)

    def __len__(self) -> int:
        return len(self._sealed)

    def __repr__(self) -> str:  # never show names or values
        return f"Conversations({len(self)} kept, ttl {self.ttl:g}s)"

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
            vault = self._load(self._name(conversation, conversation_id))
            if vault is not None:
                vault.reserve(texts)
                return vault
        return Vault(texts, series=new_series())

    def _load(self, name: bytes) -> Vault | None:
        sealed = self._sealed.get(name)
        if sealed is None:
            return None
        try:
            return Vault.from_state(json.loads(self._sealer.decrypt(sealed, name.hex())))
        except ValueError:  # cannot happen but for a bug; a new series is safe, a wrong vault would not be
            log.warning("a conversation's pseudonyms did not unseal; it numbers in a new series")
            return None

    def save(self, conversation: Conversation, vault: Vault, ids: Iterable[str] = ()) -> None:
        """Keep ``vault`` under the conversations the request named and ``ids`` (those its answer gave), for ``ttl``
        seconds from now. Nothing is kept for a caller without an identity."""
        if conversation.sub is None:
            return
        state = json.dumps(vault.state()).encode()
        for conversation_id in dict.fromkeys((*conversation.ids, *ids)):
            name = self._name(conversation, conversation_id)
            self._sealed[name] = self._sealer.encrypt(state, name.hex())
