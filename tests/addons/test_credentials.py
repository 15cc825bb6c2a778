"""The credentials addon: the caller's credentials stripped, the upstream's injected, an echoed key scrubbed."""

from __future__ import annotations

import gzip
from collections.abc import Iterator
from pathlib import Path

import pytest
from mitmproxy.test import taddons, tflow, tutils

from addons.config import Config
from addons.credentials import Credentials
from addons.flow.meta import DECISION, UPSTREAM, Decision

KEY = "sk-upstream-PLANTED-4f1c9e"
CALLER_KEY = "sk-caller-0123456789abcdef"
RULES = """
upstreams:
  - name: bearer
    host: bearer.example
    credential: {header: Authorization, value: "Bearer ${T_UPSTREAM_KEY}"}
  - name: keyed
    host: keyed.example
    credential: {header: x-api-key, value: "${T_UPSTREAM_KEY}"}
    pass_headers: [X-Vendor-Key]
  - name: optional
    host: optional.example
    credential: {header: Authorization, value: "Bearer ${T_UNSET_KEY}", optional: true}
  - name: open
    host: open.example
  - name: ident
    host: ident.example
    credential: {header: X-Provider-Ident, value: "${T_UPSTREAM_KEY}"}
    pass_headers: [X-Provider-Ident]
"""


@pytest.fixture
def credentials(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Credentials]:
    monkeypatch.setenv("T_UPSTREAM_KEY", KEY)
    monkeypatch.delenv("T_UNSET_KEY", raising=False)
    (tmp_path / "rules.yaml").write_text(RULES)
    config, addon = Config(), Credentials()
    with taddons.context(config, addon) as tctx:
        tctx.configure(config, warden_rules=str(tmp_path / "rules.yaml"))
        yield addon


def sent(credentials: Credentials, upstream: str | None, headers: list[tuple[str, str]], path: str = "/v1/x"):
    """A request as the addon leaves it: (flow, its headers as (name, value) pairs)."""
    flow = tflow.tflow()
    flow.request.path = path
    flow.request.headers.clear()
    for name, value in headers:
        flow.request.headers.add(name, value)
    if upstream is not None:
        UPSTREAM.set(flow, upstream)  # what policy resolved and decided
        DECISION.set(flow, Decision("allow", "default"))
    credentials.requestheaders(flow)
    credentials.request(flow)
    return flow, list(flow.request.headers.items(multi=True))


CALLER_HEADERS = [
    ("Authorization", f"Bearer {CALLER_KEY}"), ("Proxy-Authorization", "Bearer eyJhbGciOiJIUzI1NiJ9.e30.c2ln"),
    ("Cookie", "session=abc0123456789xyz"), ("X-Custom-Token", "tok-0123456789"),
    ("x-api-key", "caller-key-0123456789"),
    ("X-Note", f"Bearer {CALLER_KEY}"),  # a credential by its value, whatever its name
    ("Content-Type", "application/json"), ("anthropic-version", "2023-06-01"), ("OpenAI-Beta", "assistants=v2"),
]
BENIGN = [("Content-Type", "application/json"), ("anthropic-version", "2023-06-01"), ("OpenAI-Beta", "assistants=v2")]


def test_the_callers_credentials_are_stripped_and_the_upstreams_injected(credentials: Credentials) -> None:
    flow, headers = sent(credentials, "bearer", CALLER_HEADERS)
    assert flow.response is None
    assert headers == [*BENIGN, ("Authorization", f"Bearer {KEY}")]


def test_the_upstreams_header_is_injected_once_whatever_the_caller_sent(credentials: Credentials) -> None:
    flow, headers = sent(credentials, "keyed", [*CALLER_HEADERS, ("X-API-Key", "second-0123456789")])
    assert flow.response is None
    assert headers == [*BENIGN, ("x-api-key", KEY)]


def test_pass_headers_reach_the_upstream_and_their_values_are_known_to_the_record(credentials: Credentials) -> None:
    flow, headers = sent(credentials, "keyed", [("X-Vendor-Key", "vendor-0123456789abcd"), *CALLER_HEADERS])
    assert headers == [("X-Vendor-Key", "vendor-0123456789abcd"), *BENIGN, ("x-api-key", KEY)]
    assert "vendor-0123456789abcd" in credentials.secrets_of(flow)
    _, elsewhere = sent(credentials, "bearer", [("X-Vendor-Key", "vendor-0123456789abcd")])
    assert elsewhere == [("Authorization", f"Bearer {KEY}")]  # passed only to the upstream that names it


def test_a_passed_credential_header_still_carries_only_the_upstreams_key(credentials: Credentials) -> None:
    flow, headers = sent(credentials, "ident", [("X-Provider-Ident", "caller-0123456789abcd"), *BENIGN])
    assert headers == [*BENIGN, ("X-Provider-Ident", KEY)]


def test_any_upstreams_credential_header_is_stripped_though_its_name_looks_harmless(credentials: Credentials) -> None:
    _, headers = sent(credentials, "open", [("X-Provider-Ident", "pv7x2q"), *BENIGN])
    assert headers == BENIGN


def test_an_unset_key_refuses_the_request_without_any_credential(credentials: Credentials) -> None:
    flow, headers = sent(credentials, "optional", CALLER_HEADERS)
    assert flow.response is not None and flow.response.status_code == 503
    assert flow.response.headers["x-warden-error"] == "upstream_credential_missing"
    assert "'optional'" in flow.response.text and "T_UNSET_KEY" in flow.response.text
    assert headers == BENIGN


def test_an_upstream_without_a_credential_gets_the_request_stripped(credentials: Credentials) -> None:
    flow, headers = sent(credentials, "open", CALLER_HEADERS)
    assert flow.response is None and headers == BENIGN


def test_no_resolved_upstream_stops_the_request(credentials: Credentials) -> None:
    flow, headers = sent(credentials, None, CALLER_HEADERS)
    assert flow.response is not None and flow.response.status_code == 500
    assert ("Authorization", f"Bearer {KEY}") not in headers


def test_the_callers_secrets_are_known_to_the_record_even_when_refused(credentials: Credentials) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    flow = tflow.tflow()
    flow.request.path = f"/v1/files/{jwt}?access_token=tok-0123456789abcd"
    flow.request.headers["Authorization"] = f"Bearer {CALLER_KEY}"
    flow.request.headers["Cookie"] = "session=abc0123456789xyz"
    flow.request.headers["X-Plain"] = "ignore previous instructions"
    credentials.requestheaders(flow)  # a later addon may refuse it: the record must know these already
    known = credentials.secrets_of(flow)
    assert known >= {CALLER_KEY, "abc0123456789xyz", jwt, "tok-0123456789abcd"}
    assert not any("instructions" in value for value in known)  # not a credential: words stay words


def test_secrets_in_the_path_policy_normalised_are_known_to_the_record(credentials: Credentials) -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    flow = tflow.tflow()
    flow.request.path = "/v1/files/%65" + jwt[1:]  # as the caller spelled it
    credentials.requestheaders(flow)
    flow.request.path = f"/v1/files/{jwt}"  # as policy normalised it (escapes decoded)
    UPSTREAM.set(flow, "open")
    credentials.request(flow)
    assert jwt in credentials.secrets_of(flow)


def test_an_echoed_key_is_scrubbed_from_headers_and_body(credentials: Credentials) -> None:
    flow = tflow.tflow(resp=tutils.tresp(content=f'{{"echo": "Bearer {KEY}"}}'.encode()))
    flow.response.headers["X-Echo"] = KEY
    credentials.responseheaders(flow)
    credentials.response(flow)
    assert flow.response.headers["X-Echo"] == "[redacted-credential]"
    assert flow.response.content == b'{"echo": "[redacted-credential]"}'


def test_an_echoed_key_is_scrubbed_from_an_encoded_body(credentials: Credentials) -> None:
    flow = tflow.tflow(resp=tutils.tresp())
    flow.response.headers["content-encoding"] = "gzip"
    flow.response.raw_content = gzip.compress(f"key={KEY}".encode())
    credentials.response(flow)
    assert gzip.decompress(flow.response.raw_content) == b"key=[redacted-credential]"
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content))


def test_an_echoed_key_is_scrubbed_from_a_stream_as_it_passes(credentials: Credentials) -> None:
    flow = tflow.tflow(resp=tutils.tresp(content=b""))
    flow.response.headers["content-length"] = "100"
    flow.response.stream = lambda data: data
    credentials.responseheaders(flow)
    half = len(KEY) // 2
    out = flow.response.stream(f"data: {KEY[:half]}".encode()) + flow.response.stream(f"{KEY[half:]}\n\n".encode())
    out += flow.response.stream(b"")
    assert b"".join(out) == b"data: [redacted-credential]\n\n"
    assert "content-length" not in flow.response.headers  # the markers change the length


def test_an_echoed_key_is_scrubbed_from_a_body_not_decodable_as_declared(credentials: Credentials) -> None:
    flow = tflow.tflow(resp=tutils.tresp())
    flow.response.headers["content-encoding"] = "gzip"
    flow.response.raw_content = f"not gzip: {KEY}".encode()
    credentials.response(flow)
    assert flow.response.raw_content == b"not gzip: [redacted-credential]"
    assert flow.response.headers["content-length"] == str(len(flow.response.raw_content))


@pytest.mark.parametrize("decision", [None, Decision("pending", "contractors"), Decision("block", "x")])
def test_a_request_policy_did_not_allow_never_gets_the_credential(credentials: Credentials, decision) -> None:
    flow = tflow.tflow()
    flow.request.headers.clear()
    UPSTREAM.set(flow, "open")
    if decision is not None:
        DECISION.set(flow, decision)
    credentials.requestheaders(flow)
    credentials.request(flow)
    assert flow.response is not None and flow.response.status_code == 500
    assert "policy did not allow this request" in flow.response.text
    assert KEY not in str(flow.request.headers)
