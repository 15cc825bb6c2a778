"""Where ``warden siem`` delivers OCSF events: JSON lines to a file or stdout, batches posted to a collector (Splunk
HEC or Elastic bulk), or syslog (RFC 5424) over TCP (octet counting, RFC 6587) or UDP.

A sink's ``deliver(batch)`` returns once the whole batch is accepted, or raises ``DeliveryFailed``; the caller
retries the same batch and moves its cursor only after a delivery, so an unreachable collector loses nothing.
Python's ``SysLogHandler`` writes RFC 3164 and the RFC 5424 packages on PyPI are unmaintained logging formatters, so
the few lines of an RFC 5424 header are written here (``syslog_message``).
"""

from __future__ import annotations

import json
import socket
from datetime import UTC, datetime
from typing import IO, Any, Protocol

import httpx

from addons.siem.ocsf import PRODUCT

FACILITY_LOG_AUDIT = 13  # RFC 5424 facility 13: log audit
# OCSF severity_id -> syslog severity: 0 unknown and 1 informational -> 6 informational, 2 low -> 5 notice,
# 3 medium -> 4 warning, 4 high -> 3 error, 5 critical -> 2 critical, 6 fatal -> 1 alert.
SYSLOG_SEVERITY = {0: 6, 1: 6, 2: 5, 3: 4, 4: 3, 5: 2, 6: 1, 99: 6}
HTTP_FORMATS = ("splunk", "elastic")


class DeliveryFailed(Exception):
    """The batch was not (wholly) accepted; the message says by whom and why."""


class Sink(Protocol):
    def deliver(self, batch: list[dict[str, Any]]) -> None: ...
    def close(self) -> None: ...


def dumps(event: dict[str, Any]) -> str:
    return json.dumps(event, separators=(",", ":"), ensure_ascii=False)


class LinesSink:
    """One JSON object a line, flushed after each batch."""

    def __init__(self, stream: IO[str], close: bool = False) -> None:
        self.stream = stream
        self.owned = close

    def deliver(self, batch: list[dict[str, Any]]) -> None:
        try:
            self.stream.write("".join(dumps(e) + "\n" for e in batch))
            self.stream.flush()
        except OSError as e:
            raise DeliveryFailed(f"writing failed: {e}") from None

    def close(self) -> None:
        if self.owned:
            self.stream.close()


class HttpSink:
    """A batch a POST: Splunk HEC (``{"time": s, "event": {...}}`` a line, ``Authorization: Splunk TOKEN``) or
    Elastic bulk (``{"index":{"_id": seq}}`` then the event, ``Authorization: ApiKey TOKEN``; the id makes a
    re-sent batch overwrite itself instead of doubling). Accepted: a 2xx, and for bulk no item in error."""

    def __init__(self, url: str, form: str, token: str | None, timeout: float = 30, verify: Any = True) -> None:
        if form not in HTTP_FORMATS:
            raise ValueError(f"--http-format: {form!r} is none of {', '.join(HTTP_FORMATS)}")
        self.url, self.form = url, form
        headers = {"Content-Type": "application/json" if form == "splunk" else "application/x-ndjson"}
        if token:
            headers["Authorization"] = f"{'Splunk' if form == 'splunk' else 'ApiKey'} {token}"
        self.client = httpx.Client(headers=headers, timeout=timeout, verify=verify, trust_env=False)

    def body(self, batch: list[dict[str, Any]]) -> bytes:
        if self.form == "splunk":
            lines = [dumps({"time": e["time"] / 1000, "source": "warden", "sourcetype": "ocsf", "event": e})
                     for e in batch]
        else:
            lines = [part for e in batch for part in (dumps({"index": {"_id": e["metadata"]["uid"]}}), dumps(e))]
        return ("\n".join(lines) + "\n").encode()

    def deliver(self, batch: list[dict[str, Any]]) -> None:
        try:
            response = self.client.post(self.url, content=self.body(batch))
        except httpx.HTTPError as e:
            raise DeliveryFailed(f"{self.url}: {type(e).__name__}: {e}") from None
        if not response.is_success:
            raise DeliveryFailed(f"{self.url}: HTTP {response.status_code}: {response.text[:200]}")
        if self.form == "elastic":
            try:
                answer = response.json()
            except ValueError:
                raise DeliveryFailed(f"{self.url}: the bulk answer is not JSON: {response.text[:200]}") from None
            if answer.get("errors"):
                failed = [item for entry in answer.get("items", []) for item in entry.values() if item.get("error")]
                first = str(failed[:1])[:300]
                raise DeliveryFailed(f"{self.url}: {len(failed)} of the batch's events refused: {first}")

    def close(self) -> None:
        self.client.close()


def syslog_message(event: dict[str, Any], hostname: str) -> bytes:
    """One RFC 5424 message: ``<PRI>1 TIMESTAMP HOSTNAME warden - MSGID [origin ...] BOM{ocsf json}``. MSGID names
    the OCSF class (``ocsf6003``); the structured data is the registered ``origin`` SD-ID (RFC 5424 7.2)."""
    pri = FACILITY_LOG_AUDIT * 8 + SYSLOG_SEVERITY.get(event.get("severity_id", 0), 6)
    moment = datetime.fromtimestamp(event["time"] / 1000, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    host = "".join(c for c in hostname if 33 <= ord(c) <= 126)[:255] or "-"
    origin = f'[origin software="{PRODUCT["name"]}" swVersion="{PRODUCT["version"]}"]'
    header = f"<{pri}>1 {moment} {host} warden - ocsf{event['class_uid']} {origin} "
    return header.encode("ascii") + b"\xef\xbb\xbf" + dumps(event).encode()


class SyslogSink:
    """RFC 5424 messages to ``host:port``: over TCP, each framed by its length (RFC 6587 octet counting, so a message
    may hold any byte); over UDP, a datagram each (no acknowledgement: what the network drops is lost)."""

    def __init__(self, address: str, udp: bool = False, timeout: float = 30) -> None:
        host, sep, port = address.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ValueError(f"--to-syslog: {address!r} is not HOST:PORT")
        self.address = (host.strip("[]"), int(port))
        self.udp, self.timeout = udp, timeout
        self.sock: socket.socket | None = None
        self.hostname = socket.gethostname()

    def _connect(self) -> socket.socket:
        if self.sock is None:
            try:
                if self.udp:
                    self.sock = socket.socket(socket.AF_INET6 if ":" in self.address[0] else socket.AF_INET,
                                              socket.SOCK_DGRAM)
                else:
                    self.sock = socket.create_connection(self.address, timeout=self.timeout)
            except OSError as e:
                raise DeliveryFailed(f"syslog {self.address[0]}:{self.address[1]}: {e}") from None
        return self.sock

    def deliver(self, batch: list[dict[str, Any]]) -> None:
        messages = [syslog_message(e, self.hostname) for e in batch]
        sock = self._connect()
        try:
            if self.udp:
                for message in messages:
                    sock.sendto(message, self.address)
            else:
                sock.sendall(b"".join(str(len(m)).encode() + b" " + m for m in messages))
        except OSError as e:
            self.close()  # reconnect for the retry; a receiver that took part of the batch gets it again (dedup: seq)
            raise DeliveryFailed(f"syslog {self.address[0]}:{self.address[1]}: {e}") from None

    def close(self) -> None:
        if self.sock is not None:
            self.sock.close()
            self.sock = None
