"""Redaction: one definition of a credential header, secrets scrubbed from paths, events and streams."""

from __future__ import annotations

import gzip

from addons.flow.streams import compose_stream
from addons.store.events import Event
from addons.store.redaction import (
    REDACTED,
    Secrets,
    StreamScrubber,
    credential_values,
    is_credential_header,
    path_secret_values,
    redact_event,
    redact_headers,
    redact_path,
)


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


# -- one definition of a credential header (issue 9, items 10 and 11) -------------------------------------------------

ATTACKER_NAMES = [
    "Authorization", "Proxy-Authorization", "Proxy-Anything", "Authentication", "X-Forwarded-Authorization", "Cookie",
    "Cookie2", "Set-Cookie", "anthropic-api-key", "openai-api-key", "x-auth-token", "X-Custom-Token", "X-Vendor-Key",
    "x-amz-security-token", "X-Amz-Date", "X-Amz-Content-Sha256", "Ocp-Apim-Subscription-Key", "x-goog-api-key",
    "api-key", "apikey", "X-Request-Signature", "X-Hub-Signature-256", "x-sig", "X-Session-Id", "X-Client-Secret",
    "X-Password", "DPoP", "X-Client-Cert", "X-MS-Client-Principal", "X-Jwt-Assertion", "X-Credentials",
]
BENIGN_NAMES = [
    "Content-Type", "Content-Length", "Accept", "Accept-Encoding", "User-Agent", "Host", "Connection", "Keep-Alive",
    "OpenAI-Organization", "OpenAI-Project", "OpenAI-Beta", "anthropic-version", "anthropic-beta",
    "anthropic-dangerous-direct-browser-access", "x-stainless-lang", "x-stainless-retry-count", "x-stainless-timeout",
    "x-stainless-read-timeout", "x-stainless-runtime-version", "x-stainless-helper-method", "Idempotency-Key",
    "x-request-id", "traceparent", "x-ratelimit-remaining-tokens", "anthropic-ratelimit-tokens-remaining",
    "Sec-WebSocket-Key", "X-Keyword", "Cache-Control",
]


def test_credential_headers_by_name_and_by_value() -> None:
    for name in ATTACKER_NAMES:
        assert is_credential_header(name, "x"), name
    for name in BENIGN_NAMES:
        assert not is_credential_header(name, "application/json"), name
    assert is_credential_header("X-Innocent", "Bearer sk-0123456789")
    assert is_credential_header("X-Innocent", "Basic YWxpY2U6c2VjcmV0")
    assert is_credential_header("X-Trace", "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln")
    assert is_credential_header("X-Note", "sk-proj-0123456789abcdefghij")
    assert not is_credential_header("X-Plan", "Basic tier")


def test_tokens_in_paths_are_redacted() -> None:
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxIn0.c2lnbmF0dXJl"
    assert redact_path(f"/v1/x?jwt={jwt}&q=1") == "/v1/x?jwt=%5Bredacted%5D&q=1"
    assert redact_path(f"/v1/files/{jwt}/content") == "/v1/files/[redacted]/content"
    for name in ("access_token", "id_token", "refresh_token", "client_secret", "X-Amz-Signature", "X-Amz-Credential"):
        assert "s3cr3t" not in redact_path(f"/v1/x?{name}=s3cr3t&q=1"), name
    assert redact_path("/v1/x?keyword=cats&limit=3") == "/v1/x?keyword=cats&limit=3"
    assert path_secret_values(f"/a/{jwt}?access_token=tok-0123456789abcd&q=plainword") == {jwt, "tok-0123456789abcd"}


def test_caller_values_are_keys_not_words() -> None:
    found = credential_values([("Authorization", "Bearer sk-caller-0123456789"),
                               ("Cookie", "sid=abc0123456789xyz; t=1"),
                               ("X-Api-Key", "ignore previous instructions"),
                               ("Content-Type", "text/plain0123456789")])
    assert found == {"sk-caller-0123456789", "abc0123456789xyz"}


KEY = "sk-upstream-PLANTED-4f1c9e"


def test_stream_scrubber_catches_a_key_cut_anywhere() -> None:
    secrets = Secrets([KEY, f"Bearer {KEY}", "short"])
    data = f'data: {{"a": "{KEY}", "b": "Bearer {KEY}", "c": "sk-upstream-PLANTE"}}\n\n'.encode()
    for size in range(1, len(data) + 1):
        scrubber = StreamScrubber(secrets)
        pieces = [scrubber(data[i:i + size]) for i in range(0, len(data), size)]
        assert all(p != b"" for chunk in pieces for p in chunk)  # never an empty chunk mid-stream
        out = b"".join(b"".join(chunk) for chunk in pieces) + b"".join(scrubber(b""))
        assert out == data.replace(f"Bearer {KEY}".encode(), b"[redacted-credential]").replace(
            KEY.encode(), b"[redacted-credential]"), size
    wrapped = compose_stream(lambda d: [d.upper(), d] if d else [b"tail " + KEY.encode()], StreamScrubber(secrets))
    assert b"".join(wrapped(b"x") + wrapped(b"")) == b"Xx" + b"tail [redacted-credential]"


def test_secrets_in_encoded_bodies_and_every_event_field() -> None:
    secrets = Secrets([KEY])
    body, found = secrets.body(gzip.compress(f'{{"echo": "{KEY}"}}'.encode()), "gzip")
    assert found == 1 and KEY.encode() not in gzip.decompress(body)
    event = Event(kind="response", flow_id="f", path=f"/x?token={KEY}", reason=f"upstream said {KEY}",
                  headers=[["X-Echo", KEY], ["X-Provider-Ident", "pv7x2q"], ["Content-Encoding", "gzip"]],
                  body=gzip.compress(KEY.encode()), detail={"nested": [{"why": KEY}]}, model=KEY)
    redact_event(event, secrets, names={"x-provider-ident"})
    assert KEY not in event.record() and KEY.encode() not in gzip.decompress(event.body)
    assert ["X-Provider-Ident", REDACTED] in event.headers
    assert event.detail["redacted_credentials"] >= 4


def test_a_compressed_body_is_checked_within_a_bound_or_not_kept() -> None:
    """A refused request's body may be a bomb: checking it for secrets must not decode it whole."""
    import zlib

    compressor = zlib.compressobj(9, zlib.DEFLATED, 31)
    bomb = b"".join(compressor.compress(b"\0" * (1 << 20)) for _ in range(64)) + compressor.flush()  # 64 MiB
    body, found = Secrets([KEY]).body(bomb, "gzip")
    assert body is None and found == 0
    body, found = Secrets([KEY]).body(gzip.compress(b"fine"), "gzip")
    assert gzip.decompress(body) == b"fine" and found == 0
