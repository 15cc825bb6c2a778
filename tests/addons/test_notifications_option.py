"""The notifications addon's option: the Slack listener needs the rules' Slack table, at start-up and on reload."""

from __future__ import annotations

from pathlib import Path

import pytest
from mitmproxy import exceptions
from mitmproxy.test import taddons

from addons.config import Config
from addons.notifications import Notifications
from addons.rules.model import load_rules
from tests.conftest import free_port

PLAIN = "upstreams:\n  - {name: a, host: a.example}\n"
SLACK = PLAIN + """
approvals:
  slack:
    signing_secret_env: T_SLACK_SIGNING
    users: {U0BOB: {sub: bob, groups: [security]}}
rules:
  - {name: r, action: review, review: {approvers: [security]}}
"""


@pytest.fixture
def rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, Path]:
    monkeypatch.setenv("T_SLACK_SIGNING", "signing-secret-for-tests")
    paths = {"plain": tmp_path / "plain.yaml", "slack": tmp_path / "slack.yaml"}
    paths["plain"].write_text(PLAIN)
    paths["slack"].write_text(SLACK)
    return paths


def test_the_listener_needs_the_slack_table(rules: dict[str, Path]) -> None:
    config, notifications = Config(), Notifications()
    with taddons.context(config, notifications) as tctx:
        tctx.configure(config, warden_rules=str(rules["plain"]))
        with pytest.raises(exceptions.OptionsError, match="warden_slack_listen: the rules file has no approvals.slack"):
            tctx.configure(notifications, warden_slack_listen=f"127.0.0.1:{free_port()}")
        with pytest.raises(exceptions.OptionsError, match="warden_slack_listen: expected host:port"):
            tctx.configure(notifications, warden_slack_listen="slack.example")
        tctx.configure(config, warden_rules=str(rules["slack"]))
        tctx.configure(notifications, warden_slack_listen=f"127.0.0.1:{free_port()}")


def test_a_reload_that_drops_the_slack_table_is_refused_while_the_listener_is_on(rules: dict[str, Path]) -> None:
    config, notifications = Config(), Notifications()
    with taddons.context(config, notifications) as tctx:
        tctx.configure(config, warden_rules=str(rules["slack"]))
        tctx.configure(notifications, warden_slack_listen=f"127.0.0.1:{free_port()}")
        config.rules = load_rules(rules["plain"])  # what Config publishes before every addon's configure
        with pytest.raises(exceptions.OptionsError, match="has no approvals.slack"):
            notifications.configure({"warden_rules"})
