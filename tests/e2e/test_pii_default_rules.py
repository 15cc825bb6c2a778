"""The shipped rules' masking through a real gateway: phones in international form, an SSN without the word,
a vendor token and a database password never reach the upstream; the record names each entity."""

from __future__ import annotations

import json
import random
import string
from pathlib import Path

import pytest
import yaml

from tests.conftest import rules_for

pytestmark = pytest.mark.e2e

DEFAULT_RULES = Path(__file__).resolve().parents[2] / "rules" / "default.yaml"
rng = random.Random(29)
ALNUM = string.ascii_letters + string.digits
PHONE = "+44 20 7946 0958"
SSN = "524-71-3308"
SLACK = f"xoxb-{''.join(rng.choices(string.digits, k=11))}-{''.join(rng.choices(string.digits, k=13))}-" \
        f"{''.join(rng.choices(ALNUM, k=24))}"
DB_PASSWORD = "".join(rng.choices(ALNUM, k=16))
DB_URL = f"postgres://orders:{DB_PASSWORD}@db.internal.example:5432/orders"
PROMPT = (f"Call me on {PHONE} about the form with {SSN} on it. The bot token {SLACK} stopped working, "
          f"and the service cannot reach {DB_URL} either.")


def default_masking_rules(upstream_port: int) -> str:
    """The test upstreams with the masking section of rules/default.yaml, unchanged."""
    masking = yaml.safe_load(DEFAULT_RULES.read_text())["masking"]
    return rules_for(upstream_port).replace("rules:", yaml.safe_dump({"masking": masking}) + "rules:", 1)


def test_default_rules_mask_phones_ssns_tokens_and_passwords(gateway_factory, upstream) -> None:
    gw = gateway_factory(default_masking_rules(upstream.port))
    with gw.client(timeout=60) as client:
        r = client.post(f"https://localhost:{upstream.port}/v1/chat/completions",
                        json={"model": "demo", "messages": [{"role": "user", "content": PROMPT}]})
    assert r.status_code == 200
    assert r.json()["choices"][0]["message"]["content"] == PROMPT  # pseudonyms restored for the caller

    [sent] = [json.loads(x["body"])["messages"][0]["content"] for x in upstream.received
              if x["path"].startswith("/v1/chat/completions")]
    for value in (PHONE, SSN, SLACK, DB_PASSWORD):
        assert value not in sent, f"{value!r} reached the upstream: {sent}"
    assert "postgres://<SECRET_1>@db.internal.example:5432/orders" in sent  # the credentials only are hidden

    [flow] = gw.flows()
    assert flow["entities"] == {"PHONE_NUMBER": 1, "US_SSN": 1, "API_KEY": 1, "SECRET": 1}
    assert len(gw.flows("--entity", "US_SSN")) == 1
