"""The admin API's side of the record: flow search, one flow's events, the chain paged, verification, proofs."""

from __future__ import annotations

import asyncio
from datetime import datetime

import tornado.web

from addons.adminapi.base import Handler
from addons.siem.feed import PAGE, events_page
from addons.store.chainwalk import verify_store
from addons.store.database import StoreError
from addons.store.events import Event, event_to_json
from addons.store.proofs import cover
from addons.store.queries import flow_events, parse_when
from addons.store.search import from_query, search_flows


class Flows(Handler):
    protected = True

    async def get(self) -> None:
        """The filters of ``warden flows`` as query arguments (``addons.store.search.to_query``)."""
        try:
            f = from_query({name: self.get_query_argument(name) for name in self.request.query_arguments})
        except ValueError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.send_json({"flows": await self.query(search_flows, f)})


class FlowEvents(Handler):
    protected = True

    async def get(self, flow_id: str) -> None:
        events = await self.query(flow_events, flow_id)
        if not events:
            raise tornado.web.HTTPError(404, f"no flow {flow_id}")
        self.send_json({"events": [event_to_json(e) for e in events]})


class Events(Handler):
    """The chain in pages: ``after_seq=N`` (or ``since=WHEN`` for the first page), and ``cursor=NAME`` from a follower
    (``warden siem --follow``) that polls. Every call is on the record, but a follower's poll would then always find
    its own last access event and never come to rest: a poll with a ``cursor`` whose page holds nothing, or nothing but
    access events of this caller and this same cursor, is served without another one (it reads nothing new). Anything
    else it would read, one event of another kind or of another reader, makes the poll a read on the record again."""

    protected = True
    quiet_page: list[Event] | None = None

    def position(self) -> tuple[int, datetime | None]:
        try:
            after = int(self.get_query_argument("after_seq", "-1"))
            since = self.get_query_argument("since", None)
            return after, parse_when(since) if since else None
        except ValueError as e:
            raise tornado.web.HTTPError(400, f"after_seq must be an integer, since a time or a duration: {e}") from None

    async def quiet(self) -> bool:
        cursor = self.get_query_argument("cursor", None)
        if cursor is None:
            return False
        try:
            page = await self.query(events_page, *self.position())
        except tornado.web.HTTPError:
            return False  # a bad query is refused after it is recorded
        if all(e.kind == "access" and e.user == self.sub and _cursor_of(e) == cursor for e in page):
            self.quiet_page = page
            return True
        return False

    async def get(self) -> None:
        page = self.quiet_page if self.quiet_page is not None else await self.query(events_page, *self.position())
        self.send_json({"events": [event_to_json(e) for e in page], "more": len(page) >= PAGE})


def _cursor_of(event: Event) -> str | None:
    query = (event.detail or {}).get("query") or {}
    names = query.get("cursor") if isinstance(query, dict) else None
    return names[0] if isinstance(names, list) and len(names) == 1 else None


class Verify(Handler):
    protected = True

    def keys(self):
        """The signing keyring; 503 without it (a verification that checks no signature is no verification)."""
        keys = self.admin.public_key()
        if keys is None:
            raise tornado.web.HTTPError(503, "the signing keyring (warden_signing_key's .pub) cannot be read: "
                                             "nothing to check the checkpoints' signatures with")
        return keys

    async def get(self) -> None:
        result = await self.query(verify_store, self.keys())
        self.send_json(result.as_dict(), 200 if result.ok else 409)

    async def post(self) -> None:
        """Sign the current head, then verify the chain up to that checkpoint (later events are not waited for)."""
        public_key = self.keys()
        checkpoint = await sign_now(self)
        last = checkpoint["seq"] if checkpoint else -1
        result = await self.query(
            lambda cursor: verify_store(cursor, public_key, until_seq=last))
        self.send_json({"checkpoint": checkpoint, **result.as_dict()}, 200 if result.ok else 409)



async def sign_now(handler: Handler) -> dict | None:
    """Have the store sign its current head (after what is queued); 503 if it cannot."""
    store = handler.admin.store()
    if store is None:
        raise tornado.web.HTTPError(503, "the store is not open")
    try:
        return await asyncio.to_thread(store.checkpoint_now)
    except (StoreError, TimeoutError) as e:
        raise tornado.web.HTTPError(503, f"the gateway could not sign a checkpoint: {e}") from None


class Proof(Handler):
    """``?first_seq=A&last_seq=B``: what proves events A..B up to a signed head (``addons.store.proofs.Coverage``);
    when no checkpoint covers B yet, the gateway signs its head first."""

    protected = True

    async def get(self) -> None:
        try:
            first, last = (int(self.get_query_argument(name)) for name in ("first_seq", "last_seq"))
        except ValueError:
            raise tornado.web.HTTPError(400, "first_seq and last_seq must be whole numbers") from None
        if not 0 <= first <= last:
            raise tornado.web.HTTPError(400, "first_seq must be at least 0 and at most last_seq")
        coverage = await self.query(cover, first, last)
        if coverage is None:
            await sign_now(self)
            coverage = await self.query(cover, first, last)
        if coverage is None:
            raise tornado.web.HTTPError(404, f"no event at seq={last}: the chain ends before it")
        self.send_json(coverage.as_dict())
