"""Inert values: the analyzer, every built-in entity on, finds nothing in them; the rules file's own recognizers
and deny-lists make values they could match analysed again."""

from __future__ import annotations

import random
import string

from addons.masking.recognizers import CustomPattern, EngineSpec
from addons.masking.recognizers.inert import inert_values
from addons.masking.recognizers.names import given_names
from addons.masking.worker import Analyzer, Unit, _offline_tldextract
from addons.rules.entities import BUILTIN_ENTITIES

EVERYTHING = EngineSpec(entities=BUILTIN_ENTITIES)


def tokens(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    alphabet = string.ascii_lowercase + "_-"
    return ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 32))) for _ in range(count)]


def test_what_is_inert() -> None:
    inert = inert_values(EVERYTHING)
    assert all(inert(v) for v in ("user", "tool_calls", "json_schema", "auto", "a-b"))
    for value in ("User", "gpt-4o", "a.b", "a@b", "x" * 33, "two words", "", "call_1", "é"):
        assert not inert(value), value


def test_the_analyzer_finds_nothing_in_inert_values() -> None:
    """If a recognizer ever finds lower-case words, values ``inert`` skips would go unanalysed: this fails first."""
    _offline_tldextract()
    analyzer = Analyzer(EVERYTHING)
    names = sorted(name.lower() for name in given_names() if name.isascii() and name.isalpha())  # inert: ASCII
    sample = tokens(2000) + names[:3000:3] + [
        "jane", "maria", "garcia", "paris", "london", "smith", "password", "secret", "iban", "visa", "ssn"]
    inert = inert_values(EVERYTHING)
    assert all(inert(v) for v in sample)
    found = {v: spans for v, spans in zip(sample, analyzer.analyze([Unit(v) for v in sample]), strict=True) if spans}
    assert found == {}


def test_the_rules_files_recognizers_and_deny_lists_are_honoured() -> None:
    spec = EngineSpec(entities=BUILTIN_ENTITIES, custom=(CustomPattern("CODE", (r"\bproj-[a-z]+\b",)),),
                      deny_lists=(("CODENAME", ("Falcon", "Project Osprey")),))
    inert = inert_values(spec)
    assert not inert("proj-alpha") and not inert("PROJ-alpha".lower())
    assert not inert("falcon") and not inert("the_falcon_plan")  # case-insensitive, as Presidio matches them
    assert inert("osprey") and inert("project")
    unreadable = inert_values(EngineSpec(entities=BUILTIN_ENTITIES, custom=(CustomPattern("X", ("(?P<",)),)))
    assert not unreadable("user")  # a pattern this process cannot compile: nothing is skipped
