"""Where tokens come from and what identity is made of: the pure functions beside the identity addon."""

from __future__ import annotations

import asyncio
import base64

import pytest

from addons.auth.issuer import EMBEDDED_ISSUER, EmbeddedIssuer
from addons.auth.tokens import StaticKeys, TokenError, TokenValidator, claim_at, token_from_authorization
from addons.identity import identity_from_claims, token_from_proxy_authorization
from addons.rules.model import IdentityConfig


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_proxy_authorization_forms() -> None:
    assert token_from_proxy_authorization("Bearer abc.def.ghi") == ("abc.def.ghi", "proxy-bearer")
    assert token_from_proxy_authorization(basic("alice", "abc.def.ghi")) == ("abc.def.ghi", "proxy-basic")
    assert token_from_proxy_authorization(None) == (None, None)
    assert token_from_proxy_authorization(basic("alice", "")) == (None, "proxy-basic")
    assert token_from_proxy_authorization("Basic ***") == ("", "proxy-basic")
    assert token_from_proxy_authorization("Negotiate xyz") == ("", None)
    assert token_from_authorization("Bearer t") == "t" and token_from_authorization("Basic t") is None


def test_identity_from_nested_claims() -> None:
    claims = {"sub": "u1", "preferred_username": "alice", "azp": "cli", "jti": "j", "exp": 5,
              "realm_access": {"roles": ["dev", 3, "ops"]}}
    assert claim_at(claims, "realm_access.roles") == ["dev", 3, "ops"]
    who = identity_from_claims(claims, IdentityConfig(groups_claim="realm_access.roles"), "bearer")
    assert (who.sub, who.email, who.groups, who.client_id, who.token_id) == ("u1", "alice", ["dev", "ops"], "cli", "j")
    assert identity_from_claims({"sub": "s", "groups": "one"}, IdentityConfig(), None).groups == ["one"]


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
