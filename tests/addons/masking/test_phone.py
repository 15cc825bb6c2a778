"""Phone numbers as people write them, from sources the recognizer was not written against: phonenumbers'
example numbers for every region, and Faker's phone numbers for twenty locales. The rates are printed."""

from __future__ import annotations

import phonenumbers
import pytest
from faker import Faker
from phonenumbers import PhoneNumberFormat, PhoneNumberType

from addons.masking.recognizers import engine_spec, pattern_scanner
from addons.masking.recognizers.phone import REGIONS, BoundedPhoneRecognizer
from addons.masking.recognizers.ssn import UsSsnWithSamplesRecognizer
from addons.rules.masking import Masking

LOCALES = ("en_US", "en_GB", "de_DE", "fr_FR", "es_ES", "it_IT", "nl_NL", "pt_BR", "pl_PL", "en_IN", "ja_JP", "en_AU",
           "en_CA", "de_CH", "sv_SE", "es_MX", "he_IL", "pt_PT", "de_AT", "da_DK")
WITH_CONTEXT = ("Call me at {} tomorrow.", "My mobile: {}", "You can reach me on {} after six.", "Tel. {} (office)",
                "Please phone {} and ask for the front desk.")
WITHOUT_CONTEXT = ("The reference {} is in the notes.", "{} was written on the back of the form.")


@pytest.fixture(scope="module")
def recognizer() -> BoundedPhoneRecognizer:
    return BoundedPhoneRecognizer()


def detected(recognizer: BoundedPhoneRecognizer, template: str, number: str) -> bool:
    """Whether every digit of ``number``, put in ``template``, lies inside a PHONE_NUMBER span."""
    text = template.format(number)
    at = text.index(number)
    spans = [(r.start, r.end) for r in recognizer.analyze(text, ["PHONE_NUMBER"])]
    return all(any(s <= at + i < e for s, e in spans) for i, c in enumerate(number) if c.isdigit())


def example_numbers(regions, formats) -> list[tuple[str, str]]:
    """(region, number) for phonenumbers' example fixed-line and mobile numbers, in each format."""
    out = []
    for region in sorted(regions):
        for kind in (PhoneNumberType.FIXED_LINE, PhoneNumberType.MOBILE):
            example = phonenumbers.example_number_for_type(region, kind)
            if example is not None:
                out += [(region, phonenumbers.format_number(example, f)) for f in formats]
    return out


def test_every_regions_example_numbers_in_international_form(recognizer) -> None:
    numbers = example_numbers(phonenumbers.SUPPORTED_REGIONS, (PhoneNumberFormat.E164, PhoneNumberFormat.INTERNATIONAL))
    missed = [(region, n) for region, n in numbers if not detected(recognizer, WITHOUT_CONTEXT[0], n)]
    print(f"\nexample numbers, E.164 and international, every region: {len(numbers) - len(missed)}/{len(numbers)}")
    assert missed == []  # valid by construction and written with their country code: nothing to guess


def test_national_forms_of_the_regions_and_beyond(recognizer) -> None:
    assert len(REGIONS) >= 10
    numbers = example_numbers(REGIONS, (PhoneNumberFormat.NATIONAL,))
    assert [n for _, n in numbers if not detected(recognizer, WITHOUT_CONTEXT[0], n)] == []
    others = example_numbers(set(phonenumbers.SUPPORTED_REGIONS) - set(REGIONS), (PhoneNumberFormat.NATIONAL,))
    with_context = sum(detected(recognizer, WITH_CONTEXT[0], n) for _, n in others)
    without = sum(detected(recognizer, WITHOUT_CONTEXT[0], n) for _, n in others)
    print(f"\nnational example numbers of the {len(set(r for r, _ in others))} other regions: "
          f"{with_context}/{len(others)} near a phone word, {without}/{len(others)} alone "
          "(numbers under seven digits are not read as phones)")


def test_faker_numbers_per_locale(recognizer) -> None:
    rows = []
    for locale in LOCALES:
        faker = Faker(locale)
        faker.seed_instance(2024)
        numbers = [faker.phone_number() for _ in range(200)]
        near = sum(detected(recognizer, WITH_CONTEXT[i % len(WITH_CONTEXT)], n) for i, n in enumerate(numbers))
        alone = sum(detected(recognizer, WITHOUT_CONTEXT[i % len(WITHOUT_CONTEXT)], n) for i, n in enumerate(numbers))
        rows.append((locale, near / len(numbers), alone / len(numbers)))
    print("\nFaker phone numbers detected, per locale: near a phone word / alone")
    for locale, near, alone in rows:
        print(f"  {locale:6} {near:6.1%} {alone:6.1%}")
    # Faker draws the digits at random, so many numbers are invalid (unassigned area codes): alone they are
    # found only when valid or North American in shape. Near a phone word any run of 7-15 digits in a
    # phone's separators is taken, so a miss there means a format the recognizer cannot read.
    assert all(near >= 0.95 for _, near, _ in rows), rows


@pytest.mark.parametrize("text, number", [
    ("Call me at +44 20 7946 0958.", "+44 20 7946 0958"),
    ("call (589) 796-1203 before noon", "(589) 796-1203"),  # an unassigned area code, near a phone word
    ("Mobile +1-537-640-6812x41586", "+1-537-640-6812x41586"),  # the extension is part of the number
    ("555.123.4567", "555.123.4567"),
    ("Tel.0151 2345678", "0151 2345678"),
    ("Numéro de téléphone : 06 12 34 56 78", "06 12 34 56 78"),
    ("Handy: 0151 23456789", "0151 23456789"),
    ("電話 03-1234-5678", "03-1234-5678"),
])
def test_common_formats(recognizer, text: str, number: str) -> None:
    assert detected(recognizer, text.replace(number, "{}"), number)


@pytest.mark.parametrize("text", [
    "uuid 6a8ac4ba-0580-5975-ed2f-89d94a2f20aa", "pi is 3.14159265358", "the ip 192.168.100.200",
    "Released on 2024-05-06, see 06/05/2024", "between 1990-2020 and 2021-2023", "population 83.200.000",
    "commit 3f786850e387550fdab836ed7e6dc881de23001b", "ISBN 978-3-16-148410-0",
])
def test_numbers_that_are_no_phones(recognizer, text: str) -> None:
    assert recognizer.analyze(text, ["PHONE_NUMBER"]) == []


@pytest.mark.parametrize("ssn", ["123-45-6789", "524-71-3308", "078-05-1120", "524 71 3308"])
def test_an_ssn_shape_is_a_us_ssn_not_a_phone(recognizer, ssn: str) -> None:
    text = f"Her number is {ssn}, please call."  # phone words do not make it a phone
    assert recognizer.analyze(text, ["PHONE_NUMBER"]) == []
    [found] = UsSsnWithSamplesRecognizer().analyze(text, ["US_SSN"])
    assert text[found.start:found.end] == ssn and found.score >= 0.5
    scan = pattern_scanner(engine_spec(Masking()))  # the default entities, as the gateway runs them
    assert {(entity, text[start:end]) for entity, start, end, _ in scan(text)} == {("US_SSN", ssn)}


def test_ssn_keeps_presidios_other_checks() -> None:
    ssn = UsSsnWithSamplesRecognizer()
    for invalid in ("123-45 6789", "000-12-3456", "666-12-3456", "524-00-3308", "524-71-0000", "111-11-1111"):
        assert ssn.analyze(f"ref {invalid}", ["US_SSN"]) == [], invalid
