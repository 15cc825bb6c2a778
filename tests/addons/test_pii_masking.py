"""Masking below the proxy: pseudonyms, operators, the rules model. No Presidio needed: spans are given."""

from __future__ import annotations

import re

import pytest
from pydantic import ValidationError

from addons.masking.operators import Masker
from addons.masking.pseudonyms import Vault, partial_token_start
from addons.masking.recognizers import engine_spec
from addons.rules.masking import Masking

KEY = b"k" * 32


def masker(config: dict | None = None, vault: Vault | None = None, profile: str | None = None, **kwargs) -> Masker:
    masking = Masking.model_validate(config or {})
    return Masker(masking.profile(profile), vault or Vault(), KEY, masking.allow_list, masking.allow_regex, **kwargs)


def spans_of(text: str, **values: str) -> list:
    out = []
    for entity, value in values.items():
        for m in re.finditer(re.escape(value), text):
            out.append((entity.rstrip("_0123456789"), m.start(), m.end(), 0.9))
    return out


def test_vault_gives_one_pseudonym_per_value_and_skips_numbers_the_caller_wrote() -> None:
    vault = Vault(["my notes mention <PERSON_1> literally"])
    assert vault.pseudonym("PERSON", "Ann Lee") == "<PERSON_2>"
    assert vault.pseudonym("PERSON", "ann  lee") == "<PERSON_2>"  # case and spacing aside
    assert vault.pseudonym("PERSON", "Bo Chen") == "<PERSON_3>"
    assert vault.pseudonym("EMAIL_ADDRESS", "a@b.example") == "<EMAIL_ADDRESS_1>"
    assert vault.restore("<PERSON_2> met <PERSON_3>; <PERSON_1> stays; <PERSON_9> unknown") == \
        "Ann Lee met Bo Chen; <PERSON_1> stays; <PERSON_9> unknown"
    assert vault.restore('{"to": "<PERSON_2>"}', escape=lambda v: v.replace(" ", "\\u0020")) == \
        '{"to": "Ann\\u0020Lee"}'
    assert "Ann" not in repr(vault)


@pytest.mark.parametrize(("text", "start"), [("hello <PERS", 6), ("hello <", 6), ("done <PERSON_1>", None),
                                             ("a < b", None), ("x <EMAIL_ADDRESS_12", 2)])
def test_partial_pseudonym_tail(text: str, start: int | None) -> None:
    assert partial_token_start(text) == start


def test_operators_by_entity() -> None:
    text = "Ann Lee, ann@x.example, card 4111 1111 1111 1111, ssn 123-45-6789"
    m = masker({"operators": {"EMAIL_ADDRESS": "hash", "CREDIT_CARD": {"type": "mask", "keep_last": 4},
                              "US_SSN": "redact", "PERSON": {"type": "replace", "value": "[name]"}}})
    out, applied = m.apply(text, spans_of(text, PERSON="Ann Lee", EMAIL_ADDRESS="ann@x.example",
                                          CREDIT_CARD="4111 1111 1111 1111", US_SSN="123-45-6789"))
    digest = re.search(r"<EMAIL_ADDRESS:([0-9a-f]{16})>", out).group(1)
    assert out == f"[name], <EMAIL_ADDRESS:{digest}>, card ***************1111, ssn "
    assert [a.operator for a in applied] == ["replace", "hash", "mask", "redact"]
    again, _ = masker({"operators": {"EMAIL_ADDRESS": "hash"}}).apply("ANN@x.example", spans_of("ANN@x.example",
                                                                                               EMAIL_ADDRESS="ANN@x.example"))
    assert again == f"<EMAIL_ADDRESS:{digest}>"  # keyed: the same value links across flows


def test_profile_filters_thresholds_allow_lists_and_overlaps() -> None:
    text = "Mail support@acme.example or ann@x.example, ip 10.0.0.1"
    spans = spans_of(text, EMAIL_ADDRESS="support@acme.example", EMAIL_ADDRESS_2="ann@x.example", IP_ADDRESS="10.0.0.1")
    spans.append(("PERSON", 5, 25, 0.3))  # below the threshold
    spans.append(("URL", 33, 43, 0.9))  # overlaps the e-mail, shorter: the longer span wins
    m = masker({"allow_list": ["SUPPORT@acme.example"], "thresholds": {"IP_ADDRESS": 0.95}})
    out, applied = m.apply(text, spans)
    assert out == "Mail support@acme.example or <EMAIL_ADDRESS_1>, ip 10.0.0.1"
    assert [(a.entity, a.start, a.end) for a in applied] == [("EMAIL_ADDRESS", 29, 42)]


def test_pseudonym_shaped_text_is_never_masked_again() -> None:
    text = "Thanks <PERSON_1>, see you"
    out, applied = masker().apply(text, [("PERSON", 7, 17, 0.85)])
    assert out == text and applied == []


def test_irreversible_masking_of_what_the_upstream_sends() -> None:
    out, _ = masker(reversible=False).apply("write to bob@evil.example", [("EMAIL_ADDRESS", 9, 25, 1.0)])
    assert out == "write to <EMAIL_ADDRESS>"


def test_profiles_resolve_by_rule_then_group() -> None:
    masking = Masking.model_validate({
        "operators": {"CREDIT_CARD": "mask"},
        "recognizers": [{"entity": "ACME_ID", "patterns": [r"ACME-\d{6}"]}],
        "profiles": [{"name": "support", "groups": ["support"], "operator": "replace"},
                     {"name": "research", "entities": ["CREDIT_CARD"]}],
    })
    default = masking.profile_for(None, ["dev"])
    assert default.name == "default" and "ACME_ID" in default.entities
    assert default.operators["CREDIT_CARD"].type == "mask" and default.operators["PERSON"].type == "pseudonymize"
    support = masking.profile_for(None, ["dev", "support"])
    assert {o.type for o in support.operators.values()} == {"replace"}
    assert masking.profile_for("research", ["support"]).entities == {"CREDIT_CARD"}
    spec = engine_spec(masking)
    assert "PERSON" in spec.entities and [c.entity for c in spec.custom] == ["ACME_ID"]


@pytest.mark.parametrize(("config", "message"), [
    ({"entities": ["EMAIL"]}, "entities[0]: unknown entity 'EMAIL'"),
    ({"operators": {"PERSON": "scramble"}}, "operators.PERSON.type"),
    ({"operators": {"PERSON": {"type": "replace", "keep_last": 2}}},
     "'char' and 'keep_last' apply to the mask operator"),
    ({"recognizers": [{"entity": "ACME_ID", "patterns": ["ACME-(\\d"]}]}, "patterns[0] 'ACME-(\\\\d' is not a valid"),
    ({"profiles": [{"name": "a", "entities": ["NOPE"]}]}, "profiles[0].entities[0]: unknown entity 'NOPE'"),
    ({"score_threshold": 1.5}, "score_threshold"),
    ({"unknown_content": "maybe"}, "unknown_content"),
])
def test_masking_errors_name_the_field(config: dict, message: str) -> None:
    with pytest.raises(ValidationError) as err:
        Masking.model_validate(config)
    assert message in str(err.value)
