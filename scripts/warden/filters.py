"""The flow filters ``warden flows`` and ``warden export-flows`` share: one option per ``FlowFilter`` field."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from addons.store.queries import parse_when
from addons.store.search import FlowFilter
from scripts.warden.options import fail

User = Annotated[str | None, typer.Option(help="Only this identity (sub).")]
Host = Annotated[str | None, typer.Option(help="Only this upstream host.")]
Since = Annotated[str | None, typer.Option(help="From this time (ISO 8601, UTC) or duration ago (15m, 2h, 7d).")]
Until = Annotated[str | None, typer.Option(help="Before this time or duration ago.")]
Decision = Annotated[str | None, typer.Option(help="Only this policy decision (allow, block, review).")]
Fate = Annotated[str | None, typer.Option(
    help="Only this fate (completed, host_not_allowed, upstream_error, client_gone, ...).")]
Entity = Annotated[str | None, typer.Option(
    help="Only flows where this entity was masked (EMAIL_ADDRESS, CREDIT_CARD, ...).")]
Model = Annotated[str | None, typer.Option(help="Only requests for this model (as the request named it).")]
Rule = Annotated[str | None, typer.Option(
    help="Only flows this rule decided (the request's rule, or an answer rule that acted on the response).")]
Status = Annotated[int | None, typer.Option(help="Only flows answered with this HTTP status.")]
Approval = Annotated[str | None, typer.Option(help=(
    "Only requests that waited on or passed under this approval or grant id, or with this approval outcome "
    "(passed, held, denied, timed_out, pending, skipped)."))]
Approver = Annotated[str | None, typer.Option(
    help="Only requests whose approval this person approved or denied.")]
Text = Annotated[str | None, typer.Option(help=(
    "Only flows whose request or response body holds every one of these words, in any case. Bodies are searched "
    "as recorded (masked); bodies kept only as encrypted originals, or not UTF-8, are not searched."))]


def when(value: str | None, name: str) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_when(value)
    except ValueError as e:
        raise fail(f"--{name}: {e}") from None


def flow_filter(
    *, user: str | None, host: str | None, since: str | None, until: str | None, decision: str | None,
    fate: str | None, entity: str | None, model: str | None, rule: str | None, status: int | None,
    approval: str | None, approver: str | None, text: str | None, limit: int | None = None, offset: int = 0,
    before_seq: int | None = None,
) -> FlowFilter:
    """The options as a FlowFilter; a bad time ends the command naming the option."""
    return FlowFilter(
        user=user, host=host, since=when(since, "since"), until=when(until, "until"), decision=decision, fate=fate,
        entity=entity, model=model, rule=rule, status=status, approval=approval, approver=approver, text=text,
        limit=limit, offset=offset, before_seq=before_seq,
    )
