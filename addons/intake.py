"""Intake: refuses bodies the rest of the chain cannot read safely, and decodes the ones it can, once, bounded.

Requests. Over ``warden_max_body`` bytes: mitmproxy itself stops reading and closes the connection with
its own plain 413 (``body_size_limit`` is pinned from Warden's limits, see ``configure``), so a
client cannot make the gateway buffer a body of any size, announced or chunked, and ``Expect:
100-continue`` is refused before the body is invited. A declared length over ``warden_max_body`` (under
``body_size_limit``) is refused at its headers, and ``answers.refuse`` removes the ``Expect`` header of
any refused request, so mitmproxy does not answer ``100 Continue`` to it either. The refusal is recorded
(``error`` below names it ``body_too_large``). A body that declares a Content-Encoding is decoded here, in a
worker thread when it may be large (``addons/bodies/decoding.py``), never past ``warden_max_body`` decoded
bytes or the expansion-ratio bound (413 ``body_too_large``); a coding other than gzip, deflate, br, zstd
or identity, or several stacked, is 415 ``unsupported_encoding``; a body that does not decode is 400
``malformed_body``. **The decoded body replaces the encoded one and Content-Encoding is dropped**, so
every later addon (policy, PII masking, the recorder) and the upstream see identity bytes and
nothing decodes the body a second time. A body that declares JSON or UTF-8 text but is not: 400; JSON nested
more than 128 levels, or with an object that names a key twice (``duplicate_json_key``): 400. A request
with trailers (HTTP/2 header fields after the body, which nothing masks or records) is 400
``trailers_not_accepted``, naming them, never their values.

Answers. This is the first ``response`` hook of the chain and the one owner of
``flow.response.stream``. An SSE answer (``text/event-stream``) is streamed: as is, or, if the
upstream encoded it anyway, decoded on the fly within the same bounds, one chunk at most
``STREAM_FEED_LIMIT`` bytes decoded (this runs on the event loop; Content-Encoding and
Content-Length dropped, so the rewriters after this one read plain text); the stream is always a
callable that later addons may wrap. Past the bound the flow is killed (its headers already went
out) and recorded ``response_too_large``. Any other encoded answer is buffered (at most
``body_size_limit`` bytes) and decoded here before PII masking and the recorder read it: more than
``warden_max_response`` bytes decoded is 502 ``response_too_large``, a coding the gateway does not
decode or a body that does not decode is 502 ``response_unreadable``; both recorded. An answer's trailers
are dropped here (mitmproxy sends them after the ``response`` hook, streamed or not), their names noted on
the response event (``trailers_dropped``).
"""

from __future__ import annotations

import asyncio
import re
from typing import Literal
from weakref import WeakKeyDictionary

from mitmproxy import ctx, exceptions, http
from mitmproxy.net.http.http1 import expected_http_body_size
from mitmproxy.utils import human

from addons.bodies.decoding import (
    ACCEPTED,
    INLINE_LIMIT,
    STREAM_FEED_LIMIT,
    CorruptBody,
    DecodedTooLarge,
    Decoder,
    DecodingError,
    UnsupportedCoding,
    coding_of,
    decode,
)
from addons.bodies.jsonlimits import parse_json
from addons.bodies.usage import RequestShape, request_shape
from addons.flow.answers import fail_closed, mark_stopped, refuse
from addons.flow.errors import (
    BodyTooLarge,
    MalformedBody,
    ResponseTooLarge,
    ResponseUnreadable,
    TrailersNotAccepted,
    UnsupportedEncoding,
)
from addons.flow.meta import ERROR, TRAILERS_DROPPED
from addons.flow.streams import unframe

# For a body of undeclared length mitmproxy counts the bytes itself and its flow error carries no code: this text is
# the one sign that body_size_limit stopped it (a declared length is compared with the limit instead).
_UNDECLARED_OVER_LIMIT = {
    "Request body exceeds mitmproxy's body_size_limit.": "request",
    "Response body exceeds mitmproxy's body_size_limit.": "response",
}

_TOKEN = re.compile(r"[!#$%&'*+.^_`|~0-9a-z-]{1,64}")  # an HTTP field name; anything else is not shown
MAX_NAMES = 16


def trailer_names(trailers: http.Headers) -> list[str]:
    """The names of ``trailers``, lowercased, once each, in order (at most ``MAX_NAMES``); a name that is not an
    HTTP token is shown as ``?`` (a name could carry anything, and it is recorded)."""
    names: list[str] = []
    for raw, _ in trailers.fields:
        name = raw.decode("latin-1").lower()
        name = name if _TOKEN.fullmatch(name) else "?"
        if name not in names:
            names.append(name)
    return names[:MAX_NAMES] + ([f"... ({len(names) - MAX_NAMES} more)"] if len(names) > MAX_NAMES else [])


def _declares_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _undeclared(content_type: str) -> bool:
    return content_type.split(";", 1)[0].strip().lower() in ("", "application/octet-stream")


def _declares_utf8(content_type: str) -> bool:
    return "charset=utf-8" in content_type.lower().replace(" ", "").replace('"', "")


def check_body(body: bytes, content_type: str) -> MalformedBody | RequestShape | None:
    """Why ``body`` does not match what ``content_type`` declares, or, if it does, what a JSON body asks for (also
    an undeclared one: servers read JSON without a Content-Type, so rules must see what it asks)."""
    if body and _undeclared(content_type) and body.lstrip()[:1] in (b"{", b"["):
        try:
            return request_shape(parse_json(body))
        except MalformedBody:
            return None  # not JSON after all (or not one way: masking refuses that)
    if not body or not (_declares_json(content_type) or _declares_utf8(content_type)):
        return None
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return MalformedBody(
            f"the body is declared as {content_type!r} but is not valid UTF-8 "
            f"(byte 0x{body[e.start]:02x} at offset {e.start}); send UTF-8 text"
        )
    if _declares_json(content_type):
        try:
            return request_shape(parse_json(body))
        except MalformedBody as e:
            return e
    return None


def body_size_limit() -> str:
    """The value ``body_size_limit`` is pinned to: no body, either way, is read past Warden's own limits."""
    return str(max(ctx.options.warden_max_body, ctx.options.warden_max_response))


def stopped_at_limit(flow: http.HTTPFlow) -> Literal["request", "response"] | None:
    """Which body mitmproxy stopped reading at ``body_size_limit``, if that is why ``flow`` failed: the answer once
    its headers came, else the request."""
    side: Literal["request", "response"] = "request" if flow.response is None else "response"
    try:
        declared = expected_http_body_size(flow.request, flow.response)
    except ValueError:
        return None  # mitmproxy does not size a body whose length header is malformed
    if declared is not None and declared >= 0:  # mitmproxy compares it with the limit at the headers, as here
        limit = human.parse_size(ctx.options.body_size_limit)
        return side if limit is not None and declared > limit else None
    return side if flow.error is not None and _UNDECLARED_OVER_LIMIT.get(flow.error.msg) == side else None


def _passthrough(data: bytes) -> list[bytes]:
    return [data] if data else []


class StreamDecoding:
    """The stream callable of an encoded SSE answer: decoded bytes out; after a failure, nothing more."""

    def __init__(self, decoder: Decoder) -> None:
        self.decoder = decoder
        self.failure: DecodingError | None = None

    def __call__(self, data: bytes) -> list[bytes]:
        if self.failure is not None:
            return []
        try:
            out = self.decoder.feed(data) if data else self.decoder.finish()
        except DecodingError as e:
            self.failure = e
            return []
        return [out] if out else []


class Intake:
    def __init__(self) -> None:
        self.streams: WeakKeyDictionary[http.HTTPFlow, StreamDecoding] = WeakKeyDictionary()
        self.shapes: WeakKeyDictionary[http.HTTPFlow, RequestShape] = WeakKeyDictionary()

    def load(self, loader) -> None:
        loader.add_option(
            "warden_max_body", int, 10 * 1024 * 1024,
            "Largest request body the gateway accepts, in bytes, as sent and after decoding its Content-Encoding; "
            "larger ones are refused with 413.",
        )
        loader.add_option(
            "warden_max_response", int, 64 * 1024 * 1024,
            "Largest answer the gateway passes on, in bytes, as received and after decoding its Content-Encoding; "
            "a larger one is refused with 502 (a streamed one is cut off). Streamed answers sent unencoded "
            "are not capped.",
        )

    def configure(self, updated: set[str]) -> None:
        if "warden_max_body" in updated and ctx.options.warden_max_body < 1:
            raise exceptions.OptionsError("warden_max_body: must be a positive number of bytes")
        if "warden_max_response" in updated and ctx.options.warden_max_response < 1:
            raise exceptions.OptionsError("warden_max_response: must be a positive number of bytes")
        if not updated & {"body_size_limit", "warden_max_body", "warden_max_response"}:
            return  # (an option another addon set while configuring: nothing of ours changed)
        wanted = body_size_limit()
        if "body_size_limit" in updated and ctx.options.body_size_limit not in (None, wanted):
            raise exceptions.OptionsError(
                f"body_size_limit: Warden sets it to the larger of warden_max_body and warden_max_response "
                f"({wanted}); set those instead of {ctx.options.body_size_limit!r}"
            )
        if ctx.options.body_size_limit != wanted:
            # mitmproxy stops reading a body past this and closes: memory stays bounded whatever is sent
            ctx.options.body_size_limit = wanted

    # -- requests ---------------------------------------------------------------------------------------

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        declared = flow.request.headers.get("content-length")
        limit = ctx.options.warden_max_body
        if declared is not None and declared.isdigit() and int(declared) > limit:
            refuse(flow, self._too_large(f"is {int(declared)} bytes", limit))  # (refuse drops Expect)

    @fail_closed
    async def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        if flow.request.trailers:  # HTTP/2 fields after the body: nothing masks or records them, so none leave
            names = trailer_names(flow.request.trailers)
            flow.request.trailers = None
            refuse(flow, TrailersNotAccepted(
                f"the request carries trailers ({', '.join(names)}), header fields sent after the body; this gateway "
                "neither masks nor records them, so it does not forward them: send them as headers instead"))
            return
        raw = flow.request.raw_content or b""
        limit = ctx.options.warden_max_body
        if len(raw) > limit:
            refuse(flow, self._too_large(f"is {len(raw)} bytes", limit))
            return
        header = flow.request.headers.get("content-encoding")
        body = raw
        try:
            coding = coding_of(header)
            if coding is not None:
                body = await decode(raw, coding, limit)
        except UnsupportedCoding:
            refuse(flow, UnsupportedEncoding(
                f"the body's Content-Encoding {header!r} is not accepted; send it as one of "
                f"{', '.join(ACCEPTED)} (one coding, not several)", encoding=header or "", accepted=ACCEPTED))
            return
        except DecodedTooLarge as e:
            refuse(flow, self._too_large(f"was refused: {e}", limit))
            return
        except CorruptBody as e:
            refuse(flow, MalformedBody(
                f"the body declares Content-Encoding {header!r} but does not decode as such ({e})"))
            return
        if header is not None:  # from here on the body is identity: nobody decodes it again
            del flow.request.headers["content-encoding"]
            flow.request.content = body
        content_type = flow.request.headers.get("content-type", "")
        if len(body) > INLINE_LIMIT:  # parsing megabytes of JSON would stall every other client
            checked = await asyncio.to_thread(check_body, body, content_type)
        else:
            checked = check_body(body, content_type)
        if isinstance(checked, MalformedBody):
            refuse(flow, checked)
        elif checked is not None:
            self.shapes[flow] = checked

    def shape_of(self, flow: http.HTTPFlow) -> RequestShape:
        """What the flow's JSON request asks for (model, messages, tools), read when its body was checked."""
        return self.shapes.get(flow) or RequestShape()

    @staticmethod
    def _too_large(what: str, limit: int) -> BodyTooLarge:
        return BodyTooLarge(f"the request body {what}; this gateway accepts at most {limit} bytes, "
                            "decoded or not (warden_max_body)")

    # -- answers ----------------------------------------------------------------------------------------

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        response = flow.response
        if ERROR.of(flow) is not None or "text/event-stream" not in response.headers.get("content-type", "").lower():
            return
        try:
            coding = coding_of(response.headers.get("content-encoding"))
        except UnsupportedCoding:
            return  # left buffered: ``response`` refuses it, naming the coding, before anything went out
        if coding is None:
            response.stream = _passthrough
            return
        decoding = StreamDecoding(Decoder(coding, ctx.options.warden_max_response, feed_limit=STREAM_FEED_LIMIT))
        self.streams[flow] = decoding
        del response.headers["content-encoding"]
        unframe(flow)  # the decoded stream is longer
        response.stream = decoding

    @fail_closed
    async def response(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        response = flow.response
        if response.trailers:  # mitmproxy sends them after this hook, streamed or not: unmasked, so never
            TRAILERS_DROPPED.set(flow, trailer_names(response.trailers))
            response.trailers = None
        decoding = self.streams.pop(flow, None)
        if decoding is not None:
            if decoding.failure is not None:  # raised after the headers: fail_closed kills the flow
                raise self._unreadable(decoding.failure, f"{decoding.decoder.coding!r}")
            return
        if ERROR.of(flow) is not None or response.stream:
            return
        header = response.headers.get("content-encoding")
        raw = response.raw_content or b""
        cap = ctx.options.warden_max_response
        try:
            coding = coding_of(header)
            if coding is None and len(raw) > cap:
                raise DecodedTooLarge("identity", len(raw), len(raw), cap, by_ratio=False)
            body = await decode(raw, coding, cap) if coding is not None else raw
        except DecodingError as e:
            raise self._unreadable(e, repr(header)) from None
        if header is not None:
            del response.headers["content-encoding"]
            response.content = body

    @staticmethod
    def _unreadable(e: DecodingError, header: str) -> ResponseUnreadable:
        if isinstance(e, DecodedTooLarge):
            return ResponseTooLarge(f"the upstream's answer was not passed on: {e}; warden_max_response allows "
                                    f"{ctx.options.warden_max_response} bytes")
        if isinstance(e, UnsupportedCoding):
            return ResponseUnreadable(f"the upstream's answer declares Content-Encoding {header}, which the gateway "
                                      f"does not decode (it accepts {', '.join(ACCEPTED)}); it was not passed on")
        return ResponseUnreadable(f"the upstream's answer declares Content-Encoding {header} but does not decode "
                                  f"({e}); it was not passed on")

    # -- bodies mitmproxy stopped reading -------------------------------------------------------------------

    @fail_closed
    def error(self, flow: http.HTTPFlow) -> None:
        side = stopped_at_limit(flow)
        limit = ctx.options.body_size_limit
        if side == "request" and ERROR.of(flow) is None:
            mark_stopped(flow, self._too_large(f"is over {limit} bytes: the gateway stopped reading it and closed "
                                               "the connection", ctx.options.warden_max_body))
        elif side == "response":
            mark_stopped(flow, ResponseTooLarge(f"the upstream's answer is over {limit} bytes: the gateway stopped "
                                                "reading it and did not pass it on (warden_max_response)"))
