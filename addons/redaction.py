"""What never reaches the store: credentials in headers and in query strings.

Values are replaced by ``[redacted]``; names stay, so the record still shows that a credential
was sent. Identity's token is reduced to its subject and id by the identity addon, never kept.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

REDACTED = "[redacted]"
SECRET_HEADERS = frozenset(
    {
        "authorization", "proxy-authorization", "cookie", "set-cookie", "x-api-key", "api-key",
        "x-goog-api-key", "openai-api-key", "anthropic-api-key", "x-auth-token", "x-amz-security-token",
    }
)
# Any header or query parameter whose name suggests a secret is redacted too.
_SECRET_NAME = re.compile(r"(auth|token|secret|passw|api[-_]?key|session|cookie|signature|credential)", re.IGNORECASE)


SECRET_PARAMS = frozenset({"key", "apikey", "sig", "code", "password", "pwd"})


def is_secret_name(name: str) -> bool:
    return name.lower() in SECRET_HEADERS or bool(_SECRET_NAME.search(name))


def is_secret_param(name: str) -> bool:
    return name.lower() in SECRET_PARAMS or is_secret_name(name)


def redact_headers(fields: list[tuple[bytes, bytes]] | tuple) -> list[list[str]]:
    """Headers as a list of ``[name, value]`` pairs, secret values replaced."""
    pairs = []
    for raw_name, raw_value in fields:
        name = raw_name.decode("latin-1")
        value = raw_value.decode("latin-1")
        pairs.append([name, REDACTED if is_secret_name(name) else value])
    return pairs


def redact_path(path: str) -> str:
    """The request path with secret-looking query parameter values replaced."""
    parts = urlsplit(path)
    if not parts.query:
        return path
    query = parse_qsl(parts.query, keep_blank_values=True)
    if not any(is_secret_param(k) for k, _ in query):
        return path
    cleaned = [(k, REDACTED if is_secret_param(k) else v) for k, v in query]
    return urlunsplit(parts._replace(query=urlencode(cleaned)))
