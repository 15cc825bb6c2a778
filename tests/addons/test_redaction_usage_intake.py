"""Pure functions beside the addons: redaction, usage parsing, body checks."""

from __future__ import annotations

import json

from addons.intake import check_body
from addons.redaction import REDACTED, redact_headers, redact_path
from addons.usage import request_model, response_usage


def test_secret_headers_are_redacted_names_kept() -> None:
    fields = [(b"Authorization", b"Bearer sk-1"), (b"X-Api-Key", b"k"), (b"Cookie", b"a=b"),
              (b"X-Amz-Security-Token", b"t"), (b"Content-Type", b"application/json")]
    pairs = redact_headers(fields)
    assert pairs == [["Authorization", REDACTED], ["X-Api-Key", REDACTED], ["Cookie", REDACTED],
                     ["X-Amz-Security-Token", REDACTED], ["Content-Type", "application/json"]]


def test_secret_query_parameters_are_redacted() -> None:
    assert redact_path("/v1/x?key=AIza-abc&q=1") == "/v1/x?key=%5Bredacted%5D&q=1"  # Google's API key parameter
    assert "sk-9" not in redact_path("/v1/x?api_key=sk-9&q=1")
    assert "s3cr3t" not in redact_path("/v1/x?access_token=s3cr3t")
    assert redact_path("/plain") == "/plain"


def test_usage_from_openai_anthropic_json_and_sse() -> None:
    openai = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 5}}).encode()
    assert vars(response_usage(openai, "application/json")) == {"tokens_in": 3, "tokens_out": 5}
    anthropic_sse = (
        b'event: message_start\ndata: {"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    )
    assert vars(response_usage(anthropic_sse, "text/event-stream")) == {"tokens_in": 7, "tokens_out": 9}
    assert vars(response_usage(b"not json", "application/json")) == {"tokens_in": None, "tokens_out": None}
    assert request_model(b'{"model": "gpt-x"}', "application/json") == "gpt-x"
    assert request_model(b'{"model": 1}', "application/json") is None


def test_body_checks() -> None:
    assert check_body(b'{"a": 1}', "application/json") is None
    assert check_body(b"\xff", "application/octet-stream") is None
    assert "offset 1" in check_body(b'"\xff"', "application/json").message
    assert "line 1, column" in check_body(b'{"a": }', "application/vnd.api+json").message
    assert check_body(b"caf\xe9", "text/plain; charset=UTF-8").status == 400
    assert check_body(b"caf\xe9", "text/plain") is None  # no charset declared: not ours to judge
