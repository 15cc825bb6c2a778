"""Identity: only verified OIDC identities pass, in forward and reverse mode, against a real issuer."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import socket
import subprocess
import threading
import time
import uuid

import httpx
import openai
import pytest

from tests.conftest import Gateway, curl_available, free_port, rules_for
from tests.oidc_issuer import ALGS, OidcIssuer, new_key

pytestmark = pytest.mark.e2e


def identity_rules(upstream_port: int, issuer_url: str) -> str:
    return f"""
identity:
  issuer: {issuer_url}
  audience: warden
  groups_claim: realm_access.roles
  jwks_min_refresh: 1
""" + rules_for(upstream_port)


@pytest.fixture
def issuer():
    with OidcIssuer() as server:
        yield server


def auditor_token(issuer: OidcIssuer) -> str:
    return issuer.token("auditor", ttl=3600, realm_access={"roles": ["warden-admin"]})


@pytest.fixture
def gw(gateway_factory, upstream, issuer) -> Gateway:
    gateway = gateway_factory(identity_rules(upstream.port, issuer.url))
    gateway.admin_token = auditor_token(issuer)  # the CLI reads flows through the admin API with it
    return gateway


def raw_connect(gw: Gateway, target: str, proxy_authorization: str | None) -> tuple[int, dict[str, str], dict]:
    """A CONNECT by hand, to read the refusal's headers and JSON body (HTTP clients hide them)."""
    with socket.create_connection(("127.0.0.1", gw.proxy_port), timeout=10) as sock:
        request = f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n"
        if proxy_authorization is not None:
            request += f"Proxy-Authorization: {proxy_authorization}\r\n"
        sock.sendall((request + "\r\n").encode())
        data = b""
        while b"\r\n\r\n" not in data:
            data += sock.recv(65536)
        head, _, body = data.partition(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
        while len(body) < int(headers.get("content-length", 0)):
            body += sock.recv(65536)
    return int(lines[0].split()[1]), headers, json.loads(body) if body else {}


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def forged(header: dict, claims: dict, signature: bytes = b"") -> str:
    return f"{b64url(json.dumps(header).encode())}.{b64url(json.dumps(claims).encode())}.{b64url(signature)}"


@pytest.mark.parametrize("alg", ALGS)
def test_valid_tokens_pass_forward_and_reverse(gw: Gateway, upstream, issuer: OidcIssuer, alg: str) -> None:
    token = issuer.token(f"user-{alg}", alg, email=f"{alg}@example.org", realm_access={"roles": ["dev", "ml"]})
    with gw.client(token=token) as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/forward").status_code == 200
    reverse = httpx.get(f"http://127.0.0.1:{gw.reverse_port}/echo/reverse",
                        headers={"Authorization": f"Bearer {token}"}, trust_env=False)
    assert reverse.status_code == 200
    for received in upstream.received:
        names = {k.lower() for k, _ in received["headers"]}
        assert "proxy-authorization" not in names
        assert token not in json.dumps(received["headers"])  # the gateway's key went in its place
    flows = gw.flows()
    assert {f["user"] for f in flows} == {f"user-{alg}"} and len(flows) == 2
    detail = [json.loads(line) for line in gw.warden("show", "--json", flows[0]["flow_id"]).stdout.splitlines()]
    identity = detail[0]["detail"]["identity"]
    assert identity["groups"] == ["dev", "ml"] and identity["email"] == f"{alg}@example.org"


@pytest.mark.skipif(not curl_available(), reason="curl is not installed")
def test_curl_with_bearer_and_openai_sdk_with_basic(gw: Gateway, upstream, issuer, monkeypatch) -> None:
    token = issuer.token("carol", "ES256")
    result = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--proxy", gw.proxy_url,
         "--proxy-header", f"Proxy-Authorization: Bearer {token}",
         "--cacert", str(gw.ca_cert), f"https://localhost:{upstream.port}/echo/curl"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", gw.proxy_url_for(issuer.token("dave", "EdDSA"), user="dave"))
    monkeypatch.setenv("SSL_CERT_FILE", str(gw.ca_cert))
    sdk = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0)
    completion = sdk.chat.completions.create(model="m", messages=[{"role": "user", "content": "hi"}])
    assert completion.choices[0].message.content == "hi"
    assert sorted(f["user"] for f in gw.flows()) == ["carol", "dave"]


def refusal_cases(issuer: OidcIssuer) -> dict[str, tuple[str | None, str]]:
    now = time.time()
    rsa = issuer.keys["RS256"]
    public_pem = rsa.as_pem(private=False)
    claims = {"iss": issuer.url, "sub": "mallory", "aud": "warden", "exp": int(now) + 300}
    hs_header = {"alg": "HS256", "kid": rsa.kid, "typ": "JWT"}
    signing_input = f"{b64url(json.dumps(hs_header).encode())}.{b64url(json.dumps(claims).encode())}".encode()
    hs256 = forged(hs_header, claims, hmac.new(public_pem, signing_input, hashlib.sha256).digest())
    good = issuer.token("mallory")
    tampered = good[:-6] + ("AAAAAA" if not good.endswith("AAAAAA") else "BBBBBB")
    with OidcIssuer() as other:
        from_other = other.token("mallory", kid="other-1", key=new_key("RS256", "other-1"), issuer=other.url)
    return {
        "no token": (None, "missing"),
        "malformed": ("not-a-jwt", "malformed"),
        "alg none": (forged({"alg": "none", "typ": "JWT"}, claims), "alg_not_allowed"),
        "HS256 with the public key": (hs256, "alg_not_allowed"),
        "bad signature": (tampered, "bad_signature"),
        "unknown kid": (issuer.token("mallory", key=new_key("RS256", "ghost-1")), "unknown_key"),
        "expired": (issuer.token("mallory", now=now - 7200, ttl=300), "expired"),
        "not yet valid": (issuer.token("mallory", nbf=int(now) + 3600), "not_yet_valid"),
        "wrong iss": (issuer.token("mallory", issuer="https://evil.example"), "wrong_issuer"),
        "wrong aud": (issuer.token("mallory", audience="someone-else"), "wrong_audience"),
        "another issuer": (from_other, "unknown_key"),
    }


def test_every_bad_token_is_refused_recorded_and_stops_at_the_gateway(gw: Gateway, upstream, issuer) -> None:
    cases = refusal_cases(issuer)
    target = f"localhost:{upstream.port}"
    for name, (token, reason) in cases.items():
        auth = None if token is None else f"Bearer {token}"
        status, headers, body = raw_connect(gw, target, auth)
        assert (status, body["error"]["reason"]) == (407, reason), name
        assert "proxy-authenticate" in headers and body["error"]["type"] == "unauthenticated"
        r = httpx.get(f"http://127.0.0.1:{gw.reverse_port}/echo/x", trust_env=False,
                      headers={} if token is None else {"Authorization": f"Bearer {token}"})
        assert (r.status_code, r.json()["error"]["reason"]) == (401, reason), name
        assert "www-authenticate" in r.headers
    assert upstream.received == []  # nothing reached the upstream
    refused = gw.flows("--fate", "unauthenticated")
    assert len(refused) == 2 * len(cases)
    reasons = {f["reason"].split(":")[0] for f in refused}
    assert reasons == {reason for _, reason in cases.values()}
    claimed = [json.loads(gw.warden("show", "--json", f["flow_id"]).stdout.splitlines()[0])["detail"] for f in refused]
    assert any(d and d.get("claimed_sub") == "mallory" for d in claimed)
    with gw.client(token=issuer.token("ok")) as client:  # and it keeps serving
        assert client.get(f"https://localhost:{upstream.port}/echo/after").status_code == 200


def test_key_rotation_without_restart_and_no_flood(gw: Gateway, upstream, issuer) -> None:
    with gw.client(token=issuer.token("erin")) as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/before").status_code == 200
    issuer.rotate("RS256")
    time.sleep(1.1)  # jwks_min_refresh: 1 s
    with gw.client(token=issuer.token("erin")) as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/after-rotation").status_code == 200
    fetched = issuer.jwks_requests
    for _ in range(40):
        ghost = issuer.token("flood", key=new_key("ES256", f"ghost-{uuid.uuid4().hex[:6]}"), alg="ES256")
        status, _, body = raw_connect(gw, f"localhost:{upstream.port}", f"Bearer {ghost}")
        assert status == 407 and body["error"]["reason"] == "unknown_key"
    assert issuer.jwks_requests - fetched <= 2  # forty unknown kids in well under two seconds


def test_tunnel_attribution_and_no_mixing_under_concurrency(gw: Gateway, upstream, issuer) -> None:
    def run(user: str) -> None:
        with gw.client(token=issuer.token(user), user=user) as client:
            for i in range(15):
                assert client.get(f"https://localhost:{upstream.port}/echo/{user}-{i}").status_code == 200

    threads = [threading.Thread(target=run, args=(user,)) for user in ("alice", "bob", "carol")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    flows = gw.flows()
    assert len(flows) == 45
    for flow in flows:
        assert flow["path"].split("/")[-1].startswith(flow["user"] + "-")
    assert len({f["client"] for f in flows}) == 3  # one tunnel each, authenticated once


def test_client_credentials_service_account(gw: Gateway, upstream, issuer) -> None:
    r = httpx.post(f"{issuer.url}/token", data={"grant_type": "client_credentials", "client_id": "ci-job",
                                                 "client_secret": "ci-secret"}, trust_env=False)
    token = r.json()["access_token"]
    with gw.client(token=token, user="ci-job") as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/ci").status_code == 200
    [flow] = gw.flows()
    detail = json.loads(gw.warden("show", "--json", flow["flow_id"]).stdout.splitlines()[0])["detail"]
    assert detail["identity"]["client_id"] == "ci-job" and detail["identity"]["groups"] == []


def test_garbage_credentials_never_crash(gw: Gateway, upstream, issuer) -> None:
    target = f"localhost:{upstream.port}"
    for value in ("Basic !!!not-base64", "Digest abc", "Bearer " + "a" * 20000, "Basic " + b64url(b"only-user:")):
        status, _, _ = raw_connect(gw, target, value)
        assert status in (400, 407), value
    with gw.client(token=issuer.token("ok")) as client:
        assert client.get(f"https://{target}/echo/still-up").status_code == 200


def test_issuer_down_fails_closed_and_recovers(gateway_factory, upstream) -> None:
    port = free_port()
    issuer = OidcIssuer(port)  # not started: the gateway starts without it
    gw = gateway_factory(identity_rules(upstream.port, issuer.url))
    assert "cannot be reached" in gw.log()
    status, _, body = raw_connect(gw, f"localhost:{upstream.port}", f"Bearer {issuer.token('early')}")
    assert status == 503 and issuer.url in body["error"]["message"]
    assert body["error"]["type"] == "identity_unavailable"
    issuer.start()
    gw.admin_token = auditor_token(issuer)
    try:
        time.sleep(1.1)  # jwks_min_refresh
        with gw.client(token=issuer.token("back")) as client:
            assert client.get(f"https://localhost:{upstream.port}/echo/recovered").status_code == 200
        assert {f["fate"] for f in gw.flows()} == {"identity_unavailable", "completed"}
    finally:
        issuer.stop()


def test_misbehaving_issuer_at_refresh_keeps_known_keys(gw: Gateway, upstream, issuer) -> None:
    with gw.client(token=issuer.token("frank")) as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/1").status_code == 200
    issuer.healthy = False  # JWKS answers 503 from now on
    issuer.rotate("ES256")
    time.sleep(1.1)
    status, _, body = raw_connect(gw, f"localhost:{upstream.port}", f"Bearer {issuer.token('frank', 'ES256')}")
    assert status == 407 and body["error"]["reason"] == "unknown_key"  # refused, not crashed
    with gw.client(token=issuer.token("frank", "RS256")) as client:  # known keys still work
        assert client.get(f"https://localhost:{upstream.port}/echo/2").status_code == 200
    issuer.healthy = True
    time.sleep(1.1)
    with gw.client(token=issuer.token("frank", "ES256")) as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/3").status_code == 200


def test_embedded_issuer_token_cli_discovery_and_jwks(gateway: Gateway, upstream) -> None:
    """The default setup: `warden token` signs, the admin API publishes the keys, the gateway accepts."""
    from joserfc import jwt
    from joserfc.jwk import KeySet

    result = subprocess.run(
        [str(gateway.args[0]).replace("mitmdump", "warden"), "token", "grace", "--groups", "dev,ml", "--ttl", "10m",
         "--email", "grace@example.org", "--key", str(gateway.workdir / "warden-issuer.key")],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result.stderr
    token = result.stdout.strip()
    admin = httpx.Client(base_url=gateway.admin_url, trust_env=False)
    discovery = admin.get("/.well-known/openid-configuration").json()
    assert discovery["issuer"] == "urn:warden:embedded" and discovery["jwks_uri"].endswith("/jwks")
    keys = KeySet.import_key_set(admin.get("/jwks").json())
    claims = jwt.decode(token, keys, algorithms=["EdDSA"]).claims
    assert claims["sub"] == "grace" and claims["groups"] == ["dev", "ml"] and claims["exp"] - claims["iat"] == 600
    with gateway.client(token=token, user="grace") as client:
        assert client.get(f"https://localhost:{upstream.port}/echo/embedded").status_code == 200
    [flow] = gateway.flows("--user", "grace")
    assert flow["fate"] == "completed"
    bad = subprocess.run([str(gateway.args[0]).replace("mitmdump", "warden"), "token", "x", "--ttl", "soon",
                          "--key", str(gateway.workdir / "warden-issuer.key")], capture_output=True, text=True)
    assert bad.returncode == 2 and "--ttl: 'soon' is not a duration" in bad.stderr
