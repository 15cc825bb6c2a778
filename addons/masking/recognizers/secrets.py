"""Secrets a regular expression alone cannot judge: values given to a key, token, secret or password.

Vendor tokens with a published shape (``xoxb-``, ``AIza``, ``sk_live_``, JWTs, ...) are patterns in the
rules file (``rules/default.yaml``, entities API_KEY and JWT). What remains is a value whose only sign
is the name it is given: ``password: hunter2xyz``, ``api_key="..."``, ``SECRET=...``, ``--password ...``,
``Authorization: Bearer ...``, and the credentials of a connection string
(``postgres://app:s3cret@db/app``).
Each is reported as SECRET when:

* a key's, token's or secret's value looks random: 16 characters or more of a token's alphabet, with
  letters and digits (or letters of both cases that are no camel-case words), at ``MIN_ENTROPY`` bits per
  character or more;
* a password looks like one: six characters or more, and quoted, or with a digit, a symbol or a capital;
* it is no placeholder (``<PASSWORD>``, ``${DB_PASSWORD}``, ``****``, ``your-api-key``) and, unquoted,
  no code (``os.environ["TOKEN"]``, ``getpass()``, ``self.token``).

Of a connection string the credentials (``app:s3cret``) are reported as one value, the login: the
scheme, host, port and database stay, as the model needs them to help with it (a password alone would
lose to the longer span the e-mail recognizer reads in ``s3cret@db.example``, which hides the host too).
Names are found from one regular expression's keyword hits and judged in bounded windows, so the cost
follows the hits, not the length of the text.
"""

from __future__ import annotations

import math
import re
import string
from collections import Counter
from collections.abc import Iterator

from presidio_analyzer import LocalRecognizer, RecognizerResult
from presidio_analyzer.nlp_engine import NlpArtifacts

from addons.masking.recognizers.result import finding

# A word that names a secret, inside an identifier (api_key, clientSecret, DB_PASSWORD, x-auth-token); searched in
# the text with ASCII letters lower-cased (same length), as literals are found far faster than case-blind words.
KEYWORD = re.compile(r"pass(?:word|wd|phrase)?|pwd|secret|token|key|credentials?")
ASCII_LOWER = str.maketrans(string.ascii_uppercase, string.ascii_lowercase)
PASSWORD_WORDS = frozenset({"pass", "password", "passwd", "passphrase", "pwd"})
SECRET_WORDS = frozenset({"secret", "token", "key", "apikey", "credential", "credentials"})
IDENTIFIER_LIMIT = 64  # characters scanned either side of a keyword for the name it is part of

# After the name: a closing quote, then =, :, => or := (not ==), then the value: quoted, or up to a space,
# a delimiter or the & of a next query parameter.
_VALUE = r"""(?:(["'`])([^\n]{1,200}?)\1|((?:[^\s"'`,;&]|&(?![\w.-]+=)){1,200}))"""
ASSIGNED = re.compile(r"""["']?[ \t]*(?:=>|:=|=(?!=)|:(?![:/]))[ \t]*""" + _VALUE)
FLAG_VALUE = re.compile(r"[ \t]+(?=[^\s-])" + _VALUE)  # --password s3cret
BEARER = re.compile(r"(?:bearer|basic|token)[ \t]+([a-z0-9._~+/-]{16,300}=*)")  # in the lower-cased text
# scheme://user:password@host; "://" first, as a literal is found fast, the scheme's last character behind it.
CONNECTION = re.compile(r"://(?<=[A-Za-z0-9]://)([^\s:/@?#]{0,100}:([^\s/@?#]{1,200}))@[A-Za-z0-9\[]")

TOKEN_ALPHABET = re.compile(r"[A-Za-z0-9+/=_.~:-]{16,}")
CAMEL = re.compile(r"[A-Za-z][a-z]+(?:[A-Z][a-z]+)*")  # getApiKeyFromVault: words, not a random string
MIN_ENTROPY = 2.5  # bits per character: repeats (aaaa1111aaaa1111) fall below, random hex of 16 characters is near 3.4
# What stands for a secret: a variable (${DB_PASSWORD}, %(pw)s, {{ token }}), a <PLACEHOLDER> or [placeholder].
VARIABLE = re.compile(r"\$\{[^{}]+\}|\$[A-Z_][A-Z0-9_]*|\$[a-z_][a-z0-9_]*|%\([A-Za-z_]\w*\)s|%[A-Za-z_]\w*%"
                      r"|\{\{.*\}\}|<[^<>]*>|\[[^\[\]]*\]")
PLACEHOLDER_WORDS = re.compile(r"your|example|placeholder|redacted|changeme|dummy|sample|replace|xxx|\*\*\*|\.\.\.",
                               re.IGNORECASE)
NOT_VALUES = frozenset({"pass", "pwd", "password", "passwd", "secret", "token", "key", "apikey", "api_key", "null",
                        "none", "nil", "true", "false", "undefined", "required", "optional", "string", "bytes",
                        "empty", "hidden", "masked"})
# Code, not a value (unquoted): a call or an index (getpass(), os.environ[...]), an attribute (self.token), a name.
CODE = re.compile(r"[A-Za-z_$][A-Za-z_$.]*[(\[][\w.$'\"]*[)\]]?|[A-Za-z_$]+(?:\.[A-Za-z_$]+)+|[a-z]+(?:_[a-z]+)+"
                  r"|[A-Z]+(?:_[A-Z]+)+")


def entropy(value: str) -> float:
    """Shannon entropy of ``value``'s characters, in bits per character."""
    return -sum(n / len(value) * math.log2(n / len(value)) for n in Counter(value).values())


def is_placeholder(value: str, quoted: bool = False) -> bool:
    """A value that stands for a secret (``<PASSWORD>``, ``${TOKEN}``, ``****``, ``your-key``) or, unquoted, code."""
    return (value.lower() in NOT_VALUES or len(set(value)) <= 2 or PLACEHOLDER_WORDS.search(value) is not None
            or VARIABLE.fullmatch(value) is not None or (not quoted and CODE.fullmatch(value) is not None))


def looks_random(value: str, quoted: bool = False) -> bool:
    """A key's, token's or secret's value: long, of a token's alphabet, with letters and digits (or letters of both
    cases in no camel-case words), at a high entropy."""
    mixed = any(c.isdigit() for c in value) and any(c.isalpha() for c in value)
    mixed = mixed or (value.isalpha() and not value.islower() and not value.isupper() and not CAMEL.fullmatch(value))
    return (mixed and TOKEN_ALPHABET.fullmatch(value) is not None and entropy(value) >= MIN_ENTROPY
            and not is_placeholder(value, quoted))


def looks_like_password(value: str, quoted: bool = False) -> bool:
    """A password's value: six characters or more, and quoted, or with a digit, a symbol or an inner capital."""
    if len(value) < 6 or is_placeholder(value, quoted):
        return False
    return quoted or any(c.isdigit() or not c.isalnum() or c.isupper() for c in value[1:])


def _name_words(name: str) -> set[str]:
    """The lower-cased words of an identifier: snake, kebab, dotted and camel case."""
    return {w.lower() for w in re.findall(r"[A-Z]?[a-z]+|[A-Z]+(?![a-z])|\d+", name)}


def _is_name_char(c: str) -> bool:
    return c.isalnum() or c in "_.-"


class SecretRecognizer(LocalRecognizer):
    """SECRET: values given to a key, token, secret or password name; bearer tokens; connection-string credentials."""

    SCORE = 0.8  # below the rules file's vendor patterns (0.9), which win a tie on the same value

    def __init__(self, supported_language: str = "en") -> None:
        super().__init__(supported_entities=["SECRET"], supported_language=supported_language, name="SecretRecognizer")

    def load(self) -> None:
        pass

    def analyze(self, text: str, entities: list[str],
                nlp_artifacts: NlpArtifacts | None = None) -> list[RecognizerResult]:
        lowered = text.translate(ASCII_LOWER)
        spans = set(self._assigned(text, lowered))
        spans.update((m.start(1), m.end(1), "bearer token") for m in BEARER.finditer(lowered)
                     if not lowered[m.start() - 1:m.start()].isalnum() and looks_random(text[m.start(1):m.end(1)]))
        spans.update((m.start(1), m.end(1), "connection string credentials") for m in CONNECTION.finditer(text)
                     if not is_placeholder(m.group(2), quoted=True))
        return [self._result(start, end, reason) for start, end, reason in sorted(spans)]

    def _assigned(self, text: str, lowered: str) -> Iterator[tuple[int, int, str]]:
        """(start, end, reason) of the values given to names that say they are secret."""
        judged = -1
        for hit in KEYWORD.finditer(lowered):
            if hit.start() < judged:
                continue  # another keyword of a name already judged
            start, end = hit.start(), hit.end()
            while start > max(0, hit.start() - IDENTIFIER_LIMIT) and _is_name_char(text[start - 1]):
                start -= 1
            while end < min(len(text), hit.end() + IDENTIFIER_LIMIT) and _is_name_char(text[end]):
                end += 1
            judged = end
            words = _name_words(text[start:end])
            is_password = bool(words & PASSWORD_WORDS) or any(w.endswith(("password", "passwd")) for w in words)
            if not (is_password or words & SECRET_WORDS or any(w.endswith(("secret", "token")) for w in words)):
                continue
            value = ASSIGNED.match(text, end) or (FLAG_VALUE.match(text, end) if text.startswith("-", start) else None)
            if value is None:
                continue
            quoted = value.group(2) is not None
            group = 2 if quoted else 3
            secret = value.group(group)
            if looks_random(secret, quoted) or (is_password and looks_like_password(secret, quoted)):
                yield value.start(group), value.end(group), f"the value of {text[start:end]}"

    def _result(self, start: int, end: int, reason: str) -> RecognizerResult:
        return finding(self, "SECRET", start, end, self.SCORE, reason)
