"""PII masking: nothing sensitive leaves unless policy allows it, and the caller still reads a coherent answer.

After policy, before credentials and the recorder. For each request the caller's masking profile
(the deciding rule's, else by group, else the default) says what to mask and how. The payload
adapter (``addons/masking/payloads``) picks the text values of the body; Presidio analyses them in worker
processes (``addons/masking/pool.py``); the profile's operators (``addons/masking/operators``) replace what was
found, and the body is re-encoded with its shape intact. Pseudonyms are restored in the response
(JSON, or SSE event by event, ``addons/masking/stream.py``); PII the upstream itself sends is masked.

Fails closed: a timeout or engine failure answers 503 and nothing leaves; a body that cannot be
inspected is refused (415) unless ``masking.unknown_content: pass``.
"""

from __future__ import annotations

import logging
import threading
from concurrent.futures import Future

from mitmproxy import ctx, exceptions, http
from mitmproxy.net import encoding

from addons.flow import metrics
from addons.flow.errors import (
    InternalError,
    MalformedBody,
    NotConfigured,
    PiiUnavailable,
    ResponseUnreadable,
    UnsupportedContent,
)
from addons.flow.meta import Finding, PiiOutcome, WardenMeta, compose_stream, fail_closed, meta, refuse, unframe
from addons.masking.operators import Applied, Masker, operators
from addons.masking.payloads import Payload, adapter_for, body_kind, parse_body
from addons.masking.pool import AnalysisPool, AnalysisUnavailable, default_workers
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers import pattern_scanner
from addons.masking.stream import StreamRewriter
from addons.rules.durations import seconds
from addons.rules.masking import Profile
from addons.rules.model import Rules, current_rules
from addons.store.keys import KeyFileError, load_or_create_hash_key

log = logging.getLogger("warden.pii")
# Presidio logs every recognizer load and every regex match at INFO/DEBUG; through mitmproxy's log
# handler each record wakes the event loop, and a stream scanned delta by delta floods it.
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)


def _load_presidio(spec, into: Future) -> None:
    try:
        operators()
        into.set_result(pattern_scanner(spec))
    except Exception as e:  # surfaces on first use, which fails closed
        into.set_exception(e)


def _findings(path: str, applied: list[Applied]) -> list[Finding]:
    return [Finding(a.entity, path, a.start, a.end, a.score, a.operator) for a in applied]


def _count(findings: list[Finding], direction: str) -> None:
    for finding in findings:
        metrics.PII_FINDINGS.labels(entity=finding.entity, direction=direction).inc()


class PiiMasking:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.pool: AnalysisPool | None = None
        self.hash_key: bytes | None = None
        self._scanner: Future = Future()
        self.timeout = 30.0

    def load(self, loader) -> None:
        loader.add_option(
            "warden_pii_workers", int, 0,
            "Processes that run the PII analyzer (Presidio + spaCy); 0: one per CPU core.",
        )
        loader.add_option(
            "warden_pii_timeout", str, "30",
            "Seconds PII analysis of one body may take; after that the request is refused (503), never forwarded.",
        )
        loader.add_option(
            "warden_pii_hash_key", str, "certs/warden-pii-hash.key",
            "HMAC key of the 'hash' masking operator (created if missing); WARDEN_PII_HASH_KEY (base64) wins.",
        )

    def configure(self, updated: set[str]) -> None:
        if "warden_pii_workers" in updated and ctx.options.warden_pii_workers < 0:
            raise exceptions.OptionsError("warden_pii_workers: must be 0 (one per core) or a positive number")
        if "warden_pii_timeout" in updated:
            self.timeout = seconds("warden_pii_timeout")
        if "warden_pii_hash_key" in updated:
            try:
                self.hash_key = load_or_create_hash_key(ctx.options.warden_pii_hash_key)
            except KeyFileError as e:
                raise exceptions.OptionsError(f"warden_pii_hash_key: {e}") from None
        if updated & {"warden_rules", "warden_pii_workers", "warden_pii_timeout"}:
            self.rules = current_rules()
            self._configure_pool()

    def _configure_pool(self) -> None:
        assert self.rules is not None
        spec = self.rules.masking.engine_spec()
        workers = ctx.options.warden_pii_workers or default_workers()
        old = self.pool
        if old is not None and old.spec == spec and old.workers == workers:
            old.timeout = self.timeout
            return
        self.pool = AnalysisPool(spec, workers, self.timeout)
        if old is not None:
            old.close()
        self.pool.start()  # configure runs on mitmproxy's event loop: the workers load their model meanwhile
        # Presidio (and spaCy with it) is imported beside start-up, not in its way.
        scanner: Future = Future()
        threading.Thread(target=_load_presidio, args=(spec, scanner), name="warden-pii-load", daemon=True).start()
        self._scanner = scanner

    def _stream_scanner(self):
        """The pattern scanner for streamed answers (waits for Presidio's import the first time).
        A method, not a property: mitmproxy reads every attribute of an addon when it registers it."""
        return self._scanner.result()

    def running(self) -> None:
        if self.pool is not None and self.pool.state == "stopped":
            self.pool.start()

    def done(self) -> None:
        if self.pool is not None:
            self.pool.close()

    # -- requests -------------------------------------------------------------------------------------

    def _profile(self, m: WardenMeta) -> Profile:
        assert self.rules is not None
        rule_profile = m.decision.masking if m.decision is not None else None
        groups = m.identity.groups if m.identity is not None else []
        return self.rules.masking.profile_for(rule_profile, groups)

    def _masker(self, profile: Profile, vault: Vault, reversible: bool) -> Masker:
        assert self.rules is not None and self.hash_key is not None
        masking = self.rules.masking
        return Masker(profile, vault, self.hash_key, masking.allow_list, masking.allow_regex, reversible)

    async def _analyze(self, payload: Payload) -> list[list]:
        return await self._analyze_texts([slot.text for slot in payload.slots])

    async def _analyze_texts(self, texts: list[str]) -> list[list]:
        if not texts:
            return []
        if self.pool is None:
            raise AnalysisUnavailable("the PII analyzer is not configured")
        return await self.pool.analyze(texts)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if self.rules is None or self.hash_key is None:
            refuse(flow, NotConfigured("the gateway has no valid masking configuration; see the operator log"))
            return
        m = meta(flow)
        profile = self._profile(m)
        m.pii = outcome = PiiOutcome(profile=profile.name, vault=Vault())
        if not profile.active:
            outcome.skipped = "the profile masks nothing"
            return
        # Responses are masked and restored as they stream: ask for them unencoded.
        flow.request.headers["accept-encoding"] = "identity"
        body = flow.request.get_content(strict=True) or b""
        try:
            parsed = parse_body(flow.request.path, flow.request.headers.get("content-type", ""), body)
        except MalformedBody as e:
            refuse(flow, e)
            return
        if parsed is None:
            self._uninspectable(flow, outcome)
            return
        payload, outcome.adapter = parsed
        try:
            spans = await self._analyze(payload)
        except AnalysisUnavailable as e:
            metrics.PII_FAILURES.inc()
            refuse(flow, PiiUnavailable(f"{e}; the request was not forwarded"))
            return
        outcome.vault = vault = Vault(slot.text for slot in payload.slots)
        masker = self._masker(profile, vault, reversible=True)
        for slot, found in zip(payload.slots, spans, strict=True):
            masked, applied = masker.apply(slot.text, found)
            if applied:
                slot.set(masked)
                outcome.findings += _findings(slot.path, applied)
        if outcome.findings:
            m.original_request_body = flow.request.raw_content
            flow.request.content = payload.render()
            _count(outcome.findings, "request")

    def _uninspectable(self, flow: http.HTTPFlow, outcome: PiiOutcome) -> None:
        assert self.rules is not None
        content_type = flow.request.headers.get("content-type", "") or "no Content-Type"
        if self.rules.masking.unknown_content == "block":
            refuse(flow, UnsupportedContent(
                f"the body ({content_type}) cannot be inspected for PII, and masking.unknown_content is 'block'; "
                "send JSON, form or text, or ask an operator for a rule whose masking profile allows it"
            ))
            return
        outcome.skipped = f"uninspectable body passed ({content_type})"

    # -- messages after the handshake (WebSocket) -----------------------------------------------------

    async def mask_texts(self, flow: http.HTTPFlow, texts: list[str], *,
                         response: bool = False) -> tuple[list[str], list[Finding]]:
        """``texts`` masked with ``flow``'s profile and vault, as its bodies are: pseudonyms numbered as in the
        handshake on the way out; with ``response``, the profile's answer masking, pseudonyms left in place (the
        caller restores them for the client with the vault). Raises ``PiiUnavailable`` when analysis fails."""
        m = meta(flow)
        if m.pii is None or m.pii.vault is None or self.rules is None or self.hash_key is None:
            raise PiiUnavailable("the flow has no masking state; its messages cannot be masked")
        profile = self.rules.masking.profile(m.pii.profile)
        if not profile.active:
            return list(texts), []
        spans: list[list] = [[] for _ in texts]
        if not response or profile.responses == "mask":
            if not response:
                m.pii.vault.reserve(texts)
            try:
                spans = await self._analyze_texts(list(texts))
            except AnalysisUnavailable as e:
                metrics.PII_FAILURES.inc()
                raise PiiUnavailable(f"{e}; the message was not relayed") from None
        masker = self._masker(profile, m.pii.vault, reversible=not response)
        masked, findings = [], []
        for i, (text, found) in enumerate(zip(texts, spans, strict=True)):
            out, applied = masker.apply(text, found)
            masked.append(out)
            findings += _findings(f"$[{i}]", applied)
        _count(findings, "response" if response else "request")
        return masked, findings

    # -- responses ------------------------------------------------------------------------------------

    def _active(self, m: WardenMeta) -> Profile | None:
        """The flow's profile if its response is ours to mask (not for answers the gateway gave itself)."""
        if m.pii is None or m.error is not None or self.rules is None:
            return None
        profile = self.rules.masking.profile(m.pii.profile)
        return profile if profile.active else None

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        m = meta(flow)
        profile = self._active(m)
        inner = flow.response.stream
        if profile is None or not callable(inner):  # Intake decides what streams (and decodes it)
            return
        flow.response.stream = compose_stream(inner, self._rewriter(flow, profile, m))
        unframe(flow)

    def _rewriter(self, flow: http.HTTPFlow, profile: Profile, m: WardenMeta) -> StreamRewriter:
        """The flow's SSE rewriter: restores pseudonyms, and masks pattern entities if the profile masks answers."""
        assert m.pii is not None
        mask = profile.responses == "mask"
        m.pii.stream = StreamRewriter(adapter_for(flow.request.path), m.pii.vault,
                                      self._masker(profile, m.pii.vault, reversible=False) if mask else None,
                                      self._stream_scanner() if mask else None)
        return m.pii.stream

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        m = meta(flow)
        profile = self._active(m)
        if profile is None:
            return
        assert m.pii is not None
        if m.pii.stream is not None:
            self._finish_stream(m)
            return
        response = flow.response
        try:
            body = response.get_content(strict=True) or b""
        except ValueError:
            raise ResponseUnreadable(f"the upstream's response declares Content-Encoding "
                                     f"{response.headers.get('content-encoding')!r} but does not decode; "
                                     "it was not passed on unmasked") from None
        content_type = response.headers.get("content-type", "")
        if body_kind(content_type, body) == "sse":  # an encoded stream, buffered: rewrite it whole
            rewriter = self._rewriter(flow, profile, m)
            client = b"".join(rewriter(body) + rewriter(b""))
            self._finish_stream(m)
            if client != body:
                self._replace_body(response, m, client, bytes(rewriter.record))
            return
        try:
            parsed = parse_body(flow.request.path, content_type, body, response=True)
        except MalformedBody:
            # Not what it says it is (an HTML error page sent as JSON): read it as text, or not at all.
            try:
                parsed = parse_body(flow.request.path, "text/plain; charset=utf-8", body, response=True)
            except MalformedBody as e:
                raise ResponseUnreadable(f"the upstream's answer cannot be read for masking ({e.message})") from None
        if parsed is None:
            return  # binary (audio, images): nothing the analyzer reads, nothing to restore
        payload = parsed[0]
        findings, record_texts, client_texts = await self._mask_response(payload, profile, m)
        if not findings and all(r == c == s.text for r, c, s in zip(record_texts, client_texts, payload.slots, strict=True)):
            return
        for slot, text in zip(payload.slots, record_texts, strict=True):
            slot.set(text)
        record = payload.render()
        for slot, text in zip(payload.slots, client_texts, strict=True):
            slot.set(text)
        self._replace_body(response, m, payload.render(), record)
        m.pii.response_findings = findings
        _count(findings, "response")

    async def _mask_response(self, payload: Payload, profile: Profile,
                             m: WardenMeta) -> tuple[list[Finding], list[str], list[str]]:
        assert m.pii is not None
        vault: Vault = m.pii.vault
        if profile.responses == "mask":
            try:
                spans = await self._analyze(payload)
            except AnalysisUnavailable as e:
                metrics.PII_FAILURES.inc()
                raise PiiUnavailable(f"{e}; the upstream's answer was not passed on unmasked") from None
        else:
            spans = [[] for _ in payload.slots]
        masker = self._masker(profile, vault, reversible=False)
        findings, record, client = [], [], []
        for slot, found in zip(payload.slots, spans, strict=True):
            masked, applied = masker.apply(slot.text, found)
            findings += _findings(slot.path, applied)
            record.append(masked)
            client.append(vault.restore(masked))
        return findings, record, client

    @staticmethod
    def _replace_body(response: http.Response, m: WardenMeta, client: bytes, record: bytes) -> None:
        m.original_response_body = response.raw_content
        ce = response.headers.get("content-encoding", "")
        m.recorded_response_body = encoding.encode(record, ce) if ce else record
        response.content = client

    @staticmethod
    def _finish_stream(m: WardenMeta) -> None:
        assert m.pii is not None
        rewriter: StreamRewriter = m.pii.stream
        if rewriter.error is not None:
            raise InternalError(f"masking the streamed answer failed ({rewriter.error}); the stream was cut off")
        m.pii.response_findings = [Finding(a.entity, "stream", a.start, a.end, a.score, a.operator)
                                   for a in rewriter.applied]
        _count(m.pii.response_findings, "response")
        if rewriter.applied or rewriter.restored:
            m.recorded_response_body = bytes(rewriter.record)
            m.original_response_body = bytes(rewriter.original)
