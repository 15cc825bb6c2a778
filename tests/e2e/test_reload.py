"""Reloading the rules file of a running gateway (real mitmdump, real clients): a valid edit applies to the next
request without a restart while a request already decided completes; an invalid edit is refused with a line naming
file and field, shown on /healthz, and the rules in force stay until a later valid edit; a masking edit applies, its
new analyzer started before it is put in force; requests sent throughout all succeed."""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from tests.conftest import Gateway, rules_for

pytestmark = pytest.mark.e2e

WATCH = ("--set", "warden_rules_watch=0.2")
NO_CHAT = """
  - name: no-chat
    filter: "~u /v1/chat/completions"
    action: block
    reason: Chat is closed for maintenance
"""


def edit(gw: Gateway, text: str) -> str:
    """Write the gateway's rules file as an editor would; the SHA-256 of what was written."""
    (gw.workdir / "rules.yaml").write_text(text)
    return hashlib.sha256(text.encode()).hexdigest()


def health(gw: Gateway) -> dict:
    return httpx.get(f"{gw.admin_url}/healthz", timeout=5, trust_env=False).json()


def wait_for(check: Callable[[], bool], what: str, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"not within {timeout:g} s: {what}")
        time.sleep(0.1)


def applied(gw: Gateway, sha: str) -> None:
    wait_for(lambda: health(gw)["rules"]["sha256"] == sha, f"rules {sha} in force")


def refused(gw: Gateway, sha: str) -> dict:
    wait_for(lambda: (health(gw)["rules"]["refused"] or {}).get("sha256") == sha, f"edit {sha} refused")
    return health(gw)


def config_events(gw: Gateway) -> list[tuple[str, str]]:
    """(fate, the file's sha256) of every config event on the record, in order."""
    found, after = [], -1
    with gw.admin_client() as admin:
        while True:  # until the API says no more: each read is itself an event on the record, so never empty
            answer = admin.get("/api/events", params={"after_seq": after}).json()
            page = answer["events"]
            found += [(e["fate"], json.loads(e["record"])["detail"]["sha256"]) for e in page if e["kind"] == "config"]
            if not answer["more"]:
                return found
            after = page[-1]["seq"]


def last_received(upstream, path: str) -> dict:
    """The last request the upstream received on ``path``: body, and headers by lower-case name."""
    request = [r for r in upstream.received if r["path"] == path][-1]
    return {"body": request["body"], "headers": {k.lower(): v for k, v in request["headers"]}}


@contextmanager
def traffic(gw: Gateway, port: int) -> Iterator[list[int]]:
    """Requests sent one after another through the gateway while the block runs: their statuses."""
    statuses: list[int] = []
    stop = threading.Event()

    def send() -> None:
        with gw.client(user="loop") as client:
            while not stop.is_set():
                statuses.append(client.post(f"https://localhost:{port}/echo/loop", json={"text": "all well"},
                                            timeout=60).status_code)

    sender = threading.Thread(target=send, daemon=True)
    sender.start()
    try:
        yield statuses
    finally:
        stop.set()
        sender.join(timeout=90)


def pii_pids(gw: Gateway) -> list[int]:
    return health(gw)["pii"][0]["pids"]


def test_an_edit_applies_to_the_next_request_while_a_decided_stream_completes(gateway_factory, upstream) -> None:
    gw = gateway_factory(rules_for(upstream.port), extra_args=WATCH)
    first = health(gw)["rules"]
    assert first["file"] == str(gw.workdir / "rules.yaml") and first["refused"] is None and first["reloads"] == 0
    pids = pii_pids(gw)
    words = 40
    with traffic(gw, upstream.port) as statuses, gw.client() as client:
        with client.stream("POST", f"https://localhost:{upstream.port}/v1/chat/completions",
                           headers={"x-demo-delay-ms": "250", "x-demo-chunk-chars": "5"}, timeout=120,
                           json={"model": "gpt-4o-mini", "stream": True,
                                 "messages": [{"role": "user", "content": "word " * words}]}) as streamed:
            assert streamed.status_code == 200
            lines = streamed.iter_lines()
            assert next(line for line in lines if line.startswith("data:"))  # under way, decided: allow
            sha = edit(gw, rules_for(upstream.port, rules=NO_CHAT))
            applied(gw, sha)
            rest = [line for line in lines if line.startswith("data:")]
        assert rest[-1] == "data: [DONE]"
        text = "".join(json.loads(line[5:])["choices"][0]["delta"].get("content") or ""
                       for line in rest[:-1] if json.loads(line[5:])["choices"])
        assert text.count("word") >= words - 1  # the whole answer, but for the first event read before the edit

        blocked = client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                              json={"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]})
        assert blocked.status_code == 403 and "Chat is closed for maintenance" in blocked.text
    assert statuses and set(statuses) == {200}
    assert gw.proc.poll() is None  # no restart
    now = health(gw)
    assert now["status"] == "ok" and now["rules"]["reloads"] == 1 and now["rules"]["refused"] is None
    assert pii_pids(gw) == pids  # policy alone changed: the analyzer workers were kept
    assert config_events(gw) == [("applied", sha)]
    assert f"rules reloaded from {gw.workdir / 'rules.yaml'} (file changed): sha256 {sha}" in gw.log()


BAD_EDITS = [
    # (what the editor wrote in place of the no-chat rule, the field the refusal names)
    (NO_CHAT.replace("    action: block", "    when: 'identity.grups.size() > 0'\n    action: block"),
     "rules[1].when (rule 'no-chat')"),
    (NO_CHAT.replace("    action: block", "    colour: red\n    action: block"), "rules[1].colour (rule 'no-chat')"),
    (NO_CHAT.replace("    action: block", "  action: block"), "not valid YAML (line"),
]


def test_invalid_edits_are_refused_precisely_and_the_rules_in_force_stay(gateway_factory, upstream) -> None:
    gw = gateway_factory(rules_for(upstream.port), extra_args=WATCH)
    path = gw.workdir / "rules.yaml"
    chat = {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}
    shas = []
    with traffic(gw, upstream.port) as statuses, gw.client() as client:
        for text, field in BAD_EDITS:
            sha = edit(gw, rules_for(upstream.port, rules=text))
            shas.append(sha)
            state = refused(gw, sha)
            assert state["status"] == "degraded"  # still serving: the old rules are in force
            assert state["rules"]["refused"]["error"].startswith(f"{path}: {field}")
            assert f"warden: refused: {path}: {field}" in gw.log()
            assert state["rules"]["reloads"] == 0
            # the old rules stay in force: chat is not blocked
            assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=chat).status_code == 200
        assert httpx.get(f"{gw.admin_url}/healthz", trust_env=False).status_code == 200

        fixed = edit(gw, rules_for(upstream.port, rules=NO_CHAT))
        applied(gw, fixed)
        assert client.post(f"https://localhost:{upstream.port}/v1/chat/completions", json=chat).status_code == 403
    assert statuses and set(statuses) == {200}
    now = health(gw)
    assert now["status"] == "ok" and now["rules"]["refused"] is None
    assert config_events(gw) == [("refused", sha) for sha in shas] + [("applied", fixed)]


MASKING = """
masking:
  operators:
    EMAIL_ADDRESS: {type: replace, value: "[an e-mail]"}
  recognizers:
    - entity: TICKET_ID
      patterns: ['\\bTCK-\\d{5}\\b']
"""


def test_a_masking_edit_applies_its_new_analyzer_started_first(gateway_factory, upstream) -> None:
    gw = gateway_factory(rules_for(upstream.port), extra_args=WATCH)
    pids = pii_pids(gw)
    text = "Ticket TCK-12345 from jane.roe@example.org"

    def sent(client: httpx.Client) -> str:
        echoed = client.post(f"https://localhost:{upstream.port}/echo/masked", json={"text": text})
        assert echoed.status_code == 200
        return json.loads(last_received(upstream, "/echo/masked")["body"])["text"]

    with traffic(gw, upstream.port) as statuses, gw.client() as client:
        before = sent(client)
        assert "TCK-12345" in before and "jane.roe@example.org" not in before and "[an e-mail]" not in before
        operator_only = rules_for(upstream.port) + MASKING.split("  recognizers:")[0]
        applied(gw, edit(gw, operator_only))
        assert pii_pids(gw) == pids  # an operator is applied in the gateway: same analyzer
        assert "[an e-mail]" in sent(client)

        sha = edit(gw, rules_for(upstream.port) + MASKING)
        applied(gw, sha)  # once the analyzer for the new recognizer is ready
        assert health(gw)["status"] == "ok"
        new_pids = pii_pids(gw)
        assert new_pids and not set(new_pids) & set(pids)
        after = sent(client)
        assert "TCK-12345" not in after and "<TICKET_ID_1>" in after and "[an e-mail]" in after
    assert statuses and set(statuses) == {200}
    assert "replacing a PII analyzer worker" not in gw.log()
    wait_for(lambda: not any(alive(pid) for pid in pids), "the replaced analyzer's workers stopped")


def alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_credential_file_change_is_a_reload(gateway_factory, upstream, tmp_path: Path) -> None:
    key = tmp_path / "upstream.key"
    key.write_text("sk-first-0123456789abcdef")
    text = rules_for(upstream.port).replace('value: "Bearer ${WARDEN_TEST_UPSTREAM_KEY}"', f"file: {key}", 1)
    gw = gateway_factory(text, extra_args=WATCH)
    sha = health(gw)["rules"]["sha256"]
    with gw.client() as client:
        client.post(f"https://localhost:{upstream.port}/echo/k1", json={})
        assert last_received(upstream, "/echo/k1")["headers"]["authorization"] == "sk-first-0123456789abcdef"
        key.write_text("sk-second-0123456789abcdef")
        wait_for(lambda: health(gw)["rules"]["reloads"] == 1, "the rotated key loaded")
        client.post(f"https://localhost:{upstream.port}/echo/k2", json={})
        assert last_received(upstream, "/echo/k2")["headers"]["authorization"] == "sk-second-0123456789abcdef"
    assert health(gw)["rules"]["sha256"] == sha  # the rules file itself is the same
    assert config_events(gw) == [("applied", sha)]
