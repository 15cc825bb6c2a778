"""Where the CLI reads the store: the DuckDB file when the gateway is stopped, its admin API when it runs.

DuckDB lets one process hold the file; a running gateway does, so the CLI asks the gateway
instead. Both backends answer through the same query functions (``addons.store.queries``).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

import duckdb
import httpx

from addons.store.chainwalk import verify_store
from addons.store.database import JournalDamaged, StoreError, StoreInUse, connect
from addons.store.events import Event, event_from_json
from addons.store.keys import SigningKey, key_id
from addons.store.proofs import Coverage, cover
from addons.store.queries import flow_events, iter_events, iter_events_until
from addons.store.search import FlowFilter, search_flows, to_query
from addons.store.verification import Keys, Verification

if TYPE_CHECKING:  # the evidence code is loaded only by the commands that build packs
    from addons.evidence.pack import Progress
    from addons.evidence.request import PackRequest


class BackendError(RuntimeError):
    """Neither the file nor the admin API could be reached; the message says what to do."""


class AdminRefused(BackendError):
    """The admin API answered with an error; ``status`` is its HTTP status (404: no such flow)."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class Backend(Protocol):
    where: str

    def flows(self, f: FlowFilter) -> list[dict[str, Any]]: ...
    def flow_events(self, flow_id: str) -> list[Event]: ...
    def events_page(self, after_seq: int, since: datetime | None = None,
                    cursor: str | None = None) -> tuple[list[Event], bool]: ...
    def evidence(self, request: PackRequest, target: Path, key: Callable[[], tuple[SigningKey, Keys]],
                 progress: Progress) -> None: ...
    def events(self, until_seq: int | None = None, after_seq: int = -1) -> Iterator[Event]: ...
    def sign_checkpoint(self) -> dict[str, Any] | None: ...
    def verify(self, keys: Keys, until_seq: int | None, progress: Callable[[int], None]) -> Verification: ...
    def coverage(self, first_seq: int, last_seq: int) -> Coverage | None: ...
    def close(self) -> None: ...


class FileBackend:
    def __init__(self, con: duckdb.DuckDBPyConnection, path: str) -> None:
        self.con = con
        self.path = Path(path)
        self.where = f"file {path}"

    def verify(self, keys: Keys, until_seq: int | None, progress: Callable[[int], None]) -> Verification:
        """The whole store verified here (``addons.store.chainwalk``), hashed by this process: nothing else runs."""
        return verify_store(self.con, keys, until_seq, progress=progress, hash_here=True)

    def flows(self, f: FlowFilter) -> list[dict[str, Any]]:
        return search_flows(self.con, f)

    def flow_events(self, flow_id: str) -> list[Event]:
        return flow_events(self.con, flow_id)

    def events(self, until_seq: int | None = None, after_seq: int = -1) -> Iterator[Event]:
        events = iter_events(self.con, after_seq)
        return events if until_seq is None else iter_events_until(events, until_seq)

    def events_page(self, after_seq: int, since: datetime | None = None,
                    cursor: str | None = None) -> tuple[list[Event], bool]:
        """A page of events after ``after_seq`` (or from ``since``), and whether more follow (``cursor``: for the
        admin API's record)."""
        from addons.siem.feed import PAGE, events_page  # here: only warden siem reads pages

        page = events_page(self.con, after_seq, since)
        return page, len(page) >= PAGE

    def sign_checkpoint(self) -> dict[str, Any] | None:
        """A stopped store has nobody to sign: what a crash left unsigned stays so."""
        return None

    def evidence(self, request: PackRequest, target: Path, key: Callable[[], tuple[SigningKey, Keys]],
                 progress: Progress) -> None:
        """Build and sign the pack here, with ``key()`` (the gateway's signing key file, and the keyring beside it
        that verifies checkpoints signed before a rotation)."""
        from addons.evidence.build import build_zip  # here: only warden evidence builds packs

        signing, keys = key()
        build_zip(self.con, request, signing, target, where=self.where, progress=progress, keys=keys,
                  hash_here=True)

    def coverage(self, first_seq: int, last_seq: int) -> Coverage | None:
        return cover(self.con, first_seq, last_seq)

    def close(self) -> None:
        self.con.close()


def _key_ids(keys: Keys) -> set[str] | None:
    if keys is None:
        return None
    return set(keys) if isinstance(keys, Mapping) else {key_id(keys)}


class AdminBackend:
    _verified: dict[str, Any] | None = None  # what the last POST /api/verify answered

    def __init__(self, admin: str, token: str | None = None) -> None:
        base = admin if admin.startswith("http") else f"http://{admin}"
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.client = httpx.Client(base_url=base, timeout=60, trust_env=False, headers=headers)  # never via a proxy
        self.where = f"admin API {base}"

    def _get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, **params)

    def get(self, path: str, **params: Any) -> Any:
        return self._call("GET", path, **params)

    def post(self, path: str, **params: Any) -> Any:
        """A POST to the admin API (parameters in the query); ``AdminRefused`` on an error answer."""
        return self._call("POST", path, **params)

    def _call(self, method: str, path: str, timeout: float | None = 60, **params: Any) -> Any:
        try:
            response = self.client.request(method, path, params={k: v for k, v in params.items() if v is not None},
                                           timeout=timeout)
        except httpx.HTTPError as e:
            raise BackendError(f"cannot reach the gateway's {self.where}: {e}") from None
        if response.status_code >= 400 and response.status_code not in (409,):
            raise self._refused(path, response)
        return response.json()

    def flows(self, f: FlowFilter) -> list[dict[str, Any]]:
        return self._get("/api/flows", **to_query(f))["flows"]

    def flow_events(self, flow_id: str) -> list[Event]:
        try:
            return [event_from_json(e) for e in self._get(f"/api/flows/{flow_id}")["events"]]
        except AdminRefused as e:
            if e.status == 404:
                return []
            raise

    def events(self, until_seq: int | None = None, after_seq: int = -1) -> Iterator[Event]:
        after = after_seq
        while True:
            page = self._get("/api/events", after_seq=after)
            for data in page["events"]:
                event = event_from_json(data)
                if until_seq is not None and event.seq > until_seq:
                    return
                after = event.seq
                yield event
            if not page["more"]:
                return

    def events_page(self, after_seq: int, since: datetime | None = None,
                    cursor: str | None = None) -> tuple[list[Event], bool]:
        data = self._get("/api/events", after_seq=after_seq, since=since.isoformat() if since else None, cursor=cursor)
        return [event_from_json(e) for e in data["events"]], bool(data["more"])

    def verify(self, keys: Keys, until_seq: int | None, progress: Callable[[int], None]) -> Verification:
        """The gateway's verification of the file it holds (``POST /api/verify``: the chain from its genesis to the
        checkpoint it signed first, every content hashed, as on a stopped store). Paging millions of events out to
        walk them here would take many times longer and check nothing more: the gateway serves the events either
        way. What the CLI adds: every signed head must be by a key of ``keys`` (the auditor's own)."""
        data = self._verified if self._verified is not None else self._call("POST", "/api/verify", timeout=None)
        self._verified = None
        fields = {f.name for f in dataclasses.fields(Verification)}
        result = Verification(**{k: v for k, v in data.items() if k in fields})
        progress(result.events)
        ids = _key_ids(keys)
        stranger = next((h for h in result.heads if ids is not None and h.get("key_id") not in ids), None)
        if stranger is not None and result.ok:
            result.ok, result.bad_seq = False, stranger["seq"]
            result.problem = (f"checkpoint seq={stranger['seq']} is signed by key {stranger['key_id']}, which is not "
                              f"among the given keys ({', '.join(sorted(ids or []))})")
        result.notes.append("verified by the running gateway (every event hashed there); the signed heads' keys "
                            "checked here against the given keys")
        return result

    def sign_checkpoint(self) -> dict[str, Any] | None:
        """Have the gateway sign its head now and verify its chain up to it (``POST /api/verify``), so a verify covers
        the whole chain; ``verify`` then reports that verification."""
        self._verified = self._call("POST", "/api/verify", timeout=None)  # the whole chain: minutes on a large store
        return self._verified["checkpoint"]

    def evidence(self, request: PackRequest, target: Path, key: Callable[[], tuple[SigningKey, Keys]],
                 progress: Progress) -> None:
        """The gateway builds and signs the pack with its own key (``key`` is not used); the zip is saved as
        ``target``."""
        progress.step("built and signed by the gateway")
        try:
            with self.client.stream("POST", "/api/evidence", json=request.as_json(), timeout=None) as response:
                if response.status_code != 200:
                    response.read()
                    raise self._refused("/api/evidence", response)
                with target.open("wb") as f:
                    for chunk in response.iter_bytes():
                        f.write(chunk)
        except httpx.HTTPError as e:
            raise BackendError(f"cannot reach the gateway's {self.where}: {e}") from None

    def _refused(self, path: str, response: httpx.Response) -> AdminRefused:
        try:
            message = response.json()["error"]["message"]
        except (ValueError, KeyError, TypeError):
            message = response.text[:200]
        return AdminRefused(f"{self.where}{path}: HTTP {response.status_code}: {message}", response.status_code)

    def coverage(self, first_seq: int, last_seq: int) -> Coverage | None:
        """The gateway signs its head first when no checkpoint covers ``last_seq`` yet."""
        try:
            return Coverage.from_dict(self._get("/api/proof", first_seq=first_seq, last_seq=last_seq))
        except AdminRefused as e:
            if e.status == 404:
                return None
            raise

    def close(self) -> None:
        self.client.close()


def open_backend(db: str, admin: str, token: Callable[[], str | None] = lambda: None) -> Backend:
    """The file if it can be opened, else the admin API of the gateway that holds it (with ``token()``).
    A damaged journal raises ``JournalDamaged`` (verify reports it as a broken chain)."""
    try:
        return FileBackend(connect(db, read_only=True), db)
    except StoreInUse:
        pass  # the gateway holds the file: ask it
    except JournalDamaged:
        raise
    except StoreError as e:
        raise BackendError(str(e)) from None
    backend = AdminBackend(admin, token())
    try:
        backend.client.get("/healthz")  # reachable is enough: a starting gateway answers 503 but serves queries
    except httpx.HTTPError as e:
        raise BackendError(f"{db} is held by a running gateway, but {e}; pass --admin HOST:PORT") from None
    return backend
