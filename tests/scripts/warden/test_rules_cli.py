"""``warden rules check|explain`` on real files, through the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
WARDEN = str(Path(sys.executable).parent / "warden")
ENV = {**os.environ, "COLUMNS": "200"}


def warden(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([WARDEN, *args], capture_output=True, text=True, cwd=ROOT, env=ENV, timeout=60)


def test_check_shows_upstreams_and_rules_without_secrets() -> None:
    env = {k: v for k, v in ENV.items() if k != "ANTHROPIC_API_KEY"} | {"OPENAI_API_KEY": "sk-PLANTED-never-printed"}
    result = subprocess.run([WARDEN, "rules", "check", "rules/default.yaml"], capture_output=True, text=True, cwd=ROOT,
                            env=env, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "rules/default.yaml: valid" in result.stdout and "no-fine-tuning" in result.stdout
    assert "sk-PLANTED-never-printed" not in result.stdout
    assert "missing: environment variable ANTHROPIC_API_KEY is not set (503)" in result.stdout
    assert "masking profiles (responses: mask" in result.stdout
    assert "CREDIT_CARD   │ mask keep_last=4" in result.stdout and "│ security │ security" in result.stdout


def test_check_names_file_and_field(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("upstreams:\n  - {name: x, host: h, port: 0}\n")
    result = warden("rules", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}: upstreams[0].port: Input should be greater than or equal to 1" in result.stderr
    bad.write_text("upstreams:\n  - {name: x, host: h}\n"
                   "masking:\n  recognizers:\n    - {entity: X_ID, patterns: ['(']}\n")
    result = warden("rules", "check", str(bad))
    assert result.returncode == 1
    assert f"{bad}: masking.recognizers[0].patterns: Value error, patterns[0] '(' is not a valid regular expression" \
        in result.stderr


def test_explain_says_what_would_happen_and_why() -> None:
    blocked = warden("rules", "explain", "rules/default.yaml", "POST", "https://api.openai.com/v1/fine_tuning/jobs")
    assert "block (403) by rule no-fine-tuning on upstream openai" in blocked.stdout
    allowed = warden("rules", "explain", "rules/default.yaml", "POST", "https://api.anthropic.com/v1/messages")
    assert "allow by rule default on upstream anthropic" in allowed.stdout
    refused = warden("rules", "explain", "rules/default.yaml", "GET", "https://example.com/")
    assert "refused (403 host_not_allowed)" in refused.stdout


CONDITIONS = """
identity:
  service_accounts: {clients: [nightly-batch]}
time_zone: Europe/Berlin
upstreams:
  - {name: openai, host: api.openai.com}
rules:
  - name: contractors-no-emails
    when: '"contractors" in identity.groups && pii.counts["EMAIL_ADDRESS"] > 0'
    action: block
    reason: Contractors may not send e-mail addresses
  - name: jobs-small-model
    when: 'identity.kind == "service" && request.model != "gpt-4o-mini"'
    action: block
    status: 422
  - name: weekends
    when: 'time.weekday in ["Sat", "Sun"]'
    action: block
  - name: default
    action: allow
"""
URL = "https://api.openai.com/v1/chat/completions"


def test_explain_weighs_each_condition(tmp_path: Path) -> None:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CONDITIONS)
    body = tmp_path / "body.json"
    body.write_text(json.dumps({"model": "gpt-4o",
                                "messages": [{"role": "user", "content": "Write to jan.kowalski@example.pl"}]}))
    monday = "2026-11-30T10:00:00+01:00"

    told = warden("rules", "explain", str(rules), "POST", URL, "--group", "contractors", "--pii", "EMAIL_ADDRESS=1",
                  "--at", monday)
    assert "block (403) by rule contractors-no-emails" in told.stdout, told.stdout + told.stderr
    assert "Contractors may not send e-mail addresses" in told.stdout
    analysed = warden("rules", "explain", str(rules), "POST", URL, "--group", "contractors", "--body", str(body),
                      "--at", monday)  # the real analyzer reads the body
    assert "PII found: EMAIL_ADDRESS 1" in analysed.stdout, analysed.stdout + analysed.stderr
    assert "block (403) by rule contractors-no-emails" in analysed.stdout

    job = warden("rules", "explain", str(rules), "POST", URL, "--client-id", "nightly-batch", "--body", str(body),
                 "--pii", "EMAIL_ADDRESS=0", "--at", monday)
    assert "(service; groups: none)" in job.stdout and "block (422) by rule jobs-small-model" in job.stdout
    assert "identity.kind == \"service\" && request.model != \"gpt-4o-mini\": true" in job.stdout

    saturday = warden("rules", "explain", str(rules), "POST", URL, "--pii", "EMAIL_ADDRESS=0",
                      "--at", "2026-12-05T00:30:00+00:00")
    assert "block (403) by rule weekends" in saturday.stdout
    friday_in_utc = warden("rules", "explain", str(rules), "POST", URL, "--pii", "EMAIL_ADDRESS=0",
                           "--at", "2026-12-04T23:30:00+00:00")  # Saturday already in Berlin
    assert "by rule weekends" in friday_in_utc.stdout
    allowed = warden("rules", "explain", str(rules), "POST", URL, "--group", "staff", "--pii", "EMAIL_ADDRESS=3",
                     "--at", monday)
    assert "allow by rule default" in allowed.stdout and ": false" in allowed.stdout

    bad = warden("rules", "explain", str(rules), "POST", URL, "--pii", "EMAIL=1")
    assert bad.returncode == 2 and "'EMAIL' is not an entity these rules mask" in bad.stderr
