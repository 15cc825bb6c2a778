"""What every section of the rules file's model shares: one strict, frozen base, and names unique within a list."""

from __future__ import annotations

from typing import Annotated, Protocol, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict


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
