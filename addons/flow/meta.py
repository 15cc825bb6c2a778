"""The one typed object addons share through ``flow.metadata["warden"]``.

Each addon writes its own part and reads what earlier addons wrote; no addon imports another.
``fail_closed`` wraps every hook so that an addon which raises stops the request instead of
letting mitmproxy forward it (mitmproxy logs a raising hook and carries on).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from mitmproxy import http

from addons.flow.errors import InternalError, WardenError

KEY = "warden"
log = logging.getLogger("warden")


@dataclass
class Identity:
    """Who sent the request (filled by the identity addon)."""

    sub: str
    email: str | None = None
    groups: list[str] = field(default_factory=list)
    client_id: str | None = None  # service accounts (client-credentials tokens)
    token_id: str | None = None
    expires: int | None = None
    method: str | None = None  # proxy-bearer, proxy-basic, bearer


@dataclass
class Decision:
    """What policy decided, and which rule said so."""

    action: str
    rule: str
    reason: str = ""
    masking: str | None = None  # the rule's masking profile, if it names one


@dataclass(frozen=True)
class Finding:
    """One masked value: what it was, where, how sure, how masked. Never the value."""

    entity: str
    path: str  # JSON path of the text value (form.NAME for forms, $ for plain text)
    start: int
    end: int
    score: float
    operator: str


@dataclass
class PiiOutcome:
    """What PII masking did to a flow (filled by the pii addon)."""

    profile: str
    adapter: str | None = None
    findings: list[Finding] = field(default_factory=list)
    response_findings: list[Finding] = field(default_factory=list)
    skipped: str | None = None  # why the body was not inspected (binary passed by policy, empty)
    vault: Any = field(default=None, repr=False)  # pseudonyms -> values: memory only, never recorded
    stream: Any = field(default=None, repr=False)  # the SSE rewriter of a streamed response

    @staticmethod
    def counts(findings: list[Finding]) -> dict[str, int]:
        out: dict[str, int] = {}
        for finding in findings:
            out[finding.entity] = out.get(finding.entity, 0) + 1
        return dict(sorted(out.items()))


@dataclass
class WardenMeta:
    """Everything Warden knows about one flow. Never recorded as such: the recorder builds events from it."""

    upstream: str | None = None
    identity: Identity | None = None
    decision: Decision | None = None
    error: WardenError | None = None
    claimed_sub: str | None = None  # the unverified subject of a refused token, for the record
    pii: PiiOutcome | None = None
    # Set by masking when it changed a body: stored only encrypted, or not at all.
    original_request_body: bytes | None = None
    original_response_body: bytes | None = None
    # The response as the record keeps it when masking made it differ from what the client got
    # (pseudonyms not restored: restored values are the caller's PII).
    recorded_response_body: bytes | None = None
    # Filled by the recorder: (sequence number, hash) of each committed event.
    events: list[tuple[int, str]] = field(default_factory=list)
    forwarded_at: float | None = None  # when the request left for the upstream (after its commit)
    response_capture: bytearray | None = None
    capture_truncated: bool = False
    # The names of the upstream's answer trailers that Intake dropped (never their values).
    trailers_dropped: list[str] | None = None
    # The caller's own credential values (its key, its token), so the recorder can keep them out of
    # the record wherever else they appear: memory only, never recorded.
    caller_secrets: set[str] = field(default_factory=set, repr=False)

    @property
    def fate_hint(self) -> str | None:
        return self.error.type if self.error else None


Stream = Callable[[bytes], bytes | Iterable[bytes]]


def _chunks(out: bytes | Iterable[bytes]) -> list[bytes]:
    return [out] if isinstance(out, bytes) else list(out)


def compose_stream(inner: Stream, outer: Stream) -> Callable[[bytes], list[bytes]]:
    """A stream callable that passes what ``inner`` gives through ``outer``; the end of the stream (``b""``)
    reaches both, in order. Never yields an empty chunk (one would end an HTTP/1.1 chunked body early)."""

    def both(data: bytes) -> list[bytes]:
        out: list[bytes] = []
        for chunk in _chunks(inner(data)):
            if chunk:
                out += _chunks(outer(chunk))
        if not data:
            out += _chunks(outer(b""))
        return [chunk for chunk in out if chunk]

    return both


def unframe(flow: http.HTTPFlow) -> None:
    """A streamed answer whose bytes are rewritten: drop the upstream's Content-Length (the client would read
    a truncated stream) and, to an HTTP/1.1 client, frame it chunked instead of ending it by closing."""
    assert flow.response is not None
    flow.response.headers.pop("content-length", None)
    if flow.request.http_version == "HTTP/1.1":
        flow.response.headers["transfer-encoding"] = "chunked"


def meta(flow: http.HTTPFlow) -> WardenMeta:
    """The flow's Warden metadata, created on first use."""
    found = flow.metadata.get(KEY)
    if not isinstance(found, WardenMeta):
        found = WardenMeta()
        flow.metadata[KEY] = found
    return found


def refuse(flow: http.HTTPFlow, error: WardenError) -> None:
    """Answer the flow locally with ``error``; the request does not go upstream."""
    meta(flow).error = error
    flow.response = error.response()
    flow.request.headers.pop("expect", None)  # refused at its headers: never invite the body (100 Continue)


def fail_closed(hook: Callable) -> Callable:
    """Wrap an addon hook ``(self, flow)``: any exception answers the flow with an error, never forwards it."""

    def handle(self: Any, flow: http.HTTPFlow, exc: Exception) -> None:
        name = f"{type(self).__name__}.{hook.__name__}"
        if not isinstance(exc, WardenError):
            log.error("warden: %s failed on %s: %r", name, flow.request.pretty_url, exc, exc_info=exc)
            exc = InternalError(f"{name} failed; the request was stopped (see the gateway log)")
        if hook.__name__ == "error":
            return
        if hook.__name__ == "responseheaders" or flow.response is not None and flow.response.stream:
            # The upstream's headers are decided (and a streamed body may be going out): a new response here
            # would be sent with the upstream's bytes after it. Cutting the connection is the only way to fail closed.
            meta(flow).error = exc
            flow.kill()
            return
        refuse(flow, exc)

    if inspect.iscoroutinefunction(hook):

        @functools.wraps(hook)
        async def async_wrapper(self: Any, flow: http.HTTPFlow) -> None:
            try:
                await hook(self, flow)
            except Exception as exc:
                handle(self, flow, exc)

        return async_wrapper

    @functools.wraps(hook)
    def wrapper(self: Any, flow: http.HTTPFlow) -> None:
        try:
            hook(self, flow)
        except Exception as exc:
            handle(self, flow, exc)

    return wrapper
