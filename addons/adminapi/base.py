"""The admin API's handlers share this base: JSON answers and errors, the caller's identity, queries on the store
off the event loop, and the record of every protected call (an ``access`` event: who, what, when)."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from typing import Any

import tornado.web


class Handler(tornado.web.RequestHandler):
    protected = False  # True: needs a token of one of identity.admin_groups, and every call is on the record
    sub: str | None = None

    def initialize(self, admin: Any) -> None:
        # The Admin addon (addons/admin.py) that routes here; a package under addons/ never imports an addon.
        self.admin = admin

    async def prepare(self) -> None:
        if not self.protected:
            return
        try:
            self.sub = await self.admin.authorize(self)
        except tornado.web.HTTPError as e:
            try:
                await self.record_access("refused", status=e.status_code, why=e.log_message)
            except tornado.web.HTTPError:
                pass  # the refusal stands whether or not it could be recorded (the recorder logs why not)
            raise
        if await self.quiet():
            return
        await self.record_access("read" if self.request.method == "GET" else "asked")

    async def quiet(self) -> bool:
        """True: this call serves nothing but the caller's own records of the same calls, so it is not recorded
        again (a SIEM's idle poll; see ``records.Events``). Asked after the caller was authorized."""
        return False

    async def record_access(self, fate: str, **detail: Any) -> None:
        """Who read the record, what and when: an ``access`` event, committed before anything is served (a read
        that cannot be recorded is refused, 503). The query's arguments are kept; a token never is (it travels
        in a header, and the recorder's rules for secrets apply to what is kept)."""
        await self.admin.record_access(self, fate, **detail)

    def send_json(self, data: Any, status: int = 200) -> None:
        self.set_status(status)
        self.set_header("Content-Type", "application/json")
        self.finish(json.dumps(data, default=str))

    def write_error(self, status_code: int, **kwargs: Any) -> None:
        exc = kwargs.get("exc_info", (None, None))[1]
        message = str(exc.log_message if isinstance(exc, tornado.web.HTTPError) and exc.log_message else self._reason)
        if status_code == 401:
            self.set_header("WWW-Authenticate", 'Bearer realm="warden-admin"')
        self.send_json({"error": {"status": status_code, "message": message}}, status_code)

    async def query(self, fn: Callable, *args: Any) -> Any:
        store = self.admin.store()
        if store is None:
            raise tornado.web.HTTPError(503, "the store is not open")

        def run() -> Any:
            store.sync()  # what is committed but still in the journal must show too
            cursor = store.reader()
            try:
                return fn(cursor, *args)
            finally:
                cursor.close()

        return await asyncio.to_thread(run)


