"""The errors a client or operator can meet, each with its HTTP status and a message naming cause and fix.

Addons raise these (or set them on the flow); ``WardenError.response()`` turns one into the JSON answer
the client sees, in the same shape for every failure:
``{"error": {"type": "host_not_allowed", "message": "...", "status": 403}}``.
"""

from __future__ import annotations

import json

from mitmproxy import http


class WardenError(Exception):
    """Base class: a failure the gateway answers itself instead of forwarding the request."""

    status: int = 500
    type: str = "internal_error"

    def __init__(self, message: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.headers = headers or {}

    def body(self) -> dict:
        return {"error": {"type": self.type, "message": self.message, "status": self.status}}

    def response(self) -> http.Response:
        headers = {"content-type": "application/json", "x-warden-error": self.type, **self.headers}
        return http.Response.make(self.status, json.dumps(self.body()).encode(), headers)


class Unauthenticated(WardenError):
    """No acceptable identity token: 407 to a forward-proxy client, 401 in reverse mode."""

    type = "unauthenticated"

    def __init__(self, reason: str, message: str, *, proxy: bool) -> None:
        self.status = 407 if proxy else 401
        self.reason = reason
        challenge = ('Bearer realm="warden", Basic realm="warden"' if proxy
                     else 'Bearer realm="warden", error="invalid_token"')
        header = "Proxy-Authenticate" if proxy else "WWW-Authenticate"
        super().__init__(f"{reason}: {message}", headers={header: challenge})

    def body(self) -> dict:
        body = super().body()
        body["error"]["reason"] = self.reason
        return body


class IdentityUnavailable(WardenError):
    """The identity issuer cannot be reached, so no token can be checked: fail closed."""

    status = 503
    type = "identity_unavailable"


class InternalError(WardenError):
    """An addon failed unexpectedly; the request was stopped rather than let through."""

    status = 500
    type = "internal_error"


class NotConfigured(WardenError):
    """The gateway has no valid configuration loaded (see the operator log)."""

    status = 503
    type = "gateway_not_configured"


class HostNotAllowed(WardenError):
    """The request's host is not one of the rules file's upstreams."""

    status = 403
    type = "host_not_allowed"


class MisdirectedRequest(WardenError):
    """The TLS server name or the Host/:authority names another host than the upstream the request goes to."""

    status = 421
    type = "misdirected_request"


class CleartextRefused(WardenError):
    """A plain-HTTP request to an upstream declared ``scheme: https``: it would carry the credential in clear."""

    status = 403
    type = "cleartext_refused"


class AmbiguousPath(WardenError):
    """The path reads as another path to lenient servers (%2F, backslashes, ';' parameters) that rules decide
    otherwise."""

    status = 400
    type = "ambiguous_path"


class PolicyBlocked(WardenError):
    """A rule blocked the request: 403, or the status the rule names."""

    status = 403
    type = "blocked_by_policy"

    def __init__(self, message: str, *, status: int = 403) -> None:
        super().__init__(message)
        self.status = status


class PolicyUnevaluable(WardenError):
    """A rule's condition failed on this request (e.g. it reads a map key the request lacks): fail closed."""

    status = 500
    type = "policy_error"


class WebSocketNotAllowed(WardenError):
    """A WebSocket upgrade to an upstream whose rules-file entry does not say ``websocket: true``."""

    status = 403
    type = "websocket_not_allowed"


class MessageTooLarge(WardenError):
    """A WebSocket message is over ``warden_max_body`` bytes: it was not relayed and the session was closed."""

    status = 413
    type = "message_too_large"


class UpgradeRefused(WardenError):
    """The upstream switched protocols (101) for a request that was not allowed to upgrade; nothing was relayed."""

    status = 502
    type = "upgrade_refused"


class CredentialMissing(WardenError):
    """The upstream's credential is optional and its environment variable is not set."""

    status = 503
    type = "upstream_credential_missing"


class BodyTooLarge(WardenError):
    """The request body is over the configured limit (``warden_max_body``)."""

    status = 413
    type = "body_too_large"


class UnsupportedEncoding(WardenError):
    """The request's Content-Encoding is not one the gateway decodes (it must read a body to mask it)."""

    status = 415
    type = "unsupported_encoding"

    def __init__(self, message: str, *, encoding: str, accepted: tuple[str, ...]) -> None:
        super().__init__(message, headers={"Accept-Encoding": ", ".join(accepted)})
        self.encoding = encoding
        self.accepted = accepted

    def body(self) -> dict:
        body = super().body()
        body["error"]["encoding"] = self.encoding
        body["error"]["accepted"] = list(self.accepted)
        return body


class MalformedBody(WardenError):
    """The request body does not match its declared content type or encoding."""

    status = 400
    type = "malformed_body"


class DuplicateJsonKey(MalformedBody):
    """A JSON object in the body names the same key twice: one parser keeps the first value, another the last, so
    what the gateway masks and what the upstream reads could differ. The message names the key only when it cannot
    be personal data (it is recorded)."""

    status = 400
    type = "duplicate_json_key"


class TrailersNotAccepted(WardenError):
    """The request carries trailers (header fields after the body, HTTP/2): the gateway neither masks nor records
    them, so it does not forward them. The message names the trailers, never their values."""

    status = 400
    type = "trailers_not_accepted"


class RecordingUnavailable(WardenError):
    """The store could not commit the request's event, so the request did not leave."""

    status = 503
    type = "recording_unavailable"


class PiiUnavailable(WardenError):
    """PII analysis could not be completed (timeout, engine failure), so nothing was forwarded."""

    status = 503
    type = "pii_unavailable"


class UnsupportedContent(WardenError):
    """The body, or a part of it, cannot be inspected for PII (binary) and policy refuses what it cannot inspect."""

    status = 415
    type = "unsupported_content"


class PiiInPath(WardenError):
    """A path segment carries PII (a pattern entity or a secret) and the masking profile refuses such paths
    (``path: refuse``). The message names the segment's index and the entity, never the value."""

    status = 400
    type = "pii_in_path"


class PiiInHeader(WardenError):
    """A header carries PII where it cannot be masked: in its name, or in a value when the masking profile refuses
    such headers (``headers: refuse``). The message names the header (as masked) and the entity, never the value."""

    status = 400
    type = "pii_in_header"


class ResponseUnreadable(WardenError):
    """The upstream's response could not be read for masking, so it was not passed on."""

    status = 502
    type = "response_unreadable"


class ResponseTooLarge(ResponseUnreadable):
    """The upstream's answer is, or decodes to, more than ``warden_max_response`` bytes: it was not passed on."""

    type = "response_too_large"


class AnswerBlocked(WardenError):
    """An answer rule matched the upstream's answer, which was not passed on (502, or the rule's status; a stream
    ends with an error event instead). The message names the rule and its reason, never the matched text; SDKs
    are told not to retry (``x-should-retry: false``): the same question would fetch a blocked answer again."""

    status = 502
    type = "answer_blocked"

    def __init__(self, message: str, *, rule: str, status: int = 502) -> None:
        super().__init__(message, headers={"x-should-retry": "false"})
        self.rule = rule
        self.status = status

    def body(self) -> dict:
        body = super().body()
        body["error"]["rule"] = self.rule
        return body


class ApprovalNeeded(WardenError):
    """The request waits for approvers (retry mode: send it again once approved), or its review ended without
    approval (denied, expired, timed out, abandoned). The body names the approval, so the caller can ask for it."""

    status = 403
    type = "approval_required"

    def __init__(self, message: str, *, approval: str, state: str, status: int | None = None) -> None:
        super().__init__(message, headers={"x-warden-approval": approval})
        self.approval = approval
        self.state = state
        if status is not None:
            self.status = status

    def body(self) -> dict:
        body = super().body()
        body["error"]["approval"] = {"id": self.approval, "state": self.state}
        return body


class ApprovalDenied(ApprovalNeeded):
    """An approver denied the request (or the requester's access was revoked)."""

    type = "approval_denied"


class ApprovalExpired(ApprovalNeeded):
    """No approver decided before the approval's TTL ended."""

    type = "approval_expired"


class ApprovalTimeout(ApprovalNeeded):
    """The request was held for its rule's timeout without a decision; the approval may still be decided."""

    type = "approval_timeout"


class ApprovalAbandoned(ApprovalNeeded):
    """The gateway stopped while the request was held: it was not forwarded."""

    status = 503
    type = "approval_abandoned"
