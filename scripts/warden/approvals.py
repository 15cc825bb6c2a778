"""``warden approvals``, ``warden grants`` and ``warden revoke``: the approver's side, through the running gateway's
admin API with the approver's own token (``--token`` / ``WARDEN_TOKEN``: approving needs one of the rule's approver
groups, not the admin group). Examples::

\b
    export WARDEN_TOKEN=$(warden token bob --groups security)
    warden approvals list                      # pending approvals you may decide
    warden approvals show ap-3f9c1a2b7d4e      # the masked request, its findings, who approved
    warden approvals approve ap-3f9c1a2b7d4e --reason "expected audit" --for 30m
    warden approvals deny ap-3f9c1a2b7d4e --reason "not customer data"
    warden grants list
    warden grants revoke gr-0a1b2c3d4e5f --reason "done"
    warden revoke alice --reason "laptop lost"  # an administrator: pending denied, grants revoked, tokens refused
"""

from __future__ import annotations

import json
from typing import Annotated, Any

import httpx
import typer

from scripts.warden.options import State, admin_token, fail, out

approvals_app = typer.Typer(help="Pending approvals: list, show, approve, deny.", no_args_is_help=True)
grants_app = typer.Typer(help="Grant windows: list, revoke.", no_args_is_help=True)
revoke_app = typer.Typer()

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON.")]
Reason = Annotated[str, typer.Option(help="Why (recorded with the decision).")]


def _call(method: str, path: str, body: dict | None = None, **params: Any) -> Any:
    """Ask the running gateway's admin API; an error answer ends the command with its message."""
    base = State.admin if State.admin.startswith("http") else f"http://{State.admin}"
    token = admin_token()
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with httpx.Client(base_url=base, timeout=30, trust_env=False, headers=headers) as client:
            response = client.request(method, path, json=body,
                                      params={k: v for k, v in params.items() if v is not None})
    except httpx.HTTPError as e:
        raise fail(f"cannot reach the gateway's admin API at {base} ({e}); approvals are decided while it runs: "
                   "pass --admin HOST:PORT") from None
    try:
        data = response.json()
    except ValueError:
        data = {"error": {"message": response.text[:200]}}
    if response.status_code >= 400:
        error = data.get("error", {}) if isinstance(data, dict) else {}
        raise fail(f"HTTP {response.status_code}: {error.get('message', data)}", code=1)
    return data


def _print(data: Any, as_json: bool) -> bool:
    if as_json:
        out.print_json(json.dumps(data))
    return as_json


def _line(a: dict) -> str:
    request = a["request"]
    findings = ", ".join(f"{k}={v}" for k, v in request.get("findings", {}).items()) or "none"
    return (f"{a['id']}  {a['state']:<9} {a['rule']:<24} {a['requester']['sub']:<16} {request['method']} "
            f"{request['host']}{request['path']}  findings: {findings}  expires {a['expires_at']}")


@approvals_app.command("list")
def list_approvals(
    state: Annotated[str | None, typer.Option(help="pending, approved, used, denied, expired, abandoned.")] = "pending",
    all_states: Annotated[bool, typer.Option("--all", help="Every state.")] = False,
    as_json: JsonOption = False,
) -> None:
    """The approvals you may see (yours, and those your groups approve), newest first."""
    found = _call("GET", "/api/approvals", state=None if all_states else state)["approvals"]
    if not _print(found, as_json):
        for approval in found:
            out.print(_line(approval), highlight=False, soft_wrap=True)


@approvals_app.command("show")
def show(approval_id: str, as_json: JsonOption = False) -> None:
    """One approval: the requester, the rule, the masked request and its findings, the votes so far."""
    a = _call("GET", f"/api/approvals/{approval_id}")
    if _print(a, as_json):
        return
    out.print(_line(a), highlight=False, soft_wrap=True)
    needs = f"; still needs {a['needs']}" if a["needs"] else ""
    out.print(f"approvers: {', '.join(a['terms']['approvers'])}{needs}", highlight=False)
    for vote in a["votes"]:
        out.print(f"  {vote['verdict']} by {vote['approver']} at {vote['at']}: {vote['reason'] or '-'}",
                  highlight=False)
    for notice in a.get("notices") or []:
        out.print(f"  {notice['fate']} {notice['target']} at {notice['at']}: {notice['reason']}", highlight=False,
                  markup=False)
    out.print("masked request:", highlight=False)
    out.print(a["request"]["preview"], highlight=False, markup=False, soft_wrap=True)


def _decide(approval_id: str, verdict: str, reason: str, window: str | None) -> None:
    a = _call("POST", f"/api/approvals/{approval_id}/{verdict}", {"reason": reason, "for": window})
    out.print(f"{a['id']}: {a['state']}" + (f" (still needs {a['needs']})" if a["needs"] else "")
              + (f"; grant {a['grant']}" if a["grant"] else ""), highlight=False)


@approvals_app.command("approve")
def approve(approval_id: str, reason: Reason = "",
            window: Annotated[str | None, typer.Option("--for", help="Grant a window: the requester's requests "
                                                                      "under this rule pass for so long (30m, 2h).")]
            = None) -> None:
    """Approve a request (never your own); with --for, grant its requester a window under the rule."""
    _decide(approval_id, "approve", reason, window)


@approvals_app.command("deny")
def deny(approval_id: str, reason: Reason = "") -> None:
    """Deny a request: a held one is answered 403 with your reason."""
    _decide(approval_id, "deny", reason, None)


@grants_app.command("list")
def list_grants(active: Annotated[bool, typer.Option(help="Only grants in force.")] = False,
                as_json: JsonOption = False) -> None:
    """Grant windows you may see (yours, those of rules your groups approve; all for administrators)."""
    found = _call("GET", "/api/grants", active="1" if active else None)["grants"]
    if not _print(found, as_json):
        for g in found:
            state = "active" if g["active"] else ("revoked" if g["revoked_at"] else "ended")
            out.print(f"{g['id']}  {state:<7} {g['rule']:<24} {g['requester']:<16} until {g['until']}  "
                      f"(approval {g['approval']})", highlight=False, soft_wrap=True)


@grants_app.command("revoke")
def revoke_grant(grant_id: str, reason: Reason = "") -> None:
    """End a grant now: the requester's next request under its rule is reviewed again."""
    g = _call("POST", f"/api/grants/{grant_id}/revoke", {"reason": reason})
    out.print(f"{g['id']}: revoked by {g['revoked_by']}", highlight=False)


@revoke_app.command("revoke")
def revoke_access(user: Annotated[str, typer.Argument(help="The subject (sub) whose access ends now.")],
                  reason: Reason = "") -> None:
    """Revoke a person's access at once (administrators): their pending approvals are denied, their grants
    revoked, and every token issued to them until now is refused, cached ones and open tunnels included."""
    r = _call("POST", "/api/revoke", {"user": user, "reason": reason})
    out.print(f"{r['subject']}: access revoked; denied {len(r['denied'])} approval(s), revoked "
              f"{len(r['grants_revoked'])} grant(s), {r['open_tunnels']} open tunnel(s) refused from now on",
              highlight=False)
