"""Answers: the rules file's answer rules (``answers:``) applied to what upstreams send back, streams included.

After masking, credentials and the WebSocket addon, before the recorder: the rules read what the client will read
(pseudonyms restored, PII the upstream sent masked, an echoed key redacted), and the recorder records what they
let through. When an answer's headers arrive, the rules whose filter and condition select it are taken from the
rules in force (``addons/screening/screen.py``). A streamed answer (SSE) is screened as it passes
(``addons/screening/stream.py``): a pattern split across deltas is found whole, only the tail that may still
become a match is held back, and a block ends the stream with an error event in the provider's shape. An answer
not streamed is screened whole (``addons/screening/documents.py``): a block replaces it with a JSON error
(``answer_blocked``, 502 or the rule's status), a mask replaces each match with the rule's placeholder.

What the rules did is the flow's ``ANSWER`` fact (decision, rule, reason; never the matched text), which the
recorder puts on the response event. The answer as it reached the rules is kept for the record like a body
masking changed (``originals_of``: encrypted or not at all), and the record's copy of what the client got has the
caller's values, which masking restored in it, concealed again (``Vault.conceal``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import weakref
from collections.abc import Callable
from typing import Any

from mitmproxy import ctx, http

from addons.bodies.decoding import INLINE_LIMIT
from addons.bodies.usage import RequestShape
from addons.flow import metrics
from addons.flow.answers import fail_closed, mark_stopped
from addons.flow.errors import InternalError
from addons.flow.meta import ANSWER, ERROR, PII, AnswerNote, Originals, PiiOutcome
from addons.flow.streams import compose_stream, unframe
from addons.masking.payloads import adapter_for
from addons.rules.conditions import EvaluationError
from addons.rules.facts import facts_for
from addons.rules.model import Rules, current_rules
from addons.screening.documents import MAX_NESTING, screen_body, screen_value
from addons.screening.screen import Blocked, Screen
from addons.screening.stream import StreamScreen

CAPTURE_LIMIT = 16 * 1024 * 1024  # bytes of an answer kept for the record without the recorder's own limit


def _is_sse(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() == "text/event-stream"


def _screen_head(response: http.Response, screen: Screen) -> None:
    """The answer's reason phrase and headers as the client gets them: a value masked in place; a header whose
    name or value a block rule matched is dropped (the body is then refused or its stream ends at once), and so is
    one whose name a mask rule matched (a name has no room for a placeholder)."""
    screen.refresh()
    if not screen.patterns:
        return
    each = screen.probe()  # one header at a time, so a block on one leaves the others masked, not as they came

    def screened(text: str, nesting: int = 0) -> str | None:
        each.blocked = None
        out = screen_value(text, each, nesting)
        if each.blocked is not None and screen.blocked is None:
            screen.blocked = each.blocked
        return None if each.blocked is not None else out

    reason = screened(response.reason)
    if reason != response.reason:
        response.reason = reason if reason is not None and reason.isascii() else ""
    fields = []
    for raw_name, raw_value in response.headers.fields:
        name, value = (raw.decode("utf-8", "surrogateescape") for raw in (raw_name, raw_value))
        if screened(name, MAX_NESTING) != name:
            continue
        new = screened(value)
        if new is not None:
            fields.append((raw_name, raw_value if new == value else new.encode("utf-8", "surrogateescape")))
    if tuple(fields) != tuple(response.headers.fields):
        response.headers.fields = tuple(fields)
    screen.masked.update(each.masked)

def _noted(flow: http.HTTPFlow, note: AnswerNote) -> None:
    ANSWER.set(flow, note)
    metrics.ANSWER_DECISIONS.labels(decision=note.decision, rule=note.rule).inc()


class Answers:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        # Per flow, memory only: the screen of an answer under way, and what the rules changed (before, after).
        self.screens: weakref.WeakKeyDictionary[http.HTTPFlow, Screen] = weakref.WeakKeyDictionary()
        self.streams: weakref.WeakKeyDictionary[http.HTTPFlow, StreamScreen] = weakref.WeakKeyDictionary()
        self.changed: weakref.WeakKeyDictionary[http.HTTPFlow, tuple[bytes, bytes]] = weakref.WeakKeyDictionary()

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            self.rules = current_rules()

    # -- which rules read this answer ---------------------------------------------------------------------

    def _screen(self, flow: http.HTTPFlow) -> Screen | None:
        """The answer rules that select this answer, or None (none do, or the gateway answered it itself)."""
        rules = self.rules
        if rules is None or not rules.answer_checks or ERROR.of(flow) is not None or \
                flow.server_conn.timestamp_start is None:
            return None
        intake = ctx.master.addons.get("intake")
        facts = facts_for(rules, flow, intake.shape_of(flow) if intake is not None else RequestShape()).for_answers()
        selected, blocked = [], None
        for check in rules.answer_checks:
            if check.filter is not None and not check.filter(flow):
                continue
            if check.condition is not None and not check.late:
                try:
                    if facts.evaluate(check.condition.program) is not True:
                        continue
                except EvaluationError as e:
                    blocked = Blocked(check.name, f"answer rule {check.name!r}: its condition could not be evaluated "
                                                  f"({e}); the answer was blocked", check.rule.status)
                    break
            selected.append(check)
        if not selected and blocked is None:
            return None
        masked = sorted({e for profile in rules.masking.all_profiles() for e in profile.entities})
        return Screen(selected, facts, self._answer_facts(flow, masked), blocked)

    @staticmethod
    def _answer_facts(flow: http.HTTPFlow, entities: list[str]) -> Callable[[], dict[str, Any]]:
        """The ``answer`` variable of answer rules, read when asked: what masking found in the answer so far."""
        owner = weakref.ref(flow)  # the screen does not keep its flow alive

        def answer() -> dict[str, Any]:
            flow = owner()
            found: dict[str, int] = {}
            if flow is not None:
                masking = ctx.master.addons.get("piimasking")
                if masking is not None:
                    found = masking.answer_findings(flow)
                elif (pii := PII.of(flow)) is not None:
                    found = PiiOutcome.counts(pii.response_findings)
            counts = {**dict.fromkeys(entities, 0), **found}
            response = flow.response if flow is not None else None
            return {"status": response.status_code if response is not None else 0,
                    "content_type": response.headers.get("content-type", "") if response is not None else "",
                    "streamed": bool(response is not None and response.stream), "counts": counts,
                    "total": sum(counts.values()), "entities": sorted(e for e, n in counts.items() if n)}

        return answer

    # -- hooks --------------------------------------------------------------------------------------------

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        screen = self._screen(flow)
        if screen is None:
            return
        self.screens[flow] = screen
        _screen_head(flow.response, screen)
        inner = flow.response.stream
        if not callable(inner):  # not streamed (Intake decides): the response hook screens it whole
            return
        limit = ctx.options.warden_record_max_body if "warden_record_max_body" in ctx.options else CAPTURE_LIMIT
        self.streams[flow] = stream = StreamScreen(adapter_for(flow.request.path), screen, limit)
        flow.response.stream = compose_stream(inner, stream)
        unframe(flow)

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        stream = self.streams.pop(flow, None)
        screen = self.screens.pop(flow, None)
        if stream is not None:
            self._stream_ended(flow, stream)
            if stream.failure is not None:
                raise InternalError(f"screening the streamed answer failed ({stream.failure}); it was cut off")
            if stream.blocked:
                mark_stopped(flow, stream.screen.error())
            return
        if screen is None:
            return
        response = flow.response
        before = response.get_content(strict=False) or b""
        after = await self._screened(flow, screen, before)
        note = screen.note()
        if note is None:
            return
        _noted(flow, note)
        if screen.blocked is not None:
            error = screen.error()
            mark_stopped(flow, error)
            flow.response = error.response()
            self.changed[flow] = (before, flow.response.content or b"")
        elif after is not None:
            response.content = after
            self.changed[flow] = (before, after)

    async def _screened(self, flow: http.HTTPFlow, screen: Screen, body: bytes) -> bytes | None:
        """The answer's body as the client gets it, None if unchanged (``screen`` says whether it was blocked)."""
        screen.refresh()  # rules that read the answer: with what masking found in it
        if screen.blocked is not None or not screen.patterns or not body:
            return None
        content_type = flow.response.headers.get("content-type", "") if flow.response is not None else ""
        if _is_sse(content_type):  # a stream that came whole: screened as one
            stream = StreamScreen(adapter_for(flow.request.path), screen)
            out = b"".join(stream(body) + stream(b""))
            if stream.failure is not None:
                raise InternalError(f"screening the answer failed ({stream.failure}); it was not passed on")
            return None if screen.blocked is not None or out == body else out
        if len(body) > INLINE_LIMIT:  # searching megabytes would stall every other flow
            return await asyncio.to_thread(screen_body, body, content_type, screen)
        return screen_body(body, content_type, screen)

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        stream = self.streams.pop(flow, None)
        self.screens.pop(flow, None)
        if stream is not None:  # a stream that ended early (the client left after its error event, say)
            self._stream_ended(flow, stream)

    def _stream_ended(self, flow: http.HTTPFlow, stream: StreamScreen) -> None:
        note = stream.screen.note()
        if note is not None:
            note.streamed = True
            _noted(flow, note)
            self.changed[flow] = (bytes(stream.before), bytes(stream.after))

    # -- for the record -----------------------------------------------------------------------------------

    def originals_of(self, flow: http.HTTPFlow, given: Originals) -> Originals:
        """``given`` (the bodies masking changed) with what answer rules changed: the answer as it reached them
        kept as the original (for the recorder to keep encrypted or not at all), and, where masking restored the
        caller's values in what the client got, the record's copy of it with them concealed again."""
        changed = self.changed.get(flow)
        if changed is None:
            return given
        before, after = changed
        recorded = None
        if given.recorded_response is not None:
            masking = ctx.master.addons.get("piimasking")
            vault = masking.vault_of(flow) if masking is not None else None
            recorded = after if vault is None else \
                vault.conceal(after.decode("utf-8", "surrogateescape")).encode("utf-8", "surrogateescape")
        return dataclasses.replace(given, response=given.response if given.response is not None else before,
                                   recorded_response=recorded)
