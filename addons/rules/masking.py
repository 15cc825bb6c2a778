"""The rules file's ``masking`` section: what is found, how each entity is masked, and for whom.

Declared and documented here once; ``addons/rules/model.py`` embeds it. A profile (role-based
masking) is chosen by the deciding policy rule (``masking: PROFILE``) or by the caller's groups;
``Masking.profile_for`` resolves it to a ``Profile`` with every default filled in.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from addons.rules.base import Model, UniqueNames
from addons.rules.durations import DurationError, parse_duration
from addons.rules.entities import BUILTIN_ENTITIES

DEFAULT_ENTITIES = ("PERSON", "EMAIL_ADDRESS", "PHONE_NUMBER", "CREDIT_CARD", "US_SSN", "IBAN_CODE", "IP_ADDRESS")
_ENTITY_NAME = r"^[A-Z][A-Z0-9_]*$"


_SIZE = re.compile(r"(\d+)\s*(KiB|MiB|GiB)?")
_SIZE_UNITS = {None: 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}


def _size(text: str) -> int | None:
    """The bytes ``text`` says (``65536``, ``64MiB``), if at least 1MiB; else None."""
    match = _SIZE.fullmatch(text.strip())
    size = int(match[1]) * _SIZE_UNITS[match[2]] if match else 0
    return size if size >= 1 << 20 else None


def _compiled(patterns: list[str], field: str) -> list[str]:
    """``patterns`` unchanged if each compiles; else a ValueError naming the index."""
    for i, regex in enumerate(patterns):
        try:
            re.compile(regex)
        except re.error as e:
            raise ValueError(f"{field}[{i}] {regex!r} is not a valid regular expression: {e}") from None
    return patterns


class OperatorSpec(Model):
    """How one entity is masked. Written as a name (``mask``) or a mapping (``{type: mask, keep_last: 4}``)."""

    type: Literal["replace", "mask", "hash", "redact", "pseudonymize"] = Field(
        description="replace: <ENTITY> (or value); mask: characters hidden; hash: keyed HMAC, the same value gives "
                    "the same hash across the log; redact: removed; pseudonymize: <ENTITY_N>, restored in the answer",
    )
    value: str | None = Field(None, description="replace: the text put in place of the value (default <ENTITY>)")
    char: str = Field("*", min_length=1, max_length=1, description="mask: the masking character")
    keep_last: int = Field(0, ge=0, le=8, description="mask: characters left visible at the end (4 for card numbers)")

    @model_validator(mode="before")
    @classmethod
    def _from_name(cls, data: Any) -> Any:
        return {"type": data} if isinstance(data, str) else data

    @model_validator(mode="after")
    def _params_fit(self) -> OperatorSpec:
        if self.value is not None and self.type != "replace":
            raise ValueError(f"'value' applies to the replace operator, not {self.type}")
        if (self.keep_last or self.char != "*") and self.type != "mask":
            raise ValueError(f"'char' and 'keep_last' apply to the mask operator, not {self.type}")
        return self


class PatternSpec(Model):
    """A pattern recognizer of your own: internal identifiers, API keys and tokens."""

    entity: str = Field(pattern=_ENTITY_NAME, description="the entity it reports, e.g. ACME_ID")
    patterns: list[str] = Field(min_length=1, description="regular expressions (Python syntax)")
    score: float = Field(0.9, gt=0, le=1, description="the confidence a match gets")
    context: list[str] = Field(default_factory=list, description="words nearby that raise the confidence")

    @field_validator("patterns")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        return _compiled(patterns, "patterns")


Responses = Literal["mask", "restore"]
PathAction = Literal["refuse", "pass", "mask"]
HeaderAction = Literal["mask", "refuse"]


class ProfileSpec(Model):
    """Role-based masking: a variant of the defaults for some callers. Unset fields inherit the defaults;
    a profile that sets ``operator`` uses it for every entity but those in its own ``operators``."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    groups: list[str] = Field(default_factory=list, description="callers in any of these groups get this profile")
    entities: list[str] | None = Field(None, description="what is masked for them (an empty list masks nothing)")
    operator: OperatorSpec | None = None
    operators: dict[str, OperatorSpec] = Field(default_factory=dict)
    score_threshold: float | None = Field(None, ge=0, le=1)
    responses: Responses | None = None
    path: PathAction | None = None
    headers: HeaderAction | None = None


class Masking(Model):
    """PII masking with Presidio: request bodies before they leave, response bodies before the caller reads them."""

    entities: list[str] = Field(default_factory=lambda: list(DEFAULT_ENTITIES),
                                description="built-in entities to mask (custom recognizers and deny-lists add theirs)")
    operator: OperatorSpec = Field(default_factory=lambda: OperatorSpec(type="pseudonymize"),
                                   description="the operator for entities without one of their own")
    operators: dict[str, OperatorSpec] = Field(default_factory=dict, description="per-entity operators")
    score_threshold: float = Field(0.5, ge=0, le=1, description="findings scoring lower are ignored")
    thresholds: dict[str, float] = Field(default_factory=dict, description="per-entity score thresholds")
    allow_list: list[str] = Field(default_factory=list, description="values never masked (exact, case-insensitive)")
    allow_regex: list[str] = Field(default_factory=list, description="values never masked (full-match regexes)")
    deny_lists: dict[str, list[str]] = Field(default_factory=dict,
                                             description="entity -> words always masked, e.g. code names")
    recognizers: list[PatternSpec] = Field(default_factory=list, description="pattern recognizers of your own")
    responses: Responses = Field("mask", description="mask: PII the upstream sends is masked and pseudonyms "
                                                     "restored; restore: pseudonyms restored only")
    path: PathAction = Field(
        "refuse", description="a path segment carrying a pattern entity or a secret: refuse the request (400), "
                              "pass it unmasked (the record says so), or mask it")
    headers: HeaderAction = Field(
        "mask", description="a pattern entity or a secret in a header value outside the structural set: mask it, "
                            "or refuse the request (400) where a changed header would be wrong (signed values)")
    unknown_content: Literal["block", "pass"] = Field(
        "block", description="a body or a form's part that cannot be inspected (binary): refuse it (415) or pass it")
    originals: Literal["encrypted", "none"] = Field("encrypted", description="bodies masking changed: kept "
                                                                             "AES-GCM-encrypted, or not at all")
    conversation_ttl: str = Field(
        "24h", description="how long the pseudonyms of a conversation the provider keeps (Responses "
                           "previous_response_id and conversation, Assistants threads) stay known after its last "
                           "turn, in memory only: 90s, 15m, 24h, 7d")
    conversation_limit: int = Field(10000, ge=1, description="conversations whose pseudonyms are kept at most "
                                                             "(the least recently used are forgotten first)")
    conversation_memory: str = Field(
        "64MiB", description="memory the kept conversations' pseudonyms may take at most, sealed (the least recently "
                             "used are forgotten first): bytes, or KiB, MiB, GiB; at least 1MiB")
    profiles: UniqueNames[ProfileSpec] = Field(default_factory=list)

    @field_validator("conversation_ttl")
    @classmethod
    def _duration(cls, text: str) -> str:
        try:
            parse_duration(text, bare=False)
        except DurationError as e:
            raise ValueError(str(e)) from None
        return text

    @field_validator("conversation_memory")
    @classmethod
    def _memory(cls, text: str) -> str:
        if _size(text) is None:
            raise ValueError(f"{text!r} is not a size of at least 1MiB like 1048576, 2048KiB, 64MiB or 1GiB")
        return text

    @property
    def conversation_bytes(self) -> int:
        """``conversation_memory`` in bytes."""
        size = _size(self.conversation_memory)
        assert size is not None
        return size

    @property
    def conversation_seconds(self) -> float:
        """``conversation_ttl`` in seconds."""
        return parse_duration(self.conversation_ttl, bare=False).total_seconds()

    @field_validator("allow_regex")
    @classmethod
    def _compile(cls, patterns: list[str]) -> list[str]:
        return _compiled(patterns, "")

    @field_validator("thresholds")
    @classmethod
    def _scores(cls, thresholds: dict[str, float]) -> dict[str, float]:
        for entity, score in thresholds.items():
            if not 0 <= score <= 1:
                raise ValueError(f"{entity}: a score threshold is between 0 and 1, not {score}")
        return thresholds

    @model_validator(mode="after")
    def _known_entities(self) -> Masking:
        known = self.known_entities
        named: list[tuple[str, str]] = [(f"entities[{i}]", e) for i, e in enumerate(self.entities)]
        named += [(f"operators.{e}", e) for e in self.operators] + [(f"thresholds.{e}", e) for e in self.thresholds]
        named += [(f"deny_lists.{e}", e) for e in self.deny_lists]
        for p, profile in enumerate(self.profiles):
            named += [(f"profiles[{p}].entities[{i}]", e) for i, e in enumerate(profile.entities or [])]
            named += [(f"profiles[{p}].operators.{e}", e) for e in profile.operators]
        for where, entity in named:
            if not re.match(_ENTITY_NAME, entity):
                raise ValueError(f"{where}: {entity!r} is not an entity name (upper case, e.g. EMAIL_ADDRESS)")
            if entity not in known and not where.startswith("deny_lists"):
                raise ValueError(f"{where}: unknown entity {entity!r}; known: {', '.join(sorted(known))} "
                                 "(add a recognizer under masking.recognizers for your own)")
        return self

    @property
    def known_entities(self) -> set[str]:
        return set(BUILTIN_ENTITIES) | {r.entity for r in self.recognizers} | set(self.deny_lists)

    @property
    def own_entities(self) -> tuple[str, ...]:
        """Entities of custom recognizers and deny-lists, masked by default."""
        return tuple(dict.fromkeys([r.entity for r in self.recognizers] + list(self.deny_lists)))

    @cached_property
    def _resolved(self) -> tuple[Profile, dict[str, Profile]]:
        """The default profile and the named ones, defaults filled in: resolved once per rules file."""
        return self._resolve(None), {spec.name: self._resolve(spec) for spec in self.profiles}

    def profile(self, name: str | None = None) -> Profile:
        """The named profile, or the default one (for None, or a name that is not a profile)."""
        default, named = self._resolved
        return named.get(name, default) if name is not None else default

    def _resolve(self, spec: ProfileSpec | None) -> Profile:
        entities = self.entities + list(self.own_entities) if spec is None or spec.entities is None else spec.entities
        operator = spec.operator if spec is not None and spec.operator is not None else self.operator
        if spec is not None and spec.operator is not None:  # a profile's own operator replaces the inherited ones
            operators = dict(spec.operators)
        else:
            operators = {**self.operators, **(spec.operators if spec is not None else {})}
        threshold = (spec.score_threshold if spec is not None and spec.score_threshold is not None
                     else self.score_threshold)
        responses = spec.responses if spec is not None and spec.responses is not None else self.responses
        path = spec.path if spec is not None and spec.path is not None else self.path
        headers = spec.headers if spec is not None and spec.headers is not None else self.headers
        return Profile(spec.name if spec is not None else "default", frozenset(entities),
                       {e: operators.get(e, operator) for e in entities},
                       {e: self.thresholds.get(e, threshold) for e in entities}, responses, path, headers)

    def profile_for(self, rule_profile: str | None, groups: list[str]) -> Profile:
        """The deciding rule's profile, else the first profile one of ``groups`` belongs to, else the default."""
        if rule_profile is not None:
            return self.profile(rule_profile)
        for spec in self.profiles:
            if set(spec.groups) & set(groups):
                return self.profile(spec.name)
        return self.profile()

    def all_profiles(self) -> list[Profile]:
        """The default profile, then every named one, resolved."""
        return [self.profile()] + [self.profile(p.name) for p in self.profiles]


@dataclass(frozen=True)
class Profile:
    """A resolved masking profile: what to mask, how, above which score, what to do with responses, and with
    PII in a path segment or a header."""

    name: str
    entities: frozenset[str]
    operators: dict[str, OperatorSpec]
    thresholds: dict[str, float]
    responses: Responses
    path: PathAction = "refuse"
    headers: HeaderAction = "mask"

    @property
    def active(self) -> bool:
        return bool(self.entities)
