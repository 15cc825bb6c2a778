"""Intake: refuses requests the rest of the chain cannot read safely, before anything else looks at them.

Over ``warden_max_body`` bytes: 413 (by Content-Length before the body is read, by the body itself
when it came chunked). A body that declares JSON or UTF-8 text but is not: 400 naming the offset
or the JSON error. A Content-Encoding that does not decode: 400.
"""

from __future__ import annotations

import json

from mitmproxy import ctx, exceptions, http

from addons.errors import BodyTooLarge, MalformedBody
from addons.flowmeta import fail_closed, refuse
from addons.jsonlimits import MAX_JSON_DEPTH, json_depth


def _declares_json(content_type: str) -> bool:
    mime = content_type.split(";", 1)[0].strip().lower()
    return mime == "application/json" or mime.endswith("+json")


def _declares_utf8(content_type: str) -> bool:
    return "charset=utf-8" in content_type.lower().replace(" ", "").replace('"', "")


def check_body(body: bytes, content_type: str) -> MalformedBody | None:
    """Why ``body`` does not match what ``content_type`` declares, or None if it does."""
    if not body or not (_declares_json(content_type) or _declares_utf8(content_type)):
        return None
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as e:
        return MalformedBody(
            f"the body is declared as {content_type!r} but is not valid UTF-8 "
            f"(byte 0x{body[e.start]:02x} at offset {e.start}); send UTF-8 text"
        )
    if _declares_json(content_type):
        if json_depth(body) > MAX_JSON_DEPTH:
            return MalformedBody(f"the JSON body nests arrays and objects more than {MAX_JSON_DEPTH} levels deep; "
                                 "this gateway reads at most that many, flatten the body")
        try:
            json.loads(text)
        except json.JSONDecodeError as e:
            return MalformedBody(f"the body is not valid JSON: {e.msg} at line {e.lineno}, column {e.colno}")
    return None


def _passthrough(data: bytes) -> bytes:
    return data


class Intake:
    def load(self, loader) -> None:
        loader.add_option(
            "warden_max_body", int, 10 * 1024 * 1024,
            "Largest request body the gateway accepts, in bytes; larger ones are refused with 413.",
        )

    def configure(self, updated: set[str]) -> None:
        if "warden_max_body" in updated and ctx.options.warden_max_body < 1:
            raise exceptions.OptionsError("warden_max_body: must be a positive number of bytes")

    @fail_closed
    def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        declared = flow.request.headers.get("content-length")
        limit = ctx.options.warden_max_body
        if declared is not None and declared.isdigit() and int(declared) > limit:
            refuse(flow, self._too_large(int(declared), limit))

    @fail_closed
    def request(self, flow: http.HTTPFlow) -> None:
        if flow.response or flow.error or not flow.live:
            return
        raw = flow.request.raw_content or b""
        limit = ctx.options.warden_max_body
        if len(raw) > limit:
            refuse(flow, self._too_large(len(raw), limit))
            return
        try:
            body = flow.request.get_content(strict=True) or b""
        except ValueError:
            encoding = flow.request.headers.get("content-encoding", "")
            refuse(flow, MalformedBody(f"the body declares Content-Encoding {encoding!r} but does not decode as such"))
            return
        if problem := check_body(body, flow.request.headers.get("content-type", "")):
            refuse(flow, problem)

    @fail_closed
    def responseheaders(self, flow: http.HTTPFlow) -> None:
        assert flow.response is not None
        if "text/event-stream" in flow.response.headers.get("content-type", "").lower():
            flow.response.stream = _passthrough  # the one place that decides: events pass on as they come

    @staticmethod
    def _too_large(size: int, limit: int) -> BodyTooLarge:
        return BodyTooLarge(f"the request body is {size} bytes; this gateway accepts at most {limit} (warden_max_body)")
