"""SSE rewriting: pseudonyms restored and pattern entities masked however the stream is cut."""

from __future__ import annotations

import json

import pytest

from addons.masking.operators import Masker
from addons.masking.payloads import adapter_for
from addons.masking.pseudonyms import Vault
from addons.masking.recognizers import engine_spec, pattern_scanner
from addons.masking.stream import StreamRewriter, hold_from
from addons.rules.masking import Masking
from scripts.demo_upstream import anthropic_events, openai_events, responses_events

MASKING = Masking.model_validate({})
SCANNER = pattern_scanner(engine_spec(MASKING))


def vault_for(values: dict[str, tuple[str, str]]) -> tuple[Vault, str]:
    vault = Vault()
    return vault, {k: vault.pseudonym(entity, value) for k, (entity, value) in values.items()}


VAULT, TOKENS = vault_for({"name": ("PERSON", "Maria Garcia"), "mail": ("EMAIL_ADDRESS", "maria@example.org")})
MASKED = f"Write to {TOKENS['name']} at {TOKENS['mail']} today."
RESTORED = "Write to Maria Garcia at maria@example.org today."


def rewriter(path: str, mask: bool = True) -> StreamRewriter:
    masker = Masker(MASKING.profile(), VAULT, b"k" * 32, reversible=False) if mask else None
    return StreamRewriter(adapter_for(path), VAULT, masker, SCANNER if mask else None)


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
    ("hello wor", "wor"), ("hello ", ""), ("card 4111 1111 ", "4111 1111 "), ("iban DE89 3704 ", "DE89 3704 "),
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
