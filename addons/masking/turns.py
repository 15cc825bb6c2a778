"""A flow's part in a conversation the provider keeps: which one its request continues, the vault it opens there,
and when that vault is kept for the turns after it (``conversations.py`` keeps them, sealed)."""

from __future__ import annotations

import dataclasses
import os
import weakref
from collections.abc import Callable, Sequence
from typing import Any

from mitmproxy import http

from addons.flow.meta import IDENTITY
from addons.masking.conversations import Conversation, Conversations, IdWatcher, Sealer, references
from addons.masking.pseudonyms import Vault
from addons.rules.masking import Masking


class Turns:
    """Per flow (weakly, in memory only): the conversation its request continues and the ids it named that were not
    kept yet; and the kept conversations themselves."""

    def __init__(self) -> None:
        self.kept: Conversations | None = None
        self.conversation_of: weakref.WeakKeyDictionary[http.HTTPFlow, Conversation] = weakref.WeakKeyDictionary()
        # The ids a request named that no kept conversation had yet: kept once a 2xx answer confirms them.
        self.unconfirmed: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[str, ...]] = weakref.WeakKeyDictionary()

    def configure(self, masking: Masking, sealer: Callable[[bytes], Sealer]) -> None:
        """Keep conversations as ``masking`` says, sealed by ``sealer(key)`` under a key made here, kept nowhere."""
        ttl, limit, memory = masking.conversation_seconds, masking.conversation_limit, masking.conversation_bytes
        kept = self.kept
        if kept is None or (kept.ttl, kept.limit, kept.memory) != (ttl, limit, memory):
            # Kept conversations are forgotten: their next turns number in a new series, never reuse a pseudonym.
            self.kept = Conversations(sealer(os.urandom(32)), ttl, limit, memory=memory)

    def open(self, flow: http.HTTPFlow, document: Any, texts: Sequence[str]) -> Vault:
        """The request's vault: the conversation's it continues, if the provider keeps one; ``texts``: the request's
        strings, whose pseudonym-shaped words are reserved."""
        assert self.kept is not None
        identity = IDENTITY.of(flow)
        self.conversation_of[flow] = conversation = Conversation(
            identity.sub if identity is not None else None, f"{flow.request.host}:{flow.request.port}",
            references(flow.request.path, document))
        return self.kept.open(conversation, texts)

    def keep(self, flow: http.HTTPFlow, vault: Vault | None, ids: tuple[str, ...]) -> None:
        """Keep the flow's vault for the conversations it continues. At its request: merged into those it names
        that are kept already. At a 2xx answer: under the ids the answer confirms, those its request named that were
        not kept yet and the new ones it gives (``ids``); never again under the others, which later turns may have
        numbered on meanwhile."""
        conversation = self.conversation_of.get(flow)
        if conversation is None or vault is None or self.kept is None:
            return
        if flow.response is None:
            self.unconfirmed[flow] = self.kept.update(conversation, vault)
        elif 200 <= flow.response.status_code < 300:
            confirmed = dataclasses.replace(conversation, ids=self.unconfirmed.pop(flow, ()))
            self.kept.save(confirmed, vault, [i for i in ids if i not in conversation.ids])

    def watcher(self, flow: http.HTTPFlow, vault_of: Callable[[http.HTTPFlow], Vault | None]) -> IdWatcher:
        """A stream callable that keeps the vault under the ids a streamed answer gives."""
        owner = weakref.ref(flow)  # the stream callable does not keep its flow alive (no cycle for the collector)
        return IdWatcher(lambda ids: self.keep(f, vault_of(f), ids) if (f := owner()) is not None else None)
