"""The rules file: its model (declared and documented once, here), loading and validation.

``load_rules(path)`` returns a validated ``Rules`` or raises ``RulesError`` whose lines each name
the file and the field, e.g. ``rules/default.yaml: upstreams[1].credential.value: environment
variable ANTHROPIC_API_KEY is not set``.
"""

from __future__ import annotations

import functools
import hashlib
import ipaddress
import re
import zoneinfo
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Literal

import yaml
from mitmproxy import ctx, exceptions, flowfilter
from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationError,
    ValidationInfo,
    field_validator,
    model_validator,
)

from addons.rules.answers import AnswerCheck, AnswerRule
from addons.rules.base import Model, UniqueNames, checked_filter, expand_env, template_secrets
from addons.rules.conditions import Condition, checked_condition, compile_condition, conditions_together
from addons.rules.durations import Duration, DurationError, parse_duration
from addons.rules.masking import Masking
from addons.rules.notifications import Approvals, Reachable, Webhook, approvers_reachable, reach, secret_files


class RulesError(ValueError):
    """The rules file is unreadable or invalid; ``str()`` holds one line per problem."""


class Credential(Model):
    """The upstream's own credential, injected in place of whatever the caller sent."""

    header: str = Field(min_length=1, description="header that carries it, e.g. Authorization or x-api-key")
    value: str | None = Field(None, description='template with ${ENV} references, e.g. "Bearer ${OPENAI_API_KEY}"')
    file: Path | None = Field(None, description="or a file whose (stripped) content is the value")
    optional: bool = Field(
        False, description=(
            "if the variable or file is missing, refuse this upstream's requests (503) instead of failing start-up"
        ),
    )

    @model_validator(mode="after")
    def _one_source(self) -> Credential:
        if (self.value is None) == (self.file is None):
            raise ValueError("give exactly one of 'value' or 'file'")
        return self


_HOSTNAME = re.compile(
    r"^(?=.{1,253}$)[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?)*$"
)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=4096)  # asked several times per request, for the same few hosts
def normal_host(host: str) -> str:
    """A host as upstreams are keyed: lower case, no trailing dot, IP addresses in their canonical form."""
    host = host.strip().lower().rstrip(".").removeprefix("[").removesuffix("]")
    try:
        return str(ipaddress.ip_address(host))
    except ValueError:
        return host


class Upstream(Model):
    """A host the gateway may reach. Every other host is refused."""

    name: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    host: str = Field(min_length=1, description="a bare host name or IP address: no scheme, port or path")
    scheme: Literal["https", "http"] = Field(
        "https", description="'http' only for a declared plain-HTTP upstream (a local service); "
                             "cleartext requests to an https upstream are refused",
    )
    port: int | None = Field(None, ge=1, le=65535, description="default 443 for https, 80 for http")
    credential: Credential | None = None
    websocket: bool = Field(False, description="allow WebSocket upgrades (e.g. a realtime API); messages are "
                                               "masked both ways, recorded, and closed when the token expires")
    pass_headers: list[str] = Field(
        default_factory=list,
        description="caller headers this upstream needs passed although their names look like credentials",
    )

    @field_validator("host")
    @classmethod
    def _bare_host(cls, v: str) -> str:
        if "://" in v:
            raise ValueError(f"{v!r} has a scheme; write the bare host and set 'scheme' (https or http)")
        host = normal_host(v)
        if _is_ip(host):
            return host
        if ":" in host:
            raise ValueError(f"{v!r} has a port; write the bare host and set 'port'")
        if "/" in host or not _HOSTNAME.match(host):
            raise ValueError(f"{v!r} is not a host name or IP address")
        return host

    @field_validator("pass_headers")
    @classmethod
    def _lower_names(cls, names: list[str]) -> list[str]:
        return [n.strip().lower() for n in names]

    @model_validator(mode="after")
    def _default_port(self) -> Upstream:
        if self.port is None:
            object.__setattr__(self, "port", 443 if self.scheme == "https" else 80)
        return self


class Review(Model):
    """How a request under an ``action: review`` rule waits for people: who approves, how many, how long."""

    approvers: list[Annotated[str, Field(min_length=1)]] = Field(
        min_length=1, description="groups whose members may approve or deny (never their own request)")
    min_approvals: int = Field(1, ge=1, le=20, description="approvals needed from distinct approvers")
    one_from_each_group: bool = Field(False, description="each approver group must approve at least once")
    skip_groups: list[str] = Field(default_factory=list, description="callers in these groups pass without review")
    timeout: Duration = Field(120.0, description="hold: how long the request waits for a decision (e.g. 2m)")
    mode: Literal["hold", "retry"] = Field(
        "hold", description="hold: the request waits up to 'timeout'; retry: answered 403 at once with an approval "
                            "id, and the same request sent again passes once approved")
    ttl: Duration = Field(3600.0, description="how long an approval stays pending before it expires (e.g. 1h)")
    window: Duration | None = Field(
        None, description="default grant window: after approval, the requester's requests under this rule pass "
                          "without review for this long (an approver may give another with --for)")
    webhook: Webhook | None = Field(None, description="where each new approval is announced (Slack-compatible "
                                                      "JSON), retried with backoff; never holds up the approval")

    @model_validator(mode="after")
    def _reachable(self) -> Review:
        if self.mode == "hold" and self.timeout > self.ttl:
            raise ValueError(f"timeout ({self.timeout:g} s) is longer than ttl ({self.ttl:g} s): the approval "
                             "would expire while its request is still held")
        return self


class Rule(Model):
    """One policy rule; the first whose filter and condition both match decides."""

    name: str = Field(min_length=1)
    filter: str | None = Field(None, description="mitmproxy filter expression, e.g. '~d api.openai.com & ~u /v1/files'")
    when: str | None = Field(None, description="CEL condition over identity, request, pii and time, e.g. "
                                               "'\"contractors\" in identity.groups && pii.total > 0'")
    action: Literal["allow", "block", "review"]
    review: Review | None = Field(None, validate_default=True,
                                  description="review: who approves and how the request waits (required)")
    services: bool = Field(False, description="allow: one of the service accounts' own rules; once any rule says "
                                              "so, a service account's request allowed by another rule is blocked")
    reason: str = Field("", description="block: the error message the client (its SDK) shows")
    status: int = Field(403, ge=400, le=499, description="block: the HTTP status of the refusal (4xx)")
    masking: str | None = Field(None, description="the masking profile for requests this rule allows "
                                                  "(default: by the caller's groups)")

    @field_validator("review")
    @classmethod
    def _review_with_review(cls, v: Review | None, info: ValidationInfo) -> Review | None:
        action = info.data.get("action")
        if action == "review" and v is None:
            raise ValueError("a review rule needs a 'review' block naming its approvers, e.g. "
                             "review: {approvers: [security]}")
        if action != "review" and v is not None and action is not None:
            raise ValueError(f"only a rule with action 'review' has a review block (this one is {action!r})")
        return v

    @field_validator("when")
    @classmethod
    def _checks(cls, v: str | None) -> str | None:
        return checked_condition(v)

    @field_validator("filter")
    @classmethod
    def _parses(cls, v: str | None) -> str | None:
        return checked_filter(v)


class ServiceAccounts(Model):
    """Which tokens belong to a job rather than a person: ``azp`` alone does not tell (a person's token names the
    client they logged in with), so they are named here."""

    clients: list[str] = Field(default_factory=list, description="client ids (client_id or azp) of service accounts")
    groups: list[str] = Field(default_factory=list, description="groups whose members are service accounts")
    claim: str | None = Field(
        None, pattern=r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$",
        description="a claim (dotted path) that is true or non-empty only in service-account tokens",
    )


Algorithm = Literal["RS256", "ES256", "EdDSA", "PS256", "ES384", "RS384", "RS512"]
DEFAULT_ALGORITHMS: tuple[Algorithm, ...] = ("RS256", "ES256", "EdDSA")


class IdentityConfig(Model):
    """Who may use the gateway: the OIDC issuer whose tokens are accepted."""

    issuer: str = Field("embedded", description="'embedded' (the gateway's own dev issuer) or the issuer URL")
    audience: str = Field("warden", min_length=1, description="the 'aud' tokens must carry")
    groups_claim: str = Field(
        "groups", pattern=r"^[A-Za-z0-9_:-]+(\.[A-Za-z0-9_:-]+)*$",
        description="claim with the caller's groups; a dotted path for nested ones (realm_access.roles)",
    )
    algorithms: list[Algorithm] = Field(
        default_factory=lambda: list(DEFAULT_ALGORITHMS), min_length=1, description="accepted signature algorithms"
    )
    leeway: int = Field(30, ge=0, le=300, description="seconds of clock skew tolerated for exp and nbf")
    jwks_min_refresh: float = Field(30, ge=1, description="seconds between JWKS refetches for unknown key ids")
    admin_groups: list[str] = Field(
        default_factory=lambda: ["warden-admin"], min_length=1,
        description="groups whose tokens may read flows, events and verification through the admin API",
    )
    groups: list[str] = Field(
        default_factory=list,
        description="the groups your identity provider issues, if you declare them: every approver group must be one",
    )
    service_accounts: ServiceAccounts = Field(
        default_factory=lambda: ServiceAccounts(),
        description="which callers are jobs, not people (identity.kind in rule conditions)",
    )

    @field_validator("issuer")
    @classmethod
    def _issuer(cls, v: str) -> str:
        if v != "embedded" and not v.startswith(("https://", "http://")):
            raise ValueError("must be 'embedded' or an http(s) URL of an OIDC issuer")
        return v


def _zone(name: str) -> str:
    if name == "caller":
        return name
    try:
        zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"{name!r} is not a time zone (an IANA name such as Europe/Berlin, UTC, "
                         "or 'caller')") from None
    return name


def check_retention(text: object) -> str:
    """A retention period: a duration with its unit (``3y``, ``90d``), at least a day."""
    if not isinstance(text, str):
        raise ValueError(f"expected a period like 3y, 18w or 90d (with its unit), got {text!r}")
    try:
        period = parse_duration(text, bare=False)
    except DurationError as e:
        raise ValueError(f"{text!r} is not a period like 3y, 18w or 90d") from e
    if period < timedelta(days=1):
        raise ValueError(f"{text!r} is shorter than a day: a retention period that short would purge what is "
                         "still being recorded")
    return text.strip()


def purge_period(asked: str | None, configured: str | None) -> tuple[str, timedelta]:
    """The period a purge may use: ``asked`` (a purge by hand), else the rules' ``configured`` retention; never
    shorter than what the rules keep (one administrator may not erase what the rules retain; with no ``retention:``
    the rules keep nothing in particular, and the purge, an event naming who asked, is the operator's call).
    ``ValueError`` saying why not."""
    period = asked if asked is not None else configured
    if period is None:
        raise ValueError("no retention period: set 'retention:' in the rules file or give one (e.g. 3y)")
    try:
        length = parse_duration(period, bare=False)
    except DurationError as e:
        raise ValueError(f"{period!r} is not a period like 3y, 18w or 90d") from e
    if configured is not None and length < parse_duration(configured, bare=False):
        raise ValueError(f"{period!r} is shorter than the rules' retention ({configured}): a purge by hand may not "
                         "remove what the rules keep")
    return period, length


class RulesFile(Model):
    identity: IdentityConfig = IdentityConfig()
    time_zone: Annotated[str, AfterValidator(_zone)] = Field(
        "UTC", description="the zone rule conditions read time in: an IANA name, or 'caller' (the token's "
                           "zoneinfo claim; UTC where it has none)",
    )
    upstreams: UniqueNames[Upstream] = Field(min_length=1)
    masking: Masking = Masking()
    rules: UniqueNames[Rule] = Field(default_factory=lambda: [Rule(name="default", action="allow")])
    answers: UniqueNames[AnswerRule] = Field(
        default_factory=list, description="answer rules: what an upstream's answer may not carry (all apply)")
    approvals: Approvals = Field(default_factory=lambda: Approvals(),
                                 description="how approvers are reached: admin_url, slack (buttons)")
    retention: Annotated[str, BeforeValidator(check_retention)] | None = Field(
        None, description="how long the record keeps events' content (e.g. 3y, 90d): older events become tombstones "
                          "(warden purge; the gateway purges at start and every warden_purge_interval); none: kept")

    @property
    def retention_period(self) -> timedelta | None:
        return None if self.retention is None else parse_duration(self.retention)

    @model_validator(mode="after")
    def _profiles_exist(self) -> RulesFile:
        known = {p.name for p in self.masking.profiles}
        for rule in self.rules:
            if rule.masking is not None and rule.masking not in known:
                raise ValueError(f"rule {rule.name!r}: masking profile {rule.masking!r} is not defined under "
                                 f"masking.profiles (defined: {', '.join(sorted(known)) or 'none'})")
        return self


class Rules:
    """A loaded rules file, with credentials resolved from the environment or secret files."""

    def __init__(self, path: Path, model: RulesFile, secrets: dict[str, SecretStr | None], missing: dict[str, str],
                 sha256: str = "", reachable: Reachable | None = None):
        self.path = path
        self.reachable = reachable or Reachable()  # webhook URLs and Slack's signing secret, resolved
        self.model = model
        self.sha256 = sha256  # of the file's bytes as loaded: names this version of the rules on the record
        self._secrets = secrets
        self.missing = missing
        self._by_endpoint = {(u.host, u.port): u for u in model.upstreams}
        self.filters = {r.name: flowfilter.parse(r.filter) if r.filter else None for r in model.rules}
        self.conditions: dict[str, Condition] = {r.name: compile_condition(r.when) for r in model.rules if r.when}
        # Every condition that needs no analysis, evaluated in one call (see conditions_together); ``weighed`` lists
        # each rule with its filter, its condition, and its place in that call's result (or None).
        before = [r.name for r in model.rules if r.name in self.conditions and not self.conditions[r.name].reads_pii]
        self.together = conditions_together([self.conditions[name] for name in before])
        self.weighed = [(r, self.filters[r.name], self.conditions.get(r.name),
                         before.index(r.name) if r.name in before else None) for r in model.rules]
        self.services_declared = any(r.services for r in model.rules)  # service accounts pass only under theirs
        self.answer_checks = [AnswerCheck.of(r) for r in model.answers]  # patterns and conditions compiled once

    @property
    def identity(self) -> IdentityConfig:
        return self.model.identity

    @property
    def masking(self) -> Masking:
        return self.model.masking

    @property
    def upstreams(self) -> list[Upstream]:
        return list(self.model.upstreams)

    @property
    def rules(self) -> list[Rule]:
        return list(self.model.rules)

    def upstream_for(self, host: str, port: int) -> Upstream | None:
        return self._by_endpoint.get((normal_host(host), port))

    def credential(self, upstream: str) -> SecretStr | None:
        """The resolved credential value, or None (no credential, or optional and missing: see ``missing``)."""
        return self._secrets.get(upstream)

    def credential_headers(self) -> frozenset[str]:
        """Every upstream's credential header name, lower case: stripped from callers, redacted in the record."""
        return frozenset(u.credential.header.lower() for u in self.model.upstreams if u.credential is not None)

    def secret_values(self) -> set[str]:
        """Every resolved credential value and the secrets inside it: ``Bearer ${KEY}`` gives the whole
        value and KEY's value (a file's value: each word too). Redacted wherever it would be written or shown."""
        found: set[str] = set()
        for up in self.model.upstreams:
            secret = self._secrets.get(up.name)
            if secret is None or up.credential is None:
                continue
            value = secret.get_secret_value()
            found.add(value)
            if up.credential.value is None:
                found.update(value.split())
            else:
                found.update(template_secrets(up.credential.value, value))
        return {v for v in found if v.strip()} | self.reachable.secret_values()


def unheld_approver_groups(model: RulesFile) -> list[str]:
    """Approver groups nobody can hold: a service-account group (its members are jobs, which never approve), or, where
    ``identity.groups`` declares what the identity provider issues, a group outside it."""
    known, services = set(model.identity.groups), set(model.identity.service_accounts.groups)
    out = []
    for i, rule in enumerate(model.rules):
        for j, group in enumerate(rule.review.approvers if rule.review else []):
            where = f"rules[{i}].review.approvers[{j}] (rule {rule.name!r})"
            if group in services:
                out.append(f"{where}: {group!r} is a service-account group (identity.service_accounts.groups): its "
                           "members are jobs, and no job approves; name a group of people")
            elif known and group not in known:
                out.append(f"{where}: nobody holds {group!r}: it is not one of identity.groups, the groups your "
                           f"identity provider issues ({', '.join(sorted(known))})")
    return out


def _field_path(loc: tuple, raw: dict) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    if len(loc) >= 2 and loc[0] in ("rules", "answers") and isinstance(loc[1], int):  # name the rule too
        rules = raw.get(loc[0])
        rule = rules[loc[1]] if isinstance(rules, list) and loc[1] < len(rules) else None
        if isinstance(rule, dict) and isinstance(rule.get("name"), str):
            out += f" (rule {rule['name']!r})"
    return out or "(top level)"


def _resolve(cred: Credential, base: Path) -> tuple[str | None, str | None]:
    """(value, None) or (None, what is missing)."""
    if cred.file is not None:
        path = cred.file if cred.file.is_absolute() else base / cred.file
        try:
            return path.read_text().strip(), None
        except OSError as e:
            return None, f"credential file {path} cannot be read ({e.strerror})"
    assert cred.value is not None
    value, unset = expand_env(cred.value)
    if unset:
        return None, f"environment variable {', '.join(unset)} is not set"
    return value, None


def current_rules() -> Rules:
    """The rules file the Config addon loaded (once per change of ``warden_rules``); addons read it in ``configure``."""
    owner = ctx.master.addons.get("config")
    if owner is None or owner.rules is None:
        raise exceptions.OptionsError("warden_rules: no rules loaded; the Config addon must come first in the chain")
    return owner.rules


def rules_from_option(path: str | Path) -> Rules:
    """``load_rules`` for an addon's ``configure``: errors become the OptionsError mitmproxy reports."""
    try:
        return load_rules(path)
    except RulesError as e:
        raise exceptions.OptionsError(f"warden_rules: {e}") from None


def credential_files(rules: Rules) -> list[Path]:
    """The secret files the rules read their upstreams' credentials from (a change to one is a change of the rules)."""
    return [c.file if c.file.is_absolute() else rules.path.parent / c.file
            for u in rules.model.upstreams if (c := u.credential) is not None and c.file is not None] + \
        secret_files([w for r in rules.model.rules if r.review and (w := r.review.webhook)], rules.model.approvals,
                     rules.path.parent)


def load_rules(path: str | Path, content: bytes | None = None) -> Rules:
    """Read, validate and resolve a rules file. Raises ``RulesError`` naming file and field.

    ``content``: the file's bytes, when the caller has read them already (a reload hashes what it loads)."""
    path = Path(path)
    try:
        data = path.read_bytes() if content is None else content
        raw = yaml.safe_load(data.decode("utf-8"))
    except OSError as e:
        raise RulesError(f"{path}: cannot read rules file: {e.strerror}") from None
    except UnicodeDecodeError as e:
        raise RulesError(f"{path}: not UTF-8 text (byte {e.start})") from None
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise RulesError(f"{path}: not valid YAML{where}: {getattr(e, 'problem', e)}") from None
    if not isinstance(raw, dict):
        raise RulesError(f"{path}: the rules file must be a mapping with 'upstreams' and 'rules'")
    try:
        model = RulesFile.model_validate(raw)
    except ValidationError as e:
        lines = [f"{path}: {_field_path(err['loc'], raw)}: {err['msg']}" for err in e.errors()]
        raise RulesError("\n".join(lines)) from None

    secrets: dict[str, SecretStr | None] = {}
    missing: dict[str, str] = {}
    problems = []
    for i, up in enumerate(model.upstreams):
        if up.credential is None:
            continue
        value, why = _resolve(up.credential, path.parent)
        if why is None:
            secrets[up.name] = SecretStr(value or "")
        elif up.credential.optional:
            missing[up.name] = why
        else:
            src = "file" if up.credential.file is not None else "value"
            problems.append(f"{path}: upstreams[{i}].credential.{src}: {why}")
    reachable, unreachable = reach([(i, r.name, r.review.webhook)
                                    for i, r in enumerate(model.rules) if r.review and r.review.webhook],
                                   model.approvals, path.parent)
    approver_groups = {g for r in model.rules if r.review for g in r.review.approvers}
    problems += [f"{path}: {line}" for line in unreachable + approvers_reachable(model.approvals, approver_groups)
                 + unheld_approver_groups(model)]
    if problems:
        raise RulesError("\n".join(problems))
    return Rules(path, model, secrets, missing, hashlib.sha256(data).hexdigest(), reachable)
