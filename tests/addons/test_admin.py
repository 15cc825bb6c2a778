"""The admin API's routes and its decisions on who may read them, on its real tornado listener in a test master.

The recorder beside it opens a store and starts its writer (every protected call is an ``access`` event); no gateway,
no proxy.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addons.admin import Admin, parse_listen
from addons.auth.issuer import EMBEDDED_ISSUER, EmbeddedIssuer
from addons.config import Config
from addons.recorder import Recorder
from tests.conftest import free_port

RULES = "upstreams:\n  - {name: a, host: a.example}\n"
PROTECTED = ("/api/flows", "/api/flows/0f8c12ab", "/api/events", "/api/verify")


@asynccontextmanager
async def admin_api(tmp_path: Path, rules: str = RULES, **options: Any) -> AsyncIterator[httpx.AsyncClient]:
    """The admin API listening on a free port, with ``rules`` (and ``options``): a client for it."""
    (tmp_path / "rules.yaml").write_text(rules)
    port = free_port()
    config, admin, recorder = Config(), Admin(), Recorder()
    with taddons.context(config, recorder, admin) as tctx:
        tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"), warden_issuer_key=str(tmp_path / "i.key"),
                       warden_db=str(tmp_path / "w.duckdb"), warden_signing_key=str(tmp_path / "s.key"),
                       warden_originals_key=str(tmp_path / "o.key"), warden_admin=f"127.0.0.1:{port}", **options)
        assert recorder.store is not None
        recorder.store.start()
        admin.running()
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", trust_env=False, timeout=10) as client:
                yield client
        finally:
            admin.done()
            recorder.done()


def run(scenario: Callable[[], Coroutine[Any, Any, None]]) -> None:
    asyncio.run(scenario())


def token(tmp_path: Path, sub: str, **kwargs: Any) -> dict[str, str]:
    """Authorization for a token of the embedded issuer (the key the admin API was given)."""
    return {"Authorization": "Bearer " + EmbeddedIssuer.load_or_create(tmp_path / "i.key").mint(sub, **kwargs)}


def test_parse_listen() -> None:
    assert parse_listen("127.0.0.1:8081") == ("127.0.0.1", 8081)
    assert parse_listen("[::1]:8081") == ("::1", 8081)
    assert parse_listen(":8081") == ("127.0.0.1", 8081)
    for bad in ("8081", "127.0.0.1", "127.0.0.1:0", "127.0.0.1:65536", "127.0.0.1:http", "127.0.0.1:-1"):
        with pytest.raises(ValueError, match="expected host:port"):
            parse_listen(bad)


def test_a_bad_listen_option_is_refused_naming_it(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    config, admin = Config(), Admin()
    with taddons.context(config, admin) as tctx:
        tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"), warden_issuer_key=str(tmp_path / "i.key"))
        with pytest.raises(exceptions.OptionsError, match="warden_admin: expected host:port"):
            tctx.configure(admin, warden_admin="localhost")


async def jwks_status(port: int) -> int:
    async with httpx.AsyncClient(trust_env=False, timeout=10) as client:  # a new connection each time
        return (await client.get(f"http://127.0.0.1:{port}/jwks")).status_code


def test_an_empty_listen_option_opens_no_listener_and_a_changed_one_moves_it(tmp_path: Path) -> None:
    (tmp_path / "rules.yaml").write_text(RULES)
    first, second = free_port(), free_port()

    async def scenario() -> None:
        config, admin = Config(), Admin()
        with taddons.context(config, admin) as tctx:
            tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"), warden_issuer_key=str(tmp_path / "i.key"),
                           warden_admin="")
            admin.running()
            assert admin.server is None
            tctx.configure(admin, warden_admin=f"127.0.0.1:{first}")
            admin.running()
            assert await jwks_status(first) == 200
            tctx.configure(admin, warden_admin=f"127.0.0.1:{second}")  # while it runs: moved at once
            assert await jwks_status(second) == 200
            with pytest.raises(httpx.ConnectError):
                await jwks_status(first)
            admin.done()

    run(scenario)


def test_health_and_metrics_need_no_token(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            health = await client.get("/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
            assert health.json()["store"]["path"] == str(tmp_path / "w.duckdb") and health.json()["pii"] == []
            assert (await client.get("/metrics")).status_code == 200

    run(scenario)


def test_every_protected_route_needs_a_token_of_an_admin_group(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            for path in PROTECTED:
                anonymous = await client.get(path)
                assert anonymous.status_code == 401, path
                assert anonymous.headers["www-authenticate"] == 'Bearer realm="warden-admin"'
                assert anonymous.json()["error"]["status"] == 401
                basic = await client.get(path, headers={"Authorization": "Basic YWxpY2U6c2VjcmV0"})
                assert basic.status_code == 401, path
                forged = await client.get(path, headers={"Authorization": "Bearer not.a.token"})
                assert forged.status_code == 401, path
                other_audience = await client.get(path, headers=token(tmp_path, "mallory", groups=["warden-admin"],
                                                                      audience="elsewhere"))
                assert other_audience.status_code == 401 and "wrong_audience" in other_audience.text, path
                member = await client.get(path, headers=token(tmp_path, "alice", groups=["dev"]))
                assert member.status_code == 403, path
                assert "alice is in none of the admin groups (warden-admin)" in member.json()["error"]["message"]
            admin = token(tmp_path, "auditor", groups=["warden-admin"])
            assert (await client.get("/api/flows", headers=admin)).json() == {"flows": []}
            assert (await client.get("/api/flows/0f8c12ab", headers=admin)).status_code == 404  # no such flow
            assert (await client.get("/api/verify", headers=admin)).status_code in (200, 409)
            # Who read the record, refused callers included, is on it: one access event per call, before serving.
            events = (await client.get("/api/events", headers=admin)).json()["events"]
            access = [(e["user"], e["fate"], json.loads(e["record"])["detail"]["path"]) for e in events]
            refused = [a for a in access if a[1] == "refused"]
            assert len(refused) == 5 * len(PROTECTED)  # anonymous, basic, forged, other audience, member
            assert ("alice", "refused", "/api/verify") in refused and (None, "refused", "/api/flows") in refused
            assert access[len(refused):] == [("auditor", "read", p) for p in (
                "/api/flows", "/api/flows/0f8c12ab", "/api/verify", "/api/events")]
            signing = await client.post("/api/verify", headers=admin)  # signs the access events' head
            assert signing.status_code == 200 and signing.json()["status"] == "ok"

    run(scenario)


def test_admin_groups_are_read_where_the_rules_say(tmp_path: Path) -> None:
    rules = RULES + "identity: {groups_claim: realm_access.roles, admin_groups: [auditors, security]}\n"

    async def scenario() -> None:
        async with admin_api(tmp_path, rules) as client:
            nested = token(tmp_path, "carol", extra={"realm_access": {"roles": ["dev", "security"]}})
            assert (await client.get("/api/flows", headers=nested)).status_code == 200
            one = token(tmp_path, "dave", extra={"realm_access": {"roles": "auditors"}})
            assert (await client.get("/api/flows", headers=one)).status_code == 200
            top_level = token(tmp_path, "erin", groups=["auditors"])  # not where the rules look
            assert (await client.get("/api/flows", headers=top_level)).status_code == 403

    run(scenario)


def test_bad_queries_are_400(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            admin = token(tmp_path, "auditor", groups=["warden-admin"])
            for path in ("/api/flows?since=yesterday", "/api/flows?limit=many", "/api/events?after_seq=x"):
                response = await client.get(path, headers=admin)
                assert response.status_code == 400 and response.json()["error"]["status"] == 400, path

    run(scenario)


def test_unknown_routes_are_404(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            admin = token(tmp_path, "auditor", groups=["warden-admin"])
            for path in ("/", "/api", "/api/flows/0f8c12ab/events", "/api/flows/..%2F..%2Fetc", "/jwks/x"):
                response = await client.get(path, headers=admin)
                assert response.status_code == 404 and "no flow" not in response.text, path  # no route: no query

    run(scenario)


def test_the_embedded_issuer_publishes_discovery_and_its_keys(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            found = (await client.get("/.well-known/openid-configuration")).json()
            assert found["issuer"] == EMBEDDED_ISSUER and found["jwks_uri"] == str(client.base_url.join("/jwks"))
            jwks = (await client.get("/jwks")).json()
            assert jwks == EmbeddedIssuer.load_or_create(tmp_path / "i.key").jwks()

    run(scenario)


def test_with_an_external_issuer_there_is_no_discovery_and_an_unreachable_one_fails_closed(tmp_path: Path) -> None:
    rules = RULES + f"identity: {{issuer: 'http://127.0.0.1:{free_port()}/realm'}}\n"

    async def scenario() -> None:
        async with admin_api(tmp_path, rules) as client:
            assert (await client.get("/.well-known/openid-configuration")).status_code == 404
            assert (await client.get("/jwks")).status_code == 404
            response = await client.get("/api/flows", headers=token(tmp_path, "auditor", groups=["warden-admin"]))
            assert response.status_code == 503, response.text

    run(scenario)


def test_an_access_event_keeps_no_secret_and_no_searched_value(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            admin = token(tmp_path, "auditor", groups=["warden-admin"])
            key = "sk-proj-" + "A1b2C3d4" * 4
            await client.get("/api/flows", params={"text": "4111 1111 1111 1111", "access_token": key,
                                                   "user": "alice"}, headers=admin)
            events = (await client.get("/api/events", headers=admin)).json()["events"]
            first = json.loads(events[0]["record"])["detail"]["query"]
            assert first["user"] == ["alice"] and first["access_token"] == ["[redacted]"]
            assert first["text"] == ["sha256:" + hashlib.sha256(b"4111 1111 1111 1111").hexdigest()]
            assert key not in json.dumps(events) and "4111" not in json.dumps(events)

    run(scenario)


def test_a_pack_asked_for_is_on_the_record_with_what_it_exports(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            admin = token(tmp_path, "auditor", groups=["warden-admin"])
            asked = await client.post("/api/evidence", json={"user": "alice", "since": "2026-01-01T00:00:00"},
                                      headers=admin)
            assert asked.status_code == 200 and asked.headers["content-type"] == "application/zip"
            events = (await client.get("/api/events", headers=admin)).json()["events"]
            exports = [json.loads(e["record"])["detail"] for e in events if e["kind"] == "access"
                       and e["fate"] == "export"]
            assert len(exports) == 1 and exports[0]["pack"]["user"] == "alice"
            assert exports[0]["pack"]["since"].startswith("2026-01-01")

    run(scenario)
