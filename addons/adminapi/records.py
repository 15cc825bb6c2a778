"""The admin API's side of the record: flow search, one flow's events, the chain paged, verification."""

from __future__ import annotations

import asyncio

import tornado.web

from addons.adminapi.base import Handler
from addons.store.database import StoreError
from addons.store.events import event_to_json
from addons.store.queries import flow_events, iter_events, iter_events_until, parse_when
from addons.store.search import FlowFilter, search_flows
from addons.store.verification import verify_chain, verify_events

EVENTS_PAGE = 500


class Flows(Handler):
    protected = True

    async def get(self) -> None:
        try:
            f = FlowFilter(
                user=self.get_query_argument("user", None), host=self.get_query_argument("host", None),
                decision=self.get_query_argument("decision", None), fate=self.get_query_argument("fate", None),
                entity=self.get_query_argument("entity", None),
                since=self._when("since"), until=self._when("until"),
                limit=int(self.get_query_argument("limit", "100")),
            )
        except ValueError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.send_json({"flows": await self.query(search_flows, f)})

    def _when(self, name: str):
        value = self.get_query_argument(name, None)
        return parse_when(value) if value else None


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
        store = self.admin.store()
        if store is None:
            raise tornado.web.HTTPError(503, "the store is not open")
        try:
            checkpoint = await asyncio.to_thread(store.checkpoint_now)
        except (StoreError, TimeoutError) as e:
            raise tornado.web.HTTPError(503, f"the gateway could not sign a checkpoint: {e}") from None
        last = checkpoint["seq"] if checkpoint else -1
        public_key = self.admin.public_key()
        result = await self.query(
            lambda cursor: verify_events(iter_events_until(iter_events(cursor), last), public_key))
        self.send_json({"checkpoint": checkpoint, **result.as_dict()}, 200 if result.ok else 409)


