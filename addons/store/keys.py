"""The gateway's keys: Ed25519 for signing chain checkpoints, AES-256-GCM for original bodies.

Both are generated on first use (mode 0600) unless given; the originals key may also come from
the environment (``WARDEN_ORIGINALS_KEY``, base64 of 32 bytes) so it never touches the disk.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import os
from pathlib import Path

from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

ORIGINALS_KEY_ENV = "WARDEN_ORIGINALS_KEY"
PII_HASH_KEY_ENV = "WARDEN_PII_HASH_KEY"


class KeyFileError(ValueError):
    """A key file is missing, unreadable or not a key of the expected kind."""


def _write_private(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def key_id(public: Ed25519PublicKey) -> str:
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(raw).hexdigest()[:16]


def load_or_create_ed25519(path: str | Path) -> Ed25519PrivateKey:
    """An Ed25519 private key from ``path`` (PEM), generated there first if missing, public key beside it as .pub."""
    path = Path(path)
    if not path.exists():
        private = Ed25519PrivateKey.generate()
        pem = private.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _write_private(path, pem)
        public_pem = private.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        path.with_suffix(".pub").write_bytes(public_pem)
    try:
        private = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as e:
        raise KeyFileError(f"{path}: not a readable PEM private key ({e})") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise KeyFileError(f"{path}: expected an Ed25519 private key")
    return private


class SigningKey:
    """Ed25519 private key at ``path``, public key beside it at ``path`` with suffix ``.pub``."""

    def __init__(self, private: Ed25519PrivateKey) -> None:
        self._private = private
        self.public = private.public_key()
        self.key_id = key_id(self.public)

    @classmethod
    def load_or_create(cls, path: str | Path) -> SigningKey:
        return cls(load_or_create_ed25519(path))

    def sign(self, message: bytes) -> str:
        return base64.b64encode(self._private.sign(message)).decode()


def load_public_key(path: str | Path) -> Ed25519PublicKey:
    path = Path(path)
    try:
        public = serialization.load_pem_public_key(path.read_bytes())
    except (OSError, ValueError) as e:
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


class OriginalsKey:
    """AES-256-GCM key for original bodies. Ciphertext is ``nonce(12) || ct+tag``, bound to the flow id."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 32:
            raise KeyFileError("the originals key must be 32 bytes (AES-256)")
        self._aead = AESGCM(key)

    @classmethod
    def from_env(cls) -> OriginalsKey | None:
        from_env = os.environ.get(ORIGINALS_KEY_ENV)
        if not from_env:
            return None
        try:
            return cls(base64.b64decode(from_env, validate=True))
        except (binascii.Error, KeyFileError) as e:
            raise KeyFileError(f"{ORIGINALS_KEY_ENV}: expected base64 of 32 random bytes ({e})") from None

    @classmethod
    def load_or_create(cls, path: str | Path) -> OriginalsKey:
        if (from_env := cls.from_env()) is not None:
            return from_env
        path = Path(path)
        if not path.exists():
            _write_private(path, base64.b64encode(os.urandom(32)) + b"\n")
        return cls.load(path)

    @classmethod
    def load(cls, path: str | Path) -> OriginalsKey:
        path = Path(path)
        try:
            return cls(base64.b64decode(path.read_bytes().strip(), validate=True))
        except OSError as e:
            raise KeyFileError(f"{path}: cannot read the originals key ({e.strerror})") from None
        except (binascii.Error, KeyFileError) as e:
            raise KeyFileError(f"{path}: expected base64 of 32 random bytes ({e})") from None

    def encrypt(self, plaintext: bytes, flow_id: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + self._aead.encrypt(nonce, plaintext, flow_id.encode())

    def decrypt(self, blob: bytes, flow_id: str) -> bytes:
        try:
            return self._aead.decrypt(blob[:12], blob[12:], flow_id.encode())
        except InvalidTag:
            raise KeyFileError(f"flow {flow_id}: the original body does not decrypt with this key") from None


def load_or_create_hash_key(path: str | Path) -> bytes:
    """The HMAC key of the ``hash`` masking operator: ``WARDEN_PII_HASH_KEY`` (base64), else ``path``, created if missing."""
    if from_env := os.environ.get(PII_HASH_KEY_ENV):
        source, text = PII_HASH_KEY_ENV, from_env.encode()
    else:
        path = Path(path)
        if not path.exists():
            _write_private(path, base64.b64encode(os.urandom(32)) + b"\n")
        try:
            source, text = str(path), path.read_bytes().strip()
        except OSError as e:
            raise KeyFileError(f"{path}: cannot read the hash key ({e.strerror})") from None
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error as e:
        raise KeyFileError(f"{source}: expected base64 of at least 16 random bytes ({e})") from None
    if len(key) < 16:
        raise KeyFileError(f"{source}: the hash key must be at least 16 bytes, not {len(key)}")
    return key
