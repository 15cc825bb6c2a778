"""Incident holds (``warden hold``): flows, or every flow of a user, that a retention purge must spare.

A hold lives on the chain only: a ``hold`` event placed it (``fate`` ``placed``: who in ``user``, why in ``reason``,
the held flow or user and the hold's id in ``detail``) and another released it (``fate`` ``released``, its own
who and why). The holds in force are read back from those events, the same way on the file and in the gateway.
"""

from __future__ import annotations

import uuid
from typing import Any

import duckdb

from addons.store.database import Store
from addons.store.events import Event
from addons.store.queries import events_of_kind


class HoldError(ValueError):
    """A hold cannot be placed or released as asked; the message says why."""


class HoldNotFound(HoldError):
    """No hold in force has that id."""


def active_holds(con: duckdb.DuckDBPyConnection) -> list[dict[str, Any]]:
    """The holds in force, oldest first: ``hold_id``, ``flow_id`` or ``user``, ``reason``, ``by``, ``placed_at``,
    ``seq``."""
    holds: dict[str, dict[str, Any]] = {}
    for event in events_of_kind(con, "hold"):
        detail = event.detail or {}
        hold_id = str(detail.get("hold_id"))
        if event.fate == "placed":
            holds[hold_id] = {"hold_id": hold_id, "flow_id": detail.get("flow_id"), "user": detail.get("user"),
                              "reason": event.reason, "by": event.user, "placed_at": event.ts.isoformat(),
                              "seq": event.seq}
        elif event.fate == "released":
            holds.pop(hold_id, None)
    return list(holds.values())


def held(con: duckdb.DuckDBPyConnection) -> tuple[list[str], list[str]]:
    """(the flows held by a flow hold, the users held by a user hold), sorted."""
    holds = active_holds(con)
    return (sorted({h["flow_id"] for h in holds if h["flow_id"]}), sorted({h["user"] for h in holds if h["user"]}))


def place_hold(store: Store, actor: str, reason: str, flow_id: str | None = None,
               user: str | None = None) -> dict[str, Any]:
    """Place a hold on one flow or on every flow of one user (``HoldError`` unless exactly one is given, with a
    reason), as a ``hold`` event, signed at once."""
    if (flow_id is None) == (user is None):
        raise HoldError("hold either a flow (--flow ID) or a user (--user SUB), not both nor neither")
    if not reason or not reason.strip():
        raise HoldError("a hold needs a reason (--reason TEXT): the record says why it was placed")
    target = {"flow_id": flow_id} if flow_id is not None else {"user": user}

    def task(writer: Store) -> dict[str, Any]:
        if flow_id is not None:
            cursor = writer.reader()
            try:
                found = cursor.execute("SELECT count(*) FROM events WHERE flow_id = ?", [flow_id]).fetchall()[0][0]
            finally:
                cursor.close()
            if not found:
                raise HoldError(f"no flow {flow_id} in the record (give its whole id)")
        event = Event(kind="hold", user=actor, fate="placed", reason=reason.strip(),
                      detail={"hold_id": f"hold-{uuid.uuid4().hex[:12]}", **target})
        writer.append_now(event)
        writer.sign_now()
        assert event.detail is not None
        return {"hold_id": event.detail["hold_id"], **target, "reason": event.reason, "by": actor, "seq": event.seq}

    return store.on_writer(task)


def release_hold(store: Store, actor: str, hold_id: str, reason: str) -> dict[str, Any]:
    """Release a hold in force (``HoldError`` if there is none with that id, or no reason), as a ``hold`` event."""
    if not reason or not reason.strip():
        raise HoldError("releasing a hold needs a reason (--reason TEXT)")

    def task(writer: Store) -> dict[str, Any]:
        cursor = writer.reader()
        try:
            holds = {h["hold_id"]: h for h in active_holds(cursor)}
        finally:
            cursor.close()
        if hold_id not in holds:
            raise HoldNotFound(f"no hold {hold_id} in force (warden hold list shows them)")
        hold = holds[hold_id]
        target = {k: hold[k] for k in ("flow_id", "user") if hold[k] is not None}
        event = Event(kind="hold", user=actor, fate="released", reason=reason.strip(),
                      detail={"hold_id": hold_id, **target})
        writer.append_now(event)
        writer.sign_now()
        return {"hold_id": hold_id, **target, "reason": event.reason, "by": actor, "seq": event.seq}

    return store.on_writer(task)
