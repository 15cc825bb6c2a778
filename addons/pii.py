"""PII masking: nothing sensitive leaves unless policy allows it, and the caller still reads a coherent answer.

After policy, before credentials and the recorder. For each request the caller's masking profile
(the deciding rule's, else by group, else the default) says what to mask and how. The payload
adapter (``addons/masking/payloads``) picks the conversation text of the body, and every other string value
and key is analysed too (deny by default) but for the adapter's structural fields; Presidio analyses them in
worker processes (``addons/masking/pool.py``), save values no recognizer can flag
(``addons/masking/recognizers/inert.py``); the profile's operators (``addons/masking/operators``) replace what
was found, and the body is rendered again from what was analysed, shape intact: the bytes that leave are
never the raw bytes of a body that was parsed. In the same round trip, the query string (masked, in the body's
vault), path segments (refused, masked or passed by the profile's ``path``) and header values outside a structural
set (masked or refused by its ``headers``) are analysed too (``addons/masking/request_parts.py``), and the flow
holds them masked before any refusal. Pseudonyms are restored in the response
(JSON, or SSE event by event, ``addons/masking/stream.py``); PII the upstream itself sends is masked.

What masking did is the flow's ``PII`` fact (findings, never values). What it holds for a flow stays here,
keyed by the flow, in memory only: the pseudonym vault (``vault_of``, for WebSocket messages), the SSE
rewriter, and the bodies it changed as they were (``originals_of``, for the recorder). Where the provider keeps
the conversation (Responses, Assistants threads), the vault is kept beyond the flow, sealed and for
``masking.conversation_ttl``, so a value keeps its pseudonym from turn to turn (``addons/masking/conversations.py``).

Fails closed: a timeout or engine failure answers 503 and nothing leaves; a body that cannot be
inspected, or binary content inside one (an image's data URI, base64 audio), is refused (415) unless
``masking.unknown_content: pass``, and then the record says what was not inspected.
"""

from __future__ import annotations

import collections
import dataclasses
import hashlib
import hmac
import json
import logging
import weakref

from mitmproxy import ctx, exceptions, http
from mitmproxy.net import encoding

from addons.flow import metrics
from addons.flow.answers import fail_closed, refuse
from addons.flow.errors import (
    InternalError,
    MalformedBody,
    NotConfigured,
    PiiUnavailable,
    ResponseUnreadable,
    UnsupportedContent,
)
from addons.flow.meta import DECISION, ERROR, IDENTITY, PENDING, PII, REVIEW, Finding, Originals, PiiOutcome
from addons.flow.streams import compose_stream, unframe
from addons.masking.census import census
from addons.masking.conversations import answered, keeps_conversations
from addons.masking.engine import Engine
from addons.masking.joined import crossing, pieces
from addons.masking.operators import Applied, Masker
from addons.masking.payloads import Payload, adapter_for, body_kind, described, parse_body
from addons.masking.pool import AnalysisUnavailable, default_workers
from addons.masking.pseudonyms import Vault
from addons.masking.request_parts import RequestParts, mask_parts, unread_headers, unread_target
from addons.masking.stream import StreamRewriter
from addons.masking.turns import Turns
from addons.rules.durations import seconds
from addons.rules.masking import Profile
from addons.rules.model import Rules, current_rules
from addons.store.keys import KeyFileError, OriginalsKey, load_or_create_hash_key
from addons.store.redaction import is_credential_header

log = logging.getLogger("warden.pii")
# Presidio logs every recognizer load and every regex match at INFO/DEBUG; through mitmproxy's log
# handler each record wakes the event loop, and a stream scanned delta by delta floods it.
logging.getLogger("presidio-analyzer").setLevel(logging.WARNING)


def _findings(path: str, applied: list[Applied]) -> list[Finding]:
    return [Finding(a.entity, path, a.start, a.end, a.score, a.operator) for a in applied]


def _header_fields(headers: http.Headers) -> list[tuple[str, str]]:
    return [(n.decode("utf-8", "surrogateescape"), v.decode("utf-8", "surrogateescape")) for n, v in headers.fields]


def _count(findings: list[Finding], direction: str) -> None:
    for finding in findings:
        metrics.PII_FINDINGS.labels(entity=finding.entity, direction=direction).inc()


class PiiMasking:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.engine = Engine()
        self.hash_key: bytes | None = None
        # Per flow, memory only: never in flow.metadata, never recorded as such.
        self.vaults: weakref.WeakKeyDictionary[http.HTTPFlow, Vault] = weakref.WeakKeyDictionary()
        self.streams: weakref.WeakKeyDictionary[http.HTTPFlow, StreamRewriter] = weakref.WeakKeyDictionary()
        self.originals: weakref.WeakKeyDictionary[http.HTTPFlow, Originals] = weakref.WeakKeyDictionary()
        self.turns = Turns()  # conversations the provider keeps

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
            self.engine.timeout = seconds("warden_pii_timeout")
        if "warden_pii_hash_key" in updated:
            try:
                self.hash_key = load_or_create_hash_key(ctx.options.warden_pii_hash_key)
            except KeyFileError as e:
                raise exceptions.OptionsError(f"warden_pii_hash_key: {e}") from None
        if updated & {"warden_rules", "warden_pii_workers", "warden_pii_timeout"}:
            self.rules = current_rules()
            self.engine.configure(self.rules.masking, ctx.options.warden_pii_workers or default_workers())
            self.turns.configure(self.rules.masking, OriginalsKey)

    async def prepare_rules(self, rules: Rules) -> None:
        """Before a reload puts ``rules`` in force (the Config addon awaits this): if they need another analyzer,
        start it and wait until it is ready while the one in force serves. Raises ``RulesError`` if it cannot."""
        await self.engine.prepare(rules, ctx.options.warden_pii_workers or default_workers())

    def running(self) -> None:
        self.engine.running()

    def done(self) -> None:
        self.engine.close()

    # -- what masking holds for a flow --------------------------------------------------------------------

    def vault_of(self, flow: http.HTTPFlow) -> Vault | None:
        """The flow's pseudonym vault (pseudonym -> the caller's value), once its request passed masking."""
        return self.vaults.get(flow)

    def originals_of(self, flow: http.HTTPFlow) -> Originals:
        """The flow's bodies that masking changed, as they were (empty if it changed none): the caller's PII,
        for the recorder to keep encrypted or not at all. An answer still streaming (cut before its end) gives
        what its rewriter passed so far."""
        found = self.originals.get(flow)
        streaming = self.streams.get(flow)
        if streaming is not None and (streaming.applied or streaming.restored):
            return dataclasses.replace(found or Originals(), response=bytes(streaming.original),
                                       recorded_response=bytes(streaming.record))
        return found if found is not None else Originals()

    def unread(self, flow: http.HTTPFlow) -> str | None:
        """Why the flow's request body may not be shown in the clear (recorded, previewed), or None: a body masking
        did not read (refused before masking, unparsable, not inspected) may carry PII."""
        if not flow.request.raw_content:
            return None
        outcome = PII.of(flow)
        if outcome is None:
            return "not read for PII: the request was refused before masking"
        if outcome.read:
            return None
        return f"not read for PII: {outcome.skipped}" if outcome.skipped else "not read for PII: it could not be masked"

    def shown_target(self, flow: http.HTTPFlow) -> str:
        """The request target as a record or preview may show it: masked (a segment passed by policy too), or, if
        masking never read it, its plain path segments only (``unread_target``)."""
        outcome = PII.of(flow)
        if outcome is None or not outcome.parts_read:
            return unread_target(flow.request.path)
        return self.originals_of(flow).recorded_target or flow.request.path

    def shown_headers(self, flow: http.HTTPFlow, pairs: list[list[str]]) -> list[list[str]]:
        """Header ``pairs`` as a record may show them: as they left if masking read them, else structural values
        only (``unread_headers``)."""
        outcome = PII.of(flow)
        return pairs if outcome is not None and outcome.parts_read else unread_headers(pairs)

    def values_digest(self, flow: http.HTTPFlow) -> str:
        """A keyed digest (HMAC under the hash operator's key) of the values the flow's pseudonyms stand for: two
        requests that mask to the same bytes but name other people differ in it. Empty without a vault."""
        vault = self.vaults.get(flow)
        if vault is None or self.hash_key is None:
            return ""
        values = sorted(vault.state()["values"].items())
        return hmac.new(self.hash_key, json.dumps(values).encode(), hashlib.sha256).hexdigest()

    def _originals(self, flow: http.HTTPFlow) -> Originals:
        return self.originals.setdefault(flow, Originals())

    def answer_findings(self, flow: http.HTTPFlow) -> dict[str, int]:
        """What masking found in the flow's answer so far, by entity (a stream: in what its rewriter released)."""
        streaming = self.streams.get(flow)
        if streaming is not None:
            return dict(collections.Counter(applied.entity for applied in streaming.applied))
        outcome = PII.of(flow)
        return PiiOutcome.counts(outcome.response_findings) if outcome is not None else {}

    # -- requests -------------------------------------------------------------------------------------

    def _profile(self, flow: http.HTTPFlow) -> Profile:
        assert self.rules is not None
        decision, identity = DECISION.of(flow), IDENTITY.of(flow)
        rule_profile = decision.masking if decision is not None else None
        groups = identity.groups if identity is not None else []
        return self.rules.masking.profile_for(rule_profile, groups)

    def _masker(self, profile: Profile, vault: Vault, reversible: bool) -> Masker:
        assert self.rules is not None and self.hash_key is not None
        masking = self.rules.masking
        return Masker(profile, vault, self.hash_key, masking.allow_list, masking.allow_regex, reversible)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if self.rules is None or self.hash_key is None:
            refuse(flow, NotConfigured("the gateway has no valid masking configuration; see the operator log"))
            return
        decision = DECISION.of(flow)
        pending = decision is not None and decision.action == PENDING  # a rule reads what analysis finds
        profile = self._profile(flow)
        outcome = PII.set(flow, PiiOutcome(profile=profile.name))
        self.vaults[flow] = Vault()
        if not profile.active and not pending:
            outcome.skipped, outcome.read, outcome.parts_read = "the profile masks nothing", True, True
            return
        # Responses are masked and restored as they stream: ask for them unencoded.
        flow.request.headers["accept-encoding"] = "identity"
        body = flow.request.get_content(strict=True) or b""
        malformed: MalformedBody | None = None
        try:
            parsed = parse_body(flow.request.path, flow.request.headers.get("content-type", ""), body,
                                inert=self.engine.inert)
        except MalformedBody as e:  # refused once the query and headers are masked: the record never holds them
            parsed, malformed = None, e
        payload = parsed[0] if parsed is not None else None
        slots = payload.slots if payload is not None else []
        parts = self._parts(flow)
        try:
            spans, across, in_windows, in_parts = await self.engine.analyze(slots, parts)
        except AnalysisUnavailable as e:
            metrics.PII_FAILURES.inc()
            refuse(flow, PiiUnavailable(f"{e}; the request was not forwarded"))
            return
        if pending and malformed is None:
            # counted as masking would mask: values split across parts too, each request part once
            texts = [slot.text for slot in slots] + [w.text for w in across] + [part.text for part in parts.parts]
            found = spans + crossing(across, in_windows) + parts.spans(in_parts, self._ner_entities())
            decided = self._decided(flow, outcome, texts, found,
                                    inspected=payload is not None and not payload.uninspected)
            profile = decided or self._profile(flow)  # refused: masked all the same, for the record
            if not profile.active:
                if decided is not None:
                    outcome.skipped, outcome.read, outcome.parts_read = "the profile masks nothing", True, True
                return
        texts = [slot.text for slot in slots] + parts.texts
        self.vaults[flow] = vault = self.turns.open(flow, payload.document if payload is not None else None, texts)
        masker = self._masker(profile, vault, reversible=True)
        if parsed is not None and payload is not None:
            outcome.adapter = parsed[1]
            masked = masker.mask(payload, spans, pieces(masker, slots, spans, in_windows, across))
            outcome.findings = [finding for path, applied in masked for finding in _findings(path, applied)]
            if outcome.findings:
                self._originals(flow).request = flow.request.raw_content
            if body:  # even unchanged: what leaves (or is recorded) is what was analysed, never the bytes as they came
                flow.request.content = payload.render()
            outcome.read = not payload.uninspected  # binary content passed unread: the body is not shown in the clear
        self._mask_parts(flow, profile, outcome, parts, masker, in_parts)
        _count(outcome.findings, "request")
        if flow.response is None:
            if malformed is not None:
                refuse(flow, malformed)
            elif payload is None:
                content_type = flow.request.headers.get("content-type", "") or "no Content-Type"
                self._not_inspected(flow, outcome, f"the body ({content_type})")
            elif payload.uninspected:
                self._not_inspected(flow, outcome, f"content in the body ({described(payload.uninspected)})")
        if flow.response is None:  # a refused turn keeps nothing for its conversation
            self.turns.keep(flow, vault, ())  # before any await: a concurrent turn numbers on from here

    def _decided(self, flow: http.HTTPFlow, outcome: PiiOutcome, texts: list[str], spans: list[list], *,
                 inspected: bool) -> Profile | None:
        """Policy's decision, now that analysis counted what some profile would mask (``inspected``: all of the body
        was read); then the deciding rule's profile, or None if the request was refused."""
        assert self.rules is not None
        policy = ctx.master.addons.get("policy")
        if policy is None:
            refuse(flow, NotConfigured("a rule reads PII findings but the gateway has no policy addon"))
            return None
        found = census(self.rules.masking, texts, spans)
        outcome.census = {e: n for e, n in found.counts.items() if n}
        decision = policy.decide_after_analysis(flow, found.facts(inspected=inspected))
        if decision.action not in ("allow", REVIEW):  # a review is masked as its rule says, then held
            return None
        profile = self._profile(flow)
        outcome.profile = profile.name
        return profile

    # -- the query, the path and the headers --------------------------------------------------------------

    def _ner_entities(self) -> tuple[str, ...]:
        pool = self.engine.pool
        return tuple(pool.spec.ner_entities) if pool is not None else ()

    def _parts(self, flow: http.HTTPFlow) -> RequestParts:
        assert self.rules is not None
        credential_headers = self.rules.credential_headers()
        return RequestParts.read(
            flow.request.path, _header_fields(flow.request.headers),
            lambda name, value: name.lower() in credential_headers or is_credential_header(name, value),
            self.engine.inert)

    def _mask_parts(self, flow: http.HTTPFlow, profile: Profile, outcome: PiiOutcome, parts: RequestParts,
                    masker: Masker, spans: list[list]) -> None:
        """Mask what was found in the query, fragment, path segments and headers, refused or passed as the profile
        says. The flow, refused or not, holds them masked (so does the record) but for segments passed by policy."""
        masked = mask_parts(parts, spans, masker, profile, self._ner_entities())
        outcome.findings += masked.findings
        outcome.parts_read = True
        if not any(part.masked is not None for part in parts.parts):
            return
        if masked.passed:
            outcome.passed = "path segments passed unmasked (masking path: pass): " + ", ".join(masked.passed)
            self._originals(flow).recorded_target = parts.target()
        flow.request.path = parts.target(keep=("segment",) if masked.passed and masked.refusal is None else ())
        if any(part.kind == "header" and part.masked is not None for part in parts.parts):
            # by position: the body's Content-Length was set since the headers were read
            headers = parts.headers(_header_fields(flow.request.headers))
            flow.request.headers.fields = tuple((n.encode("utf-8", "surrogateescape"),
                                                 v.encode("utf-8", "surrogateescape")) for n, v in headers)
        if masked.refusal is not None:
            refuse(flow, masked.refusal)

    def _not_inspected(self, flow: http.HTTPFlow, outcome: PiiOutcome, what: str) -> None:
        """A body, or content inside one (an image, audio), that no analyzer reads: refused, or passed and said so."""
        assert self.rules is not None
        if self.rules.masking.unknown_content == "block":
            refuse(flow, UnsupportedContent(
                f"{what} cannot be inspected for PII, and masking.unknown_content is 'block'; send JSON, form or "
                "text, or ask an operator for a rule whose masking profile allows it"
            ))
            return
        outcome.skipped = f"{what}: not inspected, passed (masking.unknown_content: pass)"

    # -- messages after the handshake (WebSocket) -----------------------------------------------------

    async def mask_texts(self, flow: http.HTTPFlow, texts: list[str], *,
                         response: bool = False) -> tuple[list[str], list[Finding]]:
        """``texts`` masked with ``flow``'s profile and vault, as its bodies are: pseudonyms numbered as in the
        handshake on the way out; with ``response``, the profile's answer masking, pseudonyms left in place (the
        caller restores them for the client with the vault). Raises ``PiiUnavailable`` when analysis fails."""
        outcome, vault = PII.of(flow), self.vaults.get(flow)
        if outcome is None or vault is None or self.rules is None or self.hash_key is None:
            raise PiiUnavailable("the flow has no masking state; its messages cannot be masked")
        profile = self.rules.masking.profile(outcome.profile)
        if not profile.active:
            return list(texts), []
        spans: list[list] = [[] for _ in texts]
        if not response or profile.responses == "mask":
            if not response:
                vault.reserve(texts)
            try:
                spans = await self.engine.analyze_texts(list(texts))
            except AnalysisUnavailable as e:
                metrics.PII_FAILURES.inc()
                raise PiiUnavailable(f"{e}; the message was not relayed") from None
        masker = self._masker(profile, vault, reversible=not response)
        masked, findings = [], []
        for i, (text, found) in enumerate(zip(texts, spans, strict=True)):
            out, applied = masker.apply(text, found)
            masked.append(out)
            findings += _findings(f"$[{i}]", applied)
        _count(findings, "response" if response else "request")
        return masked, findings

    # -- responses ------------------------------------------------------------------------------------

    def _active(self, flow: http.HTTPFlow) -> Profile | None:
        """The flow's profile if its response is ours to mask (not for answers the gateway gave itself)."""
        outcome = PII.of(flow)
        if outcome is None or ERROR.of(flow) is not None or self.rules is None:
            return None
        profile = self.rules.masking.profile(outcome.profile)
        return profile if profile.active else None

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        profile = self._active(flow)
        inner = flow.response.stream
        if profile is None or not callable(inner):  # Intake decides what streams (and decodes it)
            return
        self.streams[flow] = rewriter = self._rewriter(flow, profile)
        if keeps_conversations(flow.request.path):  # the answer may name a response or thread later turns continue
            inner = compose_stream(inner, self.turns.watcher(flow, self.vaults.get))
        flow.response.stream = compose_stream(inner, rewriter)
        unframe(flow)

    def _rewriter(self, flow: http.HTTPFlow, profile: Profile) -> StreamRewriter:
        """A new SSE rewriter for the flow: restores pseudonyms, masks pattern entities if the profile masks answers."""
        vault = self.vaults[flow]
        mask = profile.responses == "mask"
        return StreamRewriter(adapter_for(flow.request.path), vault,
                              self._masker(profile, vault, reversible=False) if mask else None,
                              self.engine.scanner() if mask else None)

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        profile = self._active(flow)
        if profile is None:
            return
        # a 2xx answer confirms the ids its request named, whether it names any or not
        self.turns.keep(flow, self.vaults.get(flow), ())
        streamed = self.streams.get(flow)
        if streamed is not None:
            self._finish_stream(flow, streamed)  # if it raises, originals_of still reads what the stream passed
            del self.streams[flow]
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
            watcher = self.turns.watcher(flow, self.vaults.get)
            watcher(body)
            watcher(b"")
            rewriter = self._rewriter(flow, profile)
            client = b"".join(rewriter(body) + rewriter(b""))
            self._finish_stream(flow, rewriter)
            if client != body:
                self._replace_body(flow, client, bytes(rewriter.record))
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
        self.turns.keep(flow, self.vaults.get(flow), answered(payload.document))
        findings, record_texts, client_texts = await self._mask_response(payload, profile, self.vaults[flow])
        per_slot = zip(record_texts, client_texts, payload.slots, strict=True)
        if not findings and all(r == c == s.text for r, c, s in per_slot):
            return
        for slot, text in zip(payload.slots, record_texts, strict=True):
            slot.set(text)
        record = payload.render()
        for slot, text in zip(payload.slots, client_texts, strict=True):
            slot.set(text)
        self._replace_body(flow, payload.render(), record)
        outcome = PII.of(flow)
        assert outcome is not None
        outcome.response_findings = findings
        _count(findings, "response")

    async def _mask_response(self, payload: Payload, profile: Profile,
                             vault: Vault) -> tuple[list[Finding], list[str], list[str]]:
        masker = self._masker(profile, vault, reversible=False)
        shares: dict = {}
        if profile.responses == "mask":
            try:
                spans, across, in_windows, _ = await self.engine.analyze(payload.slots)
            except AnalysisUnavailable as e:
                metrics.PII_FAILURES.inc()
                raise PiiUnavailable(f"{e}; the upstream's answer was not passed on unmasked") from None
            shares = pieces(masker, payload.slots, spans, in_windows, across)
        else:
            spans = [[] for _ in payload.slots]
        findings, record, client = [], [], []
        for i, (slot, found) in enumerate(zip(payload.slots, spans, strict=True)):
            masked, applied = masker.apply(slot.text, found, pieces=shares.get(i, ()))
            findings += _findings(slot.path, applied)
            record.append(masked)
            client.append(vault.restore(masked))
        return findings, record, client

    def _replace_body(self, flow: http.HTTPFlow, client: bytes, record: bytes) -> None:
        response = flow.response
        assert response is not None
        originals = self._originals(flow)
        originals.response = response.raw_content
        ce = response.headers.get("content-encoding", "")
        originals.recorded_response = encoding.encode(record, ce) if ce else record
        response.content = client

    def _finish_stream(self, flow: http.HTTPFlow, rewriter: StreamRewriter) -> None:
        outcome = PII.of(flow)
        assert outcome is not None
        if rewriter.error is not None:
            raise InternalError(f"masking the streamed answer failed ({rewriter.error}); the stream was cut off")
        outcome.response_findings = [Finding(a.entity, "stream", a.start, a.end, a.score, a.operator)
                                     for a in rewriter.applied]
        _count(outcome.response_findings, "response")
        if rewriter.applied or rewriter.restored:
            originals = self._originals(flow)
            originals.recorded_response = bytes(rewriter.record)
            originals.response = bytes(rewriter.original)
