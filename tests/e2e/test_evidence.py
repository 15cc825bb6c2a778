"""Evidence packs from a real gateway: a known mix of traffic (allowed, masked, blocked by a rule, a refused token,
an approval, a refused admin call), packed through the running gateway and from the stopped store, counted in
every file and in the report, checked by ``warden evidence verify`` and by OpenSSL as the README says, and
opened in headless Chromium."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import zipfile
from pathlib import Path

import duckdb
import httpx
import pytest

from addons.evidence.manifest import MANIFEST, SIGNATURE, sign_folder
from addons.store.keys import SigningKey
from tests.conftest import Gateway
from tests.e2e.approvals_helpers import approver, chat, pending, review_rules, send

pytestmark = pytest.mark.e2e

ROOT = Path(__file__).resolve().parents[2]
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


def traffic(gw: Gateway, upstream) -> str:
    """The mix; returns the approved flow's id."""
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    with gw.client(token=gw.token("alice", groups=["staff"])) as alice:
        assert alice.post(url, json=chat("m", "Summarise the quarterly report")).status_code == 200
        assert alice.post(url, json=chat("m", "Forward this to jan.devries@example.nl")).status_code == 200
    with gw.client(token=gw.token("bob", groups=["ops"]), user="bob") as bob:
        assert bob.post(f"https://localhost:{upstream.port}/v1/files", content=b"x").status_code == 403
    with gw.client(token="not-a-token", user="mallory") as mallory, pytest.raises(httpx.ProxyError, match="407"):
        mallory.post(url, json=chat("m"))  # the CONNECT is refused: a flow of its own on the record
    with gw.admin_client(gw.token("eve", groups=["staff"])) as eve:
        assert eve.get("/api/flows").status_code == 403
    sent = send(gw, upstream.port, chat("review-hold", "Summarise the budget"))
    [waiting] = pending(gw)
    with approver(gw, "carol") as carol:
        assert carol.post(f"/api/approvals/{waiting['id']}/approve", json={"reason": "budget review"}).status_code \
            == 200
    assert sent.result().status_code == 200
    return waiting["flow_id"]


def table(folder: Path, name: str) -> dict[str, list[dict]]:
    con = duckdb.connect()
    out = {}
    for suffix, reader in (("jsonl", "read_json_auto"), ("csv", "read_csv_auto"), ("parquet", "read_parquet")):
        cur = con.execute(f"SELECT * FROM {reader}(?)", [str(folder / f"{name}.{suffix}")])
        names = [d[0] for d in cur.description]
        out[suffix] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return out


def check_counts(folder: Path, anonymous_calls: int = 0) -> None:
    """The mix, plus ``anonymous_calls`` admin API calls refused for want of a token."""
    for suffix, flows in table(folder, "flows").items():
        assert sorted((f["user"] or "-", f["fate"]) for f in flows) == [
            ("-", "unauthenticated"), ("alice", "completed"), ("alice", "completed"), ("alice", "completed"),
            ("bob", "blocked_by_policy")], suffix
        masked = [f for f in flows if f["entities"]]
        entities = masked[0]["entities"] if masked else None
        assert len(masked) == 1 and (entities if isinstance(entities, dict) else json.loads(entities)) == {
            "EMAIL_ADDRESS": 1}, suffix
    for suffix, [approval] in table(folder, "approvals").items():
        assert (approval["requester"], approval["rule"], approval["state"], approval["reasons"]) == (
            "alice", "hold-review", "used", "carol: budget review"), suffix
        assert approval["latency_seconds"] >= 0
    for suffix, refusals in table(folder, "refusals").items():
        assert sorted((r["category"], r["fate"], r["user"] or r["claimed_sub"] or "-") for r in refusals) == [
            *[("admin_api", "refused", "-")] * anonymous_calls, ("admin_api", "refused", "eve"),
            ("authentication", "unauthenticated", "-"),
            ("policy", "blocked_by_policy", "bob")], suffix
    html = (folder / "report.html").read_text()
    figures = {name: int(re.search(rf'id="total-{name}">(\d+)<', html)[1])
               for name in ("flows", "identities", "masked", "blocked", "approvals", "refusals")}
    masked_any = sum(1 for f in table(folder, "flows")["parquet"] if f["entities"] or f["response_entities"])
    assert figures == {"flows": 5, "identities": 2, "masked": masked_any, "blocked": 1, "approvals": 1,
                       "refusals": 3 + anonymous_calls}
    assert json.loads((folder / "verification.json").read_text())["status"] == "ok"


def warden_verify(gw: Gateway, pack: Path, *args: str) -> subprocess.CompletedProcess:
    return gw.warden("evidence", "verify", str(pack), "--pubkey", str(gw.signing_pub), *args, check=False)


def readme_openssl(folder: Path) -> str:
    section = (ROOT / "README.md").read_text().split("### Checking a pack with OpenSSL alone", 1)[1]
    commands = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=folder, capture_output=True, text=True,
                         timeout=60)
    assert run.returncode == 0, run.stderr
    assert "Signature Verified Successfully" in run.stdout
    return run.stdout.splitlines()[0].split()[0]


def screenshot(report: Path, tmp_path: Path) -> Path:
    from playwright.sync_api import sync_playwright

    shots = Path(os.environ.get("WARDEN_ARTIFACTS") or tmp_path)
    shots.mkdir(parents=True, exist_ok=True)
    target = shots / "evidence-report.png"
    errors: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1200, "height": 900})
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: errors.append(f"request {r.url}") if not r.url.startswith("file:") else None)
            page.goto(report.as_uri())
            assert page.locator("#total-flows").inner_text() == "5"
            assert page.locator("#chart-user svg polyline").count() >= 2
            page.screenshot(path=str(target), full_page=True)
        finally:
            browser.close()
    assert errors == []
    return target


def test_a_pack_through_the_gateway_and_from_the_stopped_store(gateway_factory, upstream, tmp_path: Path) -> None:
    gw = gateway_factory(review_rules(upstream.port))
    approved_flow = traffic(gw, upstream)
    live = tmp_path / "live.zip"
    made = gw.warden("evidence", "-o", str(live))
    assert "via admin API" in made.stdout
    assert warden_verify(gw, live).returncode == 0
    folder = tmp_path / "live"
    with zipfile.ZipFile(live) as z:
        z.extractall(folder)
    check_counts(folder)
    fingerprint = readme_openssl(folder)
    assert f"warden signing key: fingerprint={fingerprint}" in gw.log()
    shot = screenshot(folder / "report.html", tmp_path)
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and shot.stat().st_size > 50_000

    one = tmp_path / "flow.zip"
    gw.warden("evidence", "--flow", approved_flow, "-o", str(one))
    assert warden_verify(gw, one).returncode == 0
    with zipfile.ZipFile(one) as z:
        account = json.loads(z.read("interaction.json"))
        z.extractall(tmp_path / "flow")
    assert account["identity"]["sub"] == "alice"
    assert [a["step"] for a in account["approvals"]][:2] == ["requested", "approved"]
    assert readme_openssl(tmp_path / "flow") == fingerprint
    with gw.admin_client() as admin:
        assert admin.post("/api/evidence", json={"flow": "no-such-flow"}).status_code == 404
        bad = admin.post("/api/evidence", json={"since": "last tuesday"})
        assert bad.status_code == 400 and "since" in bad.json()["error"]["message"]
    with httpx.Client(base_url=gw.admin_url, trust_env=False) as anonymous:
        assert anonymous.post("/api/evidence", json={}).status_code == 401

    gw.stop()
    stopped = tmp_path / "stopped"
    gw.warden("evidence", "--signing-key", str(gw.workdir / "warden-signing.key"), "-o", f"{stopped}/")
    check_counts(stopped, anonymous_calls=1)
    assert warden_verify(gw, stopped).returncode == 0

    # Each file of the pack, one byte changed: the check fails and names that file.
    for path in sorted(stopped.iterdir()):
        original = path.read_bytes()
        changed = bytearray(original)
        changed[len(changed) // 2] ^= 0x01
        path.write_bytes(bytes(changed))
        result = warden_verify(gw, stopped)
        assert result.returncode == 1 and f"BAD: {path.name}:" in result.stderr, (path.name, result.stderr)
        path.write_bytes(original)
    # A key swapped for another, everything re-signed with it: only the pinned key tells.
    forged = tmp_path / "forged"
    shutil.copytree(stopped, forged)
    (forged / MANIFEST).unlink()
    (forged / SIGNATURE).unlink()
    sign_folder(forged, SigningKey.load_or_create(tmp_path / "attacker.key"))
    result = warden_verify(gw, forged)
    assert result.returncode == 1 and "BAD: signing-key.pub: the pack is signed by key" in result.stderr
