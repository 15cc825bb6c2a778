"""Bad input: a precise error, on record where a flow exists, and the gateway keeps serving."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from tests.conftest import Gateway, rules_for, start_gateway

pytestmark = pytest.mark.e2e


def startup_failure(tmp_path: Path, confdir: Path, upstream, rules_text: str, *extra: str, env=None) -> str:
    """Start a gateway that must refuse to start; return what it said."""
    gw = start_gateway(tmp_path, confdir, rules_text, upstream.port, extra_args=extra, env=env, wait=False)
    try:
        code = gw.proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        gw.stop()
        raise AssertionError(f"the gateway started despite bad configuration:\n{gw.log()}") from None
    assert code != 0
    return gw.log()


def test_malformed_rules_name_file_and_field(tmp_path: Path, confdir: Path, upstream) -> None:
    bad = rules_for(upstream.port).replace(f"port: {upstream.port}", "port: 99999", 1)
    log = startup_failure(tmp_path / "a", confdir, upstream, bad)
    assert "rules.yaml: upstreams[0].port: Input should be less than or equal to 65535" in log

    log = startup_failure(tmp_path / "b", confdir, upstream, "upstreams: [\n  - name: x\n  host: y\n")
    assert "rules.yaml: not valid YAML (line" in log

    bad_action = rules_for(upstream.port).replace("action: block", "action: obliterate", 1)
    log = startup_failure(tmp_path / "c", confdir, upstream, bad_action)
    assert "rules.yaml: rules[0].action (rule 'no-files'): Input should be 'allow', 'block' or 'review'" in log

    bad_filter = rules_for(upstream.port).replace('"~u /v1/files"', '"~u /v1/files & ("', 1)
    log = startup_failure(tmp_path / "d", confdir, upstream, bad_filter)
    assert "rules.yaml: rules[0].filter" in log and "invalid mitmproxy filter expression" in log


def test_missing_credential_variable_is_named(tmp_path: Path, confdir: Path, upstream) -> None:
    log = startup_failure(tmp_path, confdir, upstream, rules_for(upstream.port), env={"WARDEN_TEST_UPSTREAM_KEY": ""})
    assert "upstreams[0].credential.value: environment variable WARDEN_TEST_UPSTREAM_KEY is not set" in log


def test_unknown_option_values_are_named(tmp_path: Path, confdir: Path, upstream) -> None:
    log = startup_failure(tmp_path / "a", confdir, upstream, rules_for(upstream.port), "--set", "warden_admin=nonsense")
    assert "warden_admin: expected host:port" in log
    log = startup_failure(tmp_path / "b", confdir, upstream, rules_for(upstream.port), "--set", "warden_max_body=0")
    assert "warden_max_body: must be a positive number of bytes" in log
    log = startup_failure(tmp_path / "c", confdir, upstream, rules_for(upstream.port),
                          "--set", f"warden_rules={tmp_path / 'missing.yaml'}")
    assert "missing.yaml: cannot read rules file" in log
    log = startup_failure(tmp_path / "d", confdir, upstream, rules_for(upstream.port),
                          "--set", "warden_pii_timeout=soon")
    assert "warden_pii_timeout: expected a number of seconds (e.g. 10 or 2.5), got 'soon'" in log
    log = startup_failure(tmp_path / "e", confdir, upstream, rules_for(upstream.port),
                          "--set", "warden_record_timeout=-1")
    assert "warden_record_timeout: must be a positive number of seconds" in log
    masking = rules_for(upstream.port).replace("rules:", "masking:\n  operators: {EMAIL: mask}\nrules:", 1)
    log = startup_failure(tmp_path / "f", confdir, upstream, masking)
    assert "rules.yaml: masking: Value error, operators.EMAIL: unknown entity 'EMAIL'" in log


def test_bad_bodies_are_refused_recorded_and_serving_goes_on(gateway_factory, upstream) -> None:
    gw: Gateway = gateway_factory(extra_args=("--set", "warden_max_body=1000"))
    url = f"https://localhost:{upstream.port}/v1/chat/completions"
    with gw.client() as client:
        big = client.post(url, content=b"{" + b" " * 2000 + b"}", headers={"content-type": "application/json"})
        assert big.status_code == 413 and big.json()["error"]["type"] == "body_too_large"
        assert "at most 1000" in big.json()["error"]["message"]

        chunked = client.post(url, content=iter([b"x" * 600, b"y" * 600]), headers={"content-type": "text/plain"})
        assert chunked.status_code == 413

        latin = client.post(url, content='{"q": "caf\xe9"}'.encode("latin-1"),
                            headers={"content-type": "application/json"})
        assert latin.status_code == 400
        assert "not valid UTF-8 (byte 0xe9 at offset 10)" in latin.json()["error"]["message"]

        broken = client.post(url, content=b'{"model": ', headers={"content-type": "application/json"})
        assert broken.status_code == 400 and "not valid JSON" in broken.json()["error"]["message"]

        bad_gzip = client.post(url, content=b"not gzip", headers={"content-type": "application/json",
                                                                   "content-encoding": "gzip"})
        assert bad_gzip.status_code == 400 and "Content-Encoding 'gzip'" in bad_gzip.json()["error"]["message"]

        gzipped = gzip.compress(b'{"model": "m", "messages": [{"role": "user", "content": "gz"}]}')
        good_gzip = client.post(f"https://localhost:{upstream.port}/echo/gz", content=gzipped,
                                headers={"content-type": "application/json", "content-encoding": "gzip"})
        assert good_gzip.status_code == 200 and "x-warden-error" not in good_gzip.headers

        binary = client.post(f"https://localhost:{upstream.port}/echo/bin", content=bytes(range(256)),
                             headers={"content-type": "application/octet-stream"})
        # bytes PII masking cannot read are refused by default (masking.unknown_content: block)
        assert binary.status_code == 415 and binary.json()["error"]["type"] == "unsupported_content"

        still = client.post(url, json={"model": "m", "messages": [{"role": "user", "content": "still here"}]})
        assert still.status_code == 200

    fates = [f["fate"] for f in reversed(gw.flows())]
    assert fates == ["body_too_large", "body_too_large", "malformed_body", "malformed_body", "malformed_body",
                     "completed", "unsupported_content", "completed"]
    # Only the good requests went out; nothing refused reached the upstream.
    assert [r["path"] for r in upstream.received] == ["/echo/gz", "/v1/chat/completions"]
