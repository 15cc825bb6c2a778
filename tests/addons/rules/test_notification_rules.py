"""A review rule's webhook and the ``approvals`` section: validated with errors naming file, rule and field;
webhook URLs and the Slack signing secret resolved from the environment or files, never echoed, and redacted."""

from __future__ import annotations

from pathlib import Path

import pytest

from addons.rules.model import RulesError, credential_files, load_rules
from addons.rules.notifications import redacted

SECRET_PATH = "T0ACME/B0HOOK/s3cr3tPathToken"
BASE = """
upstreams:
  - {name: openai, host: api.openai.com}
approvals:
  admin_url: https://warden-admin.corp.example/
  slack:
    signing_secret_file: slack-signing
    team_id: T0ACME
    users:
      U0BOB: {sub: bob, email: bob@corp.example, groups: [security]}
      U0ERIN: {sub: erin, groups: [legal, staff]}
rules:
  - name: bulk-pii
    when: "pii.total >= 5"
    action: review
    review:
      approvers: [security, legal]
      webhook: {url: "https://hooks.slack.com/services/${T_SLACK_PATH}", attempts: 3, backoff: 2s}
  - name: from-file
    action: review
    review:
      approvers: [security]
      webhook: {url_file: hook-url}
  - {name: default, action: allow}
"""


@pytest.fixture
def rules_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("T_SLACK_PATH", SECRET_PATH)
    (tmp_path / "slack-signing").write_text("signing-secret-0123456789\n")
    (tmp_path / "hook-url").write_text("https://chat.corp.example:8443/hooks/abcdef0123456789\n")
    return tmp_path


def load(rules_dir: Path, text: str = BASE):
    path = rules_dir / "rules.yaml"
    path.write_text(text)
    return load_rules(path)


def test_webhooks_and_the_signing_secret_resolve(rules_dir: Path) -> None:
    rules = load(rules_dir)
    hooks = rules.reachable.webhooks
    assert hooks["bulk-pii"].get_secret_value() == f"https://hooks.slack.com/services/{SECRET_PATH}"
    assert hooks["from-file"].get_secret_value() == "https://chat.corp.example:8443/hooks/abcdef0123456789"
    assert rules.reachable.signing_secret.get_secret_value() == "signing-secret-0123456789"
    review = rules.rules[0].review
    assert review.webhook.attempts == 3 and review.webhook.backoff == 2.0
    assert rules.model.approvals.admin_url == "https://warden-admin.corp.example"
    assert rules.model.approvals.slack.users["U0BOB"].groups == ["security"]
    assert SECRET_PATH not in repr(rules.reachable)


def test_the_secrets_are_redacted_wherever_the_gateway_writes(rules_dir: Path) -> None:
    secrets = load(rules_dir).secret_values()
    assert {f"https://hooks.slack.com/services/{SECRET_PATH}", f"/services/{SECRET_PATH}", SECRET_PATH,
            "/hooks/abcdef0123456789", "signing-secret-0123456789"} <= secrets
    assert not {"https://hooks.slack.com", "/", "services"} & secrets
    assert redacted(f"https://hooks.slack.com/services/{SECRET_PATH}") == "https://hooks.slack.com/…"


def test_a_change_of_a_secret_file_is_a_change_of_the_rules(rules_dir: Path) -> None:
    assert {rules_dir / "hook-url", rules_dir / "slack-signing"} <= set(credential_files(load(rules_dir)))


@pytest.mark.parametrize(("change", "message"), [
    (("https://hooks.slack.com/services/${T_SLACK_PATH}", "http://hooks.slack.com/x"),
     "rules[0].review.webhook.url (rule 'bulk-pii'): Value error, the webhook URL must use https (plain http only to "
     "a loopback address"),
    (("https://hooks.slack.com/services/${T_SLACK_PATH}", "https://${T_SLACK_PATH}/x"),
     "rules[0].review.webhook.url (rule 'bulk-pii'): Value error, the webhook URL must name its host literally"),
    (("https://hooks.slack.com/services/${T_SLACK_PATH}", "https://user:pw@hooks.slack.com/x"),
     "rules[0].review.webhook.url (rule 'bulk-pii'): Value error, the webhook URL must name its host literally"),
    (("https://hooks.slack.com/services/${T_SLACK_PATH}", "hooks.slack.com/x"),
     "rules[0].review.webhook.url (rule 'bulk-pii'): Value error, the webhook URL must be an https URL with a host"),
    (("https://hooks.slack.com/services/${T_SLACK_PATH}", "https://hooks.slack.com:99999/x"),
     "rules[0].review.webhook.url (rule 'bulk-pii'): Value error, the webhook URL is not a URL"),
    (("https://hooks.slack.com/services/${T_SLACK_PATH}", "https://hooks.slack.com/services/${T_UNSET_HOOK}"),
     "rules[0].review.webhook.url (rule 'bulk-pii'): environment variable T_UNSET_HOOK is not set"),
    (("webhook: {url_file: hook-url}", "webhook: {url_file: missing-file}"),
     "rules[1].review.webhook.url_file (rule 'from-file'): file "),
    (("webhook: {url_file: hook-url}", "webhook: {attempts: 2}"),
     "rules[1].review.webhook (rule 'from-file'): Value error, give exactly one of 'url' or 'url_file'"),
    (("attempts: 3", "attempts: 50"),
     "rules[0].review.webhook.attempts (rule 'bulk-pii'): Input should be less than or equal to 10"),
    (("backoff: 2s", "backoff: soon"), "rules[0].review.webhook.backoff (rule 'bulk-pii'): Value error, 'soon' is not"),
    (("signing_secret_file: slack-signing", "signing_secret_file: nowhere"),
     "approvals.slack.signing_secret_file: file "),
    (("signing_secret_file: slack-signing", "signing_secret_env: T_UNSET_SIGNING"),
     "approvals.slack.signing_secret_env: environment variable T_UNSET_SIGNING is not set"),
    (("signing_secret_file: slack-signing", "signing_secret: inline-secret-value"),
     "approvals.slack: Value error, the signing secret is never written in the rules file"),
    (("    signing_secret_file: slack-signing\n", ""),
     "approvals.slack: Value error, give exactly one of 'signing_secret_file' or 'signing_secret_env'"),
    (("U0ERIN: {sub: erin, groups: [legal, staff]}", "U0ERIN: {sub: erin, groups: [secuirty]}"),
     "approvals.slack.users.U0ERIN.groups: none of secuirty is an approver group of a review rule (approver groups: "
     "legal, security)"),
    (("U0ERIN:", "erin:"), "approvals.slack.users.erin.[key]: String should match pattern"),
    (("U0ERIN: {sub: erin, groups: [legal, staff]}", "U0ERIN: {sub: erin, groups: []}"),
     "approvals.slack.users.U0ERIN.groups: List should have at least 1 item"),
    (("team_id: T0ACME", "team_id: acme"), "approvals.slack.team_id: String should match pattern"),
    (("admin_url: https://warden-admin.corp.example/", "admin_url: warden-admin:8081"),
     "approvals.admin_url: Value error, must be an http(s) URL of the admin API"),
])
def test_errors_name_the_file_rule_and_field(rules_dir: Path, change: tuple[str, str], message: str) -> None:
    assert change[0] in BASE
    with pytest.raises(RulesError) as e:
        load(rules_dir, BASE.replace(*change))
    assert f"{rules_dir / 'rules.yaml'}: {message}" in str(e.value)
    assert "inline-secret-value" not in str(e.value) and SECRET_PATH not in str(e.value)


def test_plain_http_to_a_loopback_receiver_is_allowed(rules_dir: Path) -> None:
    text = BASE.replace("https://hooks.slack.com/services/${T_SLACK_PATH}", "http://127.0.0.1:9999/hook/${T_SLACK_PATH}")
    assert load(rules_dir, text).reachable.webhooks["bulk-pii"].get_secret_value().startswith("http://127.0.0.1:9999/")


def test_a_url_file_holding_a_bad_url_is_refused_without_echoing_it(rules_dir: Path) -> None:
    (rules_dir / "hook-url").write_text("http://chat.corp.example/hooks/abcdef0123456789")
    with pytest.raises(RulesError) as e:
        load(rules_dir)
    assert "rules[1].review.webhook.url_file (rule 'from-file'): the URL in the file must use https" in str(e.value)
    assert "abcdef0123456789" not in str(e.value)


def test_the_webhook_is_no_part_of_the_terms_an_approval_keeps(rules_dir: Path) -> None:
    """The terms go on the record with the approval: they must not carry the URL."""
    from addons.policy import _decision
    from addons.rules.conditions import Facts

    rules = load(rules_dir)
    decision = _decision(rules, rules.rules[1], Facts(identity={}, request={}, time={}))
    assert decision.review is not None and not hasattr(decision.review, "webhook")
