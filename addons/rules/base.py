"""What every section of the rules file's model shares: one strict, frozen base, names unique within a list, and
${ENV} references in the values it keeps secret."""

from __future__ import annotations

import os
import re
from typing import Annotated, Protocol, TypeVar

from mitmproxy import flowfilter
from pydantic import AfterValidator, BaseModel, ConfigDict

ENV_REF = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
"""A ``${NAME}`` reference to an environment variable, in a value the rules file leaves secret (credentials,
webhook URLs)."""


def expand_env(template: str) -> tuple[str | None, list[str]]:
    """``template`` with its ``${NAME}`` references replaced by the environment's values: ``(value, [])``, or
    ``(None, names)`` naming the variables that are unset or empty."""
    unset = [name for name in ENV_REF.findall(template) if not os.environ.get(name)]
    if unset:
        return None, unset
    return ENV_REF.sub(lambda m: os.environ[m.group(1)], template), []


def template_secrets(template: str, value: str) -> set[str]:
    """What each ``${NAME}`` of ``template`` stood for in ``value`` (its expansion): secrets to redact beside the
    whole value."""
    pieces = ENV_REF.split(template)  # literal, name, literal, name, ..., literal
    pattern = "".join(re.escape(p) if i % 2 == 0 else "(.+?)" for i, p in enumerate(pieces))
    match = re.fullmatch(pattern, value, re.DOTALL)
    return set(match.groups()) if match is not None else set()


class Model(BaseModel):
    """A section of the rules file: an unknown key is an error (a typo never passes silently); values never change."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class _Named(Protocol):
    @property
    def name(self) -> str: ...


def unique_names[Named: _Named](items: list[Named]) -> list[Named]:
    """``items`` unchanged if no two share a ``name``; else a ValueError listing the repeated ones (pydantic puts the
    field's path before it)."""
    names = [item.name for item in items]
    if repeated := sorted({n for n in names if names.count(n) > 1}):
        raise ValueError(f"names must be unique; repeated: {', '.join(repeated)}")
    return items


N = TypeVar("N", bound=_Named)
UniqueNames = Annotated[list[N], AfterValidator(unique_names)]
"""A list of named sections (upstreams, rules, masking profiles) in which each name appears once."""


def checked_filter(source: str | None) -> str | None:
    """``source`` unchanged if it is a mitmproxy filter expression; else a ``ValueError`` naming it."""
    if source is not None:
        try:
            flowfilter.parse(source)
        except ValueError as e:
            raise ValueError(f"invalid mitmproxy filter expression {source!r}: {e}") from None
    return source
