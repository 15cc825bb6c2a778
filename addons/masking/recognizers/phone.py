"""Phone numbers, with python-phonenumbers run only where a number could be.

Presidio's ``PhoneRecognizer`` runs phonenumbers' matcher over the whole text once per region, a cost
that grows with the text (BENCHMARKS.md, PII masking). This recognizer first finds
candidate runs (seven or more digits with the separators phone numbers use) with one regex, then
parses only those, so its cost follows the number of candidates, not the length of the text.
"""

from __future__ import annotations

import re

import phonenumbers
from presidio_analyzer import AnalysisExplanation, LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

# A run that starts like a number (+, ( or a digit), holds only digits and phone separators, ends in a digit.
CANDIDATE = re.compile(r"(?<![\w+])(?:\+|\(\+?)?\d[\d ().\-/]{5,22}\d(?![\w])")
REGIONS = ("US", "GB", "DE", "FR", "IL", "IN", "CA", "BR", "AU", "NL", "ES", "IT", "CH")
MIN_DIGITS, MAX_DIGITS = 7, 15


class BoundedPhoneRecognizer(LocalRecognizer):
    """PHONE_NUMBER: candidates by regex, then validated by phonenumbers for the configured regions."""

    SCORE = 0.6  # a number phonenumbers calls valid for a region; context words raise it
    CONTEXT = ["phone", "number", "telephone", "tel", "cell", "cellphone", "mobile", "call", "fax", "reach"]

    def __init__(self, regions: tuple[str, ...] = REGIONS, supported_language: str = "en") -> None:
        self.regions = regions
        super().__init__(supported_entities=["PHONE_NUMBER"], supported_language=supported_language,
                         context=self.CONTEXT, name="BoundedPhoneRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str], nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        results = []
        for candidate in CANDIDATE.finditer(text):
            digits = sum(c.isdigit() for c in candidate.group())
            if not MIN_DIGITS <= digits <= MAX_DIGITS:
                continue
            for span in self._validated_spans(text, candidate.start(), candidate.end()):
                explanation = AnalysisExplanation(type(self).__name__, self.SCORE, textual_explanation="valid phone number")
                results.append(RecognizerResult("PHONE_NUMBER", span[0], span[1], self.SCORE, explanation,
                                                recognition_metadata={RecognizerResult.RECOGNIZER_NAME_KEY: self.name,
                                                                      RecognizerResult.RECOGNIZER_IDENTIFIER_KEY: self.id}))
        return results

    def _validated_spans(self, text: str, start: int, end: int) -> list[tuple[int, int]]:
        """The numbers phonenumbers finds valid in ``text[start:end]``, trying region after region."""
        window = text[start:end]
        for region in self.regions:
            spans = [(start + m.start, start + m.end)
                     for m in phonenumbers.PhoneNumberMatcher(window, region, leniency=phonenumbers.Leniency.VALID)]
            if spans:
                return spans
        return []
