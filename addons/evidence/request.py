"""What a pack is asked for: a period and filters, or one flow; in the JSON form the admin API receives."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from addons.store.search import FlowFilter

FILTERS = ("since", "until", "user", "group", "host", "entity")


class EvidenceError(ValueError):
    """A pack cannot be made as asked (bad filter, no such flow, nothing signed yet); the message says what to do."""


class NoSuchFlow(EvidenceError):
    """The flow asked for is not in the record."""


@dataclass
class PackRequest:
    """A pack for ``filter`` (a period and filters), or the one-interaction pack of ``flow_id``."""

    filter: FlowFilter | None = None
    flow_id: str | None = None

    def as_json(self) -> dict[str, Any]:
        return {"flow": self.flow_id} if self.flow_id is not None else filter_json(self.filter or FlowFilter())

    @classmethod
    def from_json(cls, data: Any) -> PackRequest:
        """``{"flow": ID}`` or ``{"since": ISO, "until": ISO, "user": ..., "group": ..., "host": ..., "entity": ...}``
        (every key optional); ``EvidenceError`` naming the bad field."""
        if not isinstance(data, dict):
            raise EvidenceError("expected a JSON object: {\"flow\": ID} or the filters " + ", ".join(FILTERS))
        if "flow" in data:
            if set(data) != {"flow"} or not isinstance(data["flow"], str) or not data["flow"]:
                raise EvidenceError("flow: a flow id, alone (a one-interaction pack takes no filter)")
            return cls(flow_id=data["flow"])
        unknown = sorted(set(data) - set(FILTERS))
        if unknown:
            raise EvidenceError(f"unknown filter {', '.join(unknown)}; a pack filters on {', '.join(FILTERS)}")
        values: dict[str, Any] = {k: v for k, v in data.items() if v is not None}
        for name, value in values.items():
            if not isinstance(value, str):
                raise EvidenceError(f"{name}: expected a string")
            if name in ("since", "until"):
                try:
                    moment = datetime.fromisoformat(value)
                except ValueError:
                    raise EvidenceError(f"{name}: not an ISO 8601 time: {value!r}") from None
                if moment.tzinfo is not None:
                    raise EvidenceError(f"{name}: give naive UTC (no offset): {value!r}")
                values[name] = moment
        return cls(filter=FlowFilter(**values, limit=None))


def filter_json(f: FlowFilter) -> dict[str, Any]:
    return {"since": f.since.isoformat() if f.since else None, "until": f.until.isoformat() if f.until else None,
            "user": f.user, "group": f.group, "host": f.host, "entity": f.entity}
