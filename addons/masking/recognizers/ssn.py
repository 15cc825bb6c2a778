"""US social security numbers, the well-known sample numbers included.

Presidio's ``UsSsnRecognizer`` drops numbers that start like published samples (``123-45-6789``,
``078-05-1120``), which suits a scanner counting real SSNs. A gateway hides them too: masking a
sample costs the prompt nothing, and a real number may start the same way. Phone numbers of the
same shape are not reported by ``phone.py``, so ``123-45-6789`` is a US_SSN, not a PHONE_NUMBER.
"""

from __future__ import annotations

from presidio_analyzer.predefined_recognizers import UsSsnRecognizer

SAMPLES = ("123456789", "98765432", "078051120")  # Presidio's, less the never-issued 000 and 666 areas


class UsSsnWithSamplesRecognizer(UsSsnRecognizer):
    """US_SSN: Presidio's patterns, context words and checks, sample numbers kept."""

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_language=supported_language, name="UsSsnWithSamplesRecognizer")

    def invalidate_result(self, pattern_text: str) -> bool:
        if "".join(c for c in pattern_text if c.isdigit()).startswith(SAMPLES):
            return len({c for c in pattern_text if c in ".- "}) > 1  # the one check a sample can fail: mixed separators
        return super().invalidate_result(pattern_text)
