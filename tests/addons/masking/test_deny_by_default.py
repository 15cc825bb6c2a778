"""Deny by default: every string and key of a request is a slot but the adapter's structural fields; bodies read
one way only; documents inside strings decoded; masked keys renamed, and paths that name them as they left."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path

import pytest

from addons.flow.errors import DuplicateJsonKey, MalformedBody
from addons.masking.payloads import ADAPTERS, Payload, parse_body

ROOT = Path(__file__).resolve().parents[3]
EMAIL = "jane.roe@acme.example"


def parse(path: str, body: object, content_type: str = "application/json") -> Payload:
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    parsed = parse_body(path, content_type, raw)
    assert parsed is not None
    return parsed[0]


def by_path(payload: Payload, kind: str | None = None) -> dict[str, str]:
    return {s.path: s.text for s in payload.slots if kind is None or s.kind == kind}


def mask_email(payload: Payload) -> object:
    for slot in payload.slots:
        if EMAIL in slot.text:
            slot.set(slot.text.replace(EMAIL, "<EMAIL_ADDRESS_1>"))
    return json.loads(payload.render())


def b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


def test_openai_chat_fields_the_adapter_skipped_are_analysed() -> None:
    body = {"model": "gpt-4o", "metadata": {"customer": EMAIL}, "unknown_top_level": f"cc {EMAIL}",
            "messages": [{"role": "user", "name": EMAIL, "content": "hi"},
                         {"role": "tool", "tool_call_id": "call_1", "content": "ok"}],
            "tools": [{"type": "function", "function": {"name": "mail", "description": f"writes to {EMAIL}",
                                                        "parameters": {"type": "object", "properties": {
                                                            "to": {"type": "string", "enum": [EMAIL]}}}}}],
            "prediction": {"type": "content", "content": f"Dear {EMAIL}"}, "tool_choice": "auto"}
    payload = parse("/v1/chat/completions", body)
    fields = by_path(payload, "field")
    assert {"$.metadata.customer", "$.unknown_top_level", "$.messages[0].name", "$.tools[0].function.description",
            "$.tools[0].function.parameters.properties.to.enum[0]"} <= fields.keys()
    assert by_path(payload, "text")["$.prediction.content"] == f"Dear {EMAIL}"  # the model may echo it: conversation
    everything = by_path(payload)
    for structural in ("$.model", "$.messages[0].role", "$.messages[1].tool_call_id", "$.tools[0].type",
                       "$.tools[0].function.name", "$.tool_choice"):
        assert structural not in everything
    sent = json.dumps(mask_email(payload))
    assert EMAIL not in sent and sent.count("<EMAIL_ADDRESS_1>") == 6


def test_a_structural_field_holding_free_text_or_an_address_is_analysed() -> None:
    payload = parse("/v1/chat/completions", {"model": f"mail {EMAIL}", "messages": [{"role": EMAIL, "content": "x"}]})
    assert by_path(payload, "field") == {"$.model": f"mail {EMAIL}", "$.messages[0].role": EMAIL}


def test_a_structural_field_holding_a_data_uri_is_decoded_and_analysed() -> None:
    # found by hypothesis (test_planted_values): one word, so it passed as a model name, a card number inside
    uri = "data:text/plain;base64," + b64("4000000000000002")
    payload = parse("/v1/chat/completions", {"model": uri, "messages": [{"role": "user", "content": "x"}]})
    assert "4000000000000002" in by_path(payload, "field").values()


def test_keys_of_every_object_are_analysed_and_a_masked_key_is_renamed() -> None:
    body = {"metadata": {EMAIL: "vip", "other": {EMAIL: {"note": f"for {EMAIL}"}}, "<EMAIL_ADDRESS_1>": "taken"}}
    payload = parse("/any/api", body)
    assert [s.path for s in payload.slots if s.text == EMAIL and s.kind == "key"] == [
        f'$.metadata["{EMAIL}"]<key>', f'$.metadata.other["{EMAIL}"]<key>']
    sent = mask_email(payload)
    # The rendered object still names each key once, in the order it came.
    assert list(sent["metadata"]) == ["<EMAIL_ADDRESS_1>_2", "other", "<EMAIL_ADDRESS_1>"]
    assert sent["metadata"]["other"] == {"<EMAIL_ADDRESS_1>": {"note": "for <EMAIL_ADDRESS_1>"}}
    # Paths name keys as they left: findings never carry a value the body no longer has.
    assert payload.sent_path(f'$.metadata.other["{EMAIL}"].note') == '$.metadata.other["<EMAIL_ADDRESS_1>"].note'
    assert payload.sent_path(f'$.metadata["{EMAIL}"]<key>') == '$.metadata["<EMAIL_ADDRESS_1>_2"]<key>'


def test_anthropic_documents_metadata_tools_and_base64_sources() -> None:
    body = {"model": "claude", "metadata": {"user_id": EMAIL},
            "tools": [{"name": "lookup", "description": f"asks {EMAIL}", "input_schema": {"type": "object"}}],
            "messages": [{"role": "user", "content": [
                {"type": "document", "title": f"notes of {EMAIL}",
                 "source": {"type": "text", "media_type": "text/plain", "data": f"write to {EMAIL}"}},
                {"type": "document", "source": {"type": "base64", "media_type": "text/plain", "data": b64(EMAIL)}},
                {"type": "document", "source": {"type": "content", "content": [{"type": "text", "text": EMAIL}]}},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "iVBORw0KGgo="}},
                {"type": "redacted_thinking", "data": "EmwKAhgBEgy3va3pzix/LafPsn4a"},
                {"type": "thinking", "thinking": f"they are {EMAIL}", "signature": "WaUjzkypQ2mUEVM36O2T"}]}]}
    payload = parse("/v1/messages", body)
    text = by_path(payload, "text")
    assert text["$.messages[0].content[0].source.data"] == f"write to {EMAIL}"
    assert text["$.messages[0].content[1].source.data<text/plain>"] == EMAIL
    assert text["$.messages[0].content[2].source.content[0].text"] == EMAIL
    assert {"$.metadata.user_id", "$.tools[0].description", "$.messages[0].content[0].title",
            "$.messages[0].content[5].thinking"} <= by_path(payload, "field").keys()
    assert [(u.path, u.media_type) for u in payload.uninspected] == [
        ("$.messages[0].content[3].source.data", "image/png")]
    assert not {"$.messages[0].content[4].data", "$.messages[0].content[5].signature"} & by_path(payload).keys()
    sent = mask_email(payload)
    assert EMAIL not in json.dumps(sent)
    assert base64.b64decode(sent["messages"][0]["content"][1]["source"]["data"]) == b"<EMAIL_ADDRESS_1>"


def test_responses_files_and_images_carrying_text() -> None:
    body = {"model": "gpt", "previous_response_id": "resp_1", "input": [{"role": "user", "content": [
        {"type": "input_file", "filename": f"{EMAIL}.pdf", "file_data": f"data:text/plain;base64,{b64(EMAIL)}"},
        {"type": "input_image", "image_url": f"data:text/plain,hi%20{EMAIL}"},
        {"type": "input_image", "image_url": f"data:image/png;base64,{b64('a text called an image: ' + EMAIL)}"},
        {"type": "input_image", "image_url": "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAA"}]}]}
    payload = parse("/v1/responses", body)
    fields = by_path(payload, "field")
    assert fields["$.input[0].content[0].filename"] == f"{EMAIL}.pdf"
    assert fields["$.input[0].content[0].file_data<text/plain>"] == EMAIL
    assert fields["$.input[0].content[1].image_url<text/plain>"] == f"hi {EMAIL}"
    assert fields["$.input[0].content[2].image_url<image/png>"].endswith(EMAIL)  # UTF-8 text, whatever it declares
    assert [u.path for u in payload.uninspected] == ["$.input[0].content[3].image_url"]
    sent = mask_email(payload)
    parts = sent["input"][0]["content"]
    assert parts[1]["image_url"] == "data:text/plain,hi%20%3CEMAIL_ADDRESS_1%3E"
    assert base64.b64decode(parts[0]["file_data"].split(",", 1)[1]) == b"<EMAIL_ADDRESS_1>"
    assert parts[3]["image_url"] == body["input"][0]["content"][3]["image_url"]  # binary: untouched


def test_chat_audio_and_file_parts() -> None:
    body = {"messages": [{"role": "user", "content": [
        {"type": "input_audio", "input_audio": {"data": "UklGRiQAAABXQVZFZm10IBAAAAABAAEA", "format": "wav"}},
        {"type": "file", "file": {"filename": EMAIL, "file_data": "data:application/pdf;base64,JVBERi0xLjcK/+4="}}]}]}
    payload = parse("/v1/chat/completions", body)
    assert [(u.path, u.media_type) for u in payload.uninspected] == [
        ("$.messages[0].content[0].input_audio.data", "audio/wav"), ("$.messages[0].content[1].file.file_data",
                                                                     "application/pdf")]
    assert by_path(payload, "field")["$.messages[0].content[1].file.filename"] == EMAIL


def test_a_json_body_that_is_a_string_is_walked() -> None:
    payload = parse("/v1/chat/completions", b'"write to ' + EMAIL.encode() + b'"')
    assert by_path(payload) == {"$": f"write to {EMAIL}"}
    assert mask_email(payload) == "write to <EMAIL_ADDRESS_1>"


@pytest.mark.parametrize("content_type", ["application/json", ""])
def test_duplicate_keys_anywhere_are_refused(content_type: str) -> None:
    body = b'{"messages": [{"role": "user", "content": "' + EMAIL.encode() + b'", "content": "hi"}]}'
    with pytest.raises(DuplicateJsonKey, match='names the key "content" twice') as refused:
        parse_body("/v1/chat/completions", content_type, body)
    assert refused.value.status == 400 and refused.value.type == "duplicate_json_key"
    with pytest.raises(DuplicateJsonKey) as unnamed:
        parse_body("/x", content_type, b'{"m": {"' + EMAIL.encode() + b'": 1, "' + EMAIL.encode() + b'": 2}}')
    assert EMAIL not in unnamed.value.message  # the message is recorded: a key that may be PII is not named


@pytest.mark.parametrize("content_type", ["application/json", ""])
def test_json_nested_past_the_bound_is_refused(content_type: str) -> None:
    with pytest.raises(MalformedBody, match="more than 128 levels deep"):
        parse_body("/x", content_type, b'{"a": ' + b"[" * 200 + b"]" * 200 + b"}")


def test_embedded_json_read_two_ways_is_analysed_as_text() -> None:
    arguments = '{"to": "' + EMAIL + '", "to": "nobody"}'
    body = {"messages": [{"role": "assistant", "tool_calls": [
        {"id": "c", "type": "function", "function": {"name": "mail", "arguments": arguments}}]}]}
    payload = parse("/v1/chat/completions", body)
    assert by_path(payload, "text") == {"$.messages[0].tool_calls[0].function.arguments": arguments}
    assert EMAIL not in json.dumps(mask_email(payload))


def test_a_body_is_rendered_again_even_when_nothing_changed() -> None:
    raw = b'{"model":"m",  "messages":[{"role":"user","content":"hi \\u00e9"}], "n": 1.50}'
    payload = parse("/v1/chat/completions", raw)
    assert payload.render() == '{"model": "m", "messages": [{"role": "user", "content": "hi é"}], "n": 1.5}'.encode()
    lone = parse("/x", b'{"a": "\\ud800 x"}')
    assert json.loads(lone.render()) == {"a": "\ud800 x"}  # a lone surrogate stays valid JSON


def test_readme_lists_each_adapters_structural_fields() -> None:
    readme = (ROOT / "README.md").read_text()
    for adapter in ADAPTERS:
        section = readme.split(f"(`{adapter.name}`", 1)[1].split("\n\n", 2)[1]
        listed = set(re.findall(r"^\| `(\$[^`]*)` \|", section, re.M))
        assert listed == set(adapter.structural), adapter.name


def test_a_payload_is_freed_without_the_cycle_collector() -> None:
    """Slots do not point back at their payload: a request's payload goes when its last reference does, not in a
    collector pause (a 100 KB conversation has hundreds of slots)."""
    import gc
    import weakref

    gc.disable()
    try:
        payload = parse("/v1/chat/completions",
                        {"metadata": {EMAIL: "x"}, "messages": [{"role": "user", "content": "hi"}]})
        payload.add_root()
        mask_email(payload)
        gone = weakref.ref(payload)
        del payload
        assert gone() is None
        bare = parse("/x", b'"a string body"')
        gone = weakref.ref(bare)
        del bare
        assert gone() is None
    finally:
        gc.enable()


def test_values_and_keys_no_recognizer_can_flag_get_no_slot() -> None:
    body = {"metadata": {"tier": "gold", "owner": EMAIL}, "messages": [{"role": "user", "content": "hi"}]}
    raw = json.dumps(body).encode()
    payload, _ = parse_body("/v1/chat/completions", "application/json", raw,
                            inert=lambda v: v.islower() and v.isalpha())
    assert by_path(payload) == {"$.messages[0].content": "hi", "$.metadata.owner": EMAIL}
    assert json.loads(payload.render()) == body
