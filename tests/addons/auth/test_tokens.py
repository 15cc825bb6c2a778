"""Token validation (JWT, keys, the cache; refusals known by type) and where a token sits in a header or a claim."""

from __future__ import annotations

import asyncio
import hashlib
import time

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


@pytest.fixture
def issuer(tmp_path) -> EmbeddedIssuer:
    return EmbeddedIssuer.load_or_create(tmp_path / "issuer.key")


def refusal(validator: TokenValidator, token: str) -> TokenError:
    with pytest.raises(TokenError) as e:
        asyncio.run(validator.validate(token))
    return e.value


def test_a_token_not_yet_valid_and_other_claim_refusals(issuer: EmbeddedIssuer) -> None:
    validator = TokenValidator(EMBEDDED_ISSUER, "warden", StaticKeys(issuer.public_keys()), leeway=30)
    now = int(time.time())
    ahead = refusal(validator, issuer.mint("carol", extra={"nbf": now + 3600}))
    assert (ahead.reason, ahead.message, ahead.claimed_sub) == (
        "not_yet_valid", "the token is not valid yet (nbf)", "carol")
    assert asyncio.run(validator.validate(issuer.mint("carol", extra={"nbf": now + 10})))["sub"] == "carol"  # leeway
    assert refusal(validator, issuer.mint("dave", extra={"nbf": "tomorrow"})).reason == "invalid_claim"
    assert refusal(validator, issuer.mint("erin", extra={"iat": now + 3600})).reason == "invalid_claim"
    assert refusal(validator, issuer.mint("frank", ttl=-3600)).reason == "expired"


def test_the_cache_keeps_the_most_recently_used(issuer: EmbeddedIssuer) -> None:
    validator = TokenValidator(EMBEDDED_ISSUER, "warden", StaticKeys(issuer.public_keys()), cache_size=2)
    first, second, third = (issuer.mint(name) for name in ("a", "b", "c"))
    for token in (first, second, first, third):
        asyncio.run(validator.validate(token))
    cached = {hashlib.sha256(t.encode()).hexdigest() for t in (first, third)}
    assert set(validator._cache) == cached


def test_a_cached_token_is_served_until_it_expires(issuer: EmbeddedIssuer, monkeypatch) -> None:
    clock = [time.time()]
    monkeypatch.setattr(time, "time", lambda: clock[0])
    validator = TokenValidator(EMBEDDED_ISSUER, "warden", StaticKeys(issuer.public_keys()), leeway=5)
    verified = []
    verify = validator._verify
    monkeypatch.setattr(validator, "_verify", lambda token: verified.append(token) or verify(token))
    token = issuer.mint("alice", ttl=100)
    assert asyncio.run(validator.validate(token))["sub"] == "alice"
    clock[0] += 104  # within exp + leeway: from the cache
    assert asyncio.run(validator.validate(token))["sub"] == "alice" and len(verified) == 1
    clock[0] += 2  # past it: verified again, and refused
    assert refusal(validator, token).reason == "expired" and len(verified) == 2
    assert len(validator._cache) == 0
