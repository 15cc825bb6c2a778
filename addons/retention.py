"""Retention: the gateway purges what the rules file's ``retention:`` period has outlived, at start and then every
``warden_purge_interval``; ``warden purge`` does it by hand. Events older than the period keep a tombstone and lose
their content, except flows under an incident hold (``addons/store/retention.py`` says what and how).

After the recorder in the chain: the store it purges is the recorder's (found with ``ctx.master.addons.get``).
A purge that fails is logged and tried again at the next interval; the gateway keeps serving.
"""

from __future__ import annotations

import asyncio
import logging

from mitmproxy import ctx, exceptions

from addons.rules.durations import seconds
from addons.rules.model import current_rules
from addons.store.database import StoreError
from addons.store.retention import purge

log = logging.getLogger("warden.retention")

ACTOR = "warden:retention"  # who the scheduled purge events name


class Retention:
    def __init__(self) -> None:
        self.interval: float | None = 3600.0
        self.task: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "warden_purge_interval", str, "1h",
            "How often the gateway purges events older than the rules file's 'retention:' (also once at start); "
            "0 to purge only by hand (warden purge).",
        )

    def configure(self, updated: set[str]) -> None:
        if "warden_purge_interval" in updated:
            if ctx.options.warden_purge_interval.strip() == "0":
                self.interval = None
            else:
                self.interval = seconds("warden_purge_interval")
                if self.interval < 1:
                    raise exceptions.OptionsError("warden_purge_interval: at least 1 second, or 0 for never")
            if self.task is not None:  # start over with the new interval
                self.done()
                self.running()

    def running(self) -> None:
        if self.interval is not None and self.task is None:
            self.task = asyncio.get_running_loop().create_task(self._schedule())

    def done(self) -> None:
        if self.task is not None:
            self.task.cancel()
            self.task = None

    async def _schedule(self) -> None:
        while self.interval is not None:
            await self.purge_once()
            await asyncio.sleep(self.interval)

    async def purge_once(self) -> None:
        """Purge by the rules in force, if they set a retention period and the store is open."""
        model = current_rules().model
        store = getattr(ctx.master.addons.get("recorder"), "store", None)
        if model.retention_period is None or store is None or model.retention is None:
            return
        try:
            report = await asyncio.to_thread(purge, store, model.retention_period, model.retention, ACTOR)
        except (StoreError, TimeoutError) as e:
            log.error("warden: the scheduled purge (retention %s) failed, retried in %ss: %s", model.retention,
                      self.interval, e)
            return
        if report.purged:
            log.info("warden purge: %d events older than %s (before %s) became tombstones; purge events seq %s; "
                     "%d events of held flows or users spared", report.purged, model.retention, report.cutoff,
                     ",".join(map(str, report.purge_events)), report.spared_held)
