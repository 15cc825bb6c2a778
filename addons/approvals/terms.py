"""A review rule's terms as the approval holds them, and when its approvals are enough.

An approval keeps a snapshot of its rule's terms (``Terms``), taken when the request was held: the rules file
may be reloaded meanwhile, and the request is decided under the rule it was held under.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, fields
from typing import Any

from addons.flow.meta import ReviewTerms


@dataclass(frozen=True)
class Terms(ReviewTerms):
    """The deciding rule's name and its review terms (durations in seconds)."""

    rule: str = ""

    @classmethod
    def of(cls, rule: str, review: ReviewTerms) -> Terms:
        """The terms of ``rule`` as policy snapshot them (``Decision.review``)."""
        return cls(rule=rule, **{f.name: getattr(review, f.name) for f in fields(ReviewTerms)})

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Terms:
        return cls(rule=str(data["rule"]), approvers=tuple(data["approvers"]), min_approvals=int(data["min_approvals"]),
                   one_from_each_group=bool(data["one_from_each_group"]),
                   skip_groups=tuple(data.get("skip_groups") or ()), timeout=float(data["timeout"]),
                   mode=str(data["mode"]), ttl=float(data["ttl"]),
                   window=None if data.get("window") is None else float(data["window"]))

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
