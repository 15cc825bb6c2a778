"""What the record keeps of a body: the model asked for, the tokens used; JSON read within a depth bound."""

from __future__ import annotations

import json

from addons.bodies.jsonlimits import json_depth, loads_bounded
from addons.bodies.usage import request_model, response_usage


def test_usage_from_openai_anthropic_json_and_sse() -> None:
    openai = json.dumps({"usage": {"prompt_tokens": 3, "completion_tokens": 5}}).encode()
    assert vars(response_usage(openai, "application/json")) == {"tokens_in": 3, "tokens_out": 5}
    anthropic_sse = (
        b'event: message_start\n'
        b'data: {"type":"message_start","message":{"usage":{"input_tokens":7,"output_tokens":1}}}\n\n'
        b'event: message_delta\ndata: {"type":"message_delta","usage":{"output_tokens":9}}\n\n'
    )
    assert vars(response_usage(anthropic_sse, "text/event-stream")) == {"tokens_in": 7, "tokens_out": 9}
    assert vars(response_usage(b"not json", "application/json")) == {"tokens_in": None, "tokens_out": None}
    assert request_model(b'{"model": "gpt-x"}', "application/json") == "gpt-x"
    assert request_model(b'{"model": 1}', "application/json") is None


# -- every flow has its request event (item 12) -----------------------------------------------------------------------

def test_json_depth_without_recursion() -> None:
    assert json_depth(b'{"a": [1, {"b": "[[[[ not brackets \\" ]]"}]}') == 3
    assert json_depth("[" * 100_000 + "]" * 100_000) == 100_000
    assert loads_bounded("[" * 1_000_000 + "]" * 1_000_000) is None
    assert request_model(b'{"model": "m", "x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}", "application/json") is None
    deep_sse = b"data: " + b"[" * 100_000 + b"]" * 100_000 + b'\n\ndata: {"usage": {"prompt_tokens": 2}}\n\n'
    assert response_usage(deep_sse, "text/event-stream").tokens_in == 2
