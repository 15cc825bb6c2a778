"""An offline demo upstream that speaks enough OpenAI and Anthropic for their official SDKs.

It answers every chat with the caller's last user message (an echo), streaming too, so the
gateway can be shown and tested without the internet. Run it::

    python -m scripts.demo_upstream --host 127.0.0.1 --port 9443 \\
        --tls-cert certs/demo-upstream.pem --tls-key certs/demo-upstream.key

Endpoints: ``POST /v1/chat/completions``, ``POST /v1/responses`` and ``POST /v1/messages``
(``"stream": true`` too; ``x-demo-reply: TEXT`` answers TEXT instead of the echo (``x-demo-reply-b64``: TEXT
in base64, so that PII in it passes the gateway's header masking: ``reply_header``), ``x-demo-echo-headers: 1``
the request's headers as JSON text, the injected key included), ``POST /v1/embeddings``; what a provider keeps
(``scripts/demo_memory.py``): responses continued by ``previous_response_id`` or ``conversation``,
``POST /v1/conversations``, Assistants threads (``POST /v1/threads``, ``/v1/threads/{id}/messages`` and ``/runs``),
``POST /v1/files``;
``GET /v1/models``, ``ANY /echo/...`` (what arrived, as JSON), ``GET /status/N``,
``GET /slow?ms=N``, ``GET /bytes?n=N``, ``ANY /raw`` (``x-demo-reply`` as the body, typed
``x-demo-content-type``), ``GET /bomb?coding=br&mb=N`` (N MiB of JSON, compressed as it is made;
``x-demo-content-type: text/event-stream`` sends it as a chunked stream). Streamed replies come in pieces
of ``x-demo-chunk-chars`` characters (default 4), ``x-demo-delay-ms`` apart. ``x-demo-encoding: gzip``
(deflate, br, zstd, bz2; any other name only labels the body) encodes any answer, streamed ones event
by event, as an upstream that ignores ``Accept-Encoding`` would.
In tests, ``DemoUpstream`` runs it in a thread and keeps every request it received.
"""

from __future__ import annotations

import argparse
import base64
import bz2
import functools
import itertools
import json
import signal
import socket
import ssl
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

import brotli
import zstandard

from scripts.demo_memory import Memory, UnknownId, file_object


def _words(text: str) -> int:
    return max(1, len(text.split()))


def _text_of(content: Any) -> str:
    """A message's text: a string, or the text parts/blocks of a list."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def last_user_text(messages: Any) -> str:
    if not isinstance(messages, list):
        return ""
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    return _text_of(users[-1].get("content")) if users else ""


def pieces(text: str, size: int) -> Iterator[str]:
    for i in range(0, len(text), max(1, size)):
        yield text[i : i + size]


def openai_events(req: dict, reply: str, size: int) -> Iterator[bytes]:
    base = {"id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion.chunk",
            "created": int(time.time()), "model": req.get("model", "demo")}

    def chunk(delta: dict, finish: str | None = None) -> bytes:
        data = {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]}
        return f"data: {json.dumps(data)}\n\n".encode()

    yield chunk({"role": "assistant", "content": ""})
    for piece in pieces(reply, size):
        yield chunk({"content": piece})
    yield chunk({}, "stop")
    if (req.get("stream_options") or {}).get("include_usage"):
        usage = {"prompt_tokens": _words(reply), "completion_tokens": _words(reply)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        yield f"data: {json.dumps({**base, 'choices': [], 'usage': usage})}\n\n".encode()
    yield b"data: [DONE]\n\n"


def responses_input_text(req: dict) -> str:
    """The last user input of an OpenAI responses request: a string, or the text parts of the last user item."""
    value = req.get("input")
    if isinstance(value, str):
        return value
    users = [i for i in value or [] if isinstance(i, dict) and i.get("role", "user") == "user"]
    if not users:
        return ""
    content = users[-1].get("content")
    if isinstance(content, str):
        return content
    return "".join(p.get("text", "") for p in content or []
                   if isinstance(p, dict) and p.get("type") in ("input_text", "text"))


def responses_object(req: dict, reply: str, status: str = "completed", response_id: str = "resp_demo",
                     conversation: str | None = None) -> dict:
    parts = [{"type": "output_text", "text": reply, "annotations": []}] if reply or status == "completed" else []
    item = {"id": "msg_demo", "type": "message", "role": "assistant", "status": status, "content": parts}
    return {"id": response_id, "object": "response", "created_at": int(time.time()), "status": status,
            "previous_response_id": req.get("previous_response_id"),
            **({"conversation": {"id": conversation}} if conversation else {}),
            "model": req.get("model", "demo"), "output": [item] if status == "completed" else [],
            "usage": {"input_tokens": _words(reply), "output_tokens": _words(reply), "total_tokens": 2 * _words(reply),
                      "input_tokens_details": {"cached_tokens": 0}, "output_tokens_details": {"reasoning_tokens": 0}},
            "parallel_tool_calls": True, "tool_choice": "auto", "tools": []}


def responses_events(req: dict, reply: str, size: int, **ids: Any) -> Iterator[bytes]:
    sequence = iter(range(1_000_000))

    def event(name: str, data: dict) -> bytes:
        payload = json.dumps({"type": name, "sequence_number": next(sequence), **data})
        return f"event: {name}\ndata: {payload}\n\n".encode()

    yield event("response.created", {"response": responses_object(req, "", "in_progress", **ids)})
    item = {"id": "msg_demo", "type": "message", "role": "assistant", "status": "in_progress", "content": []}
    yield event("response.output_item.added", {"output_index": 0, "item": item})
    part = {"type": "output_text", "text": "", "annotations": []}
    yield event("response.content_part.added",
                {"item_id": "msg_demo", "output_index": 0, "content_index": 0, "part": part})
    for piece in pieces(reply, size):
        yield event("response.output_text.delta", {"item_id": "msg_demo", "output_index": 0, "content_index": 0,
                                                   "delta": piece, "logprobs": []})
    yield event("response.output_text.done", {"item_id": "msg_demo", "output_index": 0, "content_index": 0,
                                              "text": reply, "logprobs": []})
    done_part = {**part, "text": reply}
    yield event("response.content_part.done", {"item_id": "msg_demo", "output_index": 0, "content_index": 0,
                                               "part": done_part})
    yield event("response.output_item.done", {"output_index": 0, "item": {**item, "status": "completed",
                                                                          "content": [done_part]}})
    yield event("response.completed", {"response": responses_object(req, reply, **ids)})


def anthropic_events(req: dict, reply: str, size: int) -> Iterator[bytes]:
    def event(name: str, data: dict) -> bytes:
        return f"event: {name}\ndata: {json.dumps({'type': name, **data})}\n\n".encode()

    message = {"id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant", "content": [],
               "model": req.get("model", "demo"), "stop_reason": None, "stop_sequence": None,
               "usage": {"input_tokens": _words(reply), "output_tokens": 1}}
    yield event("message_start", {"message": message})
    yield event("content_block_start", {"index": 0, "content_block": {"type": "text", "text": ""}})
    yield event("ping", {})
    for piece in pieces(reply, size):
        yield event("content_block_delta", {"index": 0, "delta": {"type": "text_delta", "text": piece}})
    yield event("content_block_stop", {"index": 0})
    yield event("message_delta", {"delta": {"stop_reason": "end_turn", "stop_sequence": None},
                                  "usage": {"output_tokens": _words(reply)}})
    yield event("message_stop", {})


def encoder(coding: str) -> Callable[[bytes], bytes] | None:
    """A streaming encoder for ``coding``: each call returns what can be sent so far; ``b""`` ends it."""
    if coding in ("gzip", "deflate"):
        z = zlib.compressobj(6, zlib.DEFLATED, 31 if coding == "gzip" else 15)
        return lambda data: z.compress(data) + z.flush(zlib.Z_SYNC_FLUSH) if data else z.flush()
    if coding == "br":
        b = brotli.Compressor(quality=5)
        return lambda data: b.process(data) + b.flush() if data else b.finish()
    if coding == "zstd":
        c = zstandard.ZstdCompressor().compressobj()
        return lambda data: c.compress(data) + c.flush(zstandard.COMPRESSOBJ_FLUSH_BLOCK) if data else c.flush()
    if coding == "bz2":
        bz = bz2.BZ2Compressor()
        return lambda data: bz.compress(data) if data else bz.flush()
    return None


@functools.lru_cache(maxsize=8)
def bomb(coding: str, mib: int) -> bytes:
    """``mib`` MiB of JSON compressed with ``coding``, compressed as it is made (never held decoded)."""
    encode = encoder(coding)
    assert encode is not None, coding
    filler = b"a" * (1 << 20)
    parts = [encode(b'{"pad": "')] + [encode(filler) for _ in range(mib)] + [encode(b'"}'), encode(b"")]
    return b"".join(parts)


def reply_header(text: str | bytes) -> dict[str, str]:
    """The request header that has the demo upstream answer ``text`` (as PII of its own: the gateway masks PII in
    a request header's value, not in its base64)."""
    data = text.encode() if isinstance(text, str) else text
    return {"x-demo-reply-b64": base64.b64encode(data).decode()}


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    # -- plumbing --------------------------------------------------------------------------------------

    def _receive(self) -> bytes:
        body = self.rfile.read(int(self.headers.get("content-length") or 0))
        self.server.record({"method": self.command, "path": self.path,
                            "headers": [[k, v] for k, v in self.headers.items()], "body": body})
        return body

    def _override(self) -> bytes | None:
        """The reply a test asked for (``x-demo-reply``, or ``x-demo-reply-b64`` decoded), or None."""
        encoded = self.headers.get("x-demo-reply-b64")
        if encoded is not None:
            return base64.b64decode(encoded)
        text = self.headers.get("x-demo-reply")
        return text.encode("latin-1") if text is not None else None

    def _send(self, status: int, body: bytes, content_type: str = "application/json") -> None:
        self.send_response(status)
        self.send_header("content-type", content_type)
        if coding := self.headers.get("x-demo-encoding"):
            self.send_header("content-encoding", coding)
            if encode := encoder(coding):
                body = encode(body) + encode(b"")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def _json(self, status: int, data: Any) -> None:
        self._send(status, json.dumps(data).encode())

    def _stream(self, events: Iterator[bytes], encoded: str | None = None) -> None:
        """Server-sent events, chunked so keep-alive survives; each event flushed on its own.

        ``encoded``: the events come already encoded with this coding (else ``x-demo-encoding`` applies)."""
        delay = int(self.headers.get("x-demo-delay-ms") or 0) / 1000
        self.send_response(200)
        self.send_header("content-type", "text/event-stream")
        self.send_header("cache-control", "no-cache")
        if self.headers.get("x-demo-sse-length"):  # a stream sent whole with its Content-Length, as some servers do
            body = b"".join(events)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        self.send_header("transfer-encoding", "chunked")
        encode: Callable[[bytes], bytes] = lambda data: data  # noqa: E731
        if coding := encoded or self.headers.get("x-demo-encoding"):
            self.send_header("content-encoding", coding)
            encode = (None if encoded else encoder(coding)) or encode
        self.end_headers()
        for data in itertools.chain(events, [b""]):
            if data := encode(data):
                self.wfile.write(f"{len(data):x}\r\n".encode() + data + b"\r\n")
                self.wfile.flush()
            if delay:
                time.sleep(delay)
        self.wfile.write(b"0\r\n\r\n")

    def _chat_request(self, body: bytes, error_type: str) -> dict | None:
        try:
            req = json.loads(body or b"{}")
            if not isinstance(req, dict):
                raise ValueError("the body must be a JSON object")
            return req
        except ValueError as e:
            self._json(400, {"type": "error", "error": {"type": error_type, "message": f"invalid JSON body: {e}"}})
            return None

    def log_message(self, format: str, *args: Any) -> None:
        if self.server.verbose:
            super().log_message(format, *args)

    # -- endpoints -------------------------------------------------------------------------------------

    def do_POST(self) -> None:
        body = self._receive()
        path = urlsplit(self.path).path
        size = int(self.headers.get("x-demo-chunk-chars") or 4)
        # x-demo-reply: answer this text instead of the echo (an upstream that sends PII of its own)
        asked = self._override()
        override = asked.decode("utf-8", "replace") if asked is not None else None
        if self.headers.get("x-demo-echo-headers"):  # an upstream that repeats what it was sent, its key too
            override = json.dumps({k.lower(): v for k, v in self.headers.items()})
        if path == "/v1/chat/completions":
            if (req := self._chat_request(body, "invalid_request_error")) is None:
                return
            reply = override if override is not None else last_user_text(req.get("messages"))
            if req.get("stream"):
                return self._stream(openai_events(req, reply, size))
            usage = {"prompt_tokens": _words(reply), "completion_tokens": _words(reply)}
            usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
            return self._json(200, {
                "id": f"chatcmpl-{uuid.uuid4().hex[:12]}", "object": "chat.completion", "created": int(time.time()),
                "model": req.get("model", "demo"), "usage": usage,
                "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                             "message": {"role": "assistant", "content": reply}}],
            })
        if path == "/v1/responses":
            if (req := self._chat_request(body, "invalid_request_error")) is None:
                return
            try:
                turn = self.server.memory.respond(req, responses_input_text(req))
            except UnknownId as e:
                return self._json(404, {"error": {"message": e.message, "type": "invalid_request_error"}})
            reply = override if override is not None else turn.reply
            if req.get("stream"):
                return self._stream(responses_events(req, reply, size, response_id=turn.id,
                                                     conversation=turn.conversation))
            return self._json(200, responses_object(req, reply, response_id=turn.id, conversation=turn.conversation))
        if path == "/v1/embeddings":
            if (req := self._chat_request(body, "invalid_request_error")) is None:
                return
            given = req.get("input")
            inputs: list = given if isinstance(given, list) else [given]
            return self._json(200, {"object": "list", "model": req.get("model", "demo"),
                                    "data": [{"object": "embedding", "index": i, "embedding": [0.0, 0.5, 1.0]}
                                             for i in range(len(inputs))],
                                    "usage": {"prompt_tokens": len(inputs), "total_tokens": len(inputs)}})
        if path == "/v1/messages":
            if (req := self._chat_request(body, "invalid_request_error")) is None:
                return
            reply = override if override is not None else last_user_text(req.get("messages"))
            if req.get("stream"):
                return self._stream(anthropic_events(req, reply, size))
            return self._json(200, {
                "id": f"msg_{uuid.uuid4().hex[:12]}", "type": "message", "role": "assistant",
                "model": req.get("model", "demo"), "content": [{"type": "text", "text": reply}],
                "stop_reason": "end_turn", "stop_sequence": None,
                "usage": {"input_tokens": _words(reply), "output_tokens": _words(reply)},
            })
        self._route_memory(path, body)

    def _route_memory(self, path: str, body: bytes) -> None:
        """What a provider keeps: conversations, threads, files (``scripts/demo_memory.py``)."""
        memory = self.server.memory
        if path == "/v1/files":
            return self._json(200, file_object(body))
        if not path.startswith(("/v1/conversations", "/v1/threads")):
            return self._route_common(path, body)
        req: dict | None = {}
        if self.command == "POST" and (req := self._chat_request(body, "invalid_request_error")) is None:
            return None
        assert req is not None
        try:
            if path == "/v1/conversations":
                return self._json(200, memory.new_conversation(req))
            if path == "/v1/threads":
                return self._json(200, memory.new_thread(req))
            return self._json(200, memory.thread_request(self.command, path, req))
        except UnknownId as e:
            return self._json(404, {"error": {"message": e.message, "type": "invalid_request_error"}})

    def do_GET(self) -> None:
        body = self._receive()
        parts = urlsplit(self.path)
        query = parse_qs(parts.query)
        if parts.path == "/v1/models":
            return self._json(200, {"object": "list", "data": [
                {"id": name, "object": "model", "created": 0, "owned_by": "warden-demo"}
                for name in ("demo-chat", "demo-mini")]})
        if parts.path.startswith("/status/") and parts.path[8:].isdigit():
            code = int(parts.path[8:])
            return self._json(code, {"status": code})
        if parts.path == "/slow":
            ms = int(query.get("ms", ["1000"])[0])
            time.sleep(ms / 1000)
            return self._json(200, {"slept_ms": ms})
        if parts.path == "/bomb":  # a decompression bomb: a few KB that decode to N MiB
            coding, mib = query.get("coding", ["br"])[0], int(query.get("mb", ["1024"])[0])
            content_type = self.headers.get("x-demo-content-type") or "application/json"
            if content_type == "text/event-stream":
                body = bomb(coding, mib)
                return self._stream(iter([body[i:i + 1024] for i in range(0, len(body), 1024)]), encoded=coding)
            self.send_response(200)
            self.send_header("content-type", content_type)
            self.send_header("content-encoding", coding)
            self.send_header("content-length", str(len(bomb(coding, mib))))
            self.end_headers()
            self.wfile.write(bomb(coding, mib))
            return None
        if parts.path == "/bytes":
            return self._send(200, b"\x00" * int(query.get("n", ["0"])[0]), "application/octet-stream")
        self._route_memory(parts.path, body)

    do_PUT = do_DELETE = do_PATCH = do_POST

    def _route_common(self, path: str, body: bytes) -> None:
        if path == "/raw":  # x-demo-reply as the body, labelled x-demo-content-type, whatever it is
            reply = self._override() or b""
            return self._send(200, reply, self.headers.get("x-demo-content-type") or "application/octet-stream")
        if path == "/echo" or path.startswith("/echo/"):
            return self._json(200, {"method": self.command, "path": self.path,
                                    "headers": {k.lower(): v for k, v in self.headers.items()},
                                    "body": body.decode("utf-8", errors="replace")})
        self._json(404, {"error": {"message": f"no such endpoint: {self.command} {path}", "type": "not_found"}})

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except (BrokenPipeError, ConnectionResetError, ssl.SSLError, TimeoutError):
            self.close_connection = True  # the client went away: nothing to answer


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, address: tuple[str, int], ssl_context: ssl.SSLContext | None, verbose: bool = False) -> None:
        super().__init__(address, Handler)
        self.ssl_context = ssl_context
        self.verbose = verbose
        self.memory = Memory()
        self.received: list[dict] = []
        self._lock = threading.Lock()

    def get_request(self) -> tuple[socket.socket, Any]:
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)  # or keep-alive requests stall ~40 ms
        if self.ssl_context is not None:
            sock = self.ssl_context.wrap_socket(sock, server_side=True, do_handshake_on_connect=False)
        return sock, addr

    def record(self, request: dict) -> None:
        with self._lock:
            self.received.append(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if self.verbose:
            super().handle_error(request, client_address)


class DemoUpstream:
    """The demo upstream in a background thread. ``received`` lists every request, as it arrived."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, ssl_context: ssl.SSLContext | None = None) -> None:
        self._server = _Server((host, port), ssl_context)
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        scheme = "https" if self._server.ssl_context else "http"
        host = self._server.server_address[0]
        assert isinstance(host, str)  # an AF_INET server's address (socketserver types it str | bytes)
        return f"{scheme}://{host}:{self.port}"

    @property
    def received(self) -> list[dict]:
        with self._server._lock:
            return list(self._server.received)

    def clear(self) -> None:
        with self._server._lock:
            self._server.received.clear()

    def start(self) -> DemoUpstream:
        self._thread = threading.Thread(target=self._server.serve_forever, name="demo-upstream", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> DemoUpstream:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def main() -> None:
    p = argparse.ArgumentParser(description="Warden's offline demo upstream (OpenAI- and Anthropic-shaped).")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--tls-cert", help="server certificate chain (PEM)")
    p.add_argument("--tls-key", help="server private key (PEM)")
    p.add_argument("--verbose", action="store_true")
    args = p.parse_args()
    context = None
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
    server = _Server((args.host, args.port), context, args.verbose)
    signal.signal(signal.SIGTERM, lambda *_: threading.Thread(target=server.shutdown).start())
    scheme = "https" if context else "http"
    print(f"demo upstream listening on {scheme}://{args.host}:{server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
