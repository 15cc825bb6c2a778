"""A real local OIDC issuer for tests: discovery, JWKS, a client-credentials token endpoint.

It signs with real RSA, EC and Ed25519 keys (joserfc), can rotate a key, can be taken down and
brought back, and counts how often its JWKS is fetched.
"""

from __future__ import annotations

import json
import socket
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs

from joserfc import jwt
from joserfc.jwk import ECKey, KeySet, OKPKey, RSAKey

ALGS = ["RS256", "ES256", "EdDSA"]


def new_key(alg: str, kid: str):
    params = {"kid": kid, "alg": alg, "use": "sig"}
    if alg == "RS256":
        return RSAKey.generate_key(2048, parameters=params)
    if alg == "ES256":
        return ECKey.generate_key("P-256", parameters=params)
    return OKPKey.generate_key("Ed25519", parameters=params)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def _json(self, status: int, data: Any) -> None:
        body = json.dumps(data).encode()
        self.send_response(status)
        self.send_header("content-type", "application/json")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self) -> None:
        issuer: OidcIssuer = self.server.issuer
        if not issuer.healthy:
            return self._json(503, {"error": "temporarily_unavailable"})
        if self.path == "/.well-known/openid-configuration":
            issuer.discovery_requests += 1
            return self._json(200, {"issuer": issuer.url, "jwks_uri": f"{issuer.url}/jwks",
                                    "token_endpoint": f"{issuer.url}/token",
                                    "id_token_signing_alg_values_supported": ALGS})
        if self.path == "/jwks":
            issuer.jwks_requests += 1
            return self._json(200, issuer.jwks())
        self._json(404, {"error": "not_found"})

    def do_POST(self) -> None:
        issuer: OidcIssuer = self.server.issuer
        form = parse_qs(self.rfile.read(int(self.headers.get("content-length") or 0)).decode())
        if self.path != "/token" or form.get("grant_type") != ["client_credentials"]:
            return self._json(400, {"error": "unsupported_grant_type"})
        client_id = form.get("client_id", [""])[0]
        if issuer.clients.get(client_id) != form.get("client_secret", [""])[0]:
            return self._json(401, {"error": "invalid_client"})
        token = issuer.token(client_id, client_id=client_id, groups=["service"])
        self._json(200, {"access_token": token, "token_type": "Bearer", "expires_in": 300})

    def log_message(self, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def get_request(self):
        sock, addr = super().get_request()
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock, addr


class OidcIssuer:
    def __init__(self, port: int = 0) -> None:
        self.keys = {alg: new_key(alg, f"{alg.lower()}-1") for alg in ALGS}
        self.generation = 1
        self.jwks_requests = 0
        self.discovery_requests = 0
        self.healthy = True
        self.clients = {"ci-job": "ci-secret"}
        self._port = port
        self._server: _Server | None = None

    @property
    def port(self) -> int:
        return self._server.server_address[1] if self._server else self._port

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> OidcIssuer:
        self._server = _Server(("127.0.0.1", self._port), _Handler)
        self._server.issuer = self
        self._port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self._server:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def jwks(self) -> dict:
        return {"keys": [k.as_dict(private=False) for k in self.keys.values()]}

    def rotate(self, alg: str = "RS256") -> str:
        """Replace the key for ``alg`` with a new one (new kid); the old one leaves the JWKS."""
        self.generation += 1
        kid = f"{alg.lower()}-{self.generation}"
        self.keys[alg] = new_key(alg, kid)
        return kid

    def token(self, sub: str, alg: str = "RS256", *, audience: str = "warden", ttl: int = 300,
              issuer: str | None = None, key=None, kid: str | None = None, now: float | None = None,
              **claims: Any) -> str:
        key = key or self.keys[alg]
        now = int(now or time.time())
        payload = {"iss": issuer or self.url, "sub": sub, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl,
                   "jti": uuid.uuid4().hex, **claims}
        header = {"alg": alg, "kid": kid or key.kid, "typ": "JWT"}
        return jwt.encode(header, payload, key, algorithms=ALGS)

    def __enter__(self) -> OidcIssuer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def public_key_set(issuer: OidcIssuer) -> KeySet:
    return KeySet.import_key_set(issuer.jwks())
