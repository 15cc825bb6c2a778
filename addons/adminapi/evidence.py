"""``POST /api/evidence``: the gateway builds and signs an evidence pack (a period and filters, or one flow) with its
own key, off the event loop, and answers with the zip. It signs a checkpoint first, so the pack's chain
verification and proofs cover everything recorded until the call."""

from __future__ import annotations

import asyncio
import functools
import json
import tempfile
from pathlib import Path

import tornado.web
from mitmproxy import ctx

from addons.adminapi.base import Handler
from addons.evidence.build import build_zip
from addons.evidence.request import EvidenceError, NoSuchFlow, PackRequest
from addons.store.database import StoreError

CHUNK = 1 << 20


class Evidence(Handler):
    protected = True

    async def post(self) -> None:
        try:
            request = PackRequest.from_json(json.loads(self.request.body or b"{}"))
        except (ValueError, EvidenceError) as e:
            raise tornado.web.HTTPError(400, f"POST /api/evidence: {e}") from None
        # What is exported (the period, filters or flow travel in the body) is on the record before it is built.
        await self.record_access("export", pack=request.as_json())
        store, recorder = self.admin.store(), ctx.master.addons.get("recorder")
        key = getattr(recorder, "signing_key", None)
        if store is None or key is None:
            raise tornado.web.HTTPError(503, "the store or the signing key is not loaded: no pack can be signed")
        try:
            checkpoint = await asyncio.to_thread(store.checkpoint_now)
        except (StoreError, TimeoutError) as e:
            raise tornado.web.HTTPError(503, f"the gateway could not sign a checkpoint first: {e}") from None
        with tempfile.TemporaryDirectory(prefix="warden-evidence-") as tmp:
            target = Path(tmp) / "pack.zip"
            try:
                await self.query(functools.partial(build_zip, where="running gateway", keys=self.admin.public_key(),
                                                   signed_until=checkpoint["seq"] if checkpoint else None),
                                 request, key, target)
            except NoSuchFlow as e:
                raise tornado.web.HTTPError(404, str(e)) from None
            except EvidenceError as e:
                raise tornado.web.HTTPError(409, str(e)) from None
            self.set_header("Content-Type", "application/zip")
            self.set_header("Content-Disposition", 'attachment; filename="warden-evidence.zip"')
            self.set_header("Content-Length", str(target.stat().st_size))
            with target.open("rb") as f:
                while chunk := await asyncio.to_thread(f.read, CHUNK):
                    self.write(chunk)
                    await self.flush()
        self.finish()
