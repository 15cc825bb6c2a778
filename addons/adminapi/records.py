"""The admin API's side of the record: flow search, one flow's events, the chain paged, verification, proofs."""

from __future__ import annotations

import asyncio

import tornado.web

from addons.adminapi.base import Handler
from addons.store.database import StoreError
from addons.store.events import event_to_json
from addons.store.proofs import cover
from addons.store.queries import flow_events, iter_events, iter_events_until
from addons.store.search import from_query, search_flows
from addons.store.verification import verify_chain, verify_events

EVENTS_PAGE = 500


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
    protected = True

    async def get(self) -> None:
        try:
            after = int(self.get_query_argument("after_seq", "-1"))
        except ValueError:
            raise tornado.web.HTTPError(400, "after_seq must be an integer") from None

        def page(cursor) -> list:
            out = []
            for event in iter_events(cursor, after):
                out.append(event_to_json(event))
                if len(out) >= EVENTS_PAGE:
                    break
            return out

        events = await self.query(page)
        self.send_json({"events": events, "more": len(events) >= EVENTS_PAGE})


class Verify(Handler):
    protected = True

    async def get(self) -> None:
        result = await self.query(verify_chain, self.admin.public_key())
        self.send_json(result.as_dict(), 200 if result.ok else 409)

    async def post(self) -> None:
        """Sign the current head, then verify the chain up to that checkpoint (later events are not waited for)."""
        checkpoint = await sign_now(self)
        last = checkpoint["seq"] if checkpoint else -1
        public_key = self.admin.public_key()
        result = await self.query(
            lambda cursor: verify_events(iter_events_until(iter_events(cursor), last), public_key))
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
