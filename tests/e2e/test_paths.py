"""Paths around the chain, tried as a caller with a valid token would: domain fronting, cleartext to an https
upstream, an identity left bound by a refused CONNECT, and mitmproxy options that would switch a guarantee off."""

from __future__ import annotations

import json
import socket
import ssl
import subprocess
import time
from collections.abc import Iterator

import httpx
import pytest
import trustme

from scripts.demo_upstream import DemoUpstream
from tests.conftest import UPSTREAM_KEY, Gateway, RawListener, open_tunnel, rules_for, start_gateway

pytestmark = pytest.mark.e2e
FRONTED = "evil.example"  # another site on the same front: the upstream's certificate covers it too


class Front(DemoUpstream):
    """A TLS server that answers any SNI (as a shared CDN front does) and notes the names it was asked for."""

    def __init__(self, ca: trustme.CA) -> None:
        self.snis: list[str | None] = []
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("localhost", "127.0.0.1", FRONTED).configure_cert(context)
        context.sni_callback = lambda sock, name, ctx: self.snis.append(name)
        super().__init__(ssl_context=context)


@pytest.fixture
def front(upstream_ca: trustme.CA) -> Iterator[Front]:
    with Front(upstream_ca) as server:
        yield server


@pytest.fixture
def listener() -> Iterator[RawListener]:
    server = RawListener()
    yield server
    server.close()


def read_response(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(body) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        body += chunk
    return int(lines[0].split()[1]), headers, body


def tunnel(gw: Gateway, target: str, token: str) -> socket.socket:
    return open_tunnel(gw.proxy_port, target, token)


def send_over_tls(raw: socket.socket, gw: Gateway, sni: str, head: str) -> tuple[int, dict]:
    """TLS naming ``sni`` over ``raw`` (trusting the gateway's CA), then ``head`` and a 2-byte JSON body."""
    context = ssl.create_default_context(cafile=str(gw.ca_cert))
    with context.wrap_socket(raw, server_hostname=sni) as tls:
        tls.sendall(f"{head}Content-Type: application/json\r\nContent-Length: 2\r\nConnection: close\r\n\r\n{{}}"
                    .encode())
        status, _, body = read_response(tls)
    return status, json.loads(body) if body else {}


def fronted_request(gw: Gateway, target: str, sni: str, host: str, path: str = "/v1/chat/completions",
                    extra: str = "") -> tuple[int, dict]:
    """Inside a CONNECT to ``target``: TLS naming ``sni``, then a request for ``path`` naming ``host``."""
    raw = tunnel(gw, target, gw.token("mallory"))
    return send_over_tls(raw, gw, sni, f"POST {path} HTTP/1.1\r\nHost: {host}\r\n{extra}")


def front_rules(front: Front, upstream_port: int) -> str:
    return rules_for(upstream_port, extra_upstreams=f"""  - name: front
    host: localhost
    port: {front.port}
    credential: {{header: Authorization, value: "Bearer ${{WARDEN_TEST_UPSTREAM_KEY}}"}}
""")


@pytest.mark.parametrize(("sni", "host"), [
    (FRONTED, FRONTED),                 # both name the other site
    ("localhost", FRONTED),             # the Host alone names it
    (FRONTED, "localhost:{port}"),      # the SNI alone names it
])
def test_domain_fronting_is_refused_with_421_and_recorded(gateway_factory, upstream, front, sni, host) -> None:
    gw = gateway_factory(front_rules(front, upstream.port))
    status, body = fronted_request(gw, f"localhost:{front.port}", sni, host.format(port=front.port))
    assert status == 421 and body["error"]["type"] == "misdirected_request"
    assert FRONTED in body["error"]["message"]
    assert front.received == []  # the injected key never went to the other site (nor anywhere)
    [flow] = gw.flows()
    assert flow["fate"] == "misdirected_request" and FRONTED in flow["reason"]


def test_an_absolute_form_target_naming_another_host_is_refused(gateway_factory, upstream, front) -> None:
    """A server obeys an absolute-form target over Host: the gateway forwarded it as sent."""
    gw = gateway_factory(front_rules(front, upstream.port))
    host = f"localhost:{front.port}"
    status, body = fronted_request(gw, host, "localhost", host, path=f"https://{FRONTED}/v1/chat/completions")
    assert status == 421 and FRONTED in body["error"]["message"]
    status, body = fronted_request(gw, host, "localhost", host, extra=f"Host: {FRONTED}\r\n")  # a second Host
    assert status == 421 and FRONTED in body["error"]["message"]
    assert front.received == []
    # the reverse listener too
    raw = socket.create_connection(("127.0.0.1", gw.reverse_port), timeout=10)
    status, body = send_over_tls(raw, gw, "localhost", f"POST https://{FRONTED}/v1/chat/completions HTTP/1.1\r\n"
                                 f"Host: localhost\r\nAuthorization: Bearer {gw.token()}\r\n")
    assert status == 421 and FRONTED in body["error"]["message"]
    assert upstream.received == []
    assert [f["fate"] for f in gw.flows()] == ["misdirected_request"] * 3


@pytest.mark.parametrize("path", ["/v1/%66iles", "/v1//files", "/x/../v1/./files", "/v1/%2e/files"])
def test_a_path_spelled_otherwise_is_judged_as_the_upstream_reads_it(gateway, upstream, path) -> None:
    """The rule ``~u /v1/files`` blocks; another spelling of the same path must not pass it."""
    host = f"localhost:{upstream.port}"
    status, body = fronted_request(gateway, host, "localhost", host, path=path)
    assert status == 403 and body["error"]["type"] == "blocked_by_policy"
    assert upstream.received == []


@pytest.mark.parametrize("path", ["/v1%2Ffiles", "/v1/x/..%2Ffiles", "/v1/x/..;/files", "/v1\\files"])
def test_a_path_a_lenient_server_reads_otherwise_is_refused(gateway, upstream, path) -> None:
    """Servers that decode %2F, read backslashes as slashes or drop ';' parameters would route to /v1/files."""
    host = f"localhost:{upstream.port}"
    status, body = fronted_request(gateway, host, "localhost", host, path=path)
    assert status == 400 and body["error"]["type"] == "ambiguous_path"
    assert upstream.received == []
    [flow] = gateway.flows()
    assert flow["fate"] == "ambiguous_path"


def test_the_upstream_is_asked_for_by_its_own_name(gateway_factory, upstream, front) -> None:
    gw = gateway_factory(front_rules(front, upstream.port))
    status, _ = fronted_request(gw, f"localhost:{front.port}", "localhost", f"LOCALHOST.:{front.port}")
    assert status == 200  # the same host, spelled otherwise: accepted, and sent in one spelling
    assert front.snis == ["localhost"]
    [request] = front.received
    headers = {k.lower(): v for k, v in request["headers"]}
    assert headers["host"] == f"localhost:{front.port}" and headers["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_cleartext_to_an_https_upstream_is_refused_never_sent(gateway_factory, upstream, listener: RawListener) -> None:
    rules = rules_for(upstream.port, extra_upstreams=f"""  - name: tls-only
    host: localhost
    port: {listener.port}
    credential: {{header: Authorization, value: "Bearer ${{WARDEN_TEST_UPSTREAM_KEY}}"}}
""")
    gw = gateway_factory(rules)
    # absolute-form plain HTTP through the proxy
    with httpx.Client(proxy=gw.proxy_url_for(), trust_env=False, timeout=10) as plain:
        r = plain.post(f"http://localhost:{listener.port}/v1/chat/completions", json={"model": "m", "messages": []})
    assert r.status_code == 403 and r.json()["error"]["type"] == "cleartext_refused"
    assert "https" in r.json()["error"]["message"]
    # cleartext HTTP inside a CONNECT
    with tunnel(gw, f"localhost:{listener.port}", gw.token()) as sock:
        sock.sendall(
            f"GET /v1/models HTTP/1.1\r\nHost: localhost:{listener.port}\r\nConnection: close\r\n\r\n".encode())
        status, _, body = read_response(sock)
    assert status == 403 and json.loads(body)["error"]["type"] == "cleartext_refused"
    time.sleep(0.5)
    assert bytes(listener.received) == b""  # not a byte left for the upstream, so no key in cleartext
    assert [f["fate"] for f in gw.flows()] == ["cleartext_refused", "cleartext_refused"]


@pytest.fixture
def plain_upstream() -> Iterator[DemoUpstream]:
    with DemoUpstream() as server:  # no TLS: a local service declared as such
        yield server


def plain_rules(upstream_port: int, plain: DemoUpstream) -> str:
    return rules_for(upstream_port, extra_upstreams=f"""  - name: local-service
    host: localhost
    scheme: http
    port: {plain.port}
    credential: {{header: Authorization, value: "Bearer ${{WARDEN_TEST_UPSTREAM_KEY}}"}}
""")


def test_a_declared_plain_http_upstream_is_reached(gateway_factory, upstream, plain_upstream) -> None:
    gw = gateway_factory(plain_rules(upstream.port, plain_upstream))
    with httpx.Client(proxy=gw.proxy_url_for(), trust_env=False, timeout=10) as client:
        r = client.get(f"http://localhost:{plain_upstream.port}/echo")
    assert r.status_code == 200
    [request] = plain_upstream.received
    assert dict((k.lower(), v) for k, v in request["headers"])["authorization"] == f"Bearer {UPSTREAM_KEY}"


def test_a_refused_connect_binds_no_identity(gateway_factory, upstream, plain_upstream) -> None:
    gw = gateway_factory(plain_rules(upstream.port, plain_upstream))
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as sock:
        sock.sendall(f"CONNECT example.invalid:443 HTTP/1.1\r\nHost: example.invalid:443\r\n"
                     f"Proxy-Authorization: Bearer {gw.token('alice')}\r\n\r\n".encode())
        status, _, _ = read_response(sock)
        assert status == 403
        # the same connection, no token: it must not pass as alice
        sock.sendall(f"GET http://localhost:{plain_upstream.port}/echo HTTP/1.1\r\n"
                     f"Host: localhost:{plain_upstream.port}\r\n\r\n".encode())
        status, _, body = read_response(sock)
    assert status == 407 and json.loads(body)["error"]["reason"] == "missing"
    assert plain_upstream.received == []


def start_refused(tmp_path, confdir, upstream_port: int, extra_args: tuple[str, ...], rules: str | None = None) -> str:
    gw = start_gateway(tmp_path / "gw", confdir, rules or rules_for(upstream_port), upstream_port,
                       extra_args=extra_args, wait=False)
    try:
        gw.proc.wait(timeout=60)
    except subprocess.TimeoutExpired:
        gw.stop()
        raise AssertionError(f"the gateway started with {extra_args}:\n{gw.log()}") from None
    assert gw.proc.returncode != 0
    return gw.log()


@pytest.mark.parametrize(("extra_args", "named"), [
    (("--set", "stream_large_bodies=1k"), "stream_large_bodies"),
    (("--set", "save_stream_file=flows.out"), "save_stream_file"),
    (("--set", "ignore_hosts=.*"), "ignore_hosts"),
    (("--mode", "socks5@0"), "mode"),
    (("--set", "ssl_insecure=true"), "ssl_insecure"),
])
def test_an_unsafe_mitmproxy_option_stops_start_up_naming_it(tmp_path, confdir, upstream, extra_args, named) -> None:
    log = start_refused(tmp_path, confdir, upstream.port, extra_args)
    assert f"{named}=" in log and "refused by Warden" in log


def test_an_upstream_host_with_a_port_is_a_start_up_error(tmp_path, confdir, upstream) -> None:
    rules = rules_for(upstream.port).replace("host: localhost", "host: localhost:8443", 1)
    log = start_refused(tmp_path, confdir, upstream.port, (), rules)
    assert "upstreams[0].host" in log and "has a port" in log
