"""The README's rules-file examples are valid rules files (with an upstream added where a snippet has none)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
import yaml

from addons.rules.model import load_rules

ROOT = Path(__file__).resolve().parents[2]
BLOCKS = re.findall(r"```yaml\n(.*?)```", (ROOT / "README.md").read_text(), re.S)


def test_the_readme_has_rules_examples() -> None:
    assert len(BLOCKS) >= 3


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_yaml_example_loads(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    document = yaml.safe_load(BLOCKS[index])
    document.setdefault("upstreams", [{"name": "example", "host": "api.example.com"}])
    for upstream in document["upstreams"]:
        if "file" in (upstream.get("credential") or {}):
            secret = tmp_path / "secret"
            secret.write_text("s3cret")
            upstream["credential"]["file"] = str(secret)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("SLACK_WEBHOOK_PATH", "T0123/B0123/hook-path-secret")
    monkeypatch.setenv("SLACK_SIGNING_SECRET", "slack-signing-secret")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(document))
    load_rules(path)
