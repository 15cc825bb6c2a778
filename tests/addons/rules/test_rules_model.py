"""Rules files: validated with errors naming file and field; credentials resolved, never echoed."""

from __future__ import annotations

from pathlib import Path

import pytest

from addons.rules.model import RulesError, load_rules

GOOD = """
upstreams:
  - name: openai
    host: API.OpenAI.com
    credential: {header: Authorization, value: "Bearer ${T_OPENAI}"}
  - name: filekey
    host: files.example
    port: 8443
    credential: {header: x-api-key, file: secret.txt}
  - name: optional
    host: opt.example
    credential: {header: x-api-key, value: "${T_UNSET_OPTIONAL}", optional: true}
rules:
  - {name: block-files, filter: "~u /v1/files", action: block, reason: no files}
  - {name: default, action: allow}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_good_file_resolves_credentials(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setenv("T_OPENAI", "sk-123")
    monkeypatch.delenv("T_UNSET_OPTIONAL", raising=False)
    (tmp_path / "secret.txt").write_text("  from-file \n")
    rules = load_rules(write(tmp_path, GOOD))
    assert rules.upstream_for("api.openai.com", 443).name == "openai"
    assert rules.upstream_for("files.example", 443) is None
    assert rules.credential("openai").get_secret_value() == "Bearer sk-123"
    assert rules.credential("filekey").get_secret_value() == "from-file"
    assert rules.credential("optional") is None
    assert "T_UNSET_OPTIONAL" in rules.missing["optional"]
    assert "sk-123" not in repr(rules.credential("openai"))


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (("port: 8443", "port: 0"), "upstreams[1].port: Input should be greater than or equal to 1"),
        (("action: allow", "action: maybe"),
         "rules[1].action (rule 'default'): Input should be 'allow', 'block' or 'review'"),
        (("name: default", "name: block-files"), "rules: Value error, names must be unique"),
        (("name: filekey", "name: openai"), "upstreams: Value error, names must be unique; repeated: openai"),
        (("rules:\n", "masking:\n  profiles: [{name: support}, {name: ml}, {name: support}]\nrules:\n"),
         "masking.profiles: Value error, names must be unique; repeated: support"),
        (("file: secret.txt", "file: secret.txt, value: x"), "upstreams[1].credential: Value error, give exactly one"),
        (("reason: no files", "reason: no files, colour: red"),
         "rules[0].colour (rule 'block-files'): Extra inputs are not permitted"),
        (('"~u /v1/files"', '"~q ~~"'),
         "rules[0].filter (rule 'block-files'): Value error, invalid mitmproxy filter expression"),
    ],
)
def test_errors_name_the_file_and_field(tmp_path: Path, monkeypatch, change, message) -> None:
    monkeypatch.setenv("T_OPENAI", "x")
    (tmp_path / "secret.txt").write_text("k")
    path = write(tmp_path, GOOD.replace(*change))
    with pytest.raises(RulesError) as e:
        load_rules(path)
    assert f"{path}: {message}" in str(e.value)


def test_missing_required_variable_and_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("T_OPENAI", raising=False)
    path = write(tmp_path, GOOD)
    with pytest.raises(RulesError) as e:
        load_rules(path)
    text = str(e.value)
    assert f"{path}: upstreams[0].credential.value: environment variable T_OPENAI is not set" in text
    assert f"{path}: upstreams[1].credential.file: credential file" in text


def test_yaml_errors_give_the_line(tmp_path: Path) -> None:
    with pytest.raises(RulesError, match=r"not valid YAML \(line 3, column"):
        load_rules(write(tmp_path, "upstreams:\n  - name: a\n   host: b\n"))
    with pytest.raises(RulesError, match="must be a mapping"):
        load_rules(write(tmp_path, "- just a list\n"))


def test_the_shipped_default_rules_load(monkeypatch) -> None:
    for name in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY"):
        monkeypatch.delenv(name, raising=False)
    rules = load_rules(Path(__file__).resolve().parents[3] / "rules" / "default.yaml")
    assert {u.name for u in rules.upstreams} >= {"openai", "anthropic"}
    assert rules.credential("openai") is None and "OPENAI_API_KEY" in rules.missing["openai"]


def test_rules_give_every_secret_inside_a_credential(tmp_path, monkeypatch) -> None:
    key = "sk-upstream-PLANTED-4f1c9e"
    monkeypatch.setenv("T_KEY", key)
    monkeypatch.setenv("T_ID", "acct-0001")
    (tmp_path / "key.txt").write_text("Token file-secret-0002\n")
    (tmp_path / "rules.yaml").write_text(
        "upstreams:\n"
        "  - {name: a, host: a.example, credential: {header: Authorization, value: 'SharedKey ${T_ID}:${T_KEY}'}}\n"
        "  - {name: b, host: b.example, credential: {header: X-Provider-Ident, file: key.txt}}\n")
    rules = load_rules(tmp_path / "rules.yaml")
    assert rules.secret_values() == {f"SharedKey acct-0001:{key}", "acct-0001", key, "Token file-secret-0002",
                                     "Token", "file-secret-0002"}
    assert rules.credential_headers() == {"authorization", "x-provider-ident"}


def test_one_unique_name_validator() -> None:
    from types import SimpleNamespace

    from addons.rules.base import unique_names

    items = [SimpleNamespace(name=n) for n in ("a", "b", "c")]
    assert unique_names(items) is items
    with pytest.raises(ValueError, match="names must be unique; repeated: a, b$"):
        unique_names([SimpleNamespace(name=n) for n in ("b", "a", "b", "a", "c")])
