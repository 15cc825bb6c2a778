"""The gateway's keys: Ed25519 for signing chain checkpoints (and the embedded issuer's tokens), AES-256-GCM for
original bodies, HMAC for the ``hash`` masking operator.

Every private key file is read the one way, ``read_or_create``: generated on first use (mode 0600) unless given,
``KeyFileError`` naming the file otherwise. The originals and hash keys may also come from the environment
(``WARDEN_ORIGINALS_KEY``, ``WARDEN_PII_HASH_KEY``: base64) so they never touch the disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ORIGINALS_KEY_ENV = "WARDEN_ORIGINALS_KEY"
PII_HASH_KEY_ENV = "WARDEN_PII_HASH_KEY"


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not a key of the expected kind; the message names the file."""


def read_key_file(path: Path, what: str) -> bytes:
    """The bytes of the key file ``path``; ``KeyFileError`` naming it and ``what`` it holds if it cannot be read."""
    try:
        return path.read_bytes()
    except OSError as e:
        raise KeyFileError(f"{path}: cannot read the {what} ({e.strerror})") from None


def read_or_create(path: str | Path, create: Callable[[], bytes], what: str) -> bytes:
    """The bytes of the private key file ``path``; if it is missing, ``create()`` is written there first, mode 0600
    (its folder made). ``KeyFileError`` naming the file if it can be neither created nor read."""
    path = Path(path)
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                _create_private(path, create)
            except FileExistsError:
                pass  # another process created it meanwhile: read theirs
        except OSError as e:
            raise KeyFileError(f"{path}: cannot create the {what} ({e.strerror})") from None
    return read_key_file(path, what)


def _create_private(path: Path, create: Callable[[], bytes]) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(create())
    except BaseException:
        path.unlink(missing_ok=True)  # never leave an empty key behind
        raise


def _random_key() -> bytes:
    return base64.b64encode(os.urandom(32)) + b"\n"


def _base64_key(text: bytes, source: str, expected: str) -> bytes:
    try:
        return base64.b64decode(text.strip(), validate=True)
    except binascii.Error as e:
        raise KeyFileError(f"{source}: expected base64 of {expected} ({e})") from None


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_ed25519(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from ``path`` (PEM), generated there first if missing, public key beside it as .pub."""
    path = Path(path)

    def create() -> bytes:
        private = Ed25519PrivateKey.generate()
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path.with_suffix(".pub").write_bytes(public_pem)
        return private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )

    pem = read_or_create(path, create, "Ed25519 private key")
    try:
        private = serialization.load_pem_private_key(pem, password=None)
    except ValueError as e:
        raise KeyFileError(f"{path}: not a readable PEM private key ({e})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key")
    return private


def keyring_dir(path: str | Path) -> Path:
    """Where the keys a rotation retired are kept, beside ``path`` (a key file or its .pub): ``NAME.keys/``."""
    return Path(path).with_suffix(".keys")


def public_pem(public: Ed25519PublicKey) -> bytes:
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def remember_public_key(path: str | Path, public: Ed25519PublicKey) -> None:
    """Keep ``public`` in the signing keyring beside the key file ``path`` (``NAME.keys/KEY_ID.pub``), so what it
    signed still verifies after a rotation. Best effort: a read-only key folder keeps the .pub beside the key."""
    ring = keyring_dir(path)
    target = ring / f"{key_id(public)}.pub"
    if target.exists():
        return
    try:
        ring.mkdir(parents=True, exist_ok=True)
        target.write_bytes(public_pem(public))
    except OSError:
        pass


def signing_keyring(pub_path: str | Path) -> dict[str, Ed25519PublicKey]:
    """Every signing public key the gateway has used, by key id: ``pub_path`` (the current one) and every .pub in
    its keyring folder. ``KeyFileError`` if there is none, or one cannot be read."""
    pub_path = Path(pub_path)
    ring = keyring_dir(pub_path)
    paths = ([pub_path] if pub_path.exists() or not ring.is_dir() else []) + (
        sorted(ring.glob("*.pub")) if ring.is_dir() else [])
    keys = [load_public_key(p) for p in paths]
    if not keys:
        raise KeyFileError(f"{pub_path}: no public key there nor in {ring}")
    return {key_id(k): k for k in keys}


class SigningKey:
    """Ed25519 private key at ``path``, public key beside it at ``path`` with suffix ``.pub``, and in the keyring
    (``NAME.keys/KEY_ID.pub``) with every key used before it."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def load_or_create(cls, path: str | Path) -> SigningKey:
        key = cls(load_or_create_ed25519(path))
        remember_public_key(path, key.public)
        return key

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    pem = read_key_file(path, "Ed25519 public key")
    try:
        public = serialization.load_pem_public_key(pem)
    except ValueError as e:
        raise KeyFileError(f"{path}: not a readable PEM public key ({e})") from None
    if not isinstance(public, Ed25519PublicKey):
        raise KeyFileError(f"{path}: expected an Ed25519 public key")
    return public


def verify_signature(public: Ed25519PublicKey, message: bytes, signature_b64: str) -> bool:
    try:
        public.verify(base64.b64decode(signature_b64), message)
        return True
    except (InvalidSignature, binascii.Error, ValueError):
        return False


def secret_key_id(key: bytes) -> str:
    """A name for a secret key (an originals or hash key) that reveals nothing of it: what a ``keys`` event records."""
    return hashlib.sha256(b"warden-key-id|" + key).hexdigest()[:16]


def retired_keys(path: str | Path) -> list[bytes]:
    """The keys a rotation retired from the key file ``path`` (``NAME.keys/ID.key``, base64), newest first."""
    ring = keyring_dir(path)
    if not ring.is_dir():
        return []
    found = sorted(ring.glob("*.key"), key=lambda p: p.stat().st_mtime_ns, reverse=True)
    return [_base64_key(read_key_file(p, "retired key"), str(p), "a key") for p in found]


class OriginalsKey:
    """AES-256-GCM key for original bodies. Ciphertext is ``nonce(12) || ct+tag``, bound to the flow id.

    ``retired``: keys a rotation replaced, kept to decrypt what they encrypted (GCM's tag tells which key fits)."""

    def __init__(self, key: bytes, retired: list[bytes] | None = None) -> None:
        if len(key) != 32 or any(len(k) != 32 for k in retired or []):
            raise KeyFileError("the originals key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)
        self.key_id = secret_key_id(key)
        self._retired = [AESGCM(k) for k in retired or []]

    @classmethod
    def parse(cls, text: bytes, source: str) -> OriginalsKey:
        """The key written in ``text`` (base64 of 32 bytes); ``KeyFileError`` naming ``source`` otherwise."""
        key = _base64_key(text, source, "32 random bytes")
        if len(key) != 32:
            raise KeyFileError(f"{source}: expected base64 of 32 random bytes, not {len(key)} (AES-256)")
        return cls(key)

    @classmethod
    def from_env(cls) -> OriginalsKey | None:
        from_env = os.environ.get(ORIGINALS_KEY_ENV)
        return cls.parse(from_env.encode(), ORIGINALS_KEY_ENV) if from_env else None

    @classmethod
    def load_or_create(cls, path: str | Path) -> OriginalsKey:
        if (from_env := cls.from_env()) is not None:
            return from_env
        return cls._with_retired(cls.parse(read_or_create(path, _random_key, "originals key"), str(path)), path)

    @classmethod
    def load(cls, path: str | Path) -> OriginalsKey:
        return cls._with_retired(cls.parse(read_key_file(Path(path), "originals key"), str(path)), path)

    @staticmethod
    def _with_retired(current: OriginalsKey, path: str | Path) -> OriginalsKey:
        retired = retired_keys(path)
        if any(len(k) != 32 for k in retired):
            raise KeyFileError(f"{keyring_dir(path)}: a retired originals key is not 32 bytes (AES-256)")
        current._retired = [AESGCM(k) for k in retired]
        return current

    def encrypt(self, plaintext: bytes, flow_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, flow_id.encode())

    def decrypt(self, blob: bytes, flow_id: str) -> bytes:
        """The original body: with the current key, else a retired one; ``KeyFileError`` if none fits."""
        for aead in (self._aead, *self._retired):
            try:
                return aead.decrypt(blob[:12], blob[12:], flow_id.encode())
            except InvalidTag:
                continue
        raise KeyFileError(f"flow {flow_id}: the original body does not decrypt with this key"
                           f"{f' nor the {len(self._retired)} retired ones' if self._retired else ''}")


def load_or_create_hash_key(path: str | Path) -> bytes:
    """The HMAC key of the ``hash`` masking operator: ``WARDEN_PII_HASH_KEY`` (base64), else ``path``, created if
    missing."""
    if from_env := os.environ.get(PII_HASH_KEY_ENV):
        source, text = PII_HASH_KEY_ENV, from_env.encode()
    else:
        source, text = str(path), read_or_create(path, _random_key, "hash key")
    key = _base64_key(text, source, "at least 16 random bytes")
    if len(key) < 16:
        raise KeyFileError(f"{source}: the hash key must be at least 16 bytes, not {len(key)}")
    return key
