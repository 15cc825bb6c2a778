"""Reloading the rules file (the Config addon): a valid edit is put in force in every addon at once and recorded; an
invalid one is refused with the problem's file and field, in the log, on health and on the record, and the rules in
force stay; a refusal by an addon while preparing or applying leaves every addon as it was."""

from __future__ import annotations

import asyncio
import hashlib
import logging
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons, tflow

from addons.config import Config
from addons.credentials import Credentials
from addons.flow.meta import DECISION, ERROR, UPSTREAM, Decision
from addons.policy import Policy
from addons.recorder import Recorder
from addons.rules.model import Rules, RulesError, current_rules
from addons.store.database import connect
from addons.store.events import Event
from addons.store.queries import iter_events

RULES = """
upstreams:
  - name: openai
    host: api.openai.example
    credential: {header: Authorization, value: "Bearer ${WARDEN_RELOAD_KEY}"}
rules:
  - name: default
    action: allow
"""
BLOCK = RULES.replace("rules:\n", "rules:\n  - name: no-files\n    filter: '~u /v1/files'\n    action: block\n")


class Probe:
    """An addon that sees every rules version put in force, may take time to prepare, and may refuse one."""

    def __init__(self) -> None:
        self.seen: list[str] = []
        self.prepared: list[str] = []
        self.refuse_prepare: str | None = None  # sha256 of the rules to refuse
        self.refuse_configure: str | None = None

    async def prepare_rules(self, rules: Rules) -> None:
        await asyncio.sleep(0)
        if rules.sha256 == self.refuse_prepare:
            raise RulesError(f"{rules.path}: probe: not ready for these rules")
        self.prepared.append(rules.sha256)

    def configure(self, updated: set[str]) -> None:
        if "warden_rules" in updated:
            rules = current_rules()
            if rules.sha256 == self.refuse_configure:
                raise exceptions.OptionsError("probe: cannot take these rules")
            self.seen.append(rules.sha256)


class Chain:
    def __init__(self, path: Path, config: Config, policy: Policy, credentials: Credentials, probe: Probe,
                 recorder: Recorder) -> None:
        self.path, self.config, self.policy, self.probe, self.recorder = path, config, policy, probe, recorder
        self.credentials = credentials

    def edit(self, text: str) -> str:
        self.path.write_text(text)
        return hashlib.sha256(text.encode()).hexdigest()

    def reload(self, trigger: str = "file changed") -> str:
        async def run() -> str:
            return await self.config.reload(trigger)
        return asyncio.run(run())

    def config_events(self) -> list[Event]:
        """The config events on the record (the store is closed first)."""
        path = self.recorder.store.path
        self.recorder.done()
        return [e for e in iter_events(connect(path, read_only=True)) if e.kind == "config"]


@pytest.fixture
def chain(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Chain]:
    monkeypatch.setenv("WARDEN_RELOAD_KEY", "sk-reload-test-0123456789")
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    config, policy, credentials, probe, recorder = Config(), Policy(), Credentials(), Probe(), Recorder()
    with taddons.context(config, policy, credentials, probe, recorder) as tctx:
        tctx.configure(config, warden_rules=str(path))
        tctx.configure(recorder, warden_db=str(tmp_path / "w.duckdb"),
                       warden_signing_key=str(tmp_path / "s.key"), warden_originals_key=str(tmp_path / "o.key"))
        recorder.running()
        yield Chain(path, config, policy, credentials, probe, recorder)
        recorder.done()


def test_a_valid_edit_is_put_in_force_everywhere_and_recorded(chain: Chain) -> None:
    first = chain.config.rules
    assert first is not None and chain.config.health()["sha256"] == hashlib.sha256(RULES.encode()).hexdigest()
    sha = chain.edit(BLOCK)
    assert chain.reload() == "applied"
    assert chain.policy.rules is chain.config.rules and chain.config.rules is not first
    assert [r.name for r in chain.policy.rules.rules] == ["no-files", "default"]
    assert chain.probe.prepared == [sha] and chain.probe.seen[-1] == sha
    health = chain.config.health()
    assert health["sha256"] == sha and health["reloads"] == 1 and health["refused"] is None
    [event] = chain.config_events()
    assert event.fate == "applied" and event.reason is None
    assert event.detail == {"file": str(chain.path), "sha256": sha, "previous_sha256": first.sha256,
                            "trigger": "file changed"}


@pytest.mark.parametrize(("text", "field"), [
    (BLOCK.replace("action: block", "action: block\n    when: 'identity.nope == 1'"),
     "rules[0].when (rule 'no-files')"),
    (BLOCK.replace("action: block", "action: block\n    colour: red"), "rules[0].colour (rule 'no-files')"),
    (BLOCK.replace("    action: block\n", "  action: block\n"), "not valid YAML (line"),
    (RULES.replace("WARDEN_RELOAD_KEY", "WARDEN_RELOAD_UNSET"), "upstreams[0].credential.value: environment variable"),
])
def test_an_invalid_edit_is_refused_naming_file_and_field_and_the_rules_in_force_stay(
        chain: Chain, caplog: pytest.LogCaptureFixture, text: str, field: str) -> None:
    before, seen = chain.config.rules, list(chain.probe.seen)
    sha = chain.edit(text)
    with caplog.at_level(logging.ERROR, logger="warden.config"):
        assert chain.reload() == "refused"
    assert chain.config.rules is before and chain.policy.rules is before and chain.probe.seen == seen
    refused = chain.config.health()["refused"]
    assert refused["sha256"] == sha and refused["error"].startswith(f"{chain.path}: {field}")
    problems = [r.getMessage() for r in caplog.records if r.getMessage().startswith("warden: refused: ")]
    assert problems and all(p.startswith(f"warden: refused: {chain.path}: ") for p in problems)
    assert any(field in p for p in problems)
    assert chain.reload() == "unchanged"  # the same bytes again: not refused twice
    assert len([r for r in caplog.records if r.getMessage().startswith("warden: refused: ")]) == len(problems)

    fixed = chain.edit(BLOCK)  # a later valid edit applies, and the refusal is over
    assert chain.reload() == "applied" and chain.policy.rules.sha256 == fixed
    assert chain.config.health()["refused"] is None
    events = chain.config_events()
    assert [(e.fate, e.detail["sha256"]) for e in events] == [("refused", sha), ("applied", fixed)]
    assert events[0].reason is not None and field in events[0].reason
    assert "sk-reload-test" not in str(events[0].record())


def test_an_unreadable_file_is_refused(chain: Chain) -> None:
    before = chain.config.rules
    chain.path.unlink()
    assert chain.reload() == "refused"
    assert chain.policy.rules is before
    refused = chain.config.health()["refused"]
    assert refused["sha256"] is None and "cannot read rules file" in refused["error"]


def test_the_same_bytes_written_again_are_no_reload(chain: Chain) -> None:
    chain.edit(RULES)
    assert chain.reload() == "unchanged"
    assert chain.config.reloads == 0 and chain.probe.prepared == []


def test_a_sighup_reloads_even_unchanged_bytes(chain: Chain) -> None:
    assert chain.reload("SIGHUP") == "applied"
    assert chain.config.reloads == 1


def test_an_addon_that_cannot_prepare_refuses_the_edit(chain: Chain) -> None:
    before = chain.config.rules
    chain.probe.refuse_prepare = sha = chain.edit(BLOCK)
    assert chain.reload() == "refused"
    assert chain.policy.rules is before and sha not in chain.probe.seen
    assert "probe: not ready for these rules" in chain.config.health()["refused"]["error"]


def test_an_addon_that_refuses_the_rules_puts_every_addon_back(chain: Chain) -> None:
    before = chain.config.rules
    assert before is not None
    chain.probe.refuse_configure = sha = chain.edit(BLOCK)
    assert chain.reload() == "refused"
    assert chain.config.rules is before and chain.policy.rules is before  # Policy had taken them: put back
    assert chain.probe.seen[-1] == before.sha256
    assert "not applied: probe: cannot take these rules" in chain.config.health()["refused"]["error"]
    assert sha not in chain.probe.seen


def test_the_watch_reloads_a_changed_file_while_running(chain: Chain) -> None:
    async def run() -> None:
        chain.config.interval = 0.05
        chain.config.running()
        try:
            chain.edit(BLOCK)
            async with asyncio.timeout(30):
                while chain.config.reloads == 0:
                    await asyncio.sleep(0.05)
        finally:
            chain.config.done()
    asyncio.run(run())
    assert [r.name for r in chain.policy.rules.rules] == ["no-files", "default"]


def test_a_request_whose_upstream_a_reload_removed_is_refused_before_it_leaves(chain: Chain) -> None:
    flow = tflow.tflow()
    UPSTREAM.set(flow, "openai")  # decided under the rules in force, then held (PII analysis, review)
    DECISION.set(flow, Decision("allow", "default"))
    chain.edit(RULES.replace("name: openai\n    host: api.openai.example", "name: other\n    host: other.example"))
    assert chain.reload() == "applied"
    chain.credentials.request(flow)
    error = ERROR.of(flow)
    assert error is not None and error.type == "host_not_allowed" and "was removed from the rules" in error.message
    assert flow.response is not None and flow.response.status_code == 403
    assert "authorization" not in flow.request.headers


def test_a_credential_a_reload_rotated_out_stays_redacted(chain: Chain, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("WARDEN_RELOAD_KEY", "sk-reload-next-9876543210")
    assert chain.reload("SIGHUP") == "applied"
    for secrets in (chain.credentials.secrets, chain.recorder.secrets):
        assert secrets.text("old sk-reload-test-0123456789 new sk-reload-next-9876543210")[1] == 2
