"""Decompression bombs and oversized bodies: refused within bounded memory, on record, and others keep being served.

Bombs are made by streaming compressors (``scripts.demo_upstream.bomb``), so the test never holds one
decoded. The gateway's memory is read from ``/proc/PID/status`` (its peak resident size, ``VmHWM``).
"""

from __future__ import annotations

import base64
import json
import ssl
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scripts.demo_upstream import bomb
from tests.conftest import Gateway, open_tunnel, rules_for
from tests.e2e.test_bad_input import startup_failure
from tests.e2e.test_pii import PROMPT, VALUES

pytestmark = pytest.mark.e2e

MiB = 1 << 20
RSS_BOUND = 1536 * MiB  # the gateway's peak resident size after a bomb (it holds 1 GiB decoded without a bound)
CHAT = {"model": "demo", "messages": [{"role": "user", "content": "still served"}]}


def peak_rss(gw: Gateway) -> int:
    status = Path(f"/proc/{gw.proc.pid}/status").read_text()
    line = next(line for line in status.splitlines() if line.startswith("VmHWM:"))
    return int(line.split()[1]) * 1024


def fate_of(gw: Gateway, path: str) -> list[str]:
    return [f["fate"] for f in reversed(gw.flows()) if f["path"].startswith(path)]


def while_served(gw: Gateway, upstream, send) -> httpx.Response | Exception:
    """Run ``send(client)`` in a thread while a second client's ordinary request goes through; return its outcome."""
    outcome: list = []

    def attack() -> None:
        with gw.client(timeout=120) as client:
            try:
                outcome.append(send(client))
            except Exception as e:  # noqa: BLE001 - the caller asserts on what came back
                outcome.append(e)

    thread = threading.Thread(target=attack)
    thread.start()
    with gw.client(timeout=120) as other:
        r = other.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=CHAT)
        assert r.status_code == 200 and r.json()["choices"][0]["message"]["content"] == "still served"
    thread.join(timeout=300)
    assert outcome, "the attacking request never finished"
    return outcome[0]


@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_request_bombs_are_refused_while_another_client_is_served(gateway_factory, upstream, coding: str) -> None:
    gw = gateway_factory()
    body = bomb(coding, 1024)  # 1 GiB of JSON: ~1.6 KB of br, ~1 MB of gzip
    assert len(body) < 2 * MiB
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    r = while_served(gw, upstream, lambda client: client.post(
        url, content=body, headers={"content-type": "application/json", "content-encoding": coding}))
    assert isinstance(r, httpx.Response), r
    assert r.status_code == 413 and r.json()["error"]["type"] == "body_too_large", r.text[:300]
    assert "warden_max_body" in r.json()["error"]["message"]
    assert peak_rss(gw) < RSS_BOUND
    assert all(json.loads(req["body"]) == CHAT for req in upstream.received)  # the bomb never left
    assert sorted(fate_of(gw, "/v1/chat")) == ["body_too_large", "completed"]
    with gw.client() as client:  # and the gateway keeps serving
        assert client.post(url, json=CHAT).status_code == 200


def test_unaccepted_stacked_and_corrupt_codings(gateway: Gateway, upstream) -> None:
    url = f"https://localhost:{upstream.port}/echo/coded"
    body = json.dumps(CHAT).encode()
    with gateway.client() as client:
        for coding, encoded in (("bz2", __import__("bz2").compress(body)), ("base64", base64.b64encode(body)),
                                ("gzip, br", body)):
            r = client.post(url, content=encoded, headers={"content-type": "application/json",
                                                           "content-encoding": coding})
            assert r.status_code == 415, (coding, r.text[:300])
            error = r.json()["error"]
            assert error["type"] == "unsupported_encoding" and error["encoding"] == coding
            assert error["accepted"] == ["gzip", "deflate", "br", "zstd", "identity"]
            assert r.headers["accept-encoding"] == "gzip, deflate, br, zstd, identity"
        corrupt = client.post(url, content=b"\x1f\x8b\x08\x00 not gzip at all",
                              headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert corrupt.status_code == 400 and corrupt.json()["error"]["type"] == "malformed_body"
        zstd = client.post(url, content=__import__("zstandard").ZstdCompressor().compress(body),
                           headers={"content-type": "application/json", "content-encoding": "zstd"})
        assert zstd.status_code == 200
    # what went out is identity: the upstream (and every addon before it) read the decoded body
    sent = upstream.received[-1]
    assert json.loads(sent["body"]) == CHAT
    assert "content-encoding" not in {k.lower() for k, _ in sent["headers"]}
    assert fate_of(gateway, "/echo/coded") == ["unsupported_encoding"] * 3 + ["malformed_body", "completed"]


@pytest.mark.parametrize("coding", ["br", "gzip"])
def test_answer_bombs_are_502_and_recorded(gateway: Gateway, upstream, coding: str) -> None:
    bomb(coding, 1024)  # made before the gateway asks, so the upstream answers at once
    with gateway.client(timeout=120) as client:
        r = client.get(f"https://localhost:{upstream.port}/bomb?coding={coding}&mb=1024")
        assert r.status_code == 502 and r.json()["error"]["type"] == "response_too_large", r.text[:300]
        assert "warden_max_response" in r.json()["error"]["message"]
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=CHAT).status_code == 200
    assert peak_rss(gateway) < RSS_BOUND
    assert fate_of(gateway, "/bomb") == ["response_too_large"]


def test_streamed_answer_bomb_is_cut_off_and_recorded(gateway: Gateway, upstream) -> None:
    bomb("br", 1024)
    with gateway.client(timeout=120) as client:
        with pytest.raises(httpx.RemoteProtocolError):  # the headers went out; the stream is cut, not completed
            with client.stream("GET", f"https://localhost:{upstream.port}/bomb?coding=br&mb=1024",
                               headers={"x-demo-content-type": "text/event-stream"}) as r:
                assert r.status_code == 200 and "content-encoding" not in r.headers
                for _ in r.iter_bytes():
                    pass
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=CHAT).status_code == 200
    assert peak_rss(gateway) < RSS_BOUND
    assert fate_of(gateway, "/bomb") == ["response_too_large"]


def test_unreadable_and_oversized_answers_are_502(gateway: Gateway, upstream) -> None:
    with gateway.client(timeout=60) as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=CHAT,
                        headers={"x-demo-encoding": "bz2"})
        assert r.status_code == 502 and r.json()["error"]["type"] == "response_unreadable"
        assert "'bz2'" in r.json()["error"]["message"]
        # over body_size_limit by its Content-Length: mitmproxy's own 502, without reading it
        big = client.get(f"https://localhost:{upstream.port}/bytes?n={64 * MiB + 1}")
        assert big.status_code == 502
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=CHAT).status_code == 200
    assert fate_of(gateway, "/v1/chat") == ["response_unreadable", "completed"]
    assert fate_of(gateway, "/bytes") == ["response_too_large"]


def test_body_size_limit_is_pinned_from_wardens_limits(tmp_path: Path, confdir: Path, upstream) -> None:
    log = startup_failure(tmp_path / "a", confdir, upstream, rules_for(upstream.port), "--set", "body_size_limit=1g")
    assert "body_size_limit: Warden sets it to the larger of warden_max_body and warden_max_response" in log
    log = startup_failure(tmp_path / "b", confdir, upstream, rules_for(upstream.port), "--set", "warden_max_response=0")
    assert "warden_max_response: must be a positive number of bytes" in log


@pytest.mark.parametrize("coding", ["gzip", "br", "zstd", "deflate"])
def test_encoded_answers_are_decoded_and_pseudonyms_restored(gateway: Gateway, upstream, coding: str) -> None:
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    chat = {"model": "demo", "messages": [{"role": "user", "content": PROMPT}]}
    with gateway.client() as client:
        plain = client.post(url, json=chat, headers={"x-demo-encoding": coding})
        assert plain.status_code == 200 and plain.json()["choices"][0]["message"]["content"] == PROMPT
        with client.stream("POST", url, json={**chat, "stream": True},
                           headers={"x-demo-encoding": coding, "x-demo-chunk-chars": "3"}) as r:
            assert "content-encoding" not in r.headers and "content-length" not in r.headers
            raw = r.read().decode()
    events = [json.loads(line[6:]) for line in raw.splitlines() if line.startswith("data: {")]
    assert "".join(e["choices"][0]["delta"].get("content") or "" for e in events if e["choices"]) == PROMPT
    assert raw.rstrip().endswith("data: [DONE]")
    for req in upstream.received:
        assert all(value not in req["body"].decode() for value in VALUES)
    assert fate_of(gateway, "/v1/chat") == ["completed", "completed"]


def lazy_gigabyte() -> Iterator[bytes]:
    chunk = b"x" * MiB
    for _ in range(1024):
        yield chunk


def test_a_chunked_gigabyte_upload_is_refused_in_bounded_memory(gateway: Gateway, upstream) -> None:
    url = f"https://localhost:{upstream.port}/echo/upload"
    r = while_served(gateway, upstream, lambda client: client.post(
        url, content=lazy_gigabyte(), headers={"content-type": "text/plain; charset=utf-8"}))
    # mitmproxy answers its own plain 413 and closes; a client still writing may see only the close
    assert isinstance(r, httpx.TransportError) or r.status_code == 413, r
    assert peak_rss(gateway) < RSS_BOUND
    assert not [req for req in upstream.received if req["path"] == "/echo/upload"]
    assert fate_of(gateway, "/echo/upload") == ["body_too_large"]
    with gateway.client() as client:
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=CHAT).status_code == 200


def tls_tunnel(gw: Gateway, port: int) -> ssl.SSLSocket:
    """TLS to localhost:``port`` through an authenticated CONNECT, for writing a request head by hand."""
    raw = open_tunnel(gw.proxy_port, f"localhost:{port}", gw.token("alice"), timeout=30)
    return ssl.create_default_context(cafile=str(gw.ca_cert)).wrap_socket(raw, server_hostname="localhost")


def test_expect_100_continue_with_a_huge_length_is_refused_before_the_body(gateway: Gateway, upstream) -> None:
    with tls_tunnel(gateway, upstream.port) as tls:
        tls.sendall(b"POST /echo/expect HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 1073741824\r\nExpect: 100-continue\r\n\r\n")
        answer = b""
        while chunk := tls.recv(65536):  # the gateway answers and closes without reading a body byte
            answer += chunk
    assert answer.startswith(b"HTTP/1.1 413"), answer
    assert b"100 Continue" not in answer
    assert fate_of(gateway, "/echo/expect") == ["body_too_large"]
    assert not [req for req in upstream.received if req["path"] == "/echo/expect"]


def test_expect_100_continue_over_warden_max_body_is_not_invited(gateway_factory, upstream) -> None:
    # over warden_max_body but under body_size_limit (the larger warden_max_response): Intake refuses it at
    # its headers, so the client must not be told to send the body ("100 Continue") before the 413
    gw = gateway_factory(extra_args=("--set", "warden_max_body=1024"))
    with tls_tunnel(gw, upstream.port) as tls:
        tls.sendall(b"POST /echo/continue HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 4096\r\nExpect: 100-continue\r\n\r\n" + b" " * 4096)
        first = b""
        while b"\r\n" not in first and (chunk := tls.recv(4096)):
            first += chunk
    assert first.startswith(b"HTTP/1.1 413"), first
    assert fate_of(gw, "/echo/continue") == ["body_too_large"]
    assert not [req for req in upstream.received if req["path"] == "/echo/continue"]
