"""Who hears of an approval, and who may decide it from Slack: a review rule's ``webhook`` and the rules file's
``approvals`` section (declared and documented here), and their secrets resolved.

A Slack webhook URL is a secret (whoever holds it posts to the channel) and so is Slack's signing secret: the URL
may keep its secret part in ``${ENV}`` references or a file, the signing secret is only ever read from a file or
an environment variable, and both are redacted wherever the gateway writes (``secret_values``). The record and
the log name a webhook by its host only (``redacted``).
"""

from __future__ import annotations

import ipaddress
import os
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, field_validator, model_validator

from addons.rules.base import Model, expand_env, template_secrets
from addons.rules.durations import Duration

SLACK_USER_ID = r"^[UW][A-Z0-9]{2,30}$"
_ENV_NAME = r"^[A-Za-z_][A-Za-z0-9_]*$"


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_url(url: str, what: str = "the webhook URL") -> str:
    """``url`` if it is an ``https`` URL (``http`` only to a loopback address, for a local relay) whose host is
    written out (no ``${ENV}`` and no user or password before it: the host is what the record names); a
    ValueError saying what is wrong otherwise. Never echoes the URL: its path may be a secret."""
    if any(c.isspace() or ord(c) < 32 for c in url):
        raise ValueError(f"{what} holds whitespace or control characters")
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        parts.port  # noqa: B018 - a port that is not a number raises here
    except ValueError:
        raise ValueError(f"{what} is not a URL (https://host/path)") from None
    if parts.scheme not in ("https", "http") or not host:
        raise ValueError(f"{what} must be an https URL with a host, e.g. https://hooks.slack.com/services/...")
    if "${" in parts.netloc or "@" in parts.netloc:
        raise ValueError(f"{what} must name its host literally, with no ${{ENV}} or credentials before the path "
                         "(the record names the host; keep the secret part in the path)")
    if parts.scheme == "http" and not _loopback(host):
        raise ValueError(f"{what} must use https (plain http only to a loopback address, e.g. a local relay)")
    return url


def redacted(url: str) -> str:
    """What the record and the log say of a webhook URL: its scheme and host, never its (secret) path."""
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}/…"


class Webhook(Model):
    """Where a review rule posts each new approval (Slack-compatible JSON: an incoming webhook, or any receiver
    of the same shape), retried with exponential backoff; it never holds up the approval."""

    url: str | None = Field(None, description="an https URL; ${ENV} references may stand for its secret path, e.g. "
                                              "https://hooks.slack.com/services/${SLACK_WEBHOOK_PATH}")
    url_file: Path | None = Field(None, description="or a file (a mounted secret) holding the URL")
    attempts: int = Field(5, ge=1, le=10, description="attempts before the notification is recorded as failed")
    backoff: Duration = Field(1.0, description="wait before the second attempt, doubled before each next one "
                                               "(each wait at most 60 s)")
    timeout: Duration = Field(5.0, description="how long one attempt may take")
    preview: bool = Field(True, description="include the masked request (clipped); false: findings by type only")

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return None if v is None else check_url(v)

    @model_validator(mode="after")
    def _one_source(self) -> Webhook:
        if (self.url is None) == (self.url_file is None):
            raise ValueError("give exactly one of 'url' or 'url_file'")
        return self


class SlackUser(Model):
    """A Slack user as an approver: the identity and groups their decisions are taken with."""

    sub: str = Field(min_length=1, description="the approver's subject, as their token would name them")
    email: str | None = None
    groups: list[Annotated[str, Field(min_length=1)]] = Field(min_length=1, description="their groups")


class Slack(Model):
    """Approve and deny buttons in Slack: the callback's signing secret and who the Slack users are."""

    signing_secret_file: Path | None = Field(None, description="a file holding the Slack app's signing secret")
    signing_secret_env: str | None = Field(None, pattern=_ENV_NAME,
                                           description="or the environment variable holding it")
    team_id: str | None = Field(None, pattern=r"^[TE][A-Z0-9]{2,30}$",
                                description="accept callbacks from this workspace only (T0123...)")
    users: dict[Annotated[str, Field(pattern=SLACK_USER_ID)], SlackUser] = Field(
        min_length=1, description="Slack user id (U0123...) -> the approver they are; anyone else is refused")

    @model_validator(mode="before")
    @classmethod
    def _never_inline(cls, data: Any) -> Any:
        if isinstance(data, dict) and "signing_secret" in data:
            raise ValueError("the signing secret is never written in the rules file: name a file "
                             "(signing_secret_file) or an environment variable (signing_secret_env)")
        return data

    @model_validator(mode="after")
    def _one_source(self) -> Slack:
        if (self.signing_secret_file is None) == (self.signing_secret_env is None):
            raise ValueError("give exactly one of 'signing_secret_file' or 'signing_secret_env'")
        return self


class Approvals(Model):
    """How approvers are reached: the admin API's address in notifications, and Slack."""

    admin_url: str | None = Field(None, description="the admin API as approvers reach it, for the links in "
                                                    "notifications and errors (default: http://warden_admin)")
    slack: Slack | None = None

    @field_validator("admin_url")
    @classmethod
    def _admin_url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        parts = urlsplit(v)
        if parts.scheme not in ("https", "http") or not parts.netloc or "@" in parts.netloc:
            raise ValueError("must be an http(s) URL of the admin API, e.g. https://warden-admin.example.com")
        return v.rstrip("/")


@dataclass(frozen=True)
class Reachable:
    """The resolved secrets of notification: each reviewed rule's webhook URL, and Slack's signing secret."""

    webhooks: dict[str, SecretStr] = field(default_factory=dict)  # rule name -> its webhook's URL
    signing_secret: SecretStr | None = None
    templates: dict[str, str] = field(default_factory=dict)  # rule name -> the URL as written with ${ENV}

    def secret_values(self) -> set[str]:
        """The URLs, their paths and what their ``${ENV}`` references stood for, and the signing secret."""
        found: set[str] = set()
        for rule, url in self.webhooks.items():
            value = url.get_secret_value()
            parts = urlsplit(value)
            found |= {value, parts.path + (f"?{parts.query}" if parts.query else "")}
            if rule in self.templates:
                found |= template_secrets(self.templates[rule], value)
        if self.signing_secret is not None:
            found.add(self.signing_secret.get_secret_value())
        return {v for v in found if v.strip() and v != "/"}


def _read(path: Path) -> tuple[str | None, str | None]:
    try:
        value = path.read_text().strip()
    except OSError as e:
        return None, f"file {path} cannot be read ({e.strerror})"
    except UnicodeDecodeError:
        return None, f"file {path} is not UTF-8 text"
    return (value, None) if value else (None, f"file {path} is empty")


def _within(base: Path, path: Path) -> Path:
    return path if path.is_absolute() else base / path


def reach(webhooks: Iterable[tuple[int, str, Webhook]], approvals: Approvals, base: Path) -> \
        tuple[Reachable, list[str]]:
    """Resolve the webhook URLs (``(index, name, webhook)`` of each rule with one) and the
    signing secret; files relative to ``base``. Returns what resolved and one ``field: problem`` line per failure
    (never a secret's value)."""
    urls: dict[str, SecretStr] = {}
    templates: dict[str, str] = {}
    problems = []
    for index, rule, hook in webhooks:
        if hook.url_file is not None:
            value, why = _read(_within(base, hook.url_file))
            source = "url_file"
        else:
            assert hook.url is not None
            value, unset = expand_env(hook.url)
            why = f"environment variable {', '.join(unset)} is not set" if unset else None
            source = "url"
            templates[rule] = hook.url
        if value is not None:
            try:
                check_url(value, f"the URL {'in the file' if source == 'url_file' else 'once expanded'}")
            except ValueError as e:
                value, why = None, str(e)
        if value is None:
            problems.append(f"rules[{index}].review.webhook.{source} (rule {rule!r}): {why}")
        else:
            urls[rule] = SecretStr(value)
    secret = None
    slack = approvals.slack
    if slack is not None:
        if slack.signing_secret_file is not None:
            value, why = _read(_within(base, slack.signing_secret_file))
            source = "signing_secret_file"
        else:
            assert slack.signing_secret_env is not None
            value = os.environ.get(slack.signing_secret_env) or None
            why, source = f"environment variable {slack.signing_secret_env} is not set", "signing_secret_env"
        if value is None:
            problems.append(f"approvals.slack.{source}: {why}")
        else:
            secret = SecretStr(value)
    return Reachable(urls, secret, templates), problems


def approvers_reachable(approvals: Approvals, approver_groups: set[str]) -> list[str]:
    """One ``field: problem`` line per Slack user whose groups approve under no review rule (they could decide
    nothing: a mistyped group, most likely)."""
    if approvals.slack is None:
        return []
    known = ", ".join(sorted(approver_groups)) or "none: no rule has action review"
    return [f"approvals.slack.users.{user}.groups: none of {', '.join(person.groups)} is an approver group of a "
            f"review rule (approver groups: {known}); this Slack user could decide nothing"
            for user, person in approvals.slack.users.items() if not set(person.groups) & approver_groups]


def secret_files(webhooks: Iterable[Webhook], approvals: Approvals, base: Path) -> list[Path]:
    """The files the webhook URLs and the signing secret are read from (a change to one reloads the rules)."""
    found = [_within(base, hook.url_file) for hook in webhooks if hook.url_file is not None]
    if approvals.slack is not None and approvals.slack.signing_secret_file is not None:
        found.append(_within(base, approvals.slack.signing_secret_file))
    return found

