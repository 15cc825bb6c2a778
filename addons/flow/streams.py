"""A streamed answer's body passes through one callable (``flow.response.stream``) that Intake installs and
later addons compose onto (``compose_stream``); one whose bytes are rewritten loses its length (``unframe``)."""

from __future__ import annotations

from collections.abc import Callable, Iterable

from mitmproxy import http

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
