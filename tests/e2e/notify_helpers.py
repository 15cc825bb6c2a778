"""What the notification end-to-end tests share: a webhook receiver on 127.0.0.1 (answering as told: 200, 500, or
never), rules whose review rules post to it and whose Slack table maps users to approvers, and Slack's signed
button presses sent to the gateway's callback listener."""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import httpx

from addons.approvals.slack import signature_of
from tests.conftest import free_port, rules_for

HOOK_PATH = "T0ACME/B0HOOK/planted-webhook-path-5e1f"  # the secret part of the webhook URL
SIGNING_SECRET = "planted-slack-signing-secret-9a7c"


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class WebhookReceiver:
    """An HTTP server on 127.0.0.1 taking the gateway's webhook posts: ``answer`` is the status it replies with,
    or ``"hang"`` to never answer (until closed)."""

    answer: int | str = 200
    received: list[Received] = field(default_factory=list)
    closing: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            disable_nagle_algorithm = True  # no 40 ms stall per answer

            def do_POST(self) -> None:  # noqa: N802 - the name http.server calls
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.received.append(Received(self.path, dict(self.headers), json.loads(body)))
                if receiver.answer == "hang":
                    receiver.closing.wait(60)
                    return
                status = int(receiver.answer)
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.end_headers()
                self.wfile.write(b"ok" if status < 300 else b"internal_error")

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def url(self) -> str:
        """The webhook URL as the rules write it: the secret path from the environment."""
        return f"http://127.0.0.1:{self.port}/hook/${{WARDEN_TEST_HOOK_PATH}}"

    def wait(self, count: int = 1, timeout: float = 30) -> list[Received]:
        deadline = time.monotonic() + timeout
        while len(self.received) < count:
            assert time.monotonic() < deadline, f"the webhook got {len(self.received)} of {count} post(s)"
            time.sleep(0.05)
        return self.received

    def close(self) -> None:
        self.closing.set()
        self.server.shutdown()
        self.server.server_close()


def notify_rules(upstream_port: int, hook: WebhookReceiver, dead_port: int) -> str:
    """Review rules announced to ``hook`` (and one to a port where nothing listens), chosen by the model, and a
    Slack table: bob and alice approve for security, dave for legal."""
    webhook = "{url: \"%s\", attempts: 3, backoff: 0.2s, timeout: 20s}"
    rules = f"""
  - name: announced-hold
    when: 'request.model == "notify-hold"'
    action: review
    review:
      approvers: [security]
      timeout: 60s
      ttl: 2m
      webhook: {webhook % hook.url()}
  - name: announced-to-nobody
    when: 'request.model == "notify-dead"'
    action: review
    review:
      approvers: [security]
      timeout: 60s
      ttl: 2m
      webhook: {webhook % f"http://127.0.0.1:{dead_port}/hook/${{WARDEN_TEST_HOOK_PATH}}"}
  - name: legal-review
    when: 'request.model == "notify-legal"'
    action: review
    review: {{approvers: [legal], mode: retry}}
"""
    return """
approvals:
  admin_url: https://warden-admin.corp.example
  slack:
    signing_secret_file: slack-signing
    team_id: T0ACME
    users:
      U0BOB: {sub: bob, email: bob@corp.example, groups: [security]}
      U0ALICE: {sub: alice, groups: [security]}
      U0DAVE: {sub: dave, groups: [legal]}
""" + rules_for(upstream_port, rules=rules)


def prepare_workdir(workdir: Path) -> None:
    """The signing secret file the rules name, beside them."""
    workdir.mkdir(parents=True, exist_ok=True)
    (workdir / "slack-signing").write_text(SIGNING_SECRET + "\n")


def click_body(approval_id: str, user: str, action: str = "warden_approve", team: str = "T0ACME") -> bytes:
    """The form body of a ``block_actions`` callback as Slack sends it."""
    payload = {"type": "block_actions", "user": {"id": user, "username": user.lower()}, "team": {"id": team},
               "api_app_id": "A0WARDEN", "response_url": "https://hooks.slack.com/actions/T0ACME/1/x",
               "actions": [{"action_id": action, "block_id": "warden_decision", "value": approval_id,
                            "type": "button", "action_ts": f"{time.time():.6f}"}]}
    return urlencode({"payload": json.dumps(payload)}).encode()


def signed(body: bytes, secret: str = SIGNING_SECRET, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(time.time() if at is None else at))
    return {"Content-Type": "application/x-www-form-urlencoded", "X-Slack-Request-Timestamp": timestamp,
            "X-Slack-Signature": signature_of(secret, timestamp, body)}


def press(slack: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
    """POST a callback to the gateway's Slack listener (``host:port``)."""
    return httpx.post(f"http://{slack}/slack/actions", content=body, headers=headers, trust_env=False, timeout=30)


def slack_args() -> tuple[str, tuple[str, ...]]:
    """A free ``host:port`` for the Slack listener and the mitmdump arguments that set it."""
    listen = f"127.0.0.1:{free_port()}"
    return listen, ("--set", f"warden_slack_listen={listen}")
