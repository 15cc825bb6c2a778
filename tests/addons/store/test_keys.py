"""Private key files, read or created one way: mode 0600 on creation, ``KeyFileError`` naming the file."""

from __future__ import annotations

import base64
import os
import stat
from pathlib import Path

import pytest

from addons.auth.issuer import EmbeddedIssuer
from addons.store.keys import (
    ORIGINALS_KEY_ENV,
    PII_HASH_KEY_ENV,
    KeyFileError,
    OriginalsKey,
    SigningKey,
    load_or_create_hash_key,
    load_public_key,
    read_or_create,
)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_created_once_with_mode_0600_in_a_new_folder(tmp_path: Path) -> None:
    path = tmp_path / "new" / "k.key"
    made = []
    assert read_or_create(path, lambda: made.append(1) or b"secret", "test key") == b"secret"
    assert read_or_create(path, lambda: made.append(1) or b"other", "test key") == b"secret"
    assert made == [1] and mode(path) == 0o600


def test_every_key_kind_is_created_private(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(ORIGINALS_KEY_ENV, raising=False)
    monkeypatch.delenv(PII_HASH_KEY_ENV, raising=False)
    signing = SigningKey.load_or_create(tmp_path / "sign.key")
    assert load_public_key(tmp_path / "sign.pub").public_bytes_raw() == signing.public.public_bytes_raw()
    assert SigningKey.load_or_create(tmp_path / "sign.key").key_id == signing.key_id
    EmbeddedIssuer.load_or_create(tmp_path / "issuer.key")
    originals = OriginalsKey.load_or_create(tmp_path / "originals.key")
    blob = originals.encrypt(b"body", "flow-1")
    assert OriginalsKey.load(tmp_path / "originals.key").decrypt(blob, "flow-1") == b"body"
    assert len(load_or_create_hash_key(tmp_path / "hash.key")) == 32
    for name in ("sign.key", "issuer.key", "originals.key", "hash.key"):
        assert mode(tmp_path / name) == 0o600, name


def test_unreadable_and_wrong_keys_name_the_file(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv(ORIGINALS_KEY_ENV, raising=False)
    monkeypatch.delenv(PII_HASH_KEY_ENV, raising=False)
    folder = tmp_path / "a-folder.key"
    folder.mkdir()
    with pytest.raises(KeyFileError, match=f"^{folder}: cannot read the Ed25519 private key"):
        SigningKey.load_or_create(folder)
    with pytest.raises(KeyFileError, match=f"^embedded issuer key: {folder}: cannot read"):
        EmbeddedIssuer.load_or_create(folder)
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'none.key'}: cannot read the originals key"):
        OriginalsKey.load(tmp_path / "none.key")
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'none.pub'}: cannot read the Ed25519 public key"):
        load_public_key(tmp_path / "none.pub")
    (tmp_path / "bad.key").write_text("not pem")
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'bad.key'}: not a readable PEM private key"):
        SigningKey.load_or_create(tmp_path / "bad.key")
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'bad.key'}: expected base64 of 32 random bytes"):
        OriginalsKey.load_or_create(tmp_path / "bad.key")
    (tmp_path / "short.key").write_bytes(base64.b64encode(os.urandom(8)))
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'short.key'}: expected base64 of 32 random bytes, not 8"):
        OriginalsKey.load(tmp_path / "short.key")
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'short.key'}: the hash key must be at least 16 bytes, not 8"):
        load_or_create_hash_key(tmp_path / "short.key")
    monkeypatch.setenv(ORIGINALS_KEY_ENV, "***")
    with pytest.raises(KeyFileError, match=f"^{ORIGINALS_KEY_ENV}: expected base64 of 32 random bytes"):
        OriginalsKey.load_or_create(tmp_path / "unused.key")
    assert not (tmp_path / "unused.key").exists()


def test_a_key_that_cannot_be_created_names_the_file(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("x")
    with pytest.raises(KeyFileError, match=f"^{tmp_path / 'file' / 'k.key'}: cannot create the hash key"):
        load_or_create_hash_key(tmp_path / "file" / "k.key")

    def failing() -> bytes:
        raise PermissionError(13, "Permission denied")

    with pytest.raises(KeyFileError, match="cannot create the test key \\(Permission denied\\)"):
        read_or_create(tmp_path / "half.key", failing, "test key")
    assert not (tmp_path / "half.key").exists()  # never an empty key left behind
