"""Person names that spaCy's small model calls something else, found by a given-name list.

``en_core_web_sm`` labels many full names as organisations ("Sandra Scott" -> ORG) or misses
them. This recognizer reports "Given Family" pairs whose first word is a common given name
(Faker's en_US and en_GB lists, drawn from census data) and whose second is a capitalised word,
at a lower score than spaCy's. It does not find single given names or names outside the lists;
spaCy still does what it can there.
"""

from __future__ import annotations

import re
from functools import cache

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from addons.masking.recognizers.result import finding

# The family name is a lookahead, so "Dear Maria Lopez" still tries "Maria Lopez" after "Dear Maria".
_PAIR = re.compile(r"\b([A-Z][a-z]{1,20})(?=(\s+(?:Mc|Mac|O')?[A-Z][a-z]{1,25}(?:-[A-Z][a-z]{1,25})?)\b)")


@cache
def given_names() -> frozenset[str]:
    from faker.providers.person.en_GB import Provider as British
    from faker.providers.person.en_US import Provider as American

    return frozenset(American.first_names) | frozenset(British.first_names)


class GivenNameRecognizer(LocalRecognizer):
    """PERSON: a common given name followed by a capitalised family name."""

    SCORE = 0.7

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["PERSON"], supported_language=supported_language,
                         name="GivenNameRecognizer")

    def load(self) -> None:
        given_names()

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        names = given_names()
        results = []
        for match in _PAIR.finditer(text):
            if match.group(1) in names and match.group(2).strip() not in _NOT_SURNAMES:
                end = match.end() + len(match.group(2))
                results.append(finding(self, "PERSON", match.start(), end, self.SCORE, "given name"))
        return results


# Capitalised words that follow a given name without being a family name ("Grace Period" is rare; these are not).
_NOT_SURNAMES = frozenset({"The", "And", "Or", "But", "If", "When", "Then", "This", "That", "Street", "Avenue", "Road",
                           "University", "College", "School", "Hospital", "Inc", "Ltd", "Corp", "Company", "Group"})
