"""``make leakbench``'s rules and pins: what the benchmark is measured against is what the README says."""

from __future__ import annotations

import re
from pathlib import Path

from addons.rules.model import load_rules
from scripts.leakbench import RULES, capture_ports

ROOT = Path(__file__).resolve().parents[2]


def test_the_rules_declare_the_captures_as_plain_http_and_pseudonymize_every_entity() -> None:
    rules = load_rules(RULES)
    assert {(u.host, u.scheme, u.port) for u in rules.upstreams} == {("127.0.0.1", "http", p) for p in capture_ports()}
    profile = rules.masking.profile()
    assert {"EMAIL_ADDRESS", "CREDIT_CARD", "US_SSN", "PHONE_NUMBER", "API_KEY"} <= profile.entities
    assert {spec.type for spec in profile.operators.values()} == {"pseudonymize"}  # restorable, cards included
    assert rules.model.identity.issuer == "embedded"  # the benchmark gets a token like any caller


def test_the_benchmark_is_pinned_by_version_and_hash() -> None:
    pins = (ROOT / "scripts" / "leakbench-requirements.txt").read_text()
    hashed = re.findall(r"^([\w.-]+)==[\w.]+ \\\n +--hash=sha256:[0-9a-f]{64}", pins, re.M)
    assert "pii-leak-benchmark" in hashed and sorted(hashed) == sorted(re.findall(r"^([\w.-]+)==", pins, re.M))
