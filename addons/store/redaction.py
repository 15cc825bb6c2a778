"""What never leaves for an upstream and never reaches the store: credentials, by name and by value.

One definition serves both sides. ``is_credential_header`` decides which caller headers the
credentials addon strips (unless an upstream's ``pass_headers`` names them) and which header
values the record shows as ``[redacted]``; names stay, so the record still shows that a
credential was sent. ``Secrets`` holds known secret values (every upstream's resolved
credential, the caller's own tokens): the recorder removes them from every event before it is
queued, and the credentials addon removes the upstream keys from what the caller receives.
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import re
from collections.abc import Iterable
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from mitmproxy.net import encoding

from addons.bodies.decoding import DecodingError, coding_of, decode_now
from addons.store.events import Event

# A compressed body in the record is decoded to be checked for secrets up to this size; past it, it is not kept.
CHECK_LIMIT = 16 * 1024 * 1024
REDACTED = "[redacted]"
REDACTED_CREDENTIAL = "[redacted-credential]"  # a known secret value found where it does not belong
MIN_SECRET = 8  # characters: shorter values would match ordinary text; such secrets are redacted by name only
MIN_SHAPED = 13  # characters: no credential shape below matches fewer ("ntlm " and 8 more)
MIN_CALLER_SECRET = 16  # a caller's own values: long, no spaces, letters and digits (see _token_like)

# Header (and query parameter) names that carry a credential, whatever the vendor prefix:
# Authorization, Proxy-*, Cookie/Cookie2/Set-Cookie, X-Amz-*, *-Key, *-Token, *Signature*, ...
_CREDENTIAL_NAME = re.compile(
    r"^proxy-|^x-amz-|auth|token(?!s)|secret|passw|passphrase|cookie|session|signature|signed|cred|jwt|bearer"
    r"|dpop|saml|cert|principal|key(?:s|id)?(?:$|[-_.])|(?:^|[-_.])sig(?:$|[-_.])",
    re.IGNORECASE,
)
# Names the pattern catches that carry no credential and that clients and protocols need.
_NOT_CREDENTIALS = frozenset({"idempotency-key", "sec-websocket-key", "sec-websocket-accept"})
_SECRET_PARAMS = frozenset({"key", "apikey", "sig", "code", "password", "pwd", "pass", "state", "ticket", "otp"})

# Values that are credentials whatever the header is called: an auth scheme with its token, a JWT,
# the published shapes of provider keys (OpenAI/Anthropic sk-, AWS, Google, GitHub, Slack).
_AUTH_SCHEME_VALUE = re.compile(
    r"^\s*(?:bearer|basic|digest|negotiate|ntlm|token|apikey|api-key|aws4-hmac-sha256|sharedkey|hmac|dpop)\s+\S{8,}",
    re.IGNORECASE,
)
_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*"  # JWT (header.payload.signature)
    r"|\b(?:sk|rk|pk)-[A-Za-z0-9_-]{16,}"
    r"|\bAKIA[0-9A-Z]{16}\b|\bAIza[0-9A-Za-z_-]{30,}|\bgh[pousr]_[A-Za-z0-9]{20,}|\bxox[abprs]-[A-Za-z0-9-]{10,}"
)


@functools.lru_cache(maxsize=4096)  # every request and event asks again for the same few header names
def is_credential_name(name: str) -> bool:
    """Whether a header or parameter name says it carries a credential."""
    name = name.strip().lower()
    return name not in _NOT_CREDENTIALS and bool(_CREDENTIAL_NAME.search(name))


def is_credential_header(name: str, value: str = "") -> bool:
    """Whether a header carries a credential: by its name, or by a value shaped like one (``Bearer ...``, a JWT)."""
    if is_credential_name(name):
        return True
    if len(value) < MIN_SHAPED or name.strip().lower() in _NOT_CREDENTIALS:
        return False
    return bool(_AUTH_SCHEME_VALUE.match(value) or _SECRET_SHAPES.search(value))


def is_secret_param(name: str, value: str = "") -> bool:
    return name.strip().lower() in _SECRET_PARAMS or is_credential_name(name) or bool(_SECRET_SHAPES.search(value))


def redact_headers(fields: list[tuple[bytes, bytes]] | tuple) -> list[list[str]]:
    """Headers as a list of ``[name, value]`` pairs, credential values replaced."""
    pairs = []
    for raw_name, raw_value in fields:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        pairs.append([name, REDACTED if is_credential_header(name, value) else value])
    return pairs


def redact_path(path: str) -> str:
    """The request path with credential-like query values and any JWT or key-shaped segment replaced."""
    path = _SECRET_SHAPES.sub(REDACTED, path)
    parts = urlsplit(path)
    if not parts.query:
        return path
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(is_secret_param(k, v) for k, v in query):
        return path
    cleaned = [(k, REDACTED if is_secret_param(k, v) else v) for k, v in query]
    return urlunsplit(parts._replace(query=urlencode(cleaned)))


def _token_like(value: str) -> bool:
    """A caller value long and random enough to be a key: kept out of the record wherever it appears.
    (Ordinary words are not, so a caller cannot use a header to hide text of its body from the record.)"""
    return len(value) >= MIN_CALLER_SECRET and not any(c.isspace() for c in value) and \
        any(c.isalpha() for c in value) and any(c.isdigit() for c in value)


def credential_values(headers: Iterable[tuple[str, str]]) -> set[str]:
    """The secret values a caller's credential headers carry: whole, the token after an auth scheme, cookie values."""
    found: set[str] = set()
    for name, value in headers:
        if not is_credential_header(name, value):
            continue
        value = value.strip()
        found |= {value, value.partition(" ")[2].strip()}
        found.update(part.split("=", 1)[1].strip() for part in value.split(";") if "=" in part)
    return {v for v in found if _token_like(v)}


def path_secret_values(path: str) -> set[str]:
    """The secrets ``redact_path`` removes from a path, so that they can be found elsewhere (an echoing answer)."""
    found = set(_SECRET_SHAPES.findall(path))
    query = urlsplit(path).query
    found.update(v for k, v in parse_qsl(query, keep_blank_values=True) if is_secret_param(k, v) and _token_like(v))
    return found


class Secrets:
    """Known secret values, found and replaced in text and bytes (longest first, so no fragment is left)."""

    def __init__(self, values: Iterable[str] = ()) -> None:
        kept = sorted({v for v in values if len(v) >= MIN_SECRET}, key=len, reverse=True)
        self.values = tuple(kept)
        self._raw = tuple(v.encode() for v in kept)
        self._json_plain = tuple(json.dumps(v, ensure_ascii=False)[1:-1] == v for v in kept)
        self.longest = max((len(v) for v in self._raw), default=0)

    def __bool__(self) -> bool:
        return bool(self.values)

    def __or__(self, other: Iterable[str]) -> Secrets:
        other = tuple(other)
        return Secrets((*self.values, *other)) if other else self

    def present(self, text: str) -> bool:
        """Whether any value may be in ``text`` (JSON text of fields: a value JSON would escape counts as present)."""
        return any(value in text or not self._json_plain[i] for i, value in enumerate(self.values))

    def text(self, text: str) -> tuple[str, int]:
        """(text with every secret replaced, how many were)."""
        count = 0
        for value in self.values:
            if value in text:
                count += text.count(value)
                text = text.replace(value, REDACTED_CREDENTIAL)
        return text, count

    def bytes(self, data: bytes) -> tuple[bytes, int]:
        count = 0
        for value in self._raw:
            if value in data:
                count += data.count(value)
                data = data.replace(value, REDACTED_CREDENTIAL.encode())
        return data, count

    # below the ``bytes`` method, the class body's ``bytes`` is that method: the type is spelled ``builtins.bytes``
    def body(self, data: builtins.bytes, content_encoding: str = "") -> tuple[builtins.bytes | None, int]:
        """A body as sent, possibly compressed: decoded (bounded: a refused body may be a bomb), cleaned and encoded
        again if a secret is inside. ``None`` when it cannot be decoded to be checked: such a body is not kept."""
        data, count = self.bytes(data)
        try:
            coding = coding_of(content_encoding)
            if coding is None:
                return data, count
            decoded = decode_now(data, coding, CHECK_LIMIT)
        except DecodingError:
            return None, count
        cleaned, inside = self.bytes(decoded)
        return (encoding.encode(cleaned, coding), count + inside) if inside else (data, count)

    def prefix_tail(self, data: builtins.bytes) -> int:
        """Where the longest tail of ``data`` that could still grow into a secret starts (``len(data)``: none)."""
        start = len(data)
        for value in self._raw:
            first = max(0, len(data) - len(value) + 1)
            while (i := data.find(value[:1], first)) != -1:
                if value.startswith(data[i:]):
                    start = min(start, i)
                    break
                first = i + 1
        return start


class StreamScrubber:
    """A ``flow.response.stream`` callable that removes secrets from a stream cut anywhere.

    Composed onto the stream callable already there (``streams.compose_stream``). A tail that could
    be the start of a secret is held back until the next chunk shows whether it is one, and released
    at the end (``b""``).
    """

    def __init__(self, secrets: Secrets) -> None:
        self.secrets = secrets
        self.held = b""
        self.found = 0

    def __call__(self, data: bytes) -> list[bytes]:
        buffer, count = self.secrets.bytes(self.held + data)
        self.found += count
        if data == b"":  # the end: release everything held
            self.held = b""
            return [buffer] if buffer else []
        cut = self.secrets.prefix_tail(buffer)
        self.held = buffer[cut:]
        # never b"" mid-stream: it would end an HTTP/1.1 chunked body early
        return [buffer[:cut]] if cut else []


_TEXT_FIELDS = tuple(f.name for f in dataclasses.fields(Event)
                     if f.name not in ("body", "original_enc", "stored_record", "hash", "prev_hash"))


def redact_event(event: Event, secrets: Secrets, names: Iterable[str] = ()) -> Event:
    """The event with every known secret value replaced everywhere it can be written, and the header
    values of ``names`` (the configured upstream credential headers) replaced. The recorder's last step."""
    names = {n.lower() for n in names}
    found = 0

    def clean(value: object) -> object:
        nonlocal found
        if isinstance(value, str):
            value, count = secrets.text(value)
            found += count
            return value
        if isinstance(value, list):
            return [clean(v) for v in value]
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items()}
        return value

    if event.headers:
        event.headers = [[n, REDACTED if n.lower() in names else v] for n, v in event.headers]
    if event.path:
        event.path = redact_path(event.path)
    if secrets.present(json.dumps([getattr(event, name) for name in _TEXT_FIELDS], ensure_ascii=False, default=str)):
        for name in _TEXT_FIELDS:  # the walk that replaces, only where a value was seen (most events hold none)
            setattr(event, name, clean(getattr(event, name)))
    if event.body:
        ce = next((v for n, v in event.headers or [] if n.lower() == "content-encoding"), "")
        event.body, count = secrets.body(event.body, ce)
        found += count
        if event.body is None:
            event.detail = {**(event.detail or {}), "body_withheld": f"the {ce} body could not be decoded within "
                                                                     f"{CHECK_LIMIT} bytes to be checked for secrets"}
    if found:
        event.detail = {**(event.detail or {}), "redacted_credentials": found}
    return event
