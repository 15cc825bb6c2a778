"""The admin API's side of retention: ``POST /api/purge`` (``older_than``, default the rules file's ``retention``;
``dry_run``), incident holds (``GET``/``POST /api/holds``, ``POST /api/holds/ID/release``) and key rotation
(``POST /api/keys/rotate``, ``key`` = signing, originals, hash; all three if none), so the gateway takes up the new
keys at once. Each runs through the store's writer and is on the record like every protected call."""

from __future__ import annotations

import asyncio
from pathlib import Path

import tornado.web
from mitmproxy import ctx

from addons.adminapi.base import Handler
from addons.rules.model import current_rules, purge_period
from addons.store.database import Store, StoreError
from addons.store.holds import HoldError, HoldNotFound, active_holds, place_hold, release_hold
from addons.store.keys import KeyFileError
from addons.store.retention import PurgeRefused, purge
from addons.store.rotation import KINDS, KeyFiles, record_rotation, rotate_files


class _Writing(Handler):
    protected = True

    def writer(self) -> Store:
        store = self.admin.store()
        if store is None:
            raise tornado.web.HTTPError(503, "the store is not open")
        return store

    def actor(self) -> str:
        assert self.sub is not None  # protected: prepare() set it
        return self.sub


class Purge(_Writing):
    async def post(self) -> None:
        try:
            period, older_than = purge_period(self.get_argument("older_than", None) or None,
                                              current_rules().model.retention)
        except ValueError as e:
            raise tornado.web.HTTPError(400, f"older_than: {e}") from None
        dry_run = self.get_argument("dry_run", "false").lower() in ("1", "true", "yes")
        try:
            report = await asyncio.to_thread(purge, self.writer(), older_than, period, self.actor(), dry_run=dry_run)
        except PurgeRefused as e:
            raise tornado.web.HTTPError(409, str(e)) from None
        except (StoreError, TimeoutError) as e:
            raise tornado.web.HTTPError(503, f"the purge could not be completed: {e}") from None
        self.send_json(report.as_dict())


class Holds(_Writing):
    async def get(self) -> None:
        self.send_json({"holds": await self.query(active_holds)})

    async def post(self) -> None:
        try:
            hold = await asyncio.to_thread(
                place_hold, self.writer(), self.actor(), self.get_argument("reason", ""),
                flow_id=self.get_argument("flow_id", None), user=self.get_argument("user", None))
        except HoldError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.send_json(hold, 201)


class HoldRelease(_Writing):
    async def post(self, hold_id: str) -> None:
        try:
            hold = await asyncio.to_thread(release_hold, self.writer(), self.actor(), hold_id,
                                           self.get_argument("reason", ""))
        except HoldNotFound as e:
            raise tornado.web.HTTPError(404, str(e)) from None
        except HoldError as e:
            raise tornado.web.HTTPError(400, str(e)) from None
        self.send_json(hold)


class KeysRotate(_Writing):
    # One rotation at a time: two at once would each read the same old key, write over each other's files and
    # record two rotations "from" that key, a chain that never verifies again.
    rotating = asyncio.Lock()

    async def post(self) -> None:
        kinds = self.get_arguments("key") or list(KINDS)
        files = KeyFiles(Path(ctx.options.warden_signing_key), Path(ctx.options.warden_originals_key),
                         Path(ctx.options.warden_pii_hash_key))
        store = self.writer()
        if self.rotating.locked():
            raise tornado.web.HTTPError(409, "another key rotation is under way; try again when it is done")
        async with self.rotating:
            try:
                rotated = await asyncio.to_thread(rotate_files, files, kinds)
            except (KeyFileError, OSError) as e:
                raise tornado.web.HTTPError(400, f"the keys could not be rotated: {e}") from None
            self.admin.take_up_keys(rotated)
            try:
                done = await asyncio.to_thread(record_rotation, store, rotated, self.actor(),
                                               self.get_argument("reason", None))
            except (StoreError, TimeoutError) as e:
                raise tornado.web.HTTPError(503, f"the keys rotated, but the record of it failed: {e}") from None
        self.send_json(done)
