"""The manifest of a pack, its signature, and the check of a pack alone (a zip or a folder; no database).

``MANIFEST.sha256`` lists every other file as ``sha256sum`` writes it (``<hex>  <name>``, sorted);
``MANIFEST.sha256.sig`` is the raw 64-byte Ed25519 signature of the manifest's bytes, which is what
``openssl pkeyutl -verify -rawin -sigfile`` reads; ``signing-key.pub`` is the public key (PEM) and
``signing-key.fingerprint`` its SHA-256 over the raw 32 key bytes (hex), which the operator gives the auditor
out of band. Its first 16 digits are the ``key_id`` checkpoints carry.

The check names the file a change hit. A valid signature vouches for the manifest, so a file that differs
from its line was changed. An invalid one means the key, the manifest or the signature changed: the key if it
no longer matches its fingerprint file, the manifest if it no longer matches the files, else the signature.
"""

from __future__ import annotations

import base64
import hashlib
import re
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from addons.store.keys import SigningKey, public_pem

MANIFEST = "MANIFEST.sha256"
SIGNATURE = "MANIFEST.sha256.sig"
PUBLIC_KEY = "signing-key.pub"
FINGERPRINT = "signing-key.fingerprint"
UNLISTED = (MANIFEST, SIGNATURE)
LINE = re.compile(r"([0-9a-f]{64})  ([A-Za-z0-9._-]+)")
CHUNK = 1 << 20


def fingerprint(public: Ed25519PublicKey) -> str:
    """SHA-256 of the raw 32-byte public key, hex (``openssl pkey -pubin -outform DER | tail -c 32 | sha256sum``)."""
    return hashlib.sha256(public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)).hexdigest()


def _sha256(f: IO[bytes]) -> str:
    digest = hashlib.sha256()
    while chunk := f.read(CHUNK):
        digest.update(chunk)
    return digest.hexdigest()


def sign_folder(folder: Path, key: SigningKey) -> str:
    """Put the key, its fingerprint, the manifest of every file in ``folder`` and its signature there; returns the
    key's fingerprint. The folder must be flat (a pack has no sub-folders)."""
    (folder / PUBLIC_KEY).write_bytes(public_pem(key.public))
    print_ = fingerprint(key.public)
    (folder / FINGERPRINT).write_text(print_ + "\n")
    lines = []
    for path in sorted(folder.iterdir()):
        if path.name in UNLISTED:
            continue
        if not path.is_file() or not LINE.fullmatch(f"{'0' * 64}  {path.name}"):
            raise ValueError(f"{path}: a pack holds plain files with simple names only")
        with path.open("rb") as f:
            lines.append(f"{_sha256(f)}  {path.name}\n")
    manifest = "".join(lines).encode()
    (folder / MANIFEST).write_bytes(manifest)
    (folder / SIGNATURE).write_bytes(base64.b64decode(key.sign(manifest)))
    return print_


STORED = (".parquet",)  # compressed already: deflating them again costs time and saves nothing


def zip_folder(folder: Path, target: Path) -> None:
    """The pack's files at the root of a zip (``unzip -d DIR`` gives the folder back). Text is deflated at the
    fastest level: a pack of a million flows is mostly JSONL and CSV, where level 6 makes the zip a quarter
    smaller in three times the time (1,000,000 flows: 183 MB in 3 s at level 1, 134 MB in 10 s at level 6)."""
    with zipfile.ZipFile(target, "w", compression=zipfile.ZIP_DEFLATED, compresslevel=1) as z:
        for path in sorted(folder.iterdir()):
            z.write(path, path.name, compress_type=zipfile.ZIP_STORED if path.suffix in STORED else None)


class Pack:
    """The files of a pack, in a zip or a folder: names, and each file opened for reading."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._zip = zipfile.ZipFile(path) if path.is_file() else None
        if self._zip is None and not path.is_dir():
            raise FileNotFoundError(f"{path}: no such pack (a .zip or a folder)")

    def names(self) -> list[str]:
        if self._zip is not None:
            # Every entry, directories and duplicates included: a pack is flat and each name once, so the manifest
            # check refuses them (a zip with a name twice shows one copy to one reader and the other to another).
            return [i.filename for i in self._zip.infolist()]
        return sorted(str(p.relative_to(self.path)) for p in self.path.rglob("*") if not p.is_dir())

    @contextmanager
    def open(self, name: str) -> Iterator[IO[bytes]]:
        if self._zip is not None:
            with self._zip.open(name) as f:
                yield f
        else:
            with (self.path / name).open("rb") as f:
                yield f

    def read(self, name: str) -> bytes:
        with self.open(name) as f:
            return f.read()

    def close(self) -> None:
        if self._zip is not None:
            self._zip.close()


@dataclass
class PackCheck:
    """The outcome of checking a pack: ``problems`` each name a file; ``fingerprint`` is the pack's key's."""

    ok: bool = True
    fingerprint: str | None = None
    files: int = 0
    problems: list[str] = field(default_factory=list)
    public_key: Ed25519PublicKey | None = None

    def bad(self, message: str) -> None:
        self.ok = False
        self.problems.append(message)


def check_pack(pack: Pack, pinned: Ed25519PublicKey | None = None) -> PackCheck:
    """Check ``pack`` alone: the signature of the manifest (by ``pinned``, if given, else by the pack's own key),
    every listed file present with its hash, and no file unlisted."""
    result = PackCheck()
    names = pack.names()
    for needed in (MANIFEST, SIGNATURE, PUBLIC_KEY, FINGERPRINT):
        if needed not in names:
            result.bad(f"{needed}: missing from the pack")
    if not result.ok:
        return result
    manifest = pack.read(MANIFEST)
    listed, unreadable = _parse_manifest(manifest)
    differing = _differing(pack, names, listed)
    key, key_problem = _pack_key(pack)
    result.public_key = key
    result.fingerprint = fingerprint(key) if key is not None else None
    if pinned is not None and key is not None and fingerprint(pinned) != result.fingerprint:
        result.bad(f"{PUBLIC_KEY}: the pack is signed by key {result.fingerprint}, not by the pinned key "
                   f"{fingerprint(pinned)} (a key swapped for another: do not trust this pack)")
        return result
    verifier = pinned or key
    signed = verifier is not None and _signed(verifier, manifest, pack.read(SIGNATURE))
    if signed:
        result.files = len(listed)
        for problem in differing:
            result.bad(problem)
        return result
    if key_problem is not None:
        result.bad(key_problem)
    elif unreadable or differing:
        result.bad(f"{MANIFEST}: changed: its signature does not hold and it no longer matches the pack "
                   f"({(unreadable + differing)[0]})")
    else:
        result.bad(f"{SIGNATURE}: not a valid signature of {MANIFEST} by key {result.fingerprint} (the signature "
                   "was changed, or made with another key)")
    return result


def _parse_manifest(manifest: bytes) -> tuple[dict[str, str], list[str]]:
    listed: dict[str, str] = {}
    unreadable = []
    text = manifest.decode("utf-8", "replace")
    if not text.endswith("\n"):
        unreadable.append("it does not end with a newline")
    for number, line in enumerate(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n"), 1):
        m = LINE.fullmatch(line)
        if m is None or m[2] in UNLISTED or m[2] in listed:
            unreadable.append(f"line {number} is not '<sha256>  <file>' of a file listed once")
            continue
        listed[m[2]] = m[1]
    return listed, unreadable


def _differing(pack: Pack, names: list[str], listed: dict[str, str]) -> list[str]:
    """Each listed file missing or with another hash, and each file not listed."""
    problems = []
    for name, want in listed.items():
        if name not in names:
            problems.append(f"{name}: listed in {MANIFEST} but missing from the pack")
            continue
        try:
            with pack.open(name) as f:
                got = _sha256(f)
        except (zipfile.BadZipFile, OSError, EOFError) as e:
            problems.append(f"{name}: unreadable ({e}): the file or the zip around it was changed")
            continue
        if got != want:
            problems.append(f"{name}: changed: its SHA-256 is {got}, the manifest says {want}")
    problems += [f"{name}: not listed in {MANIFEST} (a file added to the pack)"
                 for name in names if name not in listed and name not in UNLISTED]
    seen: set[str] = set()
    for name in names:
        if name in seen:
            problems.append(f"{name}: in the pack twice (one reader would show one copy, another the other)")
        seen.add(name)
    return problems


def _pack_key(pack: Pack) -> tuple[Ed25519PublicKey | None, str | None]:
    """The pack's public key, and why it cannot be trusted as the signer if its file was changed."""
    try:
        key = serialization.load_pem_public_key(pack.read(PUBLIC_KEY))
    except ValueError:
        return None, f"{PUBLIC_KEY}: changed: not a readable PEM public key"
    if not isinstance(key, Ed25519PublicKey):
        return None, f"{PUBLIC_KEY}: changed: not an Ed25519 public key"
    stated = pack.read(FINGERPRINT).decode("ascii", "replace").strip()
    if stated != fingerprint(key):
        return key, (f"{PUBLIC_KEY}: changed: its fingerprint {fingerprint(key)} is not the one {FINGERPRINT} "
                     f"states ({stated}), and the manifest's signature does not hold")
    return key, None


def _signed(public: Ed25519PublicKey, manifest: bytes, signature: bytes) -> bool:
    try:
        public.verify(signature, manifest)
        return True
    except InvalidSignature:
        return False
