"""The name-list recognizer without spaCy, on plain text."""

from __future__ import annotations

from addons.masking.recognizers.names import NameListRecognizer


def _found(text: str) -> list[str]:
    return sorted((text[r.start:r.end] for r in NameListRecognizer().analyze(text, ["PERSON"])), key=text.index)


def test_a_sentence_opening_word_is_no_part_of_the_name_after_it() -> None:
    assert _found("And Maria Garcia.") == ["Maria Garcia"]
    assert _found("But Maria Garcia said so.") == ["Maria Garcia"]
    assert _found("Then Piotr Nowak signed.") == ["Piotr Nowak"]


def test_a_listed_given_name_opens_the_name() -> None:
    assert _found("Please call Maria Garcia about the invoice.") == ["Maria Garcia"]
