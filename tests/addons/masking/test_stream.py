"""SSE rewriting: pseudonyms restored and pattern entities masked however the stream is cut."""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from addons.bodies.sse import events as sse_events
from addons.bodies.sse import parse_event
from addons.masking.operators import Masker
from addons.masking.payloads import adapter_for
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers import engine_spec, pattern_scanner
from addons.masking.stream import StreamRewriter, hold_from
from addons.rules.masking import Masking
from scripts.demo_upstream import anthropic_events, openai_events, responses_events
from tests.strategies import VALUES, around, splits

MASKING = Masking.model_validate({})
SCANNER = pattern_scanner(engine_spec(MASKING))


def vault_for(values: dict[str, tuple[str, str]]) -> tuple[Vault, str]:
    vault = Vault()
    return vault, {k: vault.pseudonym(entity, value) for k, (entity, value) in values.items()}


VAULT, TOKENS = vault_for({"name": ("PERSON", "Maria Garcia"), "mail": ("EMAIL_ADDRESS", "maria@example.org")})
MASKED = f"Write to {TOKENS['name']} at {TOKENS['mail']} today."
RESTORED = "Write to Maria Garcia at maria@example.org today."


def rewriter(path: str, mask: bool = True, scanner=SCANNER) -> StreamRewriter:
    masker = Masker(MASKING.profile(), VAULT, b"k" * 32, reversible=False) if mask else None
    return StreamRewriter(adapter_for(path), VAULT, masker, scanner if mask else None)


def run(rw: StreamRewriter, stream: bytes, cuts: list[int]) -> bytes:
    out = []
    for start, end in zip([0, *cuts], [*cuts, len(stream)], strict=True):
        chunks = rw(stream[start:end])
        assert all(chunks), "an empty chunk would end an HTTP/1.1 body early"
        out += chunks
    out += rw(b"")
    return b"".join(out)


def texts(stream: bytes, path: str) -> str:
    out = []
    for line in stream.decode().splitlines():
        if not line.startswith("data: ") or line == "data: [DONE]":
            continue
        event = json.loads(line[6:])  # every event stays valid JSON
        for slot in adapter_for(path).stream(event).deltas:
            out.append(slot.text)
    return "".join(out)


STREAMS = {
    "/v1/chat/completions": lambda reply, size: openai_events({"stream_options": {"include_usage": True}}, reply, size),
    "/v1/messages": lambda reply, size: anthropic_events({}, reply, size),
    "/v1/responses": lambda reply, size: responses_events({}, reply, size),
}


@pytest.mark.parametrize("path", list(STREAMS))
@pytest.mark.parametrize("size", [1, 2, 5])
def test_pseudonyms_restored_wherever_deltas_and_bytes_are_cut(path: str, size: int) -> None:
    stream = b"".join(STREAMS[path](MASKED, size))
    for cut in range(0, len(stream), max(1, len(stream) // 40)):  # the byte stream cut in two, all along
        rw = rewriter(path)
        client = run(rw, stream, [cut])
        assert texts(client, path) == RESTORED
        assert texts(bytes(rw.record), path) == MASKED  # the record keeps pseudonyms, never values
        assert b"maria@example.org" not in bytes(rw.record)
    assert texts(run(rewriter(path), stream, list(range(1, len(stream)))), path) == RESTORED  # byte by byte


@pytest.mark.parametrize("size", [1, 3, 4, 7])
def test_pattern_entities_the_upstream_sends_are_masked_across_deltas(size: int) -> None:
    reply = "Call +1 415-867-5309 or mail bob.jones@evil.example, card 4111 1111 1111 1111, thanks."
    stream = b"".join(openai_events({}, reply, size))
    rw = rewriter("/v1/chat/completions")
    client = texts(run(rw, stream, []), "/v1/chat/completions")
    assert client == "Call <PHONE_NUMBER> or mail <EMAIL_ADDRESS>, card <CREDIT_CARD>, thanks."
    assert [a.entity for a in rw.applied] == ["PHONE_NUMBER", "EMAIL_ADDRESS", "CREDIT_CARD"]


def test_restore_only_holds_back_nothing_but_token_prefixes() -> None:
    rw = rewriter("/v1/chat/completions", mask=False)
    first = rw(b"".join(list(openai_events({}, "Hello wor", 9))[:2]))
    assert texts(b"".join(first), "/v1/chat/completions") == "Hello wor"  # words pass at once
    held = rw(b"".join(list(openai_events({}, f"x {TOKENS['name'][:4]}", 99))[1:2]))
    assert texts(b"".join(held), "/v1/chat/completions") == "x "


def test_tool_arguments_restored_as_json() -> None:
    vault, tokens = vault_for({"q": ("PERSON", 'Ann "The Boss" Lee')})
    rw = StreamRewriter(adapter_for("/v1/chat/completions"), vault, None, None)
    args = json.dumps({"who": tokens["q"]})
    events = []
    for i in range(0, len(args), 3):
        delta = {"tool_calls": [{"index": 0, "function": {"arguments": args[i:i + 3]}}]}
        events.append(f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta, 'finish_reason': None}]})}\n\n")
    events.append('data: {"choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]}\n\ndata: [DONE]\n\n')
    out = run(rw, "".join(events).encode(), [])
    assert json.loads(texts(out, "/v1/chat/completions")) == {"who": 'Ann "The Boss" Lee'}


@pytest.mark.parametrize(("text", "held"), [
    ("hello wor", "wor"), ("hello ", "hello "), ("hello, ", ""), ("Start. ", ""), ("card 4111 1111 ", "4111 1111 "),
    ("iban DE89 3704 ", "DE89 3704 "),
    ("mail me at ann@x.exa", "ann@x.exa"), ("call (415) 86", "(415) 86"), ("done.", "done."),
])
def test_hold_back(text: str, held: str) -> None:
    assert text[hold_from(text):] == held


def test_private_key_blocks_are_held_until_they_end() -> None:
    masking = Masking.model_validate({"recognizers": [{"entity": "PRIVATE_KEY", "patterns": [
        r"-----BEGIN [A-Z ]*PRIVATE KEY-----[\s\S]+?-----END [A-Z ]*PRIVATE KEY-----"]}]})
    scanner = pattern_scanner(engine_spec(masking))
    rw = StreamRewriter(adapter_for("/v1/messages"), Vault(),
                        Masker(masking.profile(), Vault(), b"k" * 32, reversible=False), scanner)
    reply = "Here:\n-----BEGIN PRIVATE KEY-----\nMIIEvQIBADANBg\nkqhkiG9w0BAQEF\n-----END PRIVATE KEY-----\nok"
    out = texts(run(rw, b"".join(anthropic_events({}, reply, 6)), []), "/v1/messages")
    assert out == "Here:\n<PRIVATE_KEY>\nok"


def test_a_failing_rewrite_cuts_the_stream_off() -> None:
    def broken(text: str) -> list:
        raise RuntimeError("scanner broke")

    rw = StreamRewriter(adapter_for("/v1/chat/completions"), VAULT,
                        Masker(MASKING.profile(), VAULT, b"k" * 32, reversible=False), broken)
    stream = b"".join(openai_events({}, "a reply with text", 4))
    assert rw(stream) == [] and rw(b"more") == [] and rw(b"") == []
    assert rw.error == "RuntimeError: scanner broke"


# -- every string of every event ---------------------------------------------------------------------

EMAIL, CARD, SSN = "jane.roe@example.net", "4111 1111 1111 1111", "536-22-8726"
PLANTED = (EMAIL, CARD, SSN)
REPLY = f"Mail {EMAIL} or pay with {CARD}; ssn {SSN}. Ask {TOKENS['name']} at {TOKENS['mail']}."
SHOWN = "Mail <EMAIL_ADDRESS> or pay with <CREDIT_CARD>; ssn <US_SSN>. Ask Maria Garcia at maria@example.org."
RECORDED = f"Mail <EMAIL_ADDRESS> or pay with <CREDIT_CARD>; ssn <US_SSN>. Ask {TOKENS['name']} at {TOKENS['mail']}."


def sse(data: object, name: str | None = None) -> str:
    return (f"event: {name}\n" if name else "") + f"data: {json.dumps(data)}\n\n"


Pieces = Callable[[str], list[str]]  # a running text cut into deltas


def fives(text: str) -> list[str]:
    return [text[i:i + 5] for i in range(0, len(text), 5)]


def openai_stream(reply: str = REPLY, pieces: Pieces = fives) -> bytes:
    base = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "demo"}

    def chunk(delta: dict, finish: str | None = None, **extra: object) -> str:
        return sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

    events = [chunk({"role": "assistant", "content": ""}, provider_trace=f"billed to {CARD}")]
    events += [chunk({"reasoning_content": piece}) for piece in pieces(reply)]
    events += [chunk({"content": piece}) for piece in pieces(reply)]
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": f"notify_{EMAIL}", "arguments": ""}}
    events += [chunk({"tool_calls": [call]})]
    events += [chunk({"tool_calls": [{"index": 0, "function": {"arguments": piece}}]})
               for piece in pieces(json.dumps({"note": reply}))]
    events += [chunk({}, "stop"), sse({"error": {"message": f"quota of {EMAIL}", "type": "server_error"}}),
               "data: [DONE]\n\n"]
    return "".join(events).encode()


def anthropic_stream(reply: str = REPLY, pieces: Pieces = fives) -> bytes:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "content": [], "model": "demo",
               "note": f"for {TOKENS['name']}, ssn {SSN}"}
    events = [sse({"type": "message_start", "message": message}, "message_start")]
    for index, (kind, field) in enumerate((("thinking", "thinking"), ("text", "text"))):
        block = {"type": kind, kind: f"{EMAIL} says "}
        start = {"type": "content_block_start", "index": index, "content_block": block}
        events.append(sse(start, "content_block_start"))
        events += [sse({"type": "content_block_delta", "index": index,
                        "delta": {"type": f"{kind}_delta", field: piece}}, "content_block_delta")
                   for piece in pieces(reply)]
        events.append(sse({"type": "content_block_stop", "index": index}, "content_block_stop"))
    events.append(sse({"type": "error", "error": {"type": "overloaded_error", "message": f"card {CARD}"}}, "error"))
    events.append(sse({"type": "message_stop"}, "message_stop"))
    return "".join(events).encode()


def responses_stream(reply: str = REPLY, pieces: Pieces = fives) -> bytes:
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    events = [sse({"type": "response.created", "response": {"id": "resp_1", "instructions": f"Help {TOKENS['name']}",
                                                            "metadata": {EMAIL: SSN}}}, "response.created")]
    events += [sse({"type": "response.reasoning_summary_text.delta", "item_id": "rs_1", "output_index": 0,
                    "summary_index": 0, "delta": piece}, "response.reasoning_summary_text.delta")
               for piece in pieces(reply)]
    events += [sse({"type": "response.output_text.delta", **at, "delta": piece, "logprobs": []},
                   "response.output_text.delta") for piece in pieces(reply)]
    events.append(sse({"type": "response.output_text.done", **at, "text": reply}, "response.output_text.done"))
    events.append(sse({"type": "response.function_call_arguments.done", "item_id": "fc_1", "output_index": 1,
                       "arguments": json.dumps({"who": reply})}, "response.function_call_arguments.done"))
    return "".join(events).encode()


SAMPLES = {"/v1/chat/completions": openai_stream, "/v1/messages": anthropic_stream, "/v1/responses": responses_stream}


def channels(stream: bytes, path: str) -> dict[tuple, str]:
    """Every event's data parsed (each must be valid JSON), and the running texts joined per channel."""
    out: dict[tuple, str] = {}
    for raw in sse_events(stream):
        _, data = parse_event(raw)
        if data is None or data == "[DONE]":
            continue
        for slot in adapter_for(path).stream(json.loads(data)).deltas:
            out[slot.channel] = out.get(slot.channel, "") + slot.text
    return out


def prose(text: str) -> str:
    """A running text as a reader sees it: tool-call arguments are JSON text holding it."""
    try:
        document = json.loads(text)
    except ValueError:
        return text
    return document["note"] if isinstance(document, dict) else text


SCANNER_CACHED = functools.lru_cache(maxsize=65536)(SCANNER)  # the same texts come back for every chunking


@st.composite
def planted_streams(draw: st.DrawFn) -> tuple[str, str, str, bytes, list[int]]:
    """(path, entity, value, the stream, byte offsets to cut it at): a value of each entity at any offset of a
    unicode reply beside two pseudonyms, every running text cut into deltas anywhere, the bytes cut anywhere
    (inside a UTF-8 sequence, a pseudonym, an event's framing)."""
    path = draw(st.sampled_from(sorted(SAMPLES)))
    entity = draw(st.sampled_from(sorted(VALUES)))
    value = draw(VALUES[entity])
    reply = f"{draw(around(value))} — ask {TOKENS['name']} at {TOKENS['mail']}, né à 東京 😀."
    stream = SAMPLES[path](reply, lambda text: draw(splits(text)))
    cuts = sorted(draw(st.sets(st.integers(1, len(stream) - 1), max_size=40)))
    return path, entity, value, stream, cuts


@settings(max_examples=200, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(case=planted_streams())
def test_any_chunking_of_a_stream_yields_valid_events_without_the_planted_value(case) -> None:
    path, entity, value, stream, cuts = case
    whole = rewriter(path, scanner=SCANNER_CACHED)
    client = run(whole, stream, [])
    chunked = rewriter(path, scanner=SCANNER_CACHED)
    assert run(chunked, stream, cuts) == client and chunked.record == whole.record  # the bytes' cuts change nothing
    record = bytes(whole.record)
    for value_ in (value, *PLANTED):
        assert value_.encode() not in client and value_.encode() not in record, value_
    shown, recorded = channels(client, path), channels(record, path)  # every event valid JSON
    assert len(shown) == len(recorded) == (3 if path == "/v1/chat/completions" else 2)
    for text in map(prose, shown.values()):
        # masked where it stood (digits around an SSN may make it read as a phone number: hidden all the same)
        assert re.search(r"<[A-Z][A-Z_]*>", text.partition(" — ask")[0]), text
        assert "ask Maria Garcia at maria@example.org, né à 東京 😀." in text, text
    for text in map(prose, recorded.values()):
        assert f"ask {TOKENS['name']} at {TOKENS['mail']}" in text and "Maria Garcia" not in text, text


@pytest.mark.parametrize("path", list(SAMPLES))
def test_every_string_of_every_event_is_masked_and_restored(path: str) -> None:
    rw = rewriter(path)
    client = run(rw, SAMPLES[path](), [])
    assert all(prose(text) == SHOWN for text in channels(client, path).values())
    assert all(prose(text) == RECORDED for text in channels(bytes(rw.record), path).values())
    events = [json.loads(parse_event(raw)[1]) for raw in sse_events(client) if parse_event(raw)[1] != "[DONE]"]
    text = json.dumps(events)
    assert all(value not in text for value in PLANTED)
    if path == "/v1/chat/completions":
        assert events[0]["provider_trace"] == "billed to <CREDIT_CARD>"
        calls = [c for e in events for ch in e.get("choices", []) for c in ch["delta"].get("tool_calls", [])]
        [call] = [c for c in calls if "id" in c]
        assert call["function"]["name"] == "<EMAIL_ADDRESS>"  # notify_jane.roe@... is one address
        assert events[-1]["error"]["message"] == "quota of <EMAIL_ADDRESS>"
        assert events[0]["id"] == "chatcmpl-7" and events[0]["choices"][0]["delta"]["role"] == "assistant"
    elif path == "/v1/messages":
        assert events[0]["message"]["note"] == "for Maria Garcia, ssn <US_SSN>"  # restored, masked
        assert events[1]["content_block"] == {"type": "thinking", "thinking": "<EMAIL_ADDRESS> says "}
        assert events[-2]["error"] == {"type": "overloaded_error", "message": "card <CREDIT_CARD>"}
    else:
        assert events[0]["response"] == {"id": "resp_1", "instructions": "Help Maria Garcia",
                                         "metadata": {"<EMAIL_ADDRESS>": "<US_SSN>"}}
        done = next(e for e in events if e["type"] == "response.output_text.done")
        assert done["text"] == SHOWN
        arguments = next(e for e in events if e["type"] == "response.function_call_arguments.done")["arguments"]
        assert json.loads(arguments) == {"who": SHOWN}  # JSON text in a string stays JSON


def test_what_is_not_json_is_scanned_as_text_and_unknown_fields_are_dropped() -> None:
    rw = rewriter("/v1/anything")
    stream = (f": keep-alive for {EMAIL}\n\ndata: plain {CARD} text\n\n"
              f"event: note\nx-trace: {SSN}\ndata: {{\"id\": \"a b {EMAIL}\"}}\n\n").encode()
    client = run(rw, stream, [])
    assert client == (b":keep-alive for <EMAIL_ADDRESS>\n\ndata: plain <CREDIT_CARD> text\n\n"
                      b'event: note\ndata: {"id": "a b <EMAIL_ADDRESS>"}\n\n')
    assert bytes(rw.record) == client


def test_structural_values_pass_as_sent() -> None:
    rw = rewriter("/v1/chat/completions")
    event = b'data: {"id":"chatcmpl-4111111111111111","model":"m-4111 1111 1111 1111","choices":[]}\n\n'
    client = run(rw, event, [])
    assert b"chatcmpl-4111111111111111" in client  # an id is one word: structure, not text
    assert b'"model": "m-<CREDIT_CARD>"' in client  # a model "name" with spaces is text


def test_events_are_rendered_from_what_was_scanned_never_passed_as_sent() -> None:
    stream = (f'data: {{"choices": [], "note": "{EMAIL}", "note": "hi"}}\n\n'  # a parser keeps the last
              f"data: [DONE]\n: {EMAIL}\n\n").encode()
    client = run(rewriter("/v1/chat/completions"), stream, [])
    assert client == b'data: {"choices": [], "note": "hi"}\n\n:<EMAIL_ADDRESS>\ndata: [DONE]\n\n'


def test_restore_only_restores_pseudonyms_in_every_field() -> None:
    rw = rewriter("/v1/messages", mask=False)
    stream = sse({"type": "message_start", "message": {"id": "m", "extra": f"for {TOKENS['name']}"}}, "message_start")
    client = run(rw, stream.encode(), [])
    assert json.loads(parse_event(client)[1])["message"]["extra"] == "for Maria Garcia"
    assert TOKENS["name"].encode() in bytes(rw.record)


# -- the flush event ----------------------------------------------------------------------------------

def rewritten(path: str, stream: str) -> list[tuple[list, object]]:
    """The client's events: (SSE fields, data parsed as JSON)."""
    out = []
    for raw in sse_events(run(rewriter(path), stream.encode(), [])):
        fields, data = parse_event(raw)
        out.append((fields, data if data in (None, "[DONE]") else json.loads(data)))
    return out


def test_the_flush_event_carries_only_the_released_text() -> None:
    base = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "demo",
            "system_fingerprint": "fp_1", "service_tier": "default"}
    call = {"index": 0, "id": "call_1", "type": "function", "function": {"name": "lookup", "arguments": '{"q": "Ja'}}
    delta = {"role": "assistant", "content": "Hello wor", "tool_calls": [call]}
    stream = (sse({**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}],
                   "usage": None, "obfuscation": "x1"})
              + sse({**base, "choices": [{"index": 0, "delta": {}, "finish_reason": "tool_calls"}]})
              + "data: [DONE]\n\n")
    [first, (_, content), (_, arguments), last, done] = rewritten("/v1/chat/completions", stream)
    assert first[1]["choices"][0]["delta"]["content"] == "Hello "  # "wor" may still grow into an entity
    top = {"id": "chatcmpl-7", "object": "chat.completion.chunk", "created": 1, "model": "demo"}
    assert content == {**top, "choices": [{"index": 0, "delta": {"content": "wor"}}]}
    assert arguments == {**top, "choices": [{"index": 0, "delta": {"tool_calls": [
        {"index": 0, "type": "function", "function": {"arguments": '"Ja'}}]}}]}  # never the id or the name again
    assert last[1]["choices"][0]["finish_reason"] == "tool_calls" and done[1] == "[DONE]"


def test_the_flush_event_of_each_api_has_its_own_shape() -> None:
    delta = {"type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "so wor"}}
    stream = sse(delta, "content_block_delta") + sse({"type": "content_block_stop", "index": 1}, "content_block_stop")
    assert rewritten("/v1/messages", stream)[1] == ([("event", "content_block_delta")], {
        "type": "content_block_delta", "index": 1, "delta": {"type": "thinking_delta", "thinking": "wor"}})
    at = {"item_id": "msg_1", "output_index": 0, "content_index": 0}
    stream = (sse({"type": "response.output_text.delta", "sequence_number": 4, **at, "delta": "so wor", "logprobs": []},
                  "response.output_text.delta")
              + sse({"type": "response.output_text.done", **at, "text": "so wor"}, "response.output_text.done"))
    assert rewritten("/v1/responses", stream)[1] == ([("event", "response.output_text.delta")], {
        "type": "response.output_text.delta", **at, "delta": "wor"})


def test_a_flush_event_never_carries_a_raw_locator() -> None:
    stream = sse({"id": f"x {EMAIL}", "model": EMAIL, "choices": [{"index": 0, "delta": {"content": "so wor"}}]})
    flush = ([], {"choices": [{"index": 0, "delta": {"content": "wor"}}]})
    assert rewritten("/v1/chat/completions", stream)[1] == flush


# -- a provider's own delta fields ------------------------------------------------------------------


@pytest.mark.parametrize("value", [SSN, EMAIL, CARD])
def test_a_value_split_across_a_providers_own_delta_field_is_masked(value: str) -> None:
    half = len(value) // 2
    openai = "".join(sse({"choices": [{"index": 0, "delta": {"content": "", "record": piece}}]})
                     for piece in ("see ", value[:half], value[half:], " ok"))
    openai += sse({"choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}]}) + "data: [DONE]\n\n"
    anthropic = "".join(sse({"type": "content_block_delta", "index": 0,
                             "delta": {"type": "text_delta", "text": "", "record": piece}}, "content_block_delta")
                        for piece in ("see ", value[:half], value[half:], " ok"))
    anthropic += sse({"type": "content_block_stop", "index": 0}, "content_block_stop")
    for path, stream in (("/v1/chat/completions", openai), ("/v1/messages", anthropic)):
        events = [data for _, data in rewritten(path, stream) if isinstance(data, dict)]
        deltas = [event["delta"] if "delta" in event else event["choices"][0]["delta"] for event in events
                  if "delta" in event or "choices" in event]
        joined = "".join(delta.get("record", "") for delta in deltas)
        assert joined.startswith("see <") and joined.endswith("> ok"), joined  # one running text, masked whole
        assert value[:half] not in joined and value[half:] not in joined


def test_a_deltas_role_and_signature_pass_whole() -> None:
    stream = sse({"choices": [{"index": 0, "delta": {"role": "assistant", "content": "hi, "}}]})
    assert rewritten("/v1/chat/completions", stream)[0][1]["choices"][0]["delta"] == {"role": "assistant",
                                                                                      "content": "hi, "}
    stream = sse({"type": "content_block_delta", "index": 0,
                  "delta": {"type": "signature_delta", "signature": "EqQBCgIYAh"}}, "content_block_delta")
    assert rewritten("/v1/messages", stream)[0][1]["delta"] == {"type": "signature_delta", "signature": "EqQBCgIYAh"}
