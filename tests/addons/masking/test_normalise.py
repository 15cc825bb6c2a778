"""Reading text normalised (``addons/masking/normalise.py``): the offset map's properties, each obfuscation undone
and mapped back over the whole value, benign text left alone, and the gateway's side (inert values, the stream
scanner, the stream's hold) agreeing with the workers."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from addons.masking.normalise import analysed, luhn, normalise, plain
from addons.masking.operators import Masker
from addons.masking.payloads import adapter_for
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers import EngineSpec, engine_spec, pattern_recognizers, pattern_scanner
from addons.masking.recognizers.inert import inert_values
from addons.masking.stream import StreamRewriter
from addons.rules.masking import Masking

SCANNER = pattern_scanner(engine_spec(Masking.model_validate({})))
INVISIBLE = "\u200b\u200c\u200d\u2060\ufeff\u00ad"
# Characters normalising reads differently, or that take part in what it undoes.
TRICKY = INVISIBLE + "４１＠．ｊａｎｅﬁ①\u0301é٤%&#;[](){}<>@. -atdotcomx0123456789\U000e0061"

# (as written, as read): each must be read whole and mapped back over all of it
OBFUSCATED = [
    ("４１１１ １１１１ １１１１ １１１１", "4111111111111111"),
    ("ｊａｎｅ＠ａｃｍｅ．ｃｏｍ", "jane@acme.com"),
    *[(f"ja{c}ne@ac{c}me.com", "jane@acme.com") for c in INVISIBLE],
    ("jane[at]acme[dot]com", "jane@acme.com"),
    ("jane (at) acme (dot) co (dot) uk", "jane@acme.co.uk"),
    ("jane {at} acme {dot} com", "jane@acme.com"),
    ("jane[@]acme[.]com", "jane@acme.com"),
    ("jane at acme dot com", "jane@acme.com"),
    ("JANE AT ACME DOT COM", "JANE@ACME.COM"),
    ("jane@acme dot com", "jane@acme.com"),
    ("jane.doe at acme.com", "jane.doe@acme.com"),
    ("jane_doe at acme.co.uk", "jane_doe@acme.co.uk"),
    ("jane+news at acme.io", "jane+news@acme.io"),
    ("jane dot doe at gmail dot com", "jane.doe@gmail.com"),
    ("jane%40acme.com", "jane@acme.com"),
    ("jane&#64;acme&#x2e;com", "jane@acme.com"),
    ("jane&commat;acme.com", "jane@acme.com"),
    ("%EF%BD%8Aane%40acme.com", "jane@acme.com"),
    ("4111 11 1111 111 111", "4111111111111111"),
    ("4111-1111-1111-1111", "4111111111111111"),
    ("4111.1111.1111.1111", "4111111111111111"),
    ("٤١١١١١١١١١١١١١١١", "4111111111111111"),
    # found by an outside review
    ("jane@acme[dot]com", "jane@acme.com"),
    ("jane@acme (dot) co (dot) uk", "jane@acme.co.uk"),
    ("123\u201345\u20136789", "123-45-6789"),  # en dashes
    ("123\u221245\u22126789", "123-45-6789"),  # minus signs
    ("+1 (212) 555\u20110123", "+1 (212) 555-0123"),  # a non-breaking hyphen
    ("4\u03321\u03321\u03321\u0332 1111 1111 1111", "4111111111111111"),  # combining marks
    ("jane @ acme.com", "jane@acme.com"),
    ("jane%2540acme.com", "jane@acme.com"),  # encoded twice
    ("jane&#64acme.com", "jane@acme.com"),  # a numeric reference without its ";"
    ("jane@acme\u3002com", "jane@acme.com"),  # an ideographic full stop
    ("4111/1111/1111/1111", "4111111111111111"),
    ("4111_1111_1111_1111", "4111111111111111"),
    ("4111\t1111\t1111\t1111", "4111111111111111"),
]
BENIGN = [
    "Meet me at the office at noon; look at google dot com later.",
    "See README.md at github.com/acme/app and config.yaml at gitlab.com, or look at acme.com; meet at example.com.",
    "I am good at maths dot by dot.",
    "Sales rose 5% (from 3%) to 100%, R&D spent 50 % more; a&b; &amp is not closed",
    "Version 1.2.3.4 shipped on 2024-01-05, 05.01.2024 and 1/5/2024; build 10.4.22.",
    "pi is 3.14159265358979 and e is 2.718281828459045",
    "Order 12 345 678 and ids 123-456-789, 1 000 000 people, 2023 2024 2025 2026",
    "Use a[i] (at most) and x [dot] notation; the polka dot (at) the party.",
    "def f(x): return x @ y  # matrix product",
    "y = a @ b.shape and w = x @ v.T",
    "Dates 2026/12/01 and 01/12/2026; paths a/b/c and snake_case_name_1_2_3 — an em dash, 9–5 hours, −3 °C.",
]


@settings(max_examples=300, deadline=None)
@given(st.text(alphabet=st.sampled_from(TRICKY), max_size=60))
def test_every_span_maps_inside_the_original_in_order(text: str) -> None:
    reading = normalise(text)
    n = len(reading.text)
    last_start = 0
    for i in range(n):
        start, end = reading.span(i, i + 1)
        assert 0 <= start < end <= len(text)
        assert start >= last_start  # the map keeps the order of the text
        last_start = start
    for a in range(0, n + 1, 3):
        for b in range(a, n + 1, 4):
            start, end = reading.span(a, b)
            assert 0 <= start <= end <= len(text)
            assert a == b or (start, end) == (reading.span(a, a + 1)[0], reading.span(b - 1, b)[1])


@settings(max_examples=200, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 13), st.sampled_from(INVISIBLE)), max_size=6))
def test_invisible_characters_anywhere_in_an_address_are_covered(inserted: list[tuple[int, str]]) -> None:
    address = "jane@acme.com"
    written = address
    for position, char in sorted(inserted, reverse=True):
        written = written[:position] + char + written[position:]
    text = f"mail {written} now"
    reading = normalise(text)
    assert reading.text == f"mail {address} now"
    start, end = reading.span(5, 5 + len(address))
    assert "".join(c for c in text[start:end] if c not in INVISIBLE) == address  # every character inside covered


@pytest.mark.parametrize(("written", "read"), OBFUSCATED)
def test_obfuscations_are_read_and_mapped_back_over_the_whole_value(written: str, read: str) -> None:
    text = f"write {written} today"
    reading = normalise(text)
    assert reading.text == f"write {read} today"
    assert reading.span(6, 6 + len(read)) == (6, 6 + len(written))
    assert not plain(text)


def test_compatibility_forms_that_change_length() -> None:
    reading = normalise("a ﬁle ① ㎏ ａ")
    assert reading.text == "a file 1 kg a"
    assert reading.span(2, 3) == (2, 3) and reading.span(3, 4) == (2, 3)  # "f" and "i" both come from "ﬁ"
    assert reading.span(9, 11) == (8, 9)  # "kg" from one character
    assert reading.span(12, 13) == (10, 11) and reading.span(0, 13) == (0, 11)


def _as_written(text: str, recognizers: list = []) -> list:  # noqa: B006  # built once
    if not recognizers:
        recognizers.extend(pattern_recognizers(engine_spec(Masking.model_validate({}))))
    return [(r.entity_type, r.start, r.end, float(r.score)) for recognizer in recognizers
            for r in recognizer.analyze(text, recognizer.supported_entities, None)]


@pytest.mark.parametrize("text", BENIGN)
def test_benign_text_finds_nothing_new(text: str) -> None:
    """Prose with at and dot, percent signs, ampersands, versions, dates and long numbers: reading it normalised
    finds nothing the text as written does not show."""
    assert sorted(set(analysed(text, _as_written))) == sorted(set(_as_written(text)))


def test_ascii_prose_is_plain_and_left_as_is() -> None:
    for text in ("Hello Maria, the meeting is at 10:30 in room 4.", "x = a[0] + b(1)", "see https://example.org/a"):
        assert plain(text) and not normalise(text).changed
    assert normalise("你好，世界！").text == "你好,世界!"  # read differently, but the text as written is what leaves


def test_values_normalising_could_change_are_never_inert() -> None:
    inert = inert_values(EngineSpec(entities=("EMAIL_ADDRESS",)))
    assert inert("jane") and inert("tool_calls")
    for value in ("ｊａｎｅ", "jane[at]acme", "jane%40acme", "ja\u200bne", "jane-at-acme"):
        assert not inert(value) or plain(value), value


def test_the_stream_scanner_reads_text_normalised() -> None:
    for written, _ in OBFUSCATED:
        text = f"write {written} today"
        spans = SCANNER(text)
        assert any(start == 6 and end == 6 + len(written) for _, start, end, _ in spans), (written, spans)


def test_luhn() -> None:
    assert luhn("4111111111111111") and not luhn("4111111111111112")


def _stream(deltas: list[str]) -> str:
    vault = Vault()
    rw = StreamRewriter(adapter_for("/v1/chat/completions"), vault,
                        Masker(Masking.model_validate({}).profile(), vault, b"k" * 32, reversible=False), SCANNER)
    events = [f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': d}}]})}\n\n" for d in deltas]
    out = b"".join(b"".join(rw(e.encode())) for e in events) + b"".join(rw(b"data: [DONE]\n\n")) + b"".join(rw(b""))
    return "".join(json.loads(line[6:])["choices"][0]["delta"].get("content", "")
                   for line in out.decode().splitlines() if line.startswith("data: {"))


@pytest.mark.parametrize("address", ["jane (at) acme (dot) com", "jane at acme dot com", "jane [at] acme [dot] com"])
def test_a_spelled_address_streamed_in_tokens_is_held_and_masked(address: str) -> None:
    """Model tokens open with their space (" jane", " (", "at", ")"): the word before an ``at`` is held."""
    words = f"Write to {address} today.".split(" ")
    tokens = [words[0]] + [" " + w for w in words[1:]]
    split = [piece for token in tokens for piece in (token[:2], token[2:]) if piece]
    for deltas in (tokens, split):
        assert _stream(deltas) == "Write to <EMAIL_ADDRESS> today.", deltas


def test_a_card_among_other_numbers_is_read_and_a_row_of_small_numbers_is_not() -> None:
    from addons.masking.normalise import _card_edits

    assert list(_card_edits("ref 1001 4000 0000 0000 0002 end")) == [(9, 28, "4000000000000002")]  # hypothesis found
    assert list(_card_edits("1 2 3 4 5 6 7 8 9 10 11 12 13 14 15 16 17 18 19 20")) == []


@pytest.mark.parametrize("address", ["jane (at) acme (dot) com", "jane [at] acme [dot] com", "jane.doe at acme.com"])
@pytest.mark.parametrize("size", [1, 3, 7])
def test_a_spelled_address_cut_anywhere_is_held_and_masked(address: str, size: int) -> None:
    """A delta may end right after the mailbox ("jane "): the word is held until what follows shows no "at"."""
    text = f"Write to {address} today."
    assert _stream([text[i:i + size] for i in range(0, len(text), size)]) == "Write to <EMAIL_ADDRESS> today."


@pytest.mark.parametrize("size", [1, 4, 9])
@pytest.mark.parametrize("text", ["Write to jane dot doe at gmail dot com today.",
                                  "Mail j dot m dot doe at acme dot com"])
def test_a_mailbox_spelled_with_dot_streamed_is_masked_whole(text: str, size: int) -> None:
    out = _stream([text[i:i + size] for i in range(0, len(text), size)])
    assert "doe" not in out and "<EMAIL_ADDRESS>" in out, out


@pytest.mark.parametrize("text", ["Python 3.12 at python.org has the docs.", "We released v1.2 at example.com.",
                                  "See section 4.2 at docs.python.org", "the data.parquet at s3.amazonaws.com"])
def test_a_version_or_file_before_at_is_no_mailbox(text: str) -> None:
    assert "@" not in normalise(text).text, normalise(text).text
