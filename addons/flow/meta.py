"""What addons know about a flow: plain facts in ``flow.metadata``, one key per fact, each written by one owner.

As mitmproxy's own addons keep theirs (``flow.metadata["proxyauth"]``), every fact has its key and its type
(a ``Fact``); an addon writes only its own, reads what earlier addons wrote, and imports no other addon.
The facts are plain values (dataclasses of str, int, float and lists of them), never runtime objects,
never a body and never a secret:

fact (key)                              type         what                                    written by
``IDENTITY`` (warden.identity)          Identity     who sent the request (verified)         identity
``CLAIMED_SUB`` (warden.claimed_sub)    str          the unverified subject of a refused     identity
                                                     token, for the record
``UPSTREAM`` (warden.upstream)          str          the upstream the request goes to        policy
``DECISION`` (warden.decision)          Decision     what the rules decided, and which rule  policy
``PII`` (warden.pii)                    PiiOutcome   profile, adapter, findings (no value)   pii
``APPROVAL`` (warden.approval)          ApprovalNote the approval or grant a reviewed flow      approval (which also
                                                     waited on or passed under                turns a review
                                                                                             DECISION into allow
                                                                                             or block)
``TRAILERS_DROPPED`` (warden.trailers)  list[str]    names of the answer trailers dropped    intake
``ANSWER`` (warden.answer)              AnswerNote   what answer rules did to the answer      answers
                                                     (block or mask, which rule, why)
``RECORDED`` (warden.recorded)          Recorded     the committed events; when the request  recorder
                                                     left for the upstream
``ERROR`` (warden.error)                Refusal      why the gateway answered or cut the     whoever stops the flow,
                                                     flow itself                             through ``answers``
                                                                                             (``refuse``, ``cut``,
                                                                                             ``fail_closed``)

What cannot be a plain value stays in the addon that owns it, keyed by flow in a ``WeakKeyDictionary`` (gone
with the flow), and another addon asks the owner for it through ``ctx.master.addons.get``: the pseudonym vault
and the SSE rewriter (``piimasking``: ``vault_of``), the bodies masking changed, as they were (``piimasking``:
``originals_of``, an ``Originals``; ``answers`` amends it with the answers its rules changed), the caller's
credential values (``credentials``: ``secrets_of``), the streamed answer's capture (``recorder``), the tunnel's
identity (``identitygate``: ``tunnels``).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from mitmproxy import http

from addons.flow.errors import WardenError


class Fact[T]:
    """One fact about a flow, kept under its own key in ``flow.metadata``, written by one owner."""

    def __init__(self, key: str, kind: type[T]) -> None:
        self.key = key
        self.kind = kind

    def of(self, flow: http.HTTPFlow) -> T | None:
        """The flow's fact, or None if its owner has not written it (or something else sits under the key)."""
        found = flow.metadata.get(self.key)
        return found if isinstance(found, self.kind) else None

    def set(self, flow: http.HTTPFlow, value: T) -> T:
        """Write the fact (its owner only); returns ``value``."""
        flow.metadata[self.key] = value
        return value

    def __repr__(self) -> str:
        return f"Fact({self.key!r}, {self.kind.__name__})"


@dataclass
class Identity:
    """Who sent the request (filled by the identity addon)."""

    sub: str
    email: str | None = None
    groups: list[str] = field(default_factory=list)
    client_id: str | None = None  # service accounts (client-credentials tokens)
    token_id: str | None = None
    expires: int | None = None
    method: str | None = None  # proxy-bearer, proxy-basic, bearer
    kind: str = "person"  # or "service": by the rules file's identity.service_accounts
    issued_at: int | None = None  # the token's iat: access revoked after it refuses the token
    zoneinfo: str | None = None  # the token's zoneinfo claim (rules may read time in the caller's zone)


PENDING = "pending"  # a Decision's action while its rule waits for PII analysis (never forwarded so)
REVIEW = "review"  # a Decision's action while its rule waits for approvers (approval decides; never forwarded so)


@dataclass(frozen=True)
class ReviewTerms:
    """A review rule's terms as policy took them when it decided (the rules may be reloaded while it waits)."""

    approvers: tuple[str, ...]
    min_approvals: int = 1
    one_from_each_group: bool = False
    skip_groups: tuple[str, ...] = ()
    timeout: float = 120.0  # seconds a held request waits
    mode: str = "hold"  # or "retry"
    ttl: float = 3600.0  # seconds an approval stays pending
    window: float | None = None  # seconds of the default grant window


@dataclass
class Decision:
    """What policy decided, and which rule said so: allow, block, ``REVIEW`` or ``PENDING``. The approval addon
    turns a review into allow (naming the approval or grant) or block."""

    action: str
    rule: str
    reason: str = ""
    masking: str | None = None  # the rule's masking profile, if it names one
    status: int = 403  # a block's HTTP status
    review: ReviewTerms | None = None  # review: the rule's terms as they were when it decided (a snapshot)


@dataclass
class ApprovalNote:
    """What the approval addon did with a flow under review: the approval it waited on or passed under, or the
    grant that let it pass."""

    approval: str | None = None
    grant: str | None = None
    outcome: str = ""  # passed, held, denied, timed_out, abandoned, pending (retry mode), skipped


@dataclass(frozen=True)
class Finding:
    """One masked value: what it was, where, how sure, how masked. Never the value."""

    entity: str
    path: str  # JSON path of the text value (form.NAME for forms, $ for plain text; query.NAME, path[I], header.NAME)
    start: int
    end: int
    score: float
    operator: str


@dataclass
class PiiOutcome:
    """What PII masking did to a flow (filled by the pii addon). Its vault and rewriter stay in the addon."""

    profile: str
    adapter: str | None = None
    findings: list[Finding] = field(default_factory=list)
    response_findings: list[Finding] = field(default_factory=list)
    skipped: str | None = None  # why the body was not inspected (binary passed by policy, empty)
    read: bool = False  # the body the flow holds is one masking read (rendered), or its profile masks nothing
    parts_read: bool = False  # so are its query, path and headers
    census: dict[str, int] | None = None  # what a rule's condition read: entities some profile would mask
    passed: str | None = None  # what carried PII and left unmasked by policy (path segments), never the value

    @staticmethod
    def counts(findings: list[Finding]) -> dict[str, int]:
        out: dict[str, int] = {}
        for finding in findings:
            out[finding.entity] = out.get(finding.entity, 0) + 1
        return dict(sorted(out.items()))


@dataclass
class AnswerNote:
    """What answer rules did to the flow's answer (filled by the answers addon): never the text they matched."""

    decision: str  # "block" or "mask"
    rule: str  # the rule that blocked it, or the first that masked
    reason: str = ""
    masked: dict[str, int] = field(default_factory=dict)  # mask rule -> matches replaced
    streamed: bool = False  # a stream ended with an error event (block), or masked as it passed


@dataclass(frozen=True)
class Refusal:
    """Why the gateway answered the flow itself or cut it: its error's type, status and message."""

    type: str
    status: int
    message: str

    @classmethod
    def of(cls, error: WardenError) -> Refusal:
        return cls(error.type, error.status, error.message)


@dataclass
class Recorded:
    """What the recorder committed for the flow."""

    events: list[tuple[int, str]] = field(default_factory=list)  # (sequence number, hash) of each committed event
    forwarded_at: float | None = None  # when the request left for the upstream (after its commit)


@dataclass
class Originals:
    """The bodies masking changed, as they were: the caller's PII, so never in ``flow.metadata``. Held by the
    pii addon (``originals_of``) for the recorder, which keeps them encrypted or not at all."""

    request: bytes | None = None
    response: bytes | None = None
    # The response as the record keeps it when masking made it differ from what the client got (pseudonyms
    # not restored: restored values are the caller's PII).
    recorded_response: bytes | None = None
    # The request target as the record keeps it when what left holds PII by policy (a path segment passed).
    recorded_target: str | None = None


IDENTITY = Fact("warden.identity", Identity)
CLAIMED_SUB = Fact("warden.claimed_sub", str)
UPSTREAM = Fact("warden.upstream", str)
DECISION = Fact("warden.decision", Decision)
PII = Fact("warden.pii", PiiOutcome)
APPROVAL = Fact("warden.approval", ApprovalNote)
TRAILERS_DROPPED: Fact[list] = Fact("warden.trailers", list)
ANSWER = Fact("warden.answer", AnswerNote)
RECORDED = Fact("warden.recorded", Recorded)
ERROR = Fact("warden.error", Refusal)
