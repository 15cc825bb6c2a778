"""Values split across the text parts of one message (``addons/masking/joined.py``): which slots are parts of one
message, the windows around where they meet, and each part's share of the replacement."""

from __future__ import annotations

from addons.masking.joined import messages, pieces, windows
from addons.masking.operators import Masker
from addons.masking.payloads import TextSlot
from addons.masking.pseudonyms import Vault
from addons.rules.masking import Masking


def slots(*texts: str, message: str = "$.messages[0].content") -> list[TextSlot]:
    return [TextSlot(f"{message}[{i}].text", text, lambda _: None) for i, text in enumerate(texts)]


def masker(operators: dict | None = None) -> Masker:
    profile = Masking.model_validate({"operators": operators or {}}).profile()
    return Masker(profile, Vault(), b"k" * 32)


def test_parts_of_one_message_are_grouped() -> None:
    found = [*slots("a", "b"), TextSlot("$.messages[1].content", "c", lambda _: None), *slots("d", "e", "f",
                                                                                              message="$.system")]
    found.insert(2, TextSlot("$.messages[0].name", "n", lambda _: None, "field"))
    assert messages(found) == [(0, 1), (4, 5, 6)]


def test_windows_follow_the_meeting_points_not_the_length() -> None:
    parts = slots("x" * 5000 + "card 4111 1111", " 1111 1111" + "y" * 5000, "z")
    [first, second] = windows(parts, width=100)
    assert first.offset == 5014 - 100 and len(first.text) == 200 and first.starts == (0, 5014, 10024, 10025)
    assert second.text.endswith("z") and len(second.text) == 101


def split(masker_: Masker, *texts: str, found_alone: list | None = None) -> dict:
    parts = slots(*texts)
    [window] = windows(parts)
    start = window.text.index("4111")
    spans = [("CREDIT_CARD", start, start + 19, 1.0)]
    return pieces(masker_, parts, found_alone or [[] for _ in parts], [spans], [window])


def test_a_pseudonym_goes_to_the_first_part_and_the_rest_is_removed() -> None:
    m = masker()
    shares = split(m, "card 4111 1111", " 1111 1111 ok")
    assert [(p.start, p.end, p.text) for p in shares[0]] == [(5, 14, "<CREDIT_CARD_1>")]
    assert [(p.start, p.end, p.text) for p in shares[1]] == [(0, 10, "")]
    assert m.vault.restore("card <CREDIT_CARD_1> ok") == "card 4111 1111 1111 1111 ok"
    assert m.apply(" 1111 1111 ok", [], pieces=shares[1]) == (" ok", [shares[1][0].applied])


def test_a_mask_keeps_each_character_in_its_part() -> None:
    shares = split(masker({"CREDIT_CARD": {"type": "mask", "keep_last": 4}}), "card 4111 1111", " 1111 1111")
    assert [p.text for p in shares[0] + shares[1]] == ["*" * 9, "*" * 6 + "1111"]


def test_a_span_found_in_one_part_that_overlaps_is_folded_in() -> None:
    alone = [[("PHONE_NUMBER", 0, 14, 0.6)], []]  # a longer reading of the first part alone
    shares = split(masker(), "1111 4111 1111", " 1111 1111 ok", found_alone=alone)
    assert [(p.start, p.end) for p in shares[0]] == [(0, 14)] and [(p.start, p.end) for p in shares[1]] == [(0, 10)]
