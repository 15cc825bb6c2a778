"""Token validation (JWT, keys, the cache) and where a token sits in a header or a claim."""

from __future__ import annotations

import asyncio

import pytest

from addons.auth.issuer import EMBEDDED_ISSUER, EmbeddedIssuer
from addons.auth.tokens import StaticKeys, TokenError, TokenValidator, claim_at, token_from_authorization


def test_bearer_authorization_gives_the_token() -> None:
    assert token_from_authorization("Bearer t") == "t" and token_from_authorization("Basic t") is None


def test_claim_at_a_dotted_path() -> None:
    claims = {"sub": "u1", "realm_access": {"roles": ["dev", 3, "ops"]}}
    assert claim_at(claims, "realm_access.roles") == ["dev", 3, "ops"]


def test_validator_caches_and_refuses(tmp_path) -> None:
    issuer = EmbeddedIssuer.load_or_create(tmp_path / "k")
    validator = TokenValidator(EMBEDDED_ISSUER, "warden", StaticKeys(issuer.public_keys()))
    token = issuer.mint("alice")
    assert asyncio.run(validator.validate(token))["sub"] == "alice"
    assert len(validator._cache) == 1
    with pytest.raises(TokenError) as e:
        asyncio.run(validator.validate(issuer.mint("bob", audience="other")))
    assert e.value.reason == "wrong_audience" and e.value.claimed_sub == "bob"
    with pytest.raises(TokenError, match="longer than"):
        asyncio.run(validator.validate("a" * 20000))
