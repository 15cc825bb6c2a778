"""Pseudonyms kept per conversation the provider keeps: loaded, numbered on, sealed, expired, never another's."""

from __future__ import annotations

import os

import pytest
from pydantic import ValidationError

from addons.masking.conversations import (
    ENTRY_BYTES,
    Conversation,
    Conversations,
    IdWatcher,
    answered,
    event_answered,
    keeps_conversations,
    references,
)
from addons.masking.pseudonyms import TOKEN, Vault, merged_state
from addons.rules.masking import Masking
from addons.store.keys import OriginalsKey

ALICE = Conversation("alice", "api.openai.com:443", ("resp_1",))


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def kept(ttl: float = 60, limit: int = 100, clock: Clock | None = None) -> Conversations:
    return Conversations(OriginalsKey(os.urandom(32)), ttl, limit, clock or Clock())


def first_turn(conversations: Conversations) -> Vault:
    vault = conversations.open(Conversation("alice", ALICE.host), ["Call Jane Doe"])
    assert vault.pseudonym("PERSON", "Jane Doe") == "<PERSON_1>"
    conversations.save(Conversation("alice", ALICE.host), vault, ("resp_1",))
    return vault


def test_a_turn_that_continues_a_response_numbers_on() -> None:
    conversations = kept()
    first_turn(conversations)
    vault = conversations.open(ALICE, ["Ask Bob Smith to call Jane Doe"])
    assert vault.pseudonym("PERSON", "Bob Smith") == "<PERSON_2>"
    assert vault.pseudonym("PERSON", "jane  doe") == "<PERSON_1>"  # the same value, case and spacing aside
    assert vault.restore("<PERSON_1> and <PERSON_2>") == "Jane Doe and Bob Smith"


def test_another_caller_or_upstream_naming_the_same_id_gets_a_new_series() -> None:
    conversations = kept()
    first_turn(conversations)
    for other in (Conversation("mallory", ALICE.host, ALICE.ids), Conversation("alice", "other:443", ALICE.ids),
                  Conversation(None, ALICE.host, ALICE.ids)):
        vault = conversations.open(other, ["hello"])
        assert vault.restore("<PERSON_1>") == "<PERSON_1>"
        assert vault.series and vault.pseudonym("PERSON", "Jane Doe") == f"<PERSON_{vault.series}_1>"


def test_an_unknown_conversation_never_restores_an_earlier_pseudonym_to_a_new_value() -> None:
    clock = Clock()
    conversations = kept(ttl=60, clock=clock)
    first_turn(conversations)
    clock.now = 61  # expired (a restart forgets everything likewise)
    vault = conversations.open(ALICE, ["Ask Bob Smith"])
    token = vault.pseudonym("PERSON", "Bob Smith")
    assert token != "<PERSON_1>" and TOKEN.fullmatch(token)
    assert vault.restore("<PERSON_1> met " + token) == "<PERSON_1> met Bob Smith"
    # the new series is kept like any vault: the next turn numbers on in it
    conversations.save(ALICE, vault, ("resp_3",))
    again = conversations.open(Conversation("alice", ALICE.host, ("resp_3",)), [])
    assert again.series == vault.series and again.pseudonym("PERSON", "Carol") == f"<PERSON_{vault.series}_2>"


def test_a_saved_turn_refreshes_its_time_and_the_limit_forgets_the_least_recent() -> None:
    clock = Clock()
    conversations = kept(ttl=60, limit=2, clock=clock)
    vault = first_turn(conversations)
    clock.now = 50
    conversations.save(ALICE, vault)
    clock.now = 100  # 50 s after the last save
    assert not conversations.open(ALICE, []).series
    conversations.save(Conversation("alice", ALICE.host, ("b", "c")), vault)
    assert len(conversations) == 2
    assert conversations.open(ALICE, []).series  # forgotten past the limit: a new series


def test_a_loaded_vault_still_reserves_pseudonym_shaped_caller_text() -> None:
    conversations = kept()
    first_turn(conversations)
    vault = conversations.open(ALICE, ["the template says <PERSON_2>"])
    assert vault.pseudonym("PERSON", "Bob") == "<PERSON_3>"
    assert vault.restore("<PERSON_2>") == "<PERSON_2>"
    # reserved text is kept with the conversation
    conversations.save(ALICE, vault)
    assert conversations.open(ALICE, []).pseudonym("PERSON", "Carol") == "<PERSON_4>"


def test_nothing_is_kept_in_the_clear() -> None:
    conversations = kept()
    first_turn(conversations)
    entries = list(conversations._sealed.items())
    assert len(entries) == 1
    name, sealed = entries[0]
    assert b"resp_1" not in name and b"alice" not in name
    assert b"Jane" not in sealed and b"PERSON" not in sealed
    assert "Jane" not in repr(conversations) and "resp_1" not in repr(conversations)


def test_a_sealed_entry_moved_to_another_name_does_not_open() -> None:
    conversations = kept()
    first_turn(conversations)
    [(name, sealed)] = list(conversations._sealed.items())
    other = conversations._name(Conversation("mallory", ALICE.host), "resp_1")
    conversations._sealed[other] = sealed
    assert conversations.open(Conversation("mallory", ALICE.host, ("resp_1",)), []).series


def test_vault_state_round_trips() -> None:
    vault = Vault(["<EMAIL_ADDRESS_1> is taken"], series="QXJMTB")
    vault.pseudonym("EMAIL_ADDRESS", "jane@acme.com")
    copy = Vault.from_state(vault.state())
    assert copy.state() == vault.state()
    assert copy.restore("<EMAIL_ADDRESS_QXJMTB_1>") == "jane@acme.com"
    with pytest.raises(ValueError):
        Vault(series="qx1")


@pytest.mark.parametrize(("path", "document", "ids"), [
    ("/v1/responses", {"previous_response_id": "resp_1", "input": "hi"}, ("resp_1",)),
    ("/v1/responses", {"conversation": "conv_1"}, ("conv_1",)),
    ("/v1/responses", {"conversation": {"id": "conv_1"}}, ("conv_1",)),
    ("/v1/responses", {"input": "hi"}, ()),
    ("/v1/responses/resp_1/input_items?limit=5", None, ("resp_1",)),
    ("/v1/conversations/conv_1/items", {"items": []}, ("conv_1",)),
    ("/v1/threads/thread_1/messages", {"role": "user"}, ("thread_1",)),
    ("/v1/threads/thread_1/runs/run_1/submit_tool_outputs", {}, ("thread_1",)),
    ("/v1/threads/runs", {}, ()),
    ("/v1/chat/completions", {"previous_response_id": "resp_1"}, ()),
])
def test_references(path: str, document: object, ids: tuple[str, ...]) -> None:
    assert references(path, document) == ids


def test_answered() -> None:
    assert answered({"id": "resp_2", "object": "response", "conversation": {"id": "conv_1"}}) == ("resp_2", "conv_1")
    assert answered({"id": "thread_1", "object": "thread"}) == ("thread_1",)
    assert answered({"id": "run_1", "object": "thread.run", "thread_id": "thread_1"}) == ("thread_1",)
    assert answered({"id": "chatcmpl-1", "object": "chat.completion"}) == ()
    assert answered(["resp_1"]) == ()
    assert event_answered('{"type": "response.created", "response": {"id": "resp_9", "object": "response"}}') == \
        ("resp_9",)
    assert event_answered("[DONE]") == ()
    assert keeps_conversations("/v1/responses") and not keeps_conversations("/v1/chat/completions")


def test_id_watcher_passes_bytes_and_finds_the_first_ids_across_chunks() -> None:
    found: list[tuple[str, ...]] = []
    watcher = IdWatcher(found.append)
    stream = (b'event: response.created\ndata: {"type": "response.created", "response": {"id": "resp_7", '
              b'"object": "response"}}\n\nevent: response.completed\ndata: {"response": {"id": "resp_7", '
              b'"object": "response"}}\n\n')
    out = b"".join(watcher(stream[i:i + 7]) for i in range(0, len(stream), 7)) + watcher(b"")
    assert out == stream
    assert found == [("resp_7",)]  # once: the watcher stops looking


def test_the_rules_file_bounds_them_in_time() -> None:
    assert Masking().conversation_seconds == 24 * 3600 and Masking().conversation_limit == 10000
    assert Masking(conversation_ttl="15m").conversation_seconds == 900
    for wrong in ("90", "0s", "forever"):
        with pytest.raises(ValidationError, match="conversation_ttl"):
            Masking(conversation_ttl=wrong)


def test_a_late_answer_never_sets_a_conversation_back() -> None:
    """Review finding 6: turn A's answer arrives after turn B's request; C must not reuse B's pseudonym."""
    conversations = kept()
    turn0 = conversations.open(Conversation("alice", ALICE.host), ["Ann"])
    assert turn0.pseudonym("PERSON", "Ann") == "<PERSON_1>"
    conversations.save(Conversation("alice", ALICE.host), turn0, ("resp_0",))
    on = Conversation("alice", ALICE.host, ("resp_0",))
    a = conversations.open(on, ["Bob"])
    assert a.pseudonym("PERSON", "Bob") == "<PERSON_2>"
    assert conversations.update(on, a) == ()  # kept already: merged at once
    b = conversations.open(on, ["Carol"])
    assert b.pseudonym("PERSON", "Carol") == "<PERSON_3>"
    conversations.update(on, b)
    conversations.save(Conversation("alice", ALICE.host), a, ("resp_a",))  # A's answer: under its new id only
    conversations.save(on, a)  # even A's older vault saved again under the id B numbered on from sets nothing back
    c = conversations.open(on, ["Dave"])
    assert c.pseudonym("PERSON", "Dave") == "<PERSON_4>"
    assert c.restore("<PERSON_1> <PERSON_2> <PERSON_3>") == "Ann Bob Carol"
    assert conversations.open(Conversation("alice", ALICE.host, ("resp_a",)), []).restore("<PERSON_2>") == "Bob"


def test_pseudonyms_that_disagree_are_never_merged_the_conversation_is_forgotten() -> None:
    conversations = kept()
    first_turn(conversations)  # resp_1: Jane Doe = <PERSON_1>
    other = Vault()
    assert other.pseudonym("PERSON", "Bob Smith") == "<PERSON_1>"
    conversations.save(ALICE, other)
    vault = conversations.open(ALICE, [])
    assert vault.series  # forgotten: a new series, neither value restored for <PERSON_1>
    assert vault.restore("<PERSON_1>") == "<PERSON_1>"


def test_merged_state() -> None:
    one, two = Vault(), Vault()
    one.pseudonym("PERSON", "Ann")
    two.pseudonym("PERSON", "ann")
    two.pseudonym("PERSON", "Bob")
    two.pseudonym("EMAIL_ADDRESS", "b@x.org")
    merged = merged_state(one.state(), two.state())
    assert merged is not None
    vault = Vault.from_state(merged)
    assert vault.restore("<PERSON_1> <PERSON_2> <EMAIL_ADDRESS_1>") == "Ann Bob b@x.org"
    assert vault.pseudonym("PERSON", "Carol") == "<PERSON_3>"
    assert merged_state(two.state(), one.state()) is not None  # a prefix of the other, either way round
    for state in (Vault(series="ABCDEF").state(),  # another series
                  Vault(["text with <PERSON_1>"]).state()):  # one's pseudonym, the other's reserved text
        assert merged_state(one.state(), state) is None
    swapped = Vault()
    swapped.pseudonym("PERSON", "Bob")
    assert merged_state(one.state(), swapped.state()) is None  # <PERSON_1>: Ann or Bob
    twice = Vault()
    twice.pseudonym("EMAIL_ADDRESS", "x")
    twice.pseudonym("PERSON", "Ann")
    twice._token_of[("PERSON", "ann")] = "<PERSON_7>"
    assert merged_state(one.state(), twice.state()) is None  # Ann: <PERSON_1> or <PERSON_7>


def test_an_id_the_upstream_has_not_confirmed_is_not_kept() -> None:
    conversations = kept()
    named = Conversation("alice", ALICE.host, ("resp_unknown",))
    vault = conversations.open(named, ["Ann"])
    vault.pseudonym("PERSON", "Ann")
    assert conversations.update(named, vault) == ("resp_unknown",) and len(conversations) == 0
    conversations.save(named, vault)  # what the pii addon does once a 2xx answer confirms it
    assert conversations.open(named, []).series == vault.series


def test_memory_is_bounded_in_bytes_and_an_entry_in_size() -> None:
    conversations = Conversations(OriginalsKey(os.urandom(32)), 60, 1000, Clock(), memory=1 << 20)
    vault = Vault()
    for i in range(200):
        vault.pseudonym("PERSON", f"Person Number {i}")
    for i in range(100):
        conversations.save(Conversation("alice", ALICE.host, (f"resp_{i}",)), vault)
    assert conversations._sealed.currsize <= 1 << 20 and 0 < len(conversations) < 100
    assert conversations.open(Conversation("alice", ALICE.host, ("resp_99",)), []).restore("<PERSON_1>") == \
        "Person Number 0"  # the most recent stay
    assert conversations.open(Conversation("alice", ALICE.host, ("resp_0",)), []).series  # the oldest went first

    first_turn(conversations)
    flood = conversations.open(ALICE, [f"<PERSON_{i}>" for i in range(ENTRY_BYTES // 8)])  # reserved: cheap to send
    conversations.update(ALICE, flood)
    assert conversations.open(ALICE, []).series  # not kept (and the older entry not left behind): a new series


def test_the_rules_file_bounds_them_in_bytes() -> None:
    assert Masking().conversation_bytes == 64 << 20
    assert Masking(conversation_memory="2048KiB").conversation_bytes == 2 << 20
    assert Masking(conversation_memory="1GiB").conversation_bytes == 1 << 30
    for wrong in ("64MB", "512KiB", "lots", "-1"):
        with pytest.raises(ValidationError, match="conversation_memory"):
            Masking(conversation_memory=wrong)
