"""Real clients through a real gateway to a real TLS upstream; the upstream sees the gateway's key only."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import anthropic
import certifi
import httpx
import openai
import pytest

from tests.conftest import UPSTREAM_KEY, Gateway, curl_available

pytestmark = pytest.mark.e2e
CALLER_KEY = "sk-caller-PLANTED-a1b2c3"


def last_received(upstream, path: str) -> dict:
    matching = [r for r in upstream.received if r["path"].startswith(path)]
    assert matching, f"the upstream received nothing on {path}"
    return matching[-1]


def header(received: dict, name: str) -> list[str]:
    return [v for k, v in received["headers"] if k.lower() == name]


def assert_gateway_credential(received: dict, header_name: str = "authorization", expected: str | None = None) -> None:
    expected = expected or f"Bearer {UPSTREAM_KEY}"
    assert header(received, header_name) == [expected]
    everything = json.dumps(received["headers"])
    assert CALLER_KEY not in everything
    assert not header(received, "proxy-authorization")


@pytest.mark.skipif(not curl_available(), reason="curl is not installed")
def test_curl_forward_mode(proxy_env: Gateway, upstream) -> None:
    gw = proxy_env
    body = json.dumps({"model": "demo", "messages": [{"role": "user", "content": "hello from curl"}]})
    result = subprocess.run(
        ["curl", "-sS", "--fail-with-body", "--proxy", gw.proxy_url_for(), "--cacert", str(gw.ca_cert),
         "-H", f"Authorization: Bearer {CALLER_KEY}", "-H", "content-type: application/json", "-d", body,
         f"https://localhost:{upstream.port}/v1/chat/completions"],
        capture_output=True, text=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr + result.stdout
    assert json.loads(result.stdout)["choices"][0]["message"]["content"] == "hello from curl"
    assert_gateway_credential(last_received(upstream, "/v1/chat/completions"))


def test_httpx_forward_mode(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        r = client.get(f"https://localhost:{upstream.port}/echo/hi", headers={"x-api-key": CALLER_KEY})
    assert r.status_code == 200
    assert r.json()["path"] == "/echo/hi"
    assert_gateway_credential(last_received(upstream, "/echo/hi"))


def test_openai_sdk_forward_mode(proxy_env: Gateway, upstream) -> None:
    client = openai.OpenAI(base_url=f"https://localhost:{upstream.port}/v1", api_key=CALLER_KEY, max_retries=0)
    reply = client.chat.completions.create(model="gpt-demo", messages=[{"role": "user", "content": "ping pong"}])
    assert reply.choices[0].message.content == "ping pong"
    assert_gateway_credential(last_received(upstream, "/v1/chat/completions"))

    stream = client.chat.completions.create(
        model="gpt-demo", messages=[{"role": "user", "content": "a streamed answer, piece by piece"}],
        stream=True, stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "a streamed answer, piece by piece"
    assert chunks[-1].usage is not None

    flows = [f for f in proxy_env.flows() if f["path"] == "/v1/chat/completions"]
    assert len(flows) == 2
    assert {f["fate"] for f in flows} == {"completed"}
    assert all(f["model"] == "gpt-demo" and f["tokens_in"] and f["tokens_out"] for f in flows)


def test_anthropic_sdk_forward_mode(proxy_env: Gateway, upstream) -> None:
    client = anthropic.Anthropic(base_url=f"https://127.0.0.1:{upstream.port}", api_key=CALLER_KEY, max_retries=0)
    message = client.messages.create(
        model="claude-demo", max_tokens=64, messages=[{"role": "user", "content": "hello claude"}]
    )
    assert message.content[0].text == "hello claude"
    assert_gateway_credential(last_received(upstream, "/v1/messages"), "x-api-key", UPSTREAM_KEY)

    with client.messages.stream(
        model="claude-demo", max_tokens=64, messages=[{"role": "user", "content": "streaming, through the gateway"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "streaming, through the gateway"
    flows = [f for f in proxy_env.flows() if f["path"] == "/v1/messages"]
    assert [f["fate"] for f in flows] == ["completed", "completed"]
    assert all(f["upstream"] == "demo-anthropic" and f["tokens_out"] for f in flows)


def test_openai_sdk_reverse_mode(gateway: Gateway, upstream) -> None:
    # Reverse mode: the caller's "API key" is its Warden token; the gateway swaps it for the provider key.
    client = openai.OpenAI(
        base_url=f"http://127.0.0.1:{gateway.reverse_port}/v1", api_key=gateway.token("alice"), max_retries=0,
        http_client=httpx.Client(trust_env=False),
    )
    reply = client.chat.completions.create(model="gpt-demo", messages=[{"role": "user", "content": "reverse"}])
    assert reply.choices[0].message.content == "reverse"
    assert_gateway_credential(last_received(upstream, "/v1/chat/completions"))
    [flow] = [f for f in gateway.flows() if f["path"] == "/v1/chat/completions"]
    assert flow["mode"] == "reverse" and flow["fate"] == "completed" and flow["upstream"] == "demo"
    assert flow["user"] == "alice"


def test_one_tunnel_many_requests(gateway: Gateway, upstream) -> None:
    with gateway.client() as client:
        for i in range(10):
            assert client.get(f"https://localhost:{upstream.port}/echo/{i}").status_code == 200
    flows = gateway.flows()
    assert sorted(f["path"] for f in flows) == sorted(f"/echo/{i}" for i in range(10))
    assert len({f["client"] for f in flows}) == 1  # one connection, ten recorded flows


def test_tls_to_upstream_is_verified(gateway_factory, upstream) -> None:
    """An upstream whose certificate the gateway does not trust fails (502, recorded), never passes silently."""
    gw = gateway_factory(upstream_trust=Path(certifi.where()))
    with gw.client() as client:
        r = client.get(f"https://localhost:{upstream.port}/echo/untrusted")
    assert r.status_code == 502
    assert not [x for x in upstream.received if x["path"] == "/echo/untrusted"]
    [flow] = gw.flows()
    assert flow["fate"] == "upstream_error"
