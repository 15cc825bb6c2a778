"""Recorder: appends every flow's events to the DuckDB store, whatever the flow's fate.

Last in the chain. A request's event is committed before the request leaves for the upstream
(the ``request`` hook awaits the commit; if it fails, the client gets 503 and nothing leaves), and
a response's event before the response is complete for the client (mitmproxy sends the end of
the message only after the ``response`` hook). Streamed (SSE) responses are teed into the record
as they pass. Secrets are redacted before anything is queued.

It reads the flow's facts (``addons/flow/meta.py``) and asks their owners for what is not one: the bodies
masking changed (``piimasking.originals_of``) and the caller's credential values (``credentials.secrets_of``).
It writes the flow's ``RECORDED`` fact; a streamed answer's capture stays here, keyed by the flow.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
import weakref
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from mitmproxy import ctx, exceptions, http
from mitmproxy.connection import ConnectionState
from mitmproxy.flow import Error as FlowError

from addons.bodies.usage import request_model, response_usage
from addons.evidence.manifest import fingerprint
from addons.flow import metrics
from addons.flow.answers import fail_closed
from addons.flow.errors import RecordingUnavailable
from addons.flow.meta import (
    ANSWER,
    APPROVAL,
    CLAIMED_SUB,
    DECISION,
    ERROR,
    IDENTITY,
    PII,
    RECORDED,
    TRAILERS_DROPPED,
    UPSTREAM,
    Finding,
    Originals,
    PiiOutcome,
    Recorded,
)
from addons.flow.streams import Stream, compose_stream
from addons.masking.request_parts import unread_target
from addons.rules.durations import seconds
from addons.rules.model import current_rules
from addons.store.database import Store, StoreError
from addons.store.events import Event
from addons.store.keys import KeyFileError, OriginalsKey, SigningKey, public_pem
from addons.store.redaction import Secrets, redact_event, redact_headers, redact_path

log = logging.getLogger("warden.recorder")


def classify_error(flow: http.HTTPFlow) -> str:
    """The fate of a flow that ended in an error rather than a response."""
    msg = flow.error.msg if flow.error else ""
    if msg == FlowError.KILLED_MESSAGE:
        return "killed"
    if ConnectionState.CAN_READ not in flow.client_conn.state:  # the client closed its side before the answer
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


def _answer_decision(flow: http.HTTPFlow, event: Event, detail: dict[str, object]) -> None:
    """What answer rules did to the answer, on its response (or error) event: never the text they matched."""
    note = ANSWER.of(flow)
    if note is None:
        return
    event.decision, event.rule, event.reason = note.decision, note.rule, event.reason or note.reason
    detail["answer"] = dataclasses.asdict(note)
    if note.decision == "block" and event.fate != "answer_blocked":  # its stream ended, then the client left
        detail["ended"], event.fate, event.reason = event.fate, "answer_blocked", note.reason


def _user(flow: http.HTTPFlow) -> str | None:
    identity = IDENTITY.of(flow)
    return identity.sub if identity is not None else None


def _recorded(flow: http.HTTPFlow) -> Recorded:
    recorded = RECORDED.of(flow)
    return recorded if recorded is not None else RECORDED.set(flow, Recorded())


@dataclass
class Capture:
    """What a streamed answer gave the client, up to ``warden_record_max_body`` bytes."""

    body: bytearray = field(default_factory=bytearray)
    truncated: bool = False


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
        self.captures: weakref.WeakKeyDictionary[http.HTTPFlow, Capture] = weakref.WeakKeyDictionary()

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
            # the anchor an auditor compares a pack's key with (README: Evidence for auditors)
            log.info("warden signing key: fingerprint=%s key_id=%s public_key=%s (%s)", fingerprint(
                self.signing_key.public), self.signing_key.key_id, public_pem(self.signing_key.public).decode()
                .split("-----")[2].replace("\n", ""), Path(ctx.options.warden_signing_key).with_suffix(".pub"))
        if "warden_checkpoint_every" in updated and ctx.options.warden_checkpoint_every < 1:
            raise exceptions.OptionsError("warden_checkpoint_every: must be at least 1")
        if "warden_record_timeout" in updated:
            self.record_timeout = seconds("warden_record_timeout")
        if "warden_record_max_body" in updated and ctx.options.warden_record_max_body < 0:
            raise exceptions.OptionsError("warden_record_max_body: must not be negative")
        if "warden_rules" in updated:
            rules = current_rules()
            self.keep_originals = rules.masking.originals
            # a value a reload rotated out is still secret
            self.secrets, self.credential_headers = self.secrets | rules.secret_values(), rules.credential_headers()
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
        await self._commit(flow, self._request_event(flow))
        await self._commit(flow, self._response_event(flow))

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        await self._commit(flow, self._built("request", self._request_event, flow))
        _recorded(flow).forwarded_at = time.time()

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        inner = flow.response.stream
        if callable(inner):  # Intake decides what streams; the record tees what the client gets
            self._tee(flow, flow.response, inner)

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        event = self._built("response", self._response_event, flow)
        await self._commit(flow, event)
        self._count(flow, event)

    @fail_closed
    async def error(self, flow: http.HTTPFlow) -> None:
        assert flow.error is not None
        if not _recorded(flow).events:  # it ended before its request hook (mitmproxy stopped reading an oversized body)
            await self._commit(flow, self._request_event(flow))
        fate, reason = classify_error(flow), flow.error.msg
        stopped = ERROR.of(flow)
        if fate == "upstream_error" and stopped is not None:
            fate, reason = stopped.type, stopped.message  # the gateway stopped it (a body over its limit)
        event = Event(
            kind="error", flow_id=flow.id, fate=fate, status=flow.response.status_code if flow.response else None,
            reason=reason, user=_user(flow), latency_total_ms=self._since(flow.request.timestamp_start),
        )
        capture = self.captures.get(flow)
        if capture is not None:  # a stream cut short: what the client got, in the form the record keeps
            masked = self._originals(flow).recorded_response  # restored pseudonyms are the caller's values
            event.body, event.body_size, event.body_truncated = _clip(
                masked if masked is not None else bytes(capture.body), ctx.options.warden_record_max_body
            )
        detail: dict[str, object] = {}
        _answer_decision(flow, event, detail)
        event.detail = detail or None
        await self._commit(flow, event)
        self._count(flow, event)

    # -- events -------------------------------------------------------------------------------------

    def _request_event(self, flow: http.HTTPFlow) -> Event:
        req = flow.request
        stopped, decision, identity, pii = ERROR.of(flow), DECISION.of(flow), IDENTITY.of(flow), PII.of(flow)
        masking = ctx.master.addons.get("piimasking")  # what the record may show of a request is its to say
        withheld = masking.unread(flow) if masking is not None else None
        body, size, truncated = _clip(req.raw_content, ctx.options.warden_record_max_body)
        if withheld is not None:  # kept only as an original (encrypted, or not at all), never in the clear
            body, truncated = None, False
        if stopped is not None:
            fate = stopped.type
        elif flow.response is not None:
            fate = "answered_locally"
        else:
            fate = "forwarded"
        detail: dict[str, object] = {}
        originals = self._originals(flow)
        event = Event(
            kind="request", flow_id=flow.id, ts=_ts(req.timestamp_start), user=_user(flow),
            client=_peer(flow), mode=_mode(flow), method=req.method, scheme=req.scheme, host=req.host,
            port=req.port, path=redact_path(masking.shown_target(flow) if masking is not None else req.path),
            http_version=req.http_version,
            fate=fate,
            decision=decision.action if decision else None, rule=decision.rule if decision else None,
            reason=(stopped.message if stopped else (decision.reason if decision else None)) or None,
            upstream=UPSTREAM.of(flow),
            model=None if withheld else request_model(req.raw_content, req.headers.get("content-type", "")),
            headers=redact_headers(req.headers.fields), body=body, body_size=size, body_truncated=truncated,
        )
        if masking is not None and (pii is None or not pii.parts_read):
            event.headers = masking.shown_headers(flow, event.headers or [])
            detail["target_withheld"] = "not read for PII: the query, values in the path and header values are not kept"
        if identity is not None:
            detail["identity"] = dataclasses.asdict(identity)
        elif (claimed_sub := CLAIMED_SUB.of(flow)) is not None:
            detail["claimed_sub"] = claimed_sub  # unverified: the token was refused
        if (approval := APPROVAL.of(flow)) is not None:  # the approval or grant it waited on or passed under
            detail["approval"] = dataclasses.asdict(approval)
        original = originals.request
        if withheld is not None:
            detail["body_withheld"] = withheld
            original = req.raw_content
        if original is not None and (original != req.raw_content or withheld is not None):
            detail["original"] = self.keep_original(event, original, flow.id)
        if pii is not None:
            detail["pii"] = _pii_detail(pii.profile, pii.findings, adapter=pii.adapter, skipped=pii.skipped,
                                        census=pii.census, passed=pii.passed)
            event.entities = PiiOutcome.counts(pii.findings) or None
        event.detail = detail or None
        return event

    def _response_event(self, flow: http.HTTPFlow) -> Event:
        resp = flow.response
        assert resp is not None
        streamed = bool(resp.stream)
        originals, capture = self._originals(flow), self.captures.get(flow)
        raw: bytes | None
        if originals.recorded_response is not None:  # masking rewrote it: the record keeps the masked form
            raw = originals.recorded_response
        elif streamed and capture is not None:
            raw = bytes(capture.body)
        else:
            raw = resp.raw_content
        body, size, truncated = _clip(raw, ctx.options.warden_record_max_body)
        content_type = resp.headers.get("content-type", "")
        decoded = raw if streamed or originals.recorded_response is not None else resp.get_content(strict=False)
        usage = response_usage(decoded, content_type)
        stopped, recorded, pii = ERROR.of(flow), RECORDED.of(flow), PII.of(flow)
        local = (stopped is not None and ANSWER.of(flow) is None) or flow.server_conn.timestamp_start is None
        event = Event(
            kind="response", flow_id=flow.id, user=_user(flow), status=resp.status_code,
            fate=stopped.type if stopped else ("answered_locally" if local else "completed"),
            reason=stopped.message if stopped else None, http_version=resp.http_version,
            headers=redact_headers(resp.headers.fields), body=body, body_size=size,
            body_truncated=truncated or (capture is not None and capture.truncated),
            tokens_in=usage.tokens_in, tokens_out=usage.tokens_out,
            latency_upstream_ms=None if local else self._since(recorded.forwarded_at if recorded else None,
                                                               resp.timestamp_end),
            latency_total_ms=self._since(flow.request.timestamp_start),
        )
        detail: dict[str, object] = {"streamed": streamed} if streamed else {}
        if trailers := TRAILERS_DROPPED.of(flow):
            detail["trailers_dropped"] = trailers
        if originals.response is not None and originals.response != raw:
            detail["original"] = self.keep_original(event, originals.response, flow.id)
        if pii is not None and pii.response_findings:
            detail["pii"] = _pii_detail(pii.profile, pii.response_findings)
            event.entities = PiiOutcome.counts(pii.response_findings)
        _answer_decision(flow, event, detail)
        event.detail = detail or None
        return event

    @staticmethod
    def _originals(flow: http.HTTPFlow) -> Originals:
        """The bodies masking and answer rules changed, as they were, from their owners (none without them)."""
        masking, answers = ctx.master.addons.get("piimasking"), ctx.master.addons.get("answers")
        originals = masking.originals_of(flow) if masking is not None else Originals()
        return answers.originals_of(flow, originals) if answers is not None else originals

    @staticmethod
    def _caller_secrets(flow: http.HTTPFlow) -> frozenset[str]:
        """The caller's credential values, from their owner (none without the credentials addon)."""
        credentials = ctx.master.addons.get("credentials")
        return credentials.secrets_of(flow) if credentials is not None else frozenset()

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

    def _tee(self, flow: http.HTTPFlow, response: http.Response, inner: Stream) -> None:
        limit = ctx.options.warden_record_max_body
        capture = self.captures[flow] = Capture()

        def tee(chunk: bytes) -> bytes:
            room = limit - len(capture.body)
            if room < len(chunk):
                capture.truncated = True
            capture.body += chunk[: max(room, 0)]
            return chunk

        response.stream = compose_stream(inner, tee)

    @staticmethod
    def _since(start: float | None, end: float | None = None) -> float | None:
        if start is None:
            return None
        return round(((end or time.time()) - start) * 1000, 3)

    def _built(self, kind: str, build, flow: http.HTTPFlow) -> Event:
        """``build(flow)``, or, if one of its helpers fails, the ``kind`` event's frame with the failure
        noted: a flow is never left without its event."""
        try:
            return build(flow)
        except Exception as e:
            log.error("warden: building the %s event of %s failed: %r", build.__name__, flow.id, e, exc_info=e)
            req, resp, stopped = flow.request, flow.response, ERROR.of(flow)
            return Event(
                kind=kind, flow_id=flow.id, user=_user(flow), method=req.method,
                host=req.host, port=req.port, path=unread_target(req.path), upstream=UPSTREAM.of(flow),
                status=resp.status_code if resp is not None and kind == "response" else None,
                fate=stopped.type if stopped else ("forwarded" if kind == "request" else "completed"),
                reason=stopped.message if stopped else None,
                detail={"recorder_error": f"{type(e).__name__}: the event holds only what could be gathered"},
            )

    async def _commit(self, flow: http.HTTPFlow, event: Event) -> None:
        seq_hash = await self.commit(event, self._caller_secrets(flow))
        _recorded(flow).events.append(seq_hash)

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
    def _count(flow: http.HTTPFlow, event: Event) -> None:
        found = DECISION.of(flow)
        decision = found.action if found else "none"
        metrics.REQUESTS.labels(fate=event.fate or "unknown", decision=decision).inc()
        if event.latency_total_ms is not None:
            metrics.TOTAL_LATENCY.observe(event.latency_total_ms / 1000)
        if event.latency_upstream_ms is not None:
            metrics.UPSTREAM_LATENCY.observe(event.latency_upstream_ms / 1000)

