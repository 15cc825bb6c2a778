"""``warden siem``: the record as OCSF events for a SIEM, once or following the running gateway, to stdout, a file, an
HTTP collector (Splunk HEC, Elastic bulk) or syslog (RFC 5424), resuming from a cursor file."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
import threading
from datetime import datetime
from pathlib import Path
from types import FrameType
from typing import Annotated, Any

import typer

from addons.siem.ocsf import FlowContext, to_ocsf
from addons.siem.sinks import HTTP_FORMATS, DeliveryFailed, HttpSink, LinesSink, Sink, SyslogSink
from addons.store.queries import parse_when
from scripts.warden.backend import AdminBackend, Backend, BackendError
from scripts.warden.options import State, admin_token, connect, err, fail

siem_app = typer.Typer()

FIRST_WAIT, LONGEST_WAIT = 0.5, 10.0  # backoff between attempts: doubling from the first, never above the longest
ONCE_ATTEMPTS = 6  # without --follow, a sink that still fails after this many attempts ends the command


class Cursor:
    """The seq of the last event delivered, in a file replaced atomically (a crash leaves the old or the new one)."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self.name = str(path.resolve()) if path else f"siem-{os.getpid()}-{secrets.token_hex(4)}"

    def read(self) -> int | None:
        if self.path is None or not self.path.exists():
            return None
        text = self.path.read_text().strip()
        if not text.lstrip("-").isdigit():
            raise fail(f"--cursor: {self.path} holds {text[:40]!r}, not the seq of an event")
        return int(text)

    def write(self, seq: int) -> None:
        if self.path is None:
            return
        fd, tmp = tempfile.mkstemp(dir=self.path.parent, prefix=f".{self.path.name}.")
        with os.fdopen(fd, "w") as f:
            f.write(f"{seq}\n")
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, self.path)


class Stop:
    """SIGINT or SIGTERM: finish the batch in hand (delivered and its cursor written, or not at all), then end."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self.set)

    def set(self, signum: int, frame: FrameType | None) -> None:
        self.event.set()

    def wait(self, seconds: float) -> bool:
        return self.event.wait(seconds)

    def __bool__(self) -> bool:
        return self.event.is_set()


def backoff(attempt: int) -> float:
    return min(FIRST_WAIT * 2 ** min(attempt, 16), LONGEST_WAIT)


def deliver(sink: Sink, batch: list[dict[str, Any]], stop: Stop, follow: bool) -> bool:
    """Deliver ``batch`` whole, retrying with backoff (for ever with --follow); False if stopped before it was."""
    attempt = 0
    while not stop:
        try:
            sink.deliver(batch)
            return True
        except DeliveryFailed as e:
            if not follow and attempt + 1 >= ONCE_ATTEMPTS:
                raise fail(f"delivery failed {ONCE_ATTEMPTS} times, the cursor stays before this batch: {e}") from None
            wait = backoff(attempt)
            err.print(f"warden siem: delivery failed ({e}); again in {wait:g} s", highlight=False)
            attempt += 1
            stop.wait(wait)
    return False


def open_sink(output: Path | None, append: bool, to_http: str | None, http_format: str, token_env: str,
              to_syslog: str | None, syslog_udp: bool) -> Sink:
    if sum(x is not None for x in (output, to_http, to_syslog)) > 1:
        raise fail("choose one of -o, --to-http and --to-syslog")
    try:
        if to_http is not None:
            return HttpSink(to_http, http_format, os.environ.get(token_env))
        if to_syslog is not None:
            return SyslogSink(to_syslog, udp=syslog_udp)
    except ValueError as e:
        raise fail(str(e)) from None
    if output is not None:
        try:
            return LinesSink(output.open("a" if append else "w", encoding="utf-8"), close=True)
        except OSError as e:
            raise fail(f"-o: {e}") from None
    return LinesSink(sys.stdout)


class Source:
    """Pages of events: once, from the file or the running gateway; following, through the admin API only (a
    follower that held the DuckDB file would keep a restarting gateway from opening it), reconnecting with backoff
    and a fresh token while the gateway is away."""

    def __init__(self, follow: bool, cursor: Cursor) -> None:
        self.follow, self.cursor = follow, cursor
        self.backend: Backend | None = None
        self.failures = 0

    def page(self, after: int, since: datetime | None, stop: Stop) -> tuple[list, bool] | None:
        try:
            if self.backend is None:
                self.backend = AdminBackend(State.admin, admin_token()) if self.follow else connect()
            page = self.backend.events_page(after, since, self.cursor.name)
            self.failures = 0
            return page
        except BackendError as e:
            if not self.follow:
                raise fail(str(e)) from None
            self.close()
            wait = backoff(self.failures)
            self.failures += 1
            err.print(f"warden siem: {e}; again in {wait:g} s", highlight=False)
            stop.wait(wait)
            return None

    def close(self) -> None:
        if self.backend is not None:
            self.backend.close()
            self.backend = None


@siem_app.command()
def siem(
    output: Annotated[Path | None, typer.Option("-o", "--output", help=(
        "Write JSON lines to FILE (appended to when --cursor is given: a resumed stream continues it). Default: "
        "stdout."))] = None,
    since: Annotated[str | None, typer.Option(help=(
        "Start with the first event written since then (ISO 8601 or a duration ago: 15m, 2h, 7d). A --cursor file "
        "that exists wins."))] = None,
    after_seq: Annotated[int | None, typer.Option(help=(
        "Start after this seq. A --cursor file that exists wins."))] = None,
    follow: Annotated[bool, typer.Option(help=(
        "Keep streaming new events while the gateway runs (through its admin API), waiting out restarts. "
        "SIGINT/SIGTERM end it after the batch in hand."))] = False,
    cursor: Annotated[Path | None, typer.Option(help=(
        "Resume from and keep the seq of the last event delivered in FILE (written after each delivered batch)."))
    ] = None,
    to_http: Annotated[str | None, typer.Option(help=(
        "POST batches to this collector URL (Splunk HEC: https://splunk:8088/services/collector/event; Elastic: "
        "https://es:9200/warden/_bulk), retrying until accepted (2xx)."))] = None,
    http_format: Annotated[str, typer.Option(help=f"The batch form: {' or '.join(HTTP_FORMATS)}.")] = "splunk",
    token_env: Annotated[str, typer.Option(help=(
        "The environment variable holding the collector's token (sent as 'Splunk TOKEN' or 'ApiKey TOKEN'; never "
        "on the command line)."))] = "WARDEN_SIEM_TOKEN",
    to_syslog: Annotated[str | None, typer.Option(help=(
        "Send RFC 5424 messages to HOST:PORT over TCP (octet-counting framing, RFC 6587)."))] = None,
    syslog_udp: Annotated[bool, typer.Option(help="Send --to-syslog over UDP (one datagram each, unacknowledged).")
    ] = False,
    poll: Annotated[float, typer.Option(help="With --follow, seconds between polls when nothing is new.")] = 1.0,
) -> None:
    """Stream the record as OCSF events (one JSON object per event; metadata.uid is the event's seq, for dedup).

    Every event goes out, the signed checkpoints too (the chain heads to keep outside the gateway). Each read of
    the admin API is on the record; a follower's idle polls are not recorded again. See the README's "SIEM".

    \b
    Examples:
      warden siem --since 1d -o events.jsonl
      warden siem --follow --cursor siem.cursor --to-http https://splunk:8088/services/collector/event
      warden siem --follow --cursor siem.cursor --to-syslog siem.example:6514
    """
    state = Cursor(cursor)
    start_since = None
    try:
        start_since = parse_when(since) if since else None
    except ValueError as e:
        raise fail(f"--since: {e}") from None
    position = state.read()
    if position is None and after_seq is not None:
        position = after_seq
    sink = open_sink(output, cursor is not None, to_http, http_format, token_env, to_syslog, syslog_udp)
    stop, source, context = Stop(), Source(follow, state), FlowContext()
    try:
        while not stop:
            page = source.page(-1 if position is None else position, start_since if position is None else None, stop)
            if page is None:
                continue
            events, more = page
            if events:
                if not deliver(sink, [to_ocsf(e, context) for e in events], stop, follow):
                    break
                position = events[-1].seq
                state.write(position)
            if not more:
                if not follow:
                    break
                stop.wait(poll)
    finally:
        source.close()
        sink.close()
