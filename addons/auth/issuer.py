"""The embedded development issuer: the gateway signs short tokens for local users.

With ``identity.issuer: embedded`` the gateway trusts tokens signed by its own Ed25519 key
(``certs/warden-issuer.key``, created on first use, mode 0600) and publishes the public half as
JWKS and OIDC discovery on the admin API. ``warden token alice --groups dev`` signs one. For
production, point ``identity.issuer`` at a real IdP.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from joserfc import jwt
from joserfc.jwk import KeySet, KeySetSerialization, OKPKey

from addons.auth.tokens import JwksKeys, StaticKeys, TokenValidator
from addons.rules.model import IdentityConfig
from addons.store.keys import KeyFileError, key_id, load_or_create_ed25519

EMBEDDED_ISSUER = "urn:warden:embedded"
ALGORITHM = "EdDSA"


class EmbeddedIssuer:
    def __init__(self, private: Ed25519PrivateKey) -> None:
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        self.kid = key_id(private.public_key())
        self._key = OKPKey.import_key(pem, parameters={"kid": self.kid, "alg": ALGORITHM, "use": "sig"})

    @classmethod
    def load_or_create(cls, path: str | Path) -> EmbeddedIssuer:
        try:
            return cls(load_or_create_ed25519(path))
        except KeyFileError as e:
            raise KeyFileError(f"embedded issuer key: {e}") from None

    def jwks(self) -> KeySetSerialization:
        return {"keys": [self._key.as_dict(private=False)]}

    def public_keys(self) -> KeySet:
        return KeySet.import_key_set(self.jwks())

    def mint(self, sub: str, *, audience: str = "warden", groups: list[str] | None = None, ttl: int = 3600,
             email: str | None = None, extra: dict[str, Any] | None = None) -> str:
        now = int(time.time())
        claims: dict[str, Any] = {
            "iss": EMBEDDED_ISSUER, "sub": sub, "aud": audience, "iat": now, "nbf": now, "exp": now + ttl,
            "jti": uuid.uuid4().hex, "groups": groups or [], **({"email": email} if email else {}), **(extra or {}),
        }
        return jwt.encode({"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}, claims, self._key, algorithms=[ALGORITHM])


def validator_for(config: IdentityConfig, issuer_key: str | Path) -> TokenValidator:
    """The token validator an identity configuration asks for: the embedded issuer's key, or the IdP's JWKS."""
    if config.issuer == "embedded":
        source: StaticKeys | JwksKeys = StaticKeys(EmbeddedIssuer.load_or_create(issuer_key).public_keys())
        name = EMBEDDED_ISSUER
    else:
        source, name = JwksKeys(config.issuer, config.jwks_min_refresh), config.issuer
    return TokenValidator(name, config.audience, source, tuple(config.algorithms), config.leeway)


def discovery(base_url: str) -> dict[str, Any]:
    """The OIDC discovery document for the embedded issuer, served at ``base_url``."""
    return {
        "issuer": EMBEDDED_ISSUER, "jwks_uri": f"{base_url}/jwks",
        "id_token_signing_alg_values_supported": [ALGORITHM], "subject_types_supported": ["public"],
        "response_types_supported": ["id_token"],
    }
