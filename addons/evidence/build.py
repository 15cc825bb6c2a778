"""A pack as asked (``PackRequest``), built in a temporary folder and handed over as one zip: what the admin API
serves and what the CLI writes from a stopped store."""

from __future__ import annotations

import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import duckdb

from addons.evidence.interaction import build_interaction
from addons.evidence.manifest import zip_folder
from addons.evidence.pack import Progress, build_pack
from addons.evidence.request import PackRequest
from addons.store.keys import SigningKey
from addons.store.verification import Keys


def build_zip(con: duckdb.DuckDBPyConnection, request: PackRequest, key: SigningKey, target: Path, *, where: str,
              signed_until: int | None = None, progress: Progress | None = None, keys: Keys = None,
              hash_here: bool = False) -> dict[str, Any]:
    """Write the pack ``request`` asks for to the zip ``target``, signed with ``key``; returns what it holds.
    ``keys``: the signing keyring the chain is verified with (default: ``key`` alone); ``hash_here``: see
    ``build_pack``."""
    with tempfile.TemporaryDirectory(prefix="warden-evidence-") as tmp:
        folder = Path(tmp) / "pack"
        folder.mkdir()
        if request.flow_id is not None:
            made = build_interaction(con, request.flow_id, key, folder,
                                     keys=keys if isinstance(keys, Mapping) else None)
        else:
            assert request.filter is not None
            made = build_pack(con, request.filter, key, folder, where=where, signed_until=signed_until,
                              progress=progress, keys=keys, hash_here=hash_here)
        zip_folder(folder, target)
    return made
