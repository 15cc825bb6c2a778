"""Any JSON request body with an e-mail, a card or an SSN planted at any position yields valid JSON without it.

Hypothesis draws the body (``tests/strategies.py``: API-shaped and free-form documents, nested, unicode keys and
texts, the value at any offset of any string or key, in tool-call JSON text, a data URI, a base64 document or
as the whole body) and a valid value of each entity; the request is masked as the gateway masks it
(``PiiMasking.request``: the adapter's payload, inert values skipped, the real analyzer with the default rules'
entities, NER included, the real ``Masker``). Derandomized: the same examples on every run.
"""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.bodies.jsonlimits import parse_json
from addons.masking.operators import Masker
from addons.masking.payloads import parse_body
from addons.masking.protocol import Unit
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers import engine_spec
from addons.masking.recognizers.inert import inert_values
from addons.masking.worker import Analyzer, _offline_tldextract
from addons.rules.masking import Masking
from tests.planted import decoded_strings
from tests.strategies import VALUES, planted_body

MASKING = Masking.model_validate({"entities": ["PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN",
                                               "IBAN_CODE", "IP_ADDRESS", "SECRET"]})
SPEC = engine_spec(MASKING)
INERT = inert_values(SPEC)
PSEUDONYM = re.compile(r"<[A-Z_]+_\d+>")


@pytest.fixture(scope="module")
def analyzer() -> Analyzer:
    _offline_tldextract()
    return Analyzer(SPEC)


def mask_request(analyzer: Analyzer, path: str, body: bytes) -> tuple[bytes, list[str]]:
    """The request as ``PiiMasking.request`` masks it: the rendered body and the findings' paths."""
    parsed = parse_body(path, "application/json", body, inert=INERT)
    assert parsed is not None
    payload = parsed[0]
    texts = [slot.text for slot in payload.slots]
    needed = [i for i, text in enumerate(texts) if not INERT(text)]
    spans: list[list] = [[] for _ in texts]
    for i, found in zip(needed, analyzer.analyze([Unit(texts[i]) for i in needed]), strict=True):
        spans[i] = found
    masked = Masker(MASKING.profile(None), Vault(texts), b"k" * 32).mask(payload, spans)
    return payload.render(), [found_path for found_path, _ in masked]


@st.composite
def planted(draw: st.DrawFn) -> tuple[str, str, str, object]:
    entity = draw(st.sampled_from(sorted(VALUES)))
    value = draw(VALUES[entity])
    path, document = draw(planted_body(value))
    return entity, value, path, document


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=planted())
def test_a_planted_value_at_any_position_never_leaves(analyzer: Analyzer, case) -> None:
    entity, value, path, document = case
    assert any(value in text for text in decoded_strings(document))  # planted (perhaps encoded)
    sent, finding_paths = mask_request(analyzer, path, json.dumps(document).encode())
    parsed = parse_json(sent)  # valid JSON, every key once
    readable = decoded_strings(parsed)
    assert value not in sent.decode()
    assert all(value not in text for text in readable)
    assert all(value not in p for p in finding_paths)  # the record's paths do not carry it either
    assert PSEUDONYM.search("".join(readable)), sent  # masked where it was, not dropped
