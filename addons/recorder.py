"""Recorder: appends every flow's events to the DuckDB store, whatever the flow's fate.

Last in the chain. A request's event is committed before the request leaves for the upstream
(the ``request`` hook awaits the commit; if it fails, the client gets 503 and nothing leaves), and
a response's event before the response is complete for the client (mitmproxy sends the end of
the message only after the ``response`` hook). Streamed (SSE) responses are teed into the record
as they pass. Secrets are redacted before anything is queued.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from datetime import UTC, datetime

from mitmproxy import ctx, exceptions, http
from mitmproxy.flow import Error as FlowError

from addons.bodies.usage import request_model, response_usage
from addons.flow import metrics
from addons.flow.errors import RecordingUnavailable
from addons.flow.meta import Finding, PiiOutcome, WardenMeta, compose_stream, fail_closed, meta
from addons.rules.durations import seconds
from addons.rules.model import current_rules
from addons.store.database import Store, StoreError
from addons.store.events import Event
from addons.store.keys import KeyFileError, OriginalsKey, SigningKey
from addons.store.redaction import Secrets, redact_event, redact_headers, redact_path

log = logging.getLogger("warden.recorder")


def classify_error(flow: http.HTTPFlow) -> str:
    """The fate of a flow that ended in an error rather than a response."""
    msg = flow.error.msg if flow.error else ""
    if msg == FlowError.KILLED_MESSAGE:
        return "killed"
    if "client disconnected" in msg.lower():
        return "client_gone"
    return "upstream_error"


def _peer(flow: http.HTTPFlow) -> str | None:
    peer = flow.client_conn.peername
    return f"{peer[0]}:{peer[1]}" if peer else None


def _mode(flow: http.HTTPFlow) -> str | None:
    mode = getattr(flow.client_conn, "proxy_mode", None)
    return mode.type_name if mode is not None else None


def _ts(timestamp: float | None) -> datetime:
    moment = datetime.fromtimestamp(timestamp, UTC) if timestamp else datetime.now(UTC)
    return moment.replace(tzinfo=None)


MAX_FINDINGS = 1000  # per event; the counts stay complete


def _pii_detail(profile: str, findings: list[Finding], **extra: object) -> dict[str, object]:
    """Findings for the record: entity, JSON path, span, score, operator. Never the value."""
    out: dict[str, object] = {"profile": profile, **{k: v for k, v in extra.items() if v is not None}}
    out["findings"] = [[f.entity, f.path, f.start, f.end, f.score, f.operator] for f in findings[:MAX_FINDINGS]]
    if len(findings) > MAX_FINDINGS:
        out["findings_truncated"] = len(findings) - MAX_FINDINGS
    return out


def _clip(body: bytes | None, limit: int) -> tuple[bytes | None, int, bool]:
    if body is None:
        return None, 0, False
    return body[:limit], len(body), len(body) > limit


class Recorder:
    def __init__(self) -> None:
        self.store: Store | None = None
        self.signing_key: SigningKey | None = None
        self.originals_key: OriginalsKey | None = None
        self.keep_originals = "encrypted"
        self.secrets = Secrets()  # every upstream's credential value: never in an event
        self.credential_headers: frozenset[str] = frozenset()
        self.record_timeout = 10.0
        self.running_ = False

    def load(self, loader) -> None:
        loader.add_option("warden_db", str, "data/warden.duckdb", "Warden's DuckDB store (created if missing).")
        loader.add_option(
            "warden_signing_key", str, "certs/warden-signing.key",
            "Ed25519 key that signs chain checkpoints (created if missing; public key beside it as .pub).",
        )
        loader.add_option(
            "warden_originals_key", str, "certs/warden-originals.key",
            "AES-256-GCM key for original bodies that masking changed (created if missing). "
            "The environment variable WARDEN_ORIGINALS_KEY (base64) takes precedence.",
        )
        loader.add_option(
            "warden_checkpoint_every", int, 1000, "Sign a chain checkpoint after this many events (and every minute)."
        )
        loader.add_option(
            "warden_record_max_body", int, 10 * 1024 * 1024,
            "Bodies longer than this many bytes are recorded truncated (their full size is kept).",
        )
        loader.add_option(
            "warden_record_timeout", str, "10",
            "Seconds a request waits for its event to be committed before it is refused with 503.",
        )

    def configure(self, updated: set[str]) -> None:
        if updated & {"warden_signing_key", "warden_originals_key"}:
            try:
                self.signing_key = SigningKey.load_or_create(ctx.options.warden_signing_key)
                self.originals_key = OriginalsKey.load_or_create(ctx.options.warden_originals_key)
            except KeyFileError as e:
                raise exceptions.OptionsError(f"warden_signing_key/warden_originals_key: {e}") from None
        if "warden_checkpoint_every" in updated and ctx.options.warden_checkpoint_every < 1:
            raise exceptions.OptionsError("warden_checkpoint_every: must be at least 1")
        if "warden_record_timeout" in updated:
            self.record_timeout = seconds("warden_record_timeout")
        if "warden_record_max_body" in updated and ctx.options.warden_record_max_body < 0:
            raise exceptions.OptionsError("warden_record_max_body: must not be negative")
        if "warden_rules" in updated:
            rules = current_rules()
            self.keep_originals = rules.masking.originals
            self.secrets, self.credential_headers = Secrets(rules.secret_values()), rules.credential_headers()
        if updated & {"warden_db", "warden_signing_key", "warden_checkpoint_every"}:
            self._open_store()

    def _open_store(self) -> None:
        assert self.signing_key is not None
        old, self.store = self.store, None
        if old is not None:
            old.close()
        try:
            store = Store(ctx.options.warden_db, self.signing_key, ctx.options.warden_checkpoint_every)
        except StoreError as e:
            raise exceptions.OptionsError(f"warden_db: {e}") from None
        store.on_commit.append(metrics.record_commit)
        metrics.QUEUE_DEPTH.set_function(lambda: store.queue_depth)
        self.store = store
        if self.running_:
            store.start()

    def running(self) -> None:
        self.running_ = True
        if self.store is not None:
            self.store.start()

    def done(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- hooks --------------------------------------------------------------------------------------

    @fail_closed
    async def http_connect(self, flow: http.HTTPFlow) -> None:
        # Allowed tunnels are recorded request by request inside; a refused CONNECT is a flow of its own.
        if flow.response is None or 200 <= flow.response.status_code < 300:
            return
        m = meta(flow)
        await self._commit(self._request_event(flow, m), m)
        await self._commit(self._response_event(flow, m), m)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        await self._commit(self._built("request", self._request_event, flow, m), m)
        m.forwarded_at = time.time()

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if callable(flow.response.stream):  # Intake decides what streams; the record tees what the client gets
            self._tee(flow)

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        event = self._built("response", self._response_event, flow, m)
        await self._commit(event, m)
        self._count(flow, event, m)

    @fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        assert flow.error is not None
        if not m.events:  # it ended before its request hook (mitmproxy stopped reading an oversized body)
            await self._commit(self._request_event(flow, m), m)
        fate, reason = classify_error(flow), flow.error.msg
        if fate == "upstream_error" and m.error is not None:
            fate, reason = m.error.type, m.error.message  # the gateway stopped it (a body over its limit)
        event = Event(
            kind="error", flow_id=flow.id, fate=fate, status=flow.response.status_code if flow.response else None,
            reason=reason, user=m.identity.sub if m.identity else None,
            latency_total_ms=self._since(flow.request.timestamp_start),
        )
        if m.response_capture is not None:
            event.body, event.body_size, event.body_truncated = _clip(
                bytes(m.response_capture), ctx.options.warden_record_max_body
            )
        await self._commit(event, m)
        self._count(flow, event, m)

    # -- events -------------------------------------------------------------------------------------

    def _request_event(self, flow: http.HTTPFlow, m: WardenMeta) -> Event:
        req = flow.request
        body, size, truncated = _clip(req.raw_content, ctx.options.warden_record_max_body)
        if m.error is not None:
            fate = m.error.type
        elif flow.response is not None:
            fate = "answered_locally"
        else:
            fate = "forwarded"
        detail: dict[str, object] = {}
        event = Event(
            kind="request", flow_id=flow.id, ts=_ts(req.timestamp_start), user=m.identity.sub if m.identity else None,
            client=_peer(flow), mode=_mode(flow), method=req.method, scheme=req.scheme, host=req.host,
            port=req.port, path=redact_path(req.path), http_version=req.http_version, fate=fate,
            decision=m.decision.action if m.decision else None, rule=m.decision.rule if m.decision else None,
            reason=(m.error.message if m.error else (m.decision.reason if m.decision else None)) or None,
            upstream=m.upstream, model=request_model(req.raw_content, req.headers.get("content-type", "")),
            headers=redact_headers(req.headers.fields), body=body, body_size=size, body_truncated=truncated,
        )
        if m.identity is not None:
            detail["identity"] = dataclasses.asdict(m.identity)
        elif m.claimed_sub is not None:
            detail["claimed_sub"] = m.claimed_sub  # unverified: the token was refused
        if m.original_request_body is not None and m.original_request_body != req.raw_content:
            detail["original"] = self.keep_original(event, m.original_request_body, flow.id)
        if m.pii is not None:
            detail["pii"] = _pii_detail(m.pii.profile, m.pii.findings, adapter=m.pii.adapter, skipped=m.pii.skipped)
            event.entities = PiiOutcome.counts(m.pii.findings) or None
        event.detail = detail or None
        return event

    def _response_event(self, flow: http.HTTPFlow, m: WardenMeta) -> Event:
        resp = flow.response
        assert resp is not None
        streamed = bool(resp.stream)
        if m.recorded_response_body is not None:  # masking rewrote it: the record keeps the masked form
            raw = m.recorded_response_body
        elif streamed and m.response_capture is not None:
            raw = bytes(m.response_capture)
        else:
            raw = resp.raw_content
        body, size, truncated = _clip(raw, ctx.options.warden_record_max_body)
        content_type = resp.headers.get("content-type", "")
        decoded = raw if streamed or m.recorded_response_body is not None else resp.get_content(strict=False)
        usage = response_usage(decoded, content_type)
        local = m.error is not None or flow.server_conn.timestamp_start is None
        event = Event(
            kind="response", flow_id=flow.id, user=m.identity.sub if m.identity else None, status=resp.status_code,
            fate=m.error.type if m.error else ("answered_locally" if local else "completed"),
            reason=m.error.message if m.error else None, http_version=resp.http_version,
            headers=redact_headers(resp.headers.fields), body=body, body_size=size,
            body_truncated=truncated or m.capture_truncated, tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
            latency_upstream_ms=None if local else self._since(m.forwarded_at, resp.timestamp_end),
            latency_total_ms=self._since(flow.request.timestamp_start),
        )
        detail: dict[str, object] = {"streamed": streamed} if streamed else {}
        if m.trailers_dropped:
            detail["trailers_dropped"] = m.trailers_dropped
        if m.original_response_body is not None and m.original_response_body != raw:
            detail["original"] = self.keep_original(event, m.original_response_body, flow.id)
        if m.pii is not None and m.pii.response_findings:
            detail["pii"] = _pii_detail(m.pii.profile, m.pii.response_findings)
            event.entities = PiiOutcome.counts(m.pii.response_findings)
        event.detail = detail or None
        return event

    def keep_original(self, event: Event, original: bytes, flow_id: str) -> str:
        """Keep a body that masking changed as the configuration says: encrypted on ``event``, or not at all."""
        if self.keep_originals == "encrypted" and self.originals_key is not None:
            ce = next((v for n, v in event.headers or [] if n.lower() == "content-encoding"), "")
            checked, _ = self.secrets.body(original, ce)  # encrypted or not, an upstream key is never kept
            if checked is None:
                return "discarded"
            event.original_enc = self.originals_key.encrypt(checked, flow_id)
            return "encrypted"
        return "discarded"

    def _tee(self, flow: http.HTTPFlow) -> None:
        m = meta(flow)
        inner = flow.response.stream
        limit = ctx.options.warden_record_max_body
        m.response_capture = bytearray()

        def capture(chunk: bytes) -> bytes:
            room = limit - len(m.response_capture)
            if room < len(chunk):
                m.capture_truncated = True
            m.response_capture += chunk[: max(room, 0)]
            return chunk

        flow.response.stream = compose_stream(inner, capture)

    @staticmethod
    def _since(start: float | None, end: float | None = None) -> float | None:
        if start is None:
            return None
        return round(((end or time.time()) - start) * 1000, 3)

    def _built(self, kind: str, build, flow: http.HTTPFlow, m: WardenMeta) -> Event:
        """``build(flow, m)``, or, if one of its helpers fails, the ``kind`` event's frame with the failure
        noted: a flow is never left without its event."""
        try:
            return build(flow, m)
        except Exception as e:
            log.error("warden: building the %s event of %s failed: %r", build.__name__, flow.id, e, exc_info=e)
            req, resp = flow.request, flow.response
            return Event(
                kind=kind, flow_id=flow.id, user=m.identity.sub if m.identity else None, method=req.method,
                host=req.host, port=req.port, path=redact_path(req.path), upstream=m.upstream,
                status=resp.status_code if resp is not None and kind == "response" else None,
                fate=m.error.type if m.error else ("forwarded" if kind == "request" else "completed"),
                reason=m.error.message if m.error else None,
                detail={"recorder_error": f"{type(e).__name__}: the event holds only what could be gathered"},
            )

    async def _commit(self, event: Event, m: WardenMeta) -> None:
        m.events.append(await self.commit(event, m.caller_secrets))

    async def commit(self, event: Event, caller_secrets: frozenset[str] | set[str] = frozenset()) -> tuple[int, str]:
        """Redact ``event`` and wait until it is committed: ``(seq, hash)``, or ``RecordingUnavailable``.
        The one way onto the chain for every addon that records (flows, connections, WebSocket messages)."""
        if self.store is None:
            raise RecordingUnavailable("the store is not open (see the gateway log); nothing was forwarded")
        # The last step before the queue: no credential value, known or shaped like one, is ever stored.
        try:
            event = redact_event(event, self.secrets | caller_secrets, self.credential_headers)
        except Exception as e:  # never store what could not be cleaned: keep the frame, note why
            log.error("warden: redacting an event of %s failed: %r", event.flow_id, e, exc_info=e)
            event = Event(kind=event.kind, flow_id=event.flow_id, ts=event.ts, user=event.user, host=event.host,
                          status=event.status, fate=event.fate, decision=event.decision, upstream=event.upstream,
                          detail={"recorder_error": f"redaction failed ({type(e).__name__}); only the frame was kept"})
        try:
            async with asyncio.timeout(self.record_timeout):
                seq_hash = await self.store.commit(event)
        except (StoreError, TimeoutError) as e:
            metrics.COMMIT_FAILURES.inc()
            why = str(e) if isinstance(e, StoreError) else \
                f"the store did not commit within {self.record_timeout:g} s (warden_record_timeout); timed out"
            raise RecordingUnavailable(f"the flow could not be recorded ({why}); nothing was forwarded") from None
        return seq_hash

    @staticmethod
    def _count(flow: http.HTTPFlow, event: Event, m: WardenMeta) -> None:
        decision = m.decision.action if m.decision else "none"
        metrics.REQUESTS.labels(fate=event.fate or "unknown", decision=decision).inc()
        if event.latency_total_ms is not None:
            metrics.TOTAL_LATENCY.observe(event.latency_total_ms / 1000)
        if event.latency_upstream_ms is not None:
            metrics.UPSTREAM_LATENCY.observe(event.latency_upstream_ms / 1000)

