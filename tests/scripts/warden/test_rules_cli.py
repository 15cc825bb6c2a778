"""``warden rules check|explain`` on real files, through the installed console script."""

from __future__ import annotations

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
