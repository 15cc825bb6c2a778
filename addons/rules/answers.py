"""Answer rules (the rules file's ``answers:``): what an upstream's answer may not carry to the caller.

Every answer rule applies to every answer it selects (there is no first match: an answer may hold several things):
its ``filter`` (mitmproxy's filter language, over the request and the answer's status and headers) and its
``when`` (CEL over identity, request, time and ``answer``) select the answers; its ``match`` patterns (regular
expressions) find what it acts on. ``block`` refuses the answer (a stream ends with an error event), ``mask``
replaces each match with a placeholder. A rule without patterns blocks when its condition on ``answer`` holds
(an entity count in what masking found in the answer). Patterns and conditions are compiled once, at load.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any, Literal

import regex  # type: ignore[import-untyped]  # kept with Presidio; partial matching and timeouts
from mitmproxy import flowfilter
from pydantic import AfterValidator, Field, field_validator, model_validator

from addons.rules.base import Model, checked_filter
from addons.rules.conditions import ANSWER, Condition, checked_condition, compile_condition

# Patterns are compiled with the ``regex`` module (Python's ``re`` syntax, plus partial matching, which a stream
# needs to know what tail may still grow into a match). V0: the behaviour of ``re``.
FLAGS = regex.V0


def compile_pattern(source: str) -> regex.Pattern:
    """``source`` compiled, or a ValueError naming what is wrong with it."""
    try:
        pattern = regex.compile(source, FLAGS)
    except regex.error as e:
        raise ValueError(f"invalid pattern '{source}': {e}") from None  # as written: backslashes not doubled
    if pattern.fullmatch("") is not None:
        raise ValueError(f"pattern '{source}' matches the empty string, so it would match everywhere")
    return pattern


def _pattern(source: str) -> str:
    compile_pattern(source)
    return source


Pattern = Annotated[str, Field(min_length=1), AfterValidator(_pattern)]


class AnswerRule(Model):
    """One answer rule: which answers it reads (filter, when), what it looks for (match), what it does."""

    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$",
                      description="names the rule in the record, the client's error and the mask placeholder")
    filter: str | None = Field(None, description="mitmproxy filter expression over the request and the answer's "
                                                 "status and headers, e.g. '~d api.openai.com & ~c 200'")
    when: str | None = Field(None, description="CEL condition over identity, request, time and answer, e.g. "
                                               "'answer.counts[\"EMAIL_ADDRESS\"] > 10'")
    match: list[Pattern] = Field(default_factory=list,
                                 description="regular expressions; any one matching anywhere in the answer's text")
    action: Literal["block", "mask"]
    reason: str = Field("", description="block: the error message the client (its SDK) shows; never the match")
    status: int = Field(502, ge=400, le=599, description="block, an answer not streamed: the HTTP status")
    placeholder: str | None = Field(None, min_length=1,
                                    description="mask: what replaces each match (default <BLOCKED:name>)")

    @field_validator("when")
    @classmethod
    def _checks(cls, v: str | None) -> str | None:
        return checked_condition(v, ANSWER)

    @field_validator("filter")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        return checked_filter(v)

    @model_validator(mode="after")
    def _acts_on_something(self) -> AnswerRule:
        if self.action == "mask" and not self.match:
            raise ValueError("a mask rule needs 'match' patterns: they say what is replaced")
        if self.action == "block" and not self.match and \
                (self.when is None or not compile_condition(self.when, ANSWER).reads_answer):
            raise ValueError("an answer rule needs 'match' patterns or a 'when' condition that reads 'answer' "
                             "(a condition on the request alone belongs in 'rules')")
        if self.placeholder is not None and self.action != "mask":
            raise ValueError("only a mask rule has a placeholder")
        if self.action == "mask" and any(compile_pattern(p).search(self.mark) for p in self.match):
            raise ValueError(f"the placeholder {self.mark!r} matches the rule's own patterns")
        return self

    @property
    def mark(self) -> str:
        """What replaces a match of this (mask) rule."""
        return self.placeholder if self.placeholder is not None else f"<BLOCKED:{self.name}>"


@dataclass(frozen=True)
class AnswerCheck:
    """An answer rule as the gateway runs it: its filter, condition and patterns compiled."""

    rule: AnswerRule
    filter: Any  # a compiled mitmproxy filter, or None
    condition: Condition | None
    patterns: tuple[regex.Pattern, ...]

    @classmethod
    def of(cls, rule: AnswerRule) -> AnswerCheck:
        return cls(rule, flowfilter.parse(rule.filter) if rule.filter else None,
                   compile_condition(rule.when, ANSWER) if rule.when else None,
                   tuple(compile_pattern(p) for p in rule.match))

    @property
    def name(self) -> str:
        return self.rule.name

    @property
    def late(self) -> bool:
        """Its condition reads ``answer``: evaluated on the answer as it passes, not once before it."""
        return self.condition is not None and self.condition.reads_answer
