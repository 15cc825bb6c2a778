"""``warden export-flows`` and ``warden replay``: recorded flows in mitmproxy's tools; a recorded request sent again.

An exported flow carries who sent it, the decision and its rule, the fate and the masked entities in its comment
(mitmweb's flow list shows it) and under ``flow.metadata["warden"]``. ``replay --web`` opens a flow file in mitmweb
beside a running gateway: mitmweb's own proxy stays off (``server=false``) and its UI takes another port than the
gateway's 8080 and 8081. ``replay ID --to URL`` sends a recorded request, as recorded (masked, no credential), to a
sandbox and shows how its answer differs from the recorded one.
"""

from __future__ import annotations

import difflib
import json
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Annotated

import argon2
import httpx
import typer
from mitmproxy.net import encoding

from addons.store.events import Event
from addons.store.keys import KeyFileError
from addons.store.queries import headers_of
from addons.store.redaction import REDACTED, REDACTED_CREDENTIAL, is_credential_header
from scripts.warden import filters
from scripts.warden.backend import BackendError
from scripts.warden.flowfile import to_flows, write_flows
from scripts.warden.flows import find_flow
from scripts.warden.options import connect, err, fail, originals_key, out, progress

replay_app = typer.Typer()

EXIT_SAME, EXIT_DIFFERENT = 0, 1
HOP_BY_HOP = frozenset({"connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding",
                        "upgrade", "host", "content-length"})  # the last two: the sandbox's, and recomputed
WEB_COLUMNS = ("tls", "icon", "path", "method", "status", "size", "time", "comment")
WEB_PORT = 8082  # beside the gateway's proxy (8080) and admin API (8081)


@replay_app.command("export-flows")
def export_flows(
    output: Annotated[Path, typer.Option("-o", "--output", help="The mitmproxy flow file to write.")],
    user: filters.User = None, host: filters.Host = None, since: filters.Since = None, until: filters.Until = None,
    decision: filters.Decision = None, fate: filters.Fate = None, entity: filters.Entity = None,
    model: filters.Model = None, rule: filters.Rule = None, status: filters.Status = None,
    approval: filters.Approval = None, approver: filters.Approver = None, text: filters.Text = None,
    originals: Annotated[bool, typer.Option(
        help="Put original bodies in place of masked ones (needs the key).")] = False,
    key: Annotated[Path | None, typer.Option(help="The originals key file.")] = None,
) -> None:
    """Write the recorded flows that match the filters (as for warden flows; none: every flow) to a mitmproxy flow
    file, oldest first, each with its identity, decision, rule, fate and masked entities in its comment and
    metadata. Example: warden export-flows --user alice --since 1d -o alice.mitm && warden replay --web alice.mitm"""
    f = filters.flow_filter(user=user, host=host, since=since, until=until, decision=decision, fate=fate, entity=entity,
                    model=model, rule=rule, status=status, approval=approval, approver=approver, text=text)
    orig_key = originals_key(key) if originals else None
    backend = connect()
    try:
        with progress() as bar:
            rows = backend.flows(f)
            wanted = {row["flow_id"] for row in rows}
            task = bar.add_task("reading events", total=None)
            events: list[Event] = []
            if rows:  # a flow's events follow its request: read the chain from the earliest request found
                for event in backend.events(after_seq=min(row["seq"] for row in rows) - 1):
                    if event.flow_id in wanted:
                        events.append(event)
                    bar.advance(task)
            count = write_flows(str(output), to_flows(events, orig_key))
    except (BackendError, KeyFileError) as e:
        raise fail(str(e)) from None
    finally:
        backend.close()
    err.print(f"wrote {count} flows to {output} (open with: warden replay --web {output})", highlight=False)


@replay_app.command()
def replay(
    flow_id: Annotated[str | None, typer.Argument(help="The flow to send again (its id or a unique prefix).")] = None,
    to: Annotated[str | None, typer.Option(help=(
        "The sandbox upstream to send it to (scheme://host[:port]); the recorded path is appended."))] = None,
    cacert: Annotated[Path | None, typer.Option(help="Trust this CA for an https sandbox.")] = None,
    web: Annotated[Path | None, typer.Option(help="Open this flow file (warden export-flows) in mitmweb.")] = None,
    port: Annotated[int, typer.Option(help="mitmweb's port with --web.")] = WEB_PORT,
) -> None:
    """Send a recorded request again, or open a flow file in mitmweb.

    \b
    warden replay ID --to URL: the recorded request (method, path, headers, body, as recorded: masked, never a
    credential or a hop-by-hop header) goes to the sandbox at URL; prints the status of each answer and a unified
    diff of the recorded and the new body (JSON pretty-printed first). Exit 0 same, 1 different, 2 not sent.
    warden replay --web FILE [--port P]: starts mitmweb on 127.0.0.1:P with its proxy off, so it runs beside the
    gateway, and prints the URL to open (with its one-time token). Ctrl-C stops it.

    Example: warden replay 0f8c12ab --to http://127.0.0.1:9000
    """
    if web is not None:
        if flow_id is not None or to is not None:
            raise fail("--web opens a flow file: give no flow id and no --to")
        raise typer.Exit(open_web(web, port))
    if flow_id is None or to is None:
        raise fail("give a flow id and --to URL (or --web FILE)")
    backend = connect()
    try:
        events = find_flow(backend, flow_id)
    except BackendError as e:
        raise fail(str(e)) from None
    finally:
        backend.close()
    request = next((e for e in events if e.kind == "request"), None)
    if request is None:
        raise fail(f"flow {flow_id}: no request event on record")
    recorded = next((e for e in reversed(events) if e.kind == "response"), None)
    answer = send(request, to, cacert)
    same = report(recorded, answer)
    raise typer.Exit(EXIT_SAME if same else EXIT_DIFFERENT)


def replay_headers(event: Event) -> list[tuple[str, str]]:
    """The recorded headers that may be sent again: no credential (nor what the record redacted), no hop-by-hop."""
    return [(name, value) for name, value in headers_of(event)
            if name.lower() not in HOP_BY_HOP and not is_credential_header(name, value)
            and REDACTED not in value and REDACTED_CREDENTIAL not in value]


def send(request: Event, to: str, cacert: Path | None) -> httpx.Response:
    """The recorded request, sent to ``to``; ends the command when it cannot be sent as recorded."""
    detail = request.detail or {}
    if detail.get("body_withheld") or request.body_truncated or (request.body is None and request.body_size):
        raise fail(f"flow {request.flow_id}: its request body is not on record in full (withheld or truncated), "
                   "so it cannot be sent as recorded")
    if not to.startswith(("http://", "https://")):
        raise fail(f"--to {to!r}: give scheme://host[:port]")
    path = request.path or "/"
    if not path.startswith("/"):  # "@evil.example/..." after a base URL would name another host
        raise fail(f"flow {request.flow_id}: the recorded path {path[:60]!r} does not begin with '/': not replayed")
    url = to.rstrip("/") + path
    verify: bool | str = str(cacert) if cacert is not None else True
    try:
        with httpx.Client(trust_env=False, verify=verify, timeout=60) as client:  # never through a proxy
            return client.request(request.method or "GET", url, headers=replay_headers(request),
                                  content=request.body or b"")
    except httpx.HTTPError as e:
        raise fail(f"--to {to}: {type(e).__name__}: {e}") from None


def readable(body: bytes, content_encoding: str = "") -> list[str]:
    """A body as lines to compare: decoded, JSON pretty-printed with sorted keys, else text."""
    if content_encoding:
        try:
            decoded = encoding.decode(body, content_encoding)
        except ValueError:
            decoded = body  # compared as recorded
        body = decoded if isinstance(decoded, bytes) else body
    try:
        return json.dumps(json.loads(body), indent=2, sort_keys=True, ensure_ascii=False).splitlines()
    except ValueError:
        return body.decode("utf-8", "replace").splitlines()


def report(recorded: Event | None, answer: httpx.Response) -> bool:
    """Print how ``answer`` differs from the ``recorded`` response; True if status and body are the same."""
    if recorded is None:
        out.print(f"recorded: no answer on record; replayed: HTTP {answer.status_code}", highlight=False)
        return False
    old = readable(recorded.body or b"", dict((k.lower(), v) for k, v in headers_of(recorded)).get(
        "content-encoding", ""))
    new = readable(answer.content)
    diff = list(difflib.unified_diff(old, new, "recorded", "replayed", lineterm=""))
    same_status = recorded.status == answer.status_code
    out.print(f"status: recorded {recorded.status}, replayed {answer.status_code}"
              + ("" if same_status else "  DIFFERENT"), highlight=False)
    if diff:
        out.print("\n".join(diff), highlight=False, markup=False)
    else:
        out.print("body: the same", highlight=False)
    return same_status and not diff


def mitmweb() -> str:
    """The mitmweb beside this Python (the venv's), else the one on PATH."""
    beside = Path(sys.executable).parent / "mitmweb"
    found = str(beside) if beside.exists() else shutil.which("mitmweb")
    if found is None:
        raise fail("mitmweb is not installed beside this Python nor on PATH")
    return found


def web_command(path: Path, port: int, password_hash: str) -> list[str]:
    """mitmweb reading ``path``, its proxy off (the gateway holds 8080), its UI on 127.0.0.1:``port``."""
    return [mitmweb(), "--rfile", str(path), "--set", "server=false", "--web-host", "127.0.0.1",
            "--web-port", str(port), "--no-web-open-browser", "--set", f"web_password={password_hash}",
            *(arg for column in WEB_COLUMNS for arg in ("--set", f"web_columns={column}"))]


def open_web(path: Path, port: int) -> int:
    """Run mitmweb on ``path`` until it stops or Ctrl-C; print its URL once it listens. Its exit status."""
    if not path.is_file():
        raise fail(f"--web {path}: no such flow file (write one with warden export-flows -o {path})")
    token = secrets.token_urlsafe(24)  # only its argon2 hash is on mitmweb's command line
    # Stopped (SIGTERM), stop mitmweb too: by default Python would end at once and leave it running.
    before = signal.signal(signal.SIGTERM, lambda signum, frame: sys.exit(128 + signum))
    proc = subprocess.Popen(web_command(path, port, argon2.PasswordHasher().hash(token)))
    try:
        deadline = time.monotonic() + 60
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                time.sleep(0.2)
        if proc.poll() is not None:
            raise fail(f"mitmweb exited with status {proc.returncode} (is port {port} free? --port P)")
        # plain and flushed: a script (or a test) waits for this line while mitmweb runs
        sys.stdout.write(f"mitmweb serves {path} at http://127.0.0.1:{port}/?token={token}  (Ctrl-C stops it)\n")
        sys.stdout.flush()
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # a second SIGTERM must not cut the clean-up short
        try:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    proc.kill()
        finally:
            signal.signal(signal.SIGTERM, before)
