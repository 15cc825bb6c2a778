"""A review rule's terms as the approval holds them, and when its approvals are enough.

An approval keeps a snapshot of its rule's terms (``Terms``), taken when the request was held: the rules file
may be reloaded meanwhile, and the request is decided under the rule it was held under.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Terms:
    """The deciding rule's name and its ``review`` block (durations in seconds)."""

    rule: str
    approvers: tuple[str, ...]
    min_approvals: int = 1
    one_from_each_group: bool = False
    skip_groups: tuple[str, ...] = ()
    timeout: float = 120.0
    mode: str = "hold"
    ttl: float = 3600.0
    window: float | None = None

    @classmethod
    def of(cls, rule: str, review: Mapping[str, Any]) -> Terms:
        """The terms of ``rule`` from its review block as policy snapshot it (``Decision.review``)."""
        return cls(rule=rule, approvers=tuple(review["approvers"]), min_approvals=int(review["min_approvals"]),
                   one_from_each_group=bool(review["one_from_each_group"]),
                   skip_groups=tuple(review.get("skip_groups") or ()), timeout=float(review["timeout"]),
                   mode=str(review["mode"]), ttl=float(review["ttl"]),
                   window=None if review.get("window") is None else float(review["window"]))

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Terms:
        return cls.of(str(data["rule"]), data)

    def as_json(self) -> dict[str, Any]:
        out = asdict(self)
        out["approvers"], out["skip_groups"] = list(self.approvers), list(self.skip_groups)
        return out

    def may_approve(self, groups: Sequence[str]) -> bool:
        """Whether a member of ``groups`` is one of this rule's approvers."""
        return bool(set(groups) & set(self.approvers))

    def skips(self, groups: Sequence[str]) -> bool:
        """Whether a caller in ``groups`` passes without review."""
        return bool(set(groups) & set(self.skip_groups))

    def enough(self, voters: Sequence[tuple[str, Sequence[str]]]) -> bool:
        """Whether approvals by ``voters`` (distinct approvers, each with their groups) satisfy the terms: at least
        ``min_approvals`` of them and, with ``one_from_each_group``, a different approver for each group."""
        if len(voters) < self.min_approvals:
            return False
        return not self.one_from_each_group or _each_group_has_its_own(self.approvers, voters)

    def missing(self, voters: Sequence[tuple[str, Sequence[str]]]) -> str:
        """What the approvals still lack, in words (for the approver's view)."""
        needs = []
        if len(voters) < self.min_approvals:
            needs.append(f"{self.min_approvals - len(voters)} more approval(s)")
        if self.one_from_each_group and not _each_group_has_its_own(self.approvers, voters):
            needs.append(f"one approver from each of {', '.join(self.approvers)}")
        return " and ".join(needs)


def _each_group_has_its_own(groups: Sequence[str], voters: Sequence[tuple[str, Sequence[str]]]) -> bool:
    """A matching of groups to distinct voters who belong to them (augmenting paths; a handful of each)."""
    holder: dict[str, str] = {}  # voter -> the group they stand for

    def place(group: str, seen: set[str]) -> bool:
        for voter, member_of in voters:
            if group in member_of and voter not in seen:
                seen.add(voter)
                if voter not in holder or place(holder[voter], seen):
                    holder[voter] = group
                    return True
        return False

    return all(place(group, set()) for group in dict.fromkeys(groups))
