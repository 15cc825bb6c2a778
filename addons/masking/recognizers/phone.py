"""Phone numbers, with python-phonenumbers run only where a number could be.

Presidio's ``PhoneRecognizer`` runs phonenumbers' matcher over the whole text once per region, a cost
that grows with the text (BENCHMARKS.md, PII masking). This recognizer first finds candidate runs
(seven to fifteen digits with the separators phone numbers use, and an extension) with one regex, then
judges only those, so its cost follows the number of candidates, not the length of the text:

* shaped like a US social security number (``123-45-6789``), a date, a span of years or an IPv4
  address: not a phone (an SSN is US_SSN's to report);
* near a phone word (phone, call, tel, mobile, ...; ``CONTEXT_BEFORE`` characters before it or
  ``CONTEXT_AFTER`` after): a phone, whatever its digits;
* a decimal fraction or a number with thousands dots (``1.234.567``): not a phone;
* valid for phonenumbers, internationally (``+44 20 7946 0958``) or nationally in one of ``REGIONS``;
* formatted like a North American number (``(589) 796-1203``, ``555.123.4567``), whose area code
  phonenumbers may not know as assigned, at the lower ``SHAPE_SCORE``.
"""

from __future__ import annotations

import re

import phonenumbers
from phonenumbers import CountryCodeSource, PhoneNumberFormat
from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from addons.masking.recognizers.result import finding

# A run that starts like a number (+, ( or a digit), holds only digits and phone separators, ends in a
# digit and may carry an extension; never the middle of a longer token (a UUID, 3.14159...).
CANDIDATE = re.compile(r"(?<![\w+])(?<!\d[.])(?<!\w-)((?:\+|\(\+?)?\d[\d ().\-/]{5,22}\d)"
                       r"(?:\s?(?:x|ext\.?|#)\s?\d{1,6})?(?!\w)(?![-.]\w)")
REGIONS = ("US", "GB", "DE", "FR", "IN", "IT", "ES", "BR", "NL", "PL", "JP", "CA", "AU", "CH", "IL", "MX", "PT", "SE")
MIN_DIGITS, MAX_DIGITS = 7, 15

# What a candidate can look like without being a phone number: never one, and not one unless a phone word is near.
NEVER_A_PHONE = re.compile(r"\d{3}([-. ])\d{2}\1\d{4}"                                 # a US SSN
                           r"|\d{4}([-./])\d{1,2}\2\d{1,2}|\d{1,2}([-./])\d{1,2}\3\d{2,4}"  # a date
                           r"|(?:1[89]|20)\d\d\s?[-/]\s?(?:1[89]|20)\d\d"                   # a span of years
                           r"|\d{1,3}(?:\.\d{1,3}){3}")                                      # an IPv4 address
FIGURE = re.compile(r"\d+\.\d+|\d{1,3}(?:\.\d{3}){2,}")  # a decimal fraction, thousands (1.234.567)
# North American format: an area code (first digit 2-9), then 3 and 4 digits, the separators consistent.
NANP = re.compile(r"(?:\+?1[-. ]?)?(?:\([2-9]\d\d\)\s?\d{3}[-. ]?|[2-9]\d\d([-. ])\d{3}\1)\d{4}")
# Words that say a number nearby is a phone number, in the languages of ``REGIONS``.
PHONE_WORDS = re.compile(
    r"\b(?:t[eé]l(?:[eé][fp]\w*)?|phone\w*|ph|mob(?:ile?|iel)?|cell(?:phone|ular|ulare)?|call(?:s|ed|ing)?|fax|"
    r"dial(?:led|ed|ing)?|whats\s?app|sms|text\s(?:me|us)|reach(?:ed|able)?|ring|contact\w*|hotline|landline|handy|"
    r"m[oó]vil|portable|celular|kom[oó]rk\w*)\b|電話|携帯", re.IGNORECASE)
CONTEXT_BEFORE, CONTEXT_AFTER = 40, 24  # characters searched for a phone word around a candidate


class BoundedPhoneRecognizer(LocalRecognizer):
    """PHONE_NUMBER: candidates by regex, then judged by shape, by phonenumbers for ``REGIONS``, or by context."""

    SCORE = 0.6  # valid for phonenumbers, or near a phone word; Presidio's context words raise it
    SHAPE_SCORE = 0.5  # only formatted like a North American number
    CONTEXT = ["phone", "number", "telephone", "tel", "cell", "cellphone", "mobile", "call", "fax", "reach"]

    def __init__(self, regions: tuple[str, ...] = REGIONS, supported_language: str = "en") -> None:
        self.regions = regions
        super().__init__(supported_entities=["PHONE_NUMBER"], supported_language=supported_language,
                         context=self.CONTEXT, name="BoundedPhoneRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        results = []
        for candidate in CANDIDATE.finditer(text):
            judged = self._judge(text, candidate)
            if judged is not None:
                results.append(self._result(candidate.start(), candidate.end(), *judged))
        return results

    def _result(self, start: int, end: int, score: float, reason: str) -> RecognizerResult:
        return finding(self, "PHONE_NUMBER", start, end, score, reason)

    def _judge(self, text: str, candidate: re.Match) -> tuple[float, str] | None:
        """The score and the reason ``candidate`` is a phone number, or None if it is not one."""
        number = candidate.group(1)
        if not MIN_DIGITS <= sum(c.isdigit() for c in number) <= MAX_DIGITS or NEVER_A_PHONE.fullmatch(number):
            return None
        if self._near_phone_word(text, candidate.start(), candidate.end()):
            return self.SCORE, "number near a phone word"
        if FIGURE.fullmatch(number):
            return None
        if self._valid(number):
            return self.SCORE, "valid phone number"
        if NANP.fullmatch(number):
            return self.SHAPE_SCORE, "North American number format"
        return None

    @staticmethod
    def _near_phone_word(text: str, start: int, end: int) -> bool:
        return bool(PHONE_WORDS.search(text, max(0, start - CONTEXT_BEFORE), start)
                    or PHONE_WORDS.search(text, end, end + CONTEXT_AFTER))

    def _valid(self, number: str) -> bool:
        """Whether phonenumbers calls ``number`` valid as written: international, or national in one of the regions
        (with the national prefix where the region's format has one, as phonenumbers' matcher requires)."""
        if number.startswith(("+", "(+")):
            return _parsed_valid(number, None) is not None
        digits = phonenumbers.normalize_digits_only(number)
        for region in self.regions:
            parsed = _parsed_valid(number, region)
            if parsed is None:
                continue
            if parsed.country_code_source != CountryCodeSource.FROM_DEFAULT_COUNTRY:
                return True  # written with an international prefix (0044 ...)
            national = phonenumbers.format_number(parsed, PhoneNumberFormat.NATIONAL)
            if phonenumbers.normalize_digits_only(national) == digits:
                return True  # written as the region writes it, national prefix included
        return False


def _parsed_valid(number: str, region: str | None) -> phonenumbers.PhoneNumber | None:
    try:
        parsed = phonenumbers.parse(number, region, keep_raw_input=True)
    except phonenumbers.NumberParseException:
        return None
    return parsed if phonenumbers.is_valid_number(parsed) else None
