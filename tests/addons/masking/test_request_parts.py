"""The request beside its body, taken apart and put together again: no analyzer, spans are given by value."""

from __future__ import annotations

import re
from urllib.parse import quote_plus, unquote, unquote_plus

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.flow.errors import PiiInHeader, PiiInPath
from addons.masking.cache import AnalysisCache
from addons.masking.chunking import plan
from addons.masking.operators import Masker
from addons.masking.protocol import Unit
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers.inert import _TOKEN
from addons.masking.request_parts import RequestParts, mask_parts
from addons.rules.masking import Masking

KEY = b"k" * 32
EMAIL, CARD, PHONE = "jane@acme.com", "4111111111111111", "212-555-0123"
BENIGN = ("/v1/files/file-abc123/content", "/v1/threads/123e4567-e89b-12d3-a456-426614174000/runs",
          "/2023-06-01/models/claude-3-5-sonnet-20241022", "/v1/orders/1700000000",
          "/openai/deployments/gpt-35-turbo-0613/chat/completions?api-version=2024-02-15-preview")


def inert(text: str) -> bool:
    return bool(_TOKEN.fullmatch(text))


def read(target: str, headers: list[tuple[str, str]] | None = None) -> RequestParts:
    credential = re.compile(r"authorization|api-key", re.IGNORECASE)
    return RequestParts.read(target, headers or [], lambda name, _: bool(credential.search(name)), inert)


def found(texts: list[str], **values: str) -> list[list]:
    """Spans of ``values`` (entity=value) in each text, as the analyzer would report them."""
    return [[(entity.rstrip("_0123456789"), m.start(), m.end(), 0.9) for entity, value in values.items()
             for m in re.finditer(re.escape(value), text)] for text in texts]


def masked(target: str, headers: list[tuple[str, str]] | None = None, config: dict | None = None,
           **values: str):
    parts = read(target, headers)
    masking = Masking.model_validate(config or {})
    masker = Masker(masking.profile(), Vault(), KEY)
    return parts, mask_parts(parts, found(parts.texts, **values), masker, masking.profile(), ["PERSON"])


def test_the_target_is_read_as_a_server_reads_it() -> None:
    parts = read("/v1/u/jane%40ACME.com;v=1/x?q=a+b&q=&flag&n%61me=%2540#frag%20ment",
                 [("Content-Type", "application/json"), ("X-Note", "Call me"), ("Authorization", "Bearer x"),
                  ("X-Request-Id", "123e4567-e89b-12d3-a456-426614174000")])
    kinds = [(p.kind, p.index, p.name, p.readings) for p in parts.parts]
    assert ("segment", 2, False, ("jane@ACME.com;v=1",)) in kinds
    assert ("segment", 0, False, ("v1",)) in kinds and not any(p.text in ("u", "x") for p in parts.parts)  # inert
    assert ("query", 0, False, ("a b", "a+b")) in kinds  # + is a space to a form reader, itself to another
    assert ("query", 3, True, ("name",)) not in kinds  # decoded, then inert
    assert ("query", 3, False, ("@",)) in kinds  # escapes of escapes are decoded to the end
    assert ("fragment", 0, False, ("frag ment",)) in kinds
    headers = [(p.index, p.name, p.text) for p in parts.parts if p.kind == "header"]
    # names are analysed lower case (these are inert); structural, credential and UUID values are not analysed
    assert headers == [(1, False, "Call me")]
    assert parts.ner == [p.kind in ("query", "fragment") for p in parts.parts for _ in p.readings]


@pytest.mark.parametrize("target", ["/v1/chat/completions", "/v1/x?a=1&a=2&b=&c&d=%2F+x#f", *BENIGN])
def test_a_target_with_nothing_masked_leaves_as_it_came(target: str) -> None:
    parts, result = masked(target, [("X-Trace", "00-4bf92f35-01")], EMAIL_ADDRESS=EMAIL)
    assert result.findings == [] and result.refusal is None
    assert parts.target() == target and parts.headers() == [("X-Trace", "00-4bf92f35-01")]


def test_query_values_and_names_are_masked_and_the_rest_kept_as_sent() -> None:
    target = f"/v1/search?q=mail+{EMAIL.replace('@', '%40')}&q=ok%2C+fine&blank=&flag&{EMAIL}=1&x=a%2Bb"
    parts, result = masked(target, EMAIL_ADDRESS=EMAIL)
    assert parts.target() == ("/v1/search?q=mail+%3CEMAIL_ADDRESS_1%3E&q=ok%2C+fine&blank=&flag"
                              "&%3CEMAIL_ADDRESS_1%3E=1&x=a%2Bb")
    assert [(f.entity, f.path, f.operator) for f in result.findings] == [
        ("EMAIL_ADDRESS", "query.q", "pseudonymize"), ("EMAIL_ADDRESS", "query.<EMAIL_ADDRESS_1>", "pseudonymize")]
    assert result.refusal is None


def test_a_value_read_either_way_is_masked_whichever_way_it_matches() -> None:
    # "+" as itself makes an address that "+" as a space does not: the literal reading's span masks both
    parts, result = masked("/v1/x?to=jane+work@acme.com", EMAIL_ADDRESS="jane+work@acme.com")
    assert parts.target() == "/v1/x?to=%3CEMAIL_ADDRESS_1%3E" and len(result.findings) == 1


def test_a_fragment_and_upper_case_escapes_are_analysed() -> None:
    parts, result = masked("/v1/x#JANE%40ACME.COM", EMAIL_ADDRESS="JANE@ACME.COM")
    assert parts.target() == "/v1/x#%3CEMAIL_ADDRESS_1%3E" and result.findings[0].path == "fragment"


def test_a_segment_with_pii_is_refused_by_default_naming_index_and_entity_never_the_value() -> None:
    parts, result = masked(f"/v1/users/{EMAIL};type=x/cards/{CARD}", EMAIL_ADDRESS=EMAIL, CREDIT_CARD=CARD)
    assert isinstance(result.refusal, PiiInPath) and result.refusal.status == 400
    assert "path segment [2] carries EMAIL_ADDRESS" in result.refusal.message
    assert EMAIL not in result.refusal.message and CARD not in result.refusal.message
    assert {f.path for f in result.findings} == {"path[2]", "path[4]"}
    # the flow (and so the record) holds the segments masked even though nothing leaves
    assert parts.target() == "/v1/users/%3CEMAIL_ADDRESS_1%3E;type=x/cards/%3CCREDIT_CARD_1%3E"


def test_a_segment_is_passed_or_masked_by_policy() -> None:
    target = f"/v1/users/{EMAIL}?e={EMAIL}"
    parts, result = masked(target, config={"path": "pass"}, EMAIL_ADDRESS=EMAIL)
    assert result.refusal is None and result.passed == ["path[2] (EMAIL_ADDRESS)"]
    assert [f.operator for f in result.findings] == ["pass", "pseudonymize"]
    assert parts.target(keep=["segment"]) == f"/v1/users/{EMAIL}?e=%3CEMAIL_ADDRESS_1%3E"
    assert parts.target() == "/v1/users/%3CEMAIL_ADDRESS_1%3E?e=%3CEMAIL_ADDRESS_1%3E"  # for the record
    parts, result = masked(target, config={"profiles": [{"name": "p", "path": "mask"}], "path": "refuse"},
                           EMAIL_ADDRESS=EMAIL)
    assert isinstance(result.refusal, PiiInPath)  # the default profile's
    masking = Masking.model_validate({"profiles": [{"name": "p", "path": "mask"}]})
    assert masking.profile("p").path == "mask" and masking.profile().path == "refuse"


def test_ids_in_segments_and_headers_are_not_phone_numbers_but_formatted_phones_are() -> None:
    parts, result = masked("/v1/orders/1700000000?since=1700000000", [("X-Id", "1700000000")],
                           PHONE_NUMBER="1700000000")
    assert [f.path for f in result.findings] == ["query.since"]  # masked where a query says it, not in the path
    _, result = masked(f"/v1/call/{PHONE}", PHONE_NUMBER=PHONE)
    assert isinstance(result.refusal, PiiInPath)


def test_ner_entities_are_dropped_where_only_patterns_belong() -> None:
    parts, result = masked("/v1/people/Jane%20Doe?who=Jane+Doe", [("X-Who", "Jane Doe")], PERSON="Jane Doe")
    assert [f.path for f in result.findings] == ["query.who"]


def test_header_values_are_masked_or_refused_and_a_name_is_always_refused() -> None:
    headers = [("Content-Type", f"application/json; x={EMAIL}"), ("X-Custom-Note", f"from {EMAIL}"),
               ("Authorization", f"Bearer {EMAIL}"), ("User-Agent", "Chrome/120.0.0.0")]
    parts, result = masked("/v1/x", headers, EMAIL_ADDRESS=EMAIL)
    assert result.refusal is None and [f.path for f in result.findings] == ["header.x-custom-note"]
    assert parts.headers()[1] == ("X-Custom-Note", "from <EMAIL_ADDRESS_1>")
    assert parts.headers()[0] == headers[0] and parts.headers()[2] == headers[2]  # structural; credentials' own
    _, result = masked("/v1/x", headers, config={"headers": "refuse"}, EMAIL_ADDRESS=EMAIL)
    assert isinstance(result.refusal, PiiInHeader) and "header.x-custom-note carries EMAIL_ADDRESS" in \
        result.refusal.message and EMAIL not in result.refusal.message
    parts, result = masked("/v1/x", [(f"X-{CARD}", "1")], CREDIT_CARD=CARD)
    assert isinstance(result.refusal, PiiInHeader) and CARD not in result.refusal.message
    assert CARD not in str(parts.headers())


def test_ner_is_chosen_per_text_so_segments_and_headers_cost_the_patterns_only() -> None:
    long = "Jane Doe wrote. " * 200
    [[query], [header], [chunked, *chunks]] = plan(["jane@acme.com", "from jane@acme.com", long], [True, False, True])
    assert query == (Unit("jane@acme.com", ner=True, patterns=True), 0)
    assert header == (Unit("from jane@acme.com", ner=False, patterns=True), 0)
    assert chunked[0].ner is False and chunks and all(u.ner for u, _ in chunks)
    assert AnalysisCache.key(query[0]) != AnalysisCache.key(Unit("jane@acme.com", ner=False))


_ADDRESS = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_SPELLINGS = [lambda v: v, lambda v: v.replace("@", "%40"), lambda v: v.replace("@", "%2540"),
              lambda v: v.upper().replace("@", "%40"), lambda v: "".join(f"%{ord(c):02x}" for c in v)]


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.text("abcxyz019_-.~ ", max_size=8), st.text("abcxyz019_-.~ ,;", max_size=8)),
                min_size=1, max_size=5),
       st.integers(0, 4), st.integers(0, 4), st.booleans(), st.sampled_from(_SPELLINGS))
def test_an_address_planted_anywhere_in_a_query_never_leaves(pairs, at, where, in_name, spell) -> None:
    planted = spell("jane.doe@acme.example")
    params = [[quote_plus(n), quote_plus(v)] for n, v in pairs]
    at %= len(params)
    text = params[at][0 if in_name else 1]
    params[at][0 if in_name else 1] = text[:where] + planted + text[where:]
    target = "/v1/x?" + "&".join(f"{n}={v}" for n, v in params)
    parts = read(target)
    spans = [[("EMAIL_ADDRESS", m.start(), m.end(), 1.0) for m in _ADDRESS.finditer(t)] for t in parts.texts]
    masking = Masking.model_validate({})
    mask_parts(parts, spans, Masker(masking.profile(), Vault(), KEY), masking.profile())
    left = parts.target()
    for reading in (left, unquote(left), unquote_plus(left), unquote(unquote(left))):
        assert "jane.doe@acme.example" not in reading.lower(), (target, left)
    assert left.count("&") == target.count("&")  # one parameter each, in order
