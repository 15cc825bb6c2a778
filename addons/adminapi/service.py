"""The admin API's open endpoints: health, metrics, and the embedded issuer's discovery document and keys."""

from __future__ import annotations

import tornado.web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from addons.adminapi.base import Handler
from addons.auth.issuer import discovery
from addons.flow import metrics


class Health(Handler):
    """200 when the gateway can serve; 503 while the PII analyzer starts, or when the store or analyzer is down.
    A refused edit of the rules file leaves it serving the rules in force: 200, status ``degraded``."""

    async def get(self) -> None:
        store = self.admin.store()
        pii = self.admin.pii_health()
        rules = self.admin.rules_health()
        if store is None:
            self.send_json({"status": "unavailable", "store": None, "pii": pii, "rules": rules}, 503)
            return
        degraded = store.last_error is not None or (rules is not None and rules["refused"] is not None)
        body = {
            "status": "degraded" if degraded else "ok",
            "store": {"path": str(store.path), "head_seq": store.head.seq, "queue_depth": store.queue_depth,
                      "commits": store.commits, "failures": store.failures, "last_error": store.last_error},
            "pii": pii,
            "rules": rules,
        }
        if any(p["state"] != "ready" for p in pii):
            body["status"] = "starting" if all(p["state"] in ("starting", "ready") for p in pii) else "unavailable"
            self.send_json(body, 503)
            return
        self.send_json(body)


class Metrics(Handler):
    async def get(self) -> None:
        self.set_header("Content-Type", CONTENT_TYPE_LATEST)
        self.finish(generate_latest(metrics.REGISTRY))


class Discovery(Handler):
    async def get(self) -> None:
        if self.admin.embedded_issuer() is None:
            raise tornado.web.HTTPError(404, "this gateway does not run the embedded issuer")
        self.send_json(discovery(f"{self.request.protocol}://{self.request.host}"))


class Jwks(Handler):
    async def get(self) -> None:
        issuer = self.admin.embedded_issuer()
        if issuer is None:
            raise tornado.web.HTTPError(404, "this gateway does not run the embedded issuer")
        self.send_json(issuer.jwks())


