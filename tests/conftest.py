"""Shared fixtures: a real TLS demo upstream, a real mitmdump running Warden's chain, the real CLI.

Nothing here is mocked: the gateway is ``mitmdump -s addons/gateway.py`` in a subprocess, clients
go through it over real TLS (trustme for the upstream, the gateway's own mitmproxy CA for clients),
and ``warden`` is the installed console script.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
import trustme

from addons.auth.issuer import EmbeddedIssuer
from scripts.demo_upstream import DemoUpstream
from scripts.setup_certs import main as setup_certs

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
UPSTREAM_KEY = "sk-upstream-PLANTED-4f1c9e"  # the provider key only the gateway holds


def accept_forever(server: socket.socket, handle: Callable[[socket.socket], None]) -> None:
    """Serve each connection to ``server`` with ``handle`` in a thread of its own, until ``server`` is closed."""

    def loop() -> None:
        while True:
            try:
                conn, _ = server.accept()
            except OSError:
                return
            threading.Thread(target=handle, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()


def listen(handle: Callable[[socket.socket], None]) -> tuple[socket.socket, int]:
    """A server socket on 127.0.0.1 (any free port) whose connections ``handle`` serves: (socket, port)."""
    server = socket.create_server(("127.0.0.1", 0))
    accept_forever(server, handle)
    return server, server.getsockname()[1]


def read_head(sock: socket.socket) -> bytes:
    """An HTTP message head, read to its blank line and not a byte further (what follows may be TLS)."""
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = sock.recv(1)
        if not chunk:
            raise ConnectionError(f"closed before the end of the head: {head!r}")
        head += chunk
    return head


def open_tunnel(proxy_port: int, target: str, token: str, timeout: float = 10) -> socket.socket:
    """A raw socket through the gateway's forward proxy: CONNECT ``target`` (host:port) with ``token``, answered 200."""
    sock = socket.create_connection(("127.0.0.1", proxy_port), timeout=timeout)
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\nProxy-Authorization: Bearer {token}\r\n\r\n".encode())
    head = read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock


class RawListener:
    """A plain TCP server that keeps every byte it receives: an upstream that must never hear from the gateway."""

    def __init__(self) -> None:
        self.connections = 0
        self.received = bytearray()
        self._lock = threading.Lock()
        self.sock, self.port = listen(self._read)

    def _read(self, conn: socket.socket) -> None:
        with self._lock:
            self.connections += 1
        with conn:
            conn.settimeout(10)
            try:
                while chunk := conn.recv(65536):
                    with self._lock:
                        self.received += chunk
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


_GIVEN: set[int] = set()


def free_port() -> int:
    """A port free now and never handed out before in this process: the kernel may give a just-released port
    again, and one gateway's proxy, reverse and admin listeners must not be told the same one."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _GIVEN:
            _GIVEN.add(port)
            return port


@pytest.fixture(scope="session")
def upstream_ca() -> trustme.CA:
    return trustme.CA()


@pytest.fixture(scope="session")
def session_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("warden")


@pytest.fixture(scope="session")
def confdir(session_dir: Path, upstream_ca: trustme.CA) -> Path:
    """mitmproxy confdir with the gateway CA, plus the upstream CA the gateway trusts."""
    path = session_dir / "certs"
    setup_certs(str(path))
    upstream_ca.cert_pem.write_to_path(str(path / "test-upstream-ca.pem"))
    return path


@pytest.fixture(scope="session")
def upstream(upstream_ca: trustme.CA) -> Iterator[DemoUpstream]:
    """The demo upstream on real TLS (localhost and 127.0.0.1)."""
    server_cert = upstream_ca.issue_cert("localhost", "127.0.0.1")
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    server_cert.configure_cert(ctx)
    with DemoUpstream(ssl_context=ctx) as server:
        yield server


def rules_for(upstream_port: int, extra_upstreams: str = "", rules: str = "") -> str:
    return f"""
upstreams:
  - name: demo
    host: localhost
    port: {upstream_port}
    credential: {{header: Authorization, value: "Bearer ${{WARDEN_TEST_UPSTREAM_KEY}}"}}
  - name: demo-anthropic
    host: 127.0.0.1
    port: {upstream_port}
    credential: {{header: x-api-key, value: "${{WARDEN_TEST_UPSTREAM_KEY}}"}}
{extra_upstreams}
rules:
  - name: no-files
    filter: "~u /v1/files"
    action: block
    reason: File uploads are not allowed
{rules}
  - name: default
    action: allow
"""


@dataclass
class Gateway:
    """A running ``mitmdump`` with Warden's chain."""

    proc: subprocess.Popen
    workdir: Path
    confdir: Path
    db: Path
    proxy_port: int
    reverse_port: int
    admin: str
    env: dict[str, str]
    log_path: Path
    args: list[str] = field(default_factory=list)
    admin_token: str | None = None  # for the CLI when the issuer is not the embedded one

    @property
    def proxy_url(self) -> str:
        """The proxy without credentials (the gateway answers 407 to it)."""
        return f"http://127.0.0.1:{self.proxy_port}"

    def token(self, sub: str = "alice", **kwargs) -> str:
        """A token from this gateway's embedded issuer (what ``warden token`` prints)."""
        return EmbeddedIssuer.load_or_create(self.workdir / "warden-issuer.key").mint(sub, **kwargs)

    def admin_client(self, token: str | None = None) -> httpx.Client:
        """The admin API, as a member of the admin group unless another token is given."""
        token = token or self.token("auditor", groups=["warden-admin"])
        return httpx.Client(base_url=self.admin_url, trust_env=False, headers={"Authorization": f"Bearer {token}"})

    def proxy_url_for(self, token: str | None = None, user: str = "alice") -> str:
        """The proxy URL a user puts in HTTPS_PROXY: the token as the password."""
        return f"http://{user}:{token or self.token(user)}@127.0.0.1:{self.proxy_port}"

    @property
    def admin_url(self) -> str:
        return f"http://{self.admin}"

    @property
    def ca_cert(self) -> Path:
        return self.confdir / "mitmproxy-ca-cert.pem"

    @property
    def signing_pub(self) -> Path:
        return self.workdir / "warden-signing.pub"

    @property
    def originals_key(self) -> Path:
        return self.workdir / "warden-originals.key"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def client(self, token: str | None = None, user: str = "alice", **kwargs) -> httpx.Client:
        """An httpx client that goes through the gateway in forward mode with a token, trusting its CA."""
        return httpx.Client(proxy=self.proxy_url_for(token, user),
                            verify=ssl.create_default_context(cafile=str(self.ca_cert)), trust_env=False, **kwargs)

    def warden(self, *args: str, check: bool = True, db_only: bool = False) -> subprocess.CompletedProcess:
        """Run the real ``warden`` console script against this gateway's store."""
        cmd = [str(BIN / "warden"), "--db", str(self.db), "--admin", "127.0.0.1:1" if db_only else self.admin, *args]
        result = subprocess.run(cmd, capture_output=True, text=True, cwd=self.workdir, timeout=120,
                                env={**os.environ, "COLUMNS": "200", "WARDEN_PUBKEY": str(self.signing_pub),
                                     "WARDEN_ISSUER_KEY": str(self.workdir / "warden-issuer.key"),
                                     "WARDEN_RULES": str(self.workdir / "rules.yaml"),
                                     **({"WARDEN_TOKEN": self.admin_token} if self.admin_token else {})})
        if check and result.returncode != 0:
            raise AssertionError(
                f"{cmd} exited {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}")
        return result

    def flows(self, *args: str) -> list[dict]:
        out = self.warden("flows", "--json", "--limit", "100000", *args).stdout
        return [json.loads(line) for line in out.splitlines() if line.strip()]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait()


def start_gateway(
    workdir: Path, confdir: Path, rules_text: str, upstream_port: int, *, db: Path | None = None,
    extra_args: tuple[str, ...] = (), env: dict[str, str] | None = None, wait: bool = True,
    scripts_before: tuple[str, ...] = (), upstream_trust: Path | None = None,
    mitmdump: tuple[str, ...] = (str(BIN / "mitmdump"),), chain: Path = ROOT / "addons" / "gateway.py",
) -> Gateway:
    """``mitmdump`` (the command that runs it) with the Warden ``chain`` (a gateway.py) and ``rules_text``."""
    workdir.mkdir(parents=True, exist_ok=True)
    rules = workdir / "rules.yaml"
    rules.write_text(rules_text)
    proxy_port, reverse_port, admin_port = free_port(), free_port(), free_port()
    db = db or workdir / "warden.duckdb"
    full_env = {**os.environ, "WARDEN_TEST_UPSTREAM_KEY": UPSTREAM_KEY, **(env or {})}
    for name in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "NO_PROXY", "no_proxy"):
        full_env.pop(name, None)
    settings = {
        "confdir": confdir, "flow_detail": 0,
        "ssl_verify_upstream_trusted_ca": upstream_trust or confdir / "test-upstream-ca.pem",
        "warden_rules": rules, "warden_db": db, "warden_admin": f"127.0.0.1:{admin_port}",
        "warden_signing_key": workdir / "warden-signing.key", "warden_originals_key": workdir / "warden-originals.key",
        "warden_issuer_key": workdir / "warden-issuer.key",
        # one analyzer process: gateways start faster on two cores (PII tests that need more set it)
        "warden_pii_workers": 1,
    }
    overridden = {extra_args[i + 1].split("=", 1)[0] for i, a in enumerate(extra_args) if a == "--set"}
    args = [
        *mitmdump, *(arg for script in scripts_before for arg in ("-s", script)),
        "-s", str(chain),
        "--mode", f"regular@{proxy_port}", "--mode", f"reverse:https://localhost:{upstream_port}@{reverse_port}",
        "--listen-host", "127.0.0.1",
        *(arg for name, value in settings.items() if name not in overridden for arg in ("--set", f"{name}={value}")),
        *extra_args,
    ]
    log_path = workdir / f"mitmdump-{proxy_port}.log"
    proc = subprocess.Popen(args, stdout=log_path.open("w"), stderr=subprocess.STDOUT, cwd=workdir, env=full_env)
    gateway = Gateway(proc, workdir, confdir, db, proxy_port, reverse_port, f"127.0.0.1:{admin_port}",
                      full_env, log_path, args)
    if wait:
        wait_ready(gateway)
    return gateway


def is_ready(gateway: Gateway) -> bool:
    """True once the gateway's admin API says healthy and its proxy port accepts connections."""
    try:
        if httpx.get(f"{gateway.admin_url}/healthz", timeout=1, trust_env=False).status_code == 200:
            with socket.create_connection(("127.0.0.1", gateway.proxy_port), timeout=1):
                return True
    except (httpx.HTTPError, OSError):
        pass
    return False


def wait_ready(gateway: Gateway, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if gateway.proc.poll() is not None:
            raise AssertionError(f"mitmdump exited with {gateway.proc.returncode}:\n{gateway.log()}")
        if is_ready(gateway):
            return
        time.sleep(0.1)
    gateway.stop()
    raise AssertionError(f"gateway not ready after {timeout}s:\n{gateway.log()}")


@pytest.fixture
def gateway_factory(tmp_path: Path, confdir: Path, upstream: DemoUpstream):
    """Start gateways with given rules; every one is stopped at the end of the test."""
    started: list[Gateway] = []
    upstream.clear()

    def start(rules_text: str | None = None, name: str = "gw", **kwargs) -> Gateway:
        text = rules_text if rules_text is not None else rules_for(upstream.port)
        gw = start_gateway(tmp_path / name, confdir, text, upstream.port, **kwargs)
        started.append(gw)
        return gw

    yield start
    for gw in started:
        gw.stop()


@pytest.fixture
def gateway(gateway_factory) -> Gateway:
    return gateway_factory()


@pytest.fixture
def proxy_env(gateway: Gateway, monkeypatch: pytest.MonkeyPatch) -> Gateway:
    """HTTPS_PROXY and SSL_CERT_FILE set as a user would, for SDKs that read the environment."""
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", gateway.proxy_url_for())
    monkeypatch.setenv("SSL_CERT_FILE", str(gateway.ca_cert))
    return gateway


def curl_available() -> bool:
    return shutil.which("curl") is not None
