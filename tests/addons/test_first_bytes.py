"""The first-bytes classifier the layer choice rests on: TLS whatever its record version, HTTP, or refused."""

from __future__ import annotations

import ssl

import pytest

from addons.layers import MAX_CLIENT_HELLO, classify


def client_hello(alpn: list[str] | None = None, server_hostname: str | None = "api.example.com") -> bytes:
    context = ssl.create_default_context()
    context.check_hostname = server_hostname is not None
    if alpn:
        context.set_alpn_protocols(alpn)
    out = ssl.MemoryBIO()
    tls = context.wrap_bio(ssl.MemoryBIO(), out, server_hostname=server_hostname)
    with pytest.raises(ssl.SSLWantReadError):
        tls.do_handshake()
    return out.read()


def in_two_records(hello: bytes, version: int) -> bytes:
    """The same ClientHello split over two handshake records, each with record version 03 ``version``."""
    body = hello[5:]
    half = len(body) // 2
    return b"".join(bytes([0x16, 0x03, version]) + len(part).to_bytes(2, "big") + part
                    for part in (body[:half], body[half:]))


@pytest.mark.parametrize("version", [0x00, 0x01, 0x03, 0x04, 0xFF])
def test_tls_is_tls_whatever_its_record_version(version: int) -> None:
    hello = client_hello(["h2", "http/1.1"])
    sent = hello[:2] + bytes([version]) + hello[3:]
    first = classify(sent)
    assert first is not None and first.protocol == "tls" and first.problem is None
    assert first.hello.sni == "api.example.com" and first.data[2] == min(version, 3)
    assert first.data[3:] == sent[3:]  # only the record version changed


def test_a_clienthello_over_two_records_and_in_pieces() -> None:
    sent = in_two_records(client_hello(), 0x04)
    for cut in (1, 2, 3, 5, 6, len(sent) // 2, len(sent) - 1):
        assert classify(sent[:cut]) is None, cut  # wait for all of it
    first = classify(sent)
    assert first.problem is None and first.hello.sni == "api.example.com"
    assert first.data[2] == 0x03 and first.data[5 + int.from_bytes(sent[3:5], "big") + 2] == 0x03


def test_no_sni_is_tls_the_gateway_can_terminate() -> None:
    first = classify(client_hello(server_hostname=None))
    assert first.problem is None and first.hello.sni is None


@pytest.mark.parametrize(("data", "protocol", "why"), [
    (b"\x00\x01garbage", "unknown", "neither TLS nor HTTP"),
    (b"SSH-2.0-OpenSSH_9.6\r\n", "ssh", "SSH"),
    (b"\x16\x03\x04\x00\x10\x01\x00\x00\x0cPLANTED-tls!", "tls", "does not parse"),
    (b"\x16\x03\x01\x00\x00", "tls", "empty TLS record"),
    (b"\x16\x03\x01\x00\x05\x17\x03\x03\x00\x00", "tls", "not a ClientHello"),
    (b"\x16\x03\x01\x00\x05\x01\xff\xff\xff\x00", "tls", "announces 16777219 bytes"),
    (b"\x16\x02\x00\x00\x05hello", "unknown", "neither TLS nor HTTP"),
    (b"\x80\x2e\x01\x00\x02", "unknown", "neither TLS nor HTTP"),  # an SSLv2 ClientHello
    (b"GETX/ HTTP/1.1\r\n", "unknown", "neither TLS nor HTTP"),
    (b"ABCDEFGHIJKLMNOPQRSTUVWXYZ", "unknown", "neither TLS nor HTTP"),
])
def test_what_cannot_be_served_is_named(data: bytes, protocol: str, why: str) -> None:
    first = classify(data)
    assert first is not None and first.protocol == protocol and why in first.problem


def test_tls_offering_no_http_alpn_is_refused_naming_it() -> None:
    first = classify(client_hello(["imap", "xmpp-client"]))
    assert first.protocol == "tls" and "imap, xmpp-client" in first.problem
    assert classify(client_hello(["imap", "http/1.1"])).problem is None
    assert "h3" in classify(client_hello(["h3"])).problem  # HTTP/3 is QUIC: not over this TCP stream


def test_an_endless_clienthello_is_refused() -> None:
    hello = b"\x01" + (60000).to_bytes(3, "big") + b"\x00" * 60000
    one_byte_records = b"".join(b"\x16\x03\x03\x00\x01" + hello[i : i + 1] for i in range(len(hello)))
    assert classify(one_byte_records[: MAX_CLIENT_HELLO]) is None
    assert "larger than" in classify(one_byte_records[: MAX_CLIENT_HELLO + 6]).problem


@pytest.mark.parametrize("data", [b"GET / HTTP/1.1\r\n", b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", b"post /x HTTP/1.0\r\n"])
def test_http_goes_to_the_http_layer(data: bytes) -> None:
    assert classify(data).protocol == "http"


@pytest.mark.parametrize("data", [b"G", b"GE", b"GET", b"PROPFIND", b"\x16"])
def test_too_few_bytes_to_tell_waits(data: bytes) -> None:
    assert classify(data) is None
