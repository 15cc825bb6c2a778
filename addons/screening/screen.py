"""The answer rules that apply to one answer, and what they did to it.

A ``Screen`` is made when the answer's headers arrive, from the rules in force then (a reload does not change an
answer under way): the rules whose filter and condition select this answer. A rule whose condition reads
``answer`` is weighed again whenever the answer's facts change (``refresh``: what masking found so far, on a
stream as it passes): while it holds, its patterns apply; a rule without patterns blocks once it holds. A
condition that cannot be evaluated blocks the answer (fail closed). ``note`` is what the record keeps.
"""

from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from addons.flow.errors import AnswerBlocked
from addons.flow.meta import AnswerNote
from addons.rules.answers import AnswerCheck
from addons.rules.conditions import EvaluationError, Facts
from addons.screening.patterns import Hit, Patterns


@dataclass(frozen=True)
class Blocked:
    """Why the answer was blocked: the rule, and the message the client reads, naming it (never the matched text)."""

    rule: str
    reason: str
    status: int = 502


class Screen:
    """The answer rules selected for one answer; ``blocked`` and ``masked`` say what they did."""

    def __init__(self, checks: list[AnswerCheck], facts: Facts, answer: Callable[[], Mapping[str, Any]],
                 blocked: Blocked | None = None) -> None:
        self.facts = facts  # answer-scoped: identity, request, time
        self.answer = answer  # the answer's facts so far (status, content type, what masking found)
        self.checks = {check.name: check for check in checks}
        self.early = [check for check in checks if not check.late]
        self.late = [check for check in checks if check.late]
        self.blocked = blocked
        self.masked: Counter[str] = Counter()
        self._weighed: Mapping[str, Any] | None = None
        self.patterns = Patterns(self.early)
        self._live = [check.name for check in self.early]

    def refresh(self) -> None:
        """Weigh the rules that read ``answer`` again if its facts changed."""
        if self.blocked is not None or not self.late:
            return
        answer = self.answer()
        if answer == self._weighed:
            return
        self._weighed = copy.deepcopy(answer)
        facts = self.facts.for_answers(answer)
        live = list(self.early)
        for check in self.late:
            assert check.condition is not None
            try:
                holds = facts.evaluate(check.condition.program) is True
            except EvaluationError as e:
                self._block(check, f"its condition could not be evaluated ({e})")
                return
            if holds and not check.patterns:
                self._block(check)
                return
            if holds:
                live.append(check)
        if [check.name for check in live] != self._live:  # the same rules keep the same patterns (and what they knew)
            self.patterns, self._live = Patterns(live), [check.name for check in live]

    def probe(self) -> Screen:
        """A screen with the same rules and the patterns in force now, to search another reading of the answer."""
        probe = Screen(list(self.checks.values()), self.facts, self.answer)
        probe.patterns, probe._weighed, probe._live = self.patterns, self._weighed, self._live
        return probe

    def hit(self, hits: list[Hit], count: Counter[str]) -> bool:
        """Take a scan's hits (and the mask hits applied): True if one blocks the answer."""
        self.masked.update(count)
        block = next((hit for hit in hits if hit.block), None)
        if block is not None and self.blocked is None:
            self._block(self.checks.get(block.rule), block.why or None)
        return self.blocked is not None

    def _block(self, check: AnswerCheck | None, why: str | None = None) -> None:
        if check is None:
            self.blocked = Blocked("?", f"an answer rule blocked the answer ({why})")
            return
        rule = check.rule
        if why:
            reason = f"answer rule {rule.name!r}: {why}; the answer was blocked"
        elif rule.reason:
            reason = f"{rule.reason} (answer rule {rule.name})"
        else:
            reason = f"the answer was blocked by answer rule {rule.name!r}"
        self.blocked = Blocked(rule.name, reason, rule.status)

    def error(self) -> AnswerBlocked:
        """The client's error for a blocked answer: the rule's reason and name, never the matched text."""
        assert self.blocked is not None
        return AnswerBlocked(self.blocked.reason, rule=self.blocked.rule, status=self.blocked.status)

    def note(self) -> AnswerNote | None:
        """What the record keeps of it (None: the rules did nothing to the answer)."""
        if self.blocked is not None:
            return AnswerNote("block", self.blocked.rule, self.blocked.reason, dict(self.masked))
        if self.masked:
            rules = ", ".join(f"{rule} ({n})" for rule, n in sorted(self.masked.items()))
            return AnswerNote("mask", next(iter(self.masked)), f"masked by answer rules: {rules}", dict(self.masked))
        return None
