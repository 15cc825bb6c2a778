"""Pseudonyms stay the same for the whole of a conversation the provider keeps (issue 11, item 9): OpenAI
Responses continued by ``previous_response_id`` or ``conversation``, Assistants threads; through the official SDK
and a real gateway to the demo upstream, which answers a continued turn with every user text of the conversation.

Another caller naming the same conversation gets nothing back; after a restart the pseudonyms of the earlier turns
are left as they are, never restored to a value of the new turn.
"""

from __future__ import annotations

import json
import re

import openai
import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.e2e

JANE, BOB, CAROL = "Maria Garcia", "John Smith", "carol.white@example.org"
TURN_1 = f"Please call {JANE} about the invoice."
TURN_2 = f"Now ask {BOB} to write to {JANE} too."


def sdk(gateway: Gateway, upstream, user: str = "alice", **kwargs) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key="unused", max_retries=0,
                         http_client=gateway.client(user=user), **kwargs)


def sent(upstream, path: str) -> list[dict]:
    return [json.loads(r["body"]) for r in upstream.received if r["path"].startswith(path) and r["body"]]


def assert_store_clean(gateway: Gateway, *values: str) -> None:
    gateway.stop()
    store = gateway.db.read_bytes() + (gateway.db.parent / (gateway.db.name + ".journal")).read_bytes()
    for value in values:
        assert value.encode() not in store, f"{value!r} is in the store"


@pytest.mark.parametrize("stream", [False, True])
def test_a_continued_response_keeps_its_pseudonyms(gateway: Gateway, upstream, stream: bool) -> None:
    client = sdk(gateway, upstream)

    def turn(text: str, previous: str | None = None) -> tuple[str, str]:
        extra = {"previous_response_id": previous} if previous else {}
        if not stream:
            reply = client.responses.create(model="demo", input=text, **extra)
            return reply.id, reply.output_text
        with client.responses.stream(model="demo", input=text, **extra) as events:
            final = events.get_final_response()
        return final.id, final.output_text

    first, answer = turn(TURN_1)
    assert answer == TURN_1
    second, answer = turn(TURN_2, first)
    assert answer == f"{TURN_1}\n{TURN_2}"  # the turn-1 pseudonym the upstream repeats is Maria again
    third, answer = turn("Thanks.", second)
    assert answer == f"{TURN_1}\n{TURN_2}\nThanks."  # a turn that names nobody still restores the earlier ones

    inputs = [body["input"] for body in sent(upstream, "/v1/responses")]
    assert inputs == ["Please call <PERSON_1> about the invoice.", "Now ask <PERSON_2> to write to <PERSON_1> too.",
                      "Thanks."]

    # Another caller naming the same response reads the pseudonyms, never Alice's values.
    other = sdk(gateway, upstream, user="mallory").responses.create(model="demo", input="Who?",
                                                                    previous_response_id=third)
    assert JANE not in other.output_text and BOB not in other.output_text
    assert "<PERSON_1>" in other.output_text and "<PERSON_2>" in other.output_text
    assert_store_clean(gateway, JANE, BOB)


def test_a_conversation_object_keeps_its_pseudonyms(gateway: Gateway, upstream) -> None:
    client = sdk(gateway, upstream)
    conversation = client.conversations.create(items=[{"type": "message", "role": "user",
                                                       "content": f"My colleague is {JANE}."}])
    reply = client.responses.create(model="demo", conversation=conversation.id, input=f"Write to {CAROL} and {JANE}.")
    assert reply.output_text == f"My colleague is {JANE}.\nWrite to {CAROL} and {JANE}."
    [created] = sent(upstream, "/v1/conversations")
    assert created["items"][0]["content"] == "My colleague is <PERSON_1>."
    [turn] = sent(upstream, "/v1/responses")
    assert turn["input"] == "Write to <EMAIL_ADDRESS_1> and <PERSON_1>."
    assert_store_clean(gateway, JANE, CAROL)


@pytest.mark.filterwarnings("ignore:The Assistants API is deprecated:DeprecationWarning")
def test_an_assistants_thread_keeps_its_pseudonyms(gateway: Gateway, upstream) -> None:
    threads = sdk(gateway, upstream).beta.threads
    thread = threads.create(messages=[{"role": "user", "content": f"Book a table for {JANE}."}])
    threads.messages.create(thread.id, role="user", content=f"And one for {BOB}, then tell {JANE}.")
    run = threads.runs.create(thread.id, assistant_id="asst_demo")
    assert run.thread_id == thread.id
    newest = threads.messages.list(thread.id).data[0]
    assert newest.role == "assistant"
    assert newest.content[0].text.value == f"Book a table for {JANE}.\nAnd one for {BOB}, then tell {JANE}."
    [added] = sent(upstream, f"/v1/threads/{thread.id}/messages")
    assert added["content"] == "And one for <PERSON_2>, then tell <PERSON_1>."
    assert_store_clean(gateway, JANE, BOB)


def test_after_a_restart_earlier_pseudonyms_are_never_restored_to_new_values(gateway_factory, upstream) -> None:
    before = gateway_factory(name="before")
    first = sdk(before, upstream).responses.create(model="demo", input=TURN_1)
    before.stop()  # the gateway forgets (memory only): the next turn's pseudonyms are in a new series

    after = gateway_factory(name="after")
    reply = sdk(after, upstream).responses.create(model="demo", input=f"Now ask {BOB}.", previous_response_id=first.id)
    [_, turn] = sent(upstream, "/v1/responses")
    series = re.fullmatch(r"Now ask <PERSON_([A-Z]{6})_1>\.", turn["input"])
    assert series, turn["input"]
    assert reply.output_text == f"Please call <PERSON_1> about the invoice.\nNow ask {BOB}."
    nxt = sdk(after, upstream).responses.create(model="demo", input=f"And {JANE}.", previous_response_id=reply.id)
    assert sent(upstream, "/v1/responses")[-1]["input"] == f"And <PERSON_{series.group(1)}_2>."
    assert nxt.output_text.endswith(f"Now ask {BOB}.\nAnd {JANE}.")


def test_an_id_the_upstream_rejects_is_not_kept(gateway: Gateway, upstream) -> None:
    """Review finding 7: a turn naming an id the provider does not know (404) keeps nothing under it."""
    client = sdk(gateway, upstream)
    for _ in range(2):
        with pytest.raises(openai.NotFoundError):
            client.responses.create(model="demo", input=f"Now ask {BOB}.", previous_response_id="resp_forged")
    first, second = [body["input"] for body in sent(upstream, "/v1/responses")]
    series = [re.fullmatch(r"Now ask <PERSON_([A-Z]{6})_1>\.", text) for text in (first, second)]
    assert all(series) and series[0].group(1) != series[1].group(1)  # each a new series: the first was not kept
