"""Where the identity addon finds a caller's token and what an identity is made of."""

from __future__ import annotations

import base64

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


def test_identity_from_nested_claims() -> None:
    claims = {"sub": "u1", "preferred_username": "alice", "azp": "cli", "jti": "j", "exp": 5,
              "realm_access": {"roles": ["dev", 3, "ops"]}}
    who = identity_from_claims(claims, IdentityConfig(groups_claim="realm_access.roles"), "bearer")
    assert (who.sub, who.email, who.groups, who.client_id, who.token_id) == ("u1", "alice", ["dev", "ops"], "cli", "j")
    assert identity_from_claims({"sub": "s", "groups": "one"}, IdentityConfig(), None).groups == ["one"]
