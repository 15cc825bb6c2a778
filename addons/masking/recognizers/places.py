"""Place names, so that capitalised words that read as a name but name a place are not taken for a person.

Two sources, both on the machine, nothing fetched: the countries, regions, provinces, cities and towns of every
Faker locale's address provider (Latin script), and the cities of the IANA time-zone database
(``zoneinfo``: "America/Sao_Paulo", "Asia/Kuala_Lumpur"; empty where the system has no tz data). Names are
compared without accents and case ("Sao Paulo" is "São Paulo"). A person's name is taken for a place only
where it is a place's whole name ("Victoria", "Santiago"), so callers ask about whole spans.
"""

from __future__ import annotations

import importlib
import pkgutil
import re
import unicodedata
import zoneinfo
from functools import cache

# Address-provider attributes that list places (cities, city_names, countries, provinces, states, towns, ...),
# not their formats, prefixes, suffixes or codes.
_PLACE_LIST = re.compile(r"(?:\w+_)?(?:cit(?:y|ies)|countr(?:y|ies)|states?|provinces?|regions?|municipalit(?:y|ies)|"
                         r"towns?|districts?|departments?|places|region_\w+)(?:_names)?")


def folded(name: str) -> str:
    """``name`` without accents, lower-cased, single-spaced: how place names are compared."""
    plain = "".join(c for c in unicodedata.normalize("NFKD", name) if not unicodedata.combining(c))
    return " ".join(plain.lower().replace("_", " ").split())


def _latin(name: str) -> bool:
    return all(ord(c) < 0x250 for c in name) and any(c.isalpha() for c in name)


@cache
def known_places() -> frozenset[str]:
    """Place names, ``folded``: Faker's address providers and the time-zone database's cities."""
    import faker.providers.address as address

    places: set[str] = set()
    for module in pkgutil.iter_modules(address.__path__):
        provider = importlib.import_module(f"{address.__name__}.{module.name}").Provider
        for attribute in dir(provider):
            values = getattr(provider, attribute) if _PLACE_LIST.fullmatch(attribute) else None
            if isinstance(values, tuple | list | dict):
                places.update(folded(v) for v in values if isinstance(v, str) and len(v) > 3 and _latin(v))
    for zone in zoneinfo.available_timezones():
        places.update(folded(part) for part in zone.split("/")[1:] if len(part) > 3)
    return frozenset(places)


def is_place(name: str) -> bool:
    """Whether ``name`` is the whole name of a known place ("Costa Rica", "Buenos Aires")."""
    return folded(name) in known_places()
