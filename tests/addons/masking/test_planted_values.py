"""Any JSON request body with an e-mail, a card or an SSN planted at any position yields valid JSON without it.

A seeded generator of JSON documents (API-shaped and free-form, nested, with tool-call arguments holding JSON and
data URIs holding text) plants one value as a whole value, inside prose, as a key, inside embedded JSON or a data
URI, or as the whole body; the request is masked as the gateway masks it (adapters, ``Payload.cover``, the real
``Masker``), with spans from a deterministic pattern analyzer standing in for Presidio. Written for the seed, not
for hypothesis (not installed); the same properties, shrinking aside.
"""

from __future__ import annotations

import json
import random
from collections.abc import Callable

import pytest

from addons.bodies.jsonlimits import parse_json
from addons.masking.operators import Masker
from addons.masking.payloads import parse_body
from addons.masking.pseudonyms import Vault
from addons.rules.masking import Masking
from tests.planted import PATHS, PLANTS, Planter, analyze, decoded_strings


def mask_request(path: str, body: bytes, masker_for: Callable[[Vault], Masker]) -> tuple[bytes, list[str]]:
    """The request as the gateway masks it (``PiiMasking.request``), spans from ``analyze``: body and finding paths."""
    parsed = parse_body(path, "application/json", body)
    assert parsed is not None
    payload = parsed[0]
    masked = masker_for(Vault(s.text for s in payload.slots)).mask(payload, [analyze(s.text) for s in payload.slots])
    return payload.render(), [found_path for found_path, _ in masked]


@pytest.mark.parametrize("seed", range(8))
def test_a_planted_value_at_any_position_never_leaves(seed: int) -> None:
    masking = Masking.model_validate({"entities": list(PLANTS)})

    def masker_for(vault: Vault) -> Masker:
        return Masker(masking.profile(None), vault, b"k" * 32)

    rng = random.Random(seed)
    for _ in range(60):
        entity = rng.choice(list(PLANTS))
        value = rng.choice(PLANTS[entity])
        path = rng.choice(PATHS)
        document = Planter(rng, value).body(path)
        raw = json.dumps(document).encode()
        assert any(value in text for text in decoded_strings(document))  # planted (perhaps encoded)
        sent, finding_paths = mask_request(path, raw, masker_for)
        parsed = parse_json(sent)  # valid JSON, every key once
        assert value not in sent.decode(), (path, document)
        assert all(value not in text for text in decoded_strings(parsed)), (path, document)
        assert all(value not in p for p in finding_paths)  # the record's paths do not carry it either
        assert f"<{entity}_1>" in "".join(decoded_strings(parsed))
