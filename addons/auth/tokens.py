"""Validating callers' OIDC JWTs: signature against the issuer's keys, then iss, aud, exp, nbf.

``TokenValidator.validate(token)`` returns the verified claims or raises ``TokenError`` whose
``reason`` says why in one word a client can act on (``expired``, ``wrong_audience``, ...).
Keys come from a ``KeySource``: the embedded issuer's own key, or an OIDC issuer's JWKS found by
discovery, cached, and fetched again (rate-limited) when a token names a key id it does not know,
so key rotation works without a restart. Identity fetches never go through any proxy.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import json
import logging
import math
import time
import warnings
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx
from cachetools import TLRUCache
from joserfc import errors, jwt
from joserfc.jwk import KeySet

from addons.rules.model import DEFAULT_ALGORITHMS

log = logging.getLogger("warden.identity")
# RFC 9864 prefers "Ed25519"; "EdDSA" is what IdPs publish today and what the embedded issuer signs with.
warnings.filterwarnings("ignore", message="EdDSA is deprecated", module="joserfc")

MAX_TOKEN_BYTES = 16 * 1024


class TokenError(Exception):
    """The token is missing or not acceptable. ``claimed_sub`` is the unverified subject, if readable."""

    def __init__(self, reason: str, message: str, claimed_sub: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message
        self.claimed_sub = claimed_sub


class IssuerUnavailable(Exception):
    """The issuer's keys cannot be fetched; requests fail closed until it answers again."""


class KeySource(Protocol):
    async def keys(self, kid: str | None) -> KeySet: ...


@dataclass
class StaticKeys:
    """Keys known up front (the embedded issuer)."""

    key_set: KeySet

    async def keys(self, kid: str | None) -> KeySet:
        return self.key_set


@dataclass
class JwksKeys:
    """An OIDC issuer's JWKS, found by discovery, cached, refetched on an unknown ``kid`` at most every
    ``min_refresh`` s."""

    issuer: str
    min_refresh: float = 30.0
    timeout: float = 5.0
    key_set: KeySet | None = None
    fetched_at: float = float("-inf")
    fetches: int = 0
    last_error: str | None = None
    _lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    async def keys(self, kid: str | None) -> KeySet:
        if self.key_set is not None and (kid is None or _has_kid(self.key_set, kid)):
            return self.key_set
        async with self._lock:
            if self.key_set is not None and (kid is None or _has_kid(self.key_set, kid)):
                return self.key_set
            if time.monotonic() - self.fetched_at < self.min_refresh:
                # We asked the issuer moments ago: answer from what we have, never flood it.
                if self.key_set is None:
                    raise IssuerUnavailable(f"the identity issuer {self.issuer} cannot be reached: {self.last_error}")
                return self.key_set
            await self._fetch()
        assert self.key_set is not None
        return self.key_set

    async def _fetch(self) -> None:
        self.fetched_at = time.monotonic()
        self.fetches += 1
        url = self.issuer.rstrip("/") + "/.well-known/openid-configuration"
        try:
            async with httpx.AsyncClient(timeout=self.timeout, trust_env=False) as client:
                discovery = (await client.get(url)).raise_for_status().json()
                jwks_uri = discovery["jwks_uri"]
                if discovery.get("issuer", self.issuer).rstrip("/") != self.issuer.rstrip("/"):
                    raise ValueError(f"discovery names issuer {discovery.get('issuer')!r}")
                self.key_set = KeySet.import_key_set((await client.get(jwks_uri)).raise_for_status().json())
        except (httpx.HTTPError, ValueError, KeyError, TypeError, errors.JoseError) as e:
            self.last_error = f"{type(e).__name__}: {e}"
            if self.key_set is None:
                raise IssuerUnavailable(f"the identity issuer {self.issuer} cannot be reached: {e}") from None
            log.warning("warden: refreshing the keys of %s failed (%s); keeping the ones we have", self.issuer, e)
        else:
            self.last_error = None
            log.info("warden: fetched %d keys from %s", len(self.key_set.keys), jwks_uri)


def token_from_authorization(value: str | None) -> str | None:
    """The token of an ``Authorization: Bearer TOKEN`` header, or None."""
    scheme, _, credentials = (value or "").strip().partition(" ")
    return credentials.strip() or None if scheme.lower() == "bearer" else None


def claim_at(claims: dict, path: str) -> object:
    """A claim by dotted path, e.g. ``realm_access.roles``."""
    value: object = claims
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _has_kid(key_set: KeySet, kid: str) -> bool:
    return any(k.kid == kid for k in key_set.keys)


def _numeric_date(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _unverified(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """Header and claims, parsed without trusting them (for error messages and key choice)."""
    parts = token.split(".")
    if len(parts) != 3:
        raise TokenError("malformed", "the token is not a JWT (expected three dot-separated parts)")
    try:
        header, claims = (json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in parts[:2])
    except (ValueError, binascii.Error, UnicodeDecodeError):
        raise TokenError("malformed", "the token's header or claims are not base64url JSON") from None
    if not isinstance(header, dict) or not isinstance(claims, dict):
        raise TokenError("malformed", "the token's header and claims must be JSON objects")
    return header, claims


@dataclass
class TokenValidator:
    issuer: str
    audience: str
    source: KeySource
    algorithms: tuple[str, ...] = DEFAULT_ALGORITHMS
    leeway: int = 30
    cache_size: int = 10_000
    _cache: TLRUCache[str, dict[str, Any]] = field(init=False)

    def __post_init__(self) -> None:
        # verified claims by token digest, the least recently used dropped first, each until its exp (+ leeway)
        self._cache = TLRUCache(self.cache_size, ttu=lambda _, claims, now: claims["exp"] + self.leeway,
                                timer=time.time)

    async def validate(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_BYTES:
            raise TokenError("malformed", f"the token is longer than {MAX_TOKEN_BYTES} bytes")
        digest = hashlib.sha256(token.encode()).hexdigest()
        cached = self._cache.get(digest)
        if cached is not None:
            return cached
        claims = await self._verify(token)
        self._cache[digest] = claims
        return claims

    async def _verify(self, token: str) -> dict[str, Any]:
        header, unverified = _unverified(token)
        claimed = unverified.get("sub") if isinstance(unverified.get("sub"), str) else None
        alg = header.get("alg")
        if alg not in self.algorithms:
            raise TokenError("alg_not_allowed",
                             f"algorithm {alg!r} is not allowed (allowed: {', '.join(self.algorithms)})", claimed)
        key_set = await self.source.keys(header.get("kid"))
        try:
            token_obj = jwt.decode(token, key_set, algorithms=list(self.algorithms))
        except errors.InvalidKeyIdError:
            raise TokenError("unknown_key", f"the issuer has no key {header.get('kid')!r}", claimed) from None
        except errors.BadSignatureError:
            raise TokenError("bad_signature", "the token's signature does not verify", claimed) from None
        except (errors.JoseError, ValueError) as e:
            raise TokenError("malformed", f"the token cannot be decoded: {e}", claimed) from None
        self._check_claims(token_obj.claims, claimed)
        return dict(token_obj.claims)

    def _check_claims(self, claims: dict[str, Any], claimed: str | None) -> None:
        registry = jwt.JWTClaimsRegistry(
            leeway=self.leeway, iss={"essential": True, "value": self.issuer},
            aud={"essential": True, "value": self.audience}, exp={"essential": True}, sub={"essential": True},
        )
        try:
            registry.validate(claims)
        except errors.ExpiredTokenError:
            raise TokenError("expired", "the token has expired", claimed) from None
        except errors.MissingClaimError as e:
            raise TokenError("missing_claim", f"the token lacks a required claim: {e.description}", claimed) from None
        except errors.InvalidClaimError as e:
            if e.claim == "nbf" and _numeric_date(claims["nbf"]):  # a well-formed nbf refused: it lies ahead
                raise TokenError("not_yet_valid", "the token is not valid yet (nbf)", claimed) from None
            reason = {"iss": "wrong_issuer", "aud": "wrong_audience"}.get(e.claim, "invalid_claim")
            expected = self.issuer if e.claim == "iss" else self.audience
            raise TokenError(reason, f"the token's {e.claim!r} claim is not accepted here (expected {expected!r})",
                             claimed) from None
