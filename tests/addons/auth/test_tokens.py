"""Token validation paths known by type (joserfc's claim errors), and the verified-claims cache's bounds."""

from __future__ import annotations

import asyncio
import hashlib
import time

import pytest

from addons.auth.issuer import EMBEDDED_ISSUER, EmbeddedIssuer
from addons.auth.tokens import StaticKeys, TokenError, TokenValidator


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
    assert (ahead.reason, ahead.message, ahead.claimed_sub) == ("not_yet_valid", "the token is not valid yet (nbf)", "carol")
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
