"""Values no recognizer can flag, told apart without the analyzer, so that structural tokens (``user``,
``tool_calls``, ``json_schema``, ``high``) cost no round trip to a worker.

A value is inert when it is at most 32 lower-case ASCII letters, ``_`` and ``-``. The built-in pattern entities
all need a digit, ``@``, ``.``, ``:`` or an upper-case letter (e-mail, phone, card, SSN, IBAN, IP, URL, bank,
licence and passport numbers, crypto addresses); NER runs only on text with a capitalised word
(``worker.name_windows``), and so does the given-name recognizer: the analyzer finds nothing in such a value, so
skipping it changes no result. The analyzer also reads values normalised (``addons/masking/normalise.py``:
full-width forms, ``[at]``, percent-encoding): a value that normalising could change is never inert, whatever the
token rule says. The rules file's own recognizers and deny-lists can match anything: a value one
of them could match is never inert. ``tests/addons/masking/test_inert.py`` runs the real recognizers on inert
values, so a recognizer that starts finding lower-case words makes it fail. A check by shape, not by field
name: it holds wherever the value sits.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from addons.masking.normalise import plain
from addons.masking.recognizers import EngineSpec

_TOKEN = re.compile(r"[a-z_-]{1,32}")


def inert_values(spec: EngineSpec) -> Callable[[str], bool]:
    """A predicate: True for a value the analyzer of ``spec`` cannot flag (see the module's docstring)."""
    import regex  # type: ignore[import-untyped]  # Presidio's PatternRecognizer matches with it, with these flags

    try:
        custom = [regex.compile(p, regex.DOTALL | regex.MULTILINE | regex.IGNORECASE)
                  for c in spec.custom for p in c.patterns]
    except regex.error:
        return lambda value: False  # a pattern this process cannot read: analyse everything
    denied = tuple(term.casefold() for _, terms in spec.deny_lists for term in terms)

    def inert(value: str) -> bool:
        if not _TOKEN.fullmatch(value) or not plain(value):
            return False
        return not any(term in value for term in denied) and not any(p.search(value) for p in custom)

    return inert
