"""Config: first in the chain, the one owner of the gateway's configuration.

It declares the options every addon shares (``warden_rules``, ``warden_issuer_key``), loads and
resolves the rules file once per change (the other addons read it with ``rules.current_rules()``),
and pins the mitmproxy options Warden's guarantees depend on.

While the gateway runs it watches the rules file and the credential files it names (``warden_rules_watch``,
and on SIGHUP) and reloads it as a whole: the new file is validated as at start-up; an addon that needs time to
get ready for it defines ``async prepare_rules(rules)`` (the PII addon starts analyzer workers for a new engine
while the old ones serve) and may refuse it with ``RulesError``; then every addon's ``configure`` sees
``warden_rules`` changed, at once, on the event loop. A refused edit leaves the rules in force as they were, and
says why in the log (one line per problem, naming file and field) and on ``/healthz`` (``health()``). Either way
the reload is a ``config`` event on the record, with the file's SHA-256. Flows keep what was decided for them:
their decision (and its masking profile's name) is in their facts, and an analysis in progress finishes on
the analyzer pool it began on. An option set to a value that would
open a way around the chain stops start-up with a line naming it; an option that merely still has
mitmproxy's default (``connection_strategy=eager``, ``rawtcp=true``, ``flow_detail=1``) is set to
the safe value, and the log says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import signal
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from mitmproxy import ctx, exceptions, hooks
from mitmproxy.addonmanager import traverse
from mitmproxy.proxy.mode_specs import ProxyMode

from addons.flow.errors import RecordingUnavailable
from addons.rules.durations import seconds
from addons.rules.model import Rules, RulesError, credential_files, load_rules, rules_from_option
from addons.rules.watch import FileWatch, Stat, stat_of
from addons.store.events import Event

log = logging.getLogger("warden.config")
_REFUSE = object()


def _modes_safe(specs: list[str]) -> bool:
    """Only the regular and reverse modes bind an identity; reverse only to an HTTP(S) upstream."""
    for spec in specs:
        try:
            mode = ProxyMode.parse(spec)
        except ValueError:
            return True  # mitmproxy refuses it with its own message
        if mode.type_name not in ("regular", "reverse"):
            return False
        if mode.type_name == "reverse" and getattr(mode, "scheme", "https") not in ("http", "https"):
            return False
    return True


@dataclass(frozen=True)
class Pin:
    """A mitmproxy option the guarantees depend on: which values are safe, and why."""

    option: str
    safe: Callable[[Any], bool]
    why: str
    fix: Any = _REFUSE  # the safe value to set while the option still has mitmproxy's default


PINS: tuple[Pin, ...] = (
    Pin("connection_strategy", lambda v: v == "lazy",
        "an eager connection reaches the upstream at the CONNECT, before any request is checked or recorded",
        fix="lazy"),
    Pin("stream_large_bodies", lambda v: not v,
        "a streamed request body leaves before policy, masking, credentials and the recorder have run"),
    Pin("ssl_insecure", lambda v: not v, "the gateway would send the provider credential to any certificate"),
    Pin("rawtcp", lambda v: not v, "bytes the gateway does not understand would be relayed unrecorded", fix=False),
    Pin("websocket", lambda v: bool(v),
        "without it mitmproxy relays an upgraded connection as raw TCP, unmasked and unrecorded"),
    Pin("ignore_hosts", lambda v: not v, "ignored hosts are passed through without identity, masking or record"),
    Pin("allow_hosts", lambda v: not v, "hosts outside it are passed through without identity, masking or record"),
    Pin("tcp_hosts", lambda v: not v, "TCP hosts are relayed raw, without identity, masking or record"),
    Pin("udp_hosts", lambda v: not v, "UDP hosts are relayed raw, without identity, masking or record"),
    Pin("keep_host_header", lambda v: not v,
        "in reverse mode the client's Host would be forwarded as sent (domain fronting)"),
    Pin("mode", _modes_safe,
        "only regular and reverse (to an http or https upstream) bind an identity to every request"),
    Pin("save_stream_file", lambda v: not v,
        "mitmproxy's -w writes flows holding the injected provider key and the caller's unmasked PII"),
    Pin("hardump", lambda v: not v,
        "a HAR dump holds the injected provider key and the caller's unmasked PII"),
    Pin("flow_detail", lambda v: v == 0,
        "mitmdump's flow log prints URLs, headers (the injected key) and unmasked bodies", fix=0),
    Pin("proxy_debug", lambda v: not v, "the proxy's debug log prints connection data"),
    Pin("validate_inbound_headers", lambda v: bool(v),
        "without it an HTTP/2 request may carry a Host that differs from its :authority (domain fronting)"),
    Pin("tls_version_server_min", lambda v: v in ("TLS1_2", "TLS1_3"),
        "the provider credential would travel over a TLS version below 1.2"),
    Pin("tls_version_client_min", lambda v: v in ("TLS1_2", "TLS1_3"),
        "the caller's token and unmasked text would travel over a TLS version below 1.2"),
    Pin("ciphers_server", lambda v: not v,
        "a cipher list of its own may allow unauthenticated or weak suites upstream"),
    Pin("tls_ecdh_curve_server", lambda v: not v, "a curve of its own may weaken the TLS to upstreams"),
    Pin("rfile", lambda v: not v, "flows read from a file would run through the chain and onto the record"),
    # mitmproxy's own addons that rewrite or answer flows run after the scripts, so after the recorder: what
    # they change would leave unrecorded, unmasked or with another caller's state.
    *(Pin(name, lambda v: not v, f"{what} after Warden's chain has recorded the request")
      for name, what in (
          ("map_remote", "it sends requests (and the injected key) to another URL"),
          ("map_local", "it answers requests from local files"),
          ("modify_headers", "it changes headers (credentials included)"),
          ("modify_body", "it changes bodies (unmasked text included)"),
          ("server_replay", "it answers requests from recorded flows"),
          ("client_replay", "it sends recorded requests again"),
          ("stickycookie", "it adds one caller's upstream cookies to another caller's requests"),
          ("stickyauth", "it adds one caller's Authorization to another caller's requests"),
          ("upstream_auth", "it adds credentials"),
          ("block_list", "it answers requests"),
          ("intercept", "it holds flows for interactive editing"),
      )),
)


def check_pins(options: Any, names: set[str]) -> list[tuple[str, Any]]:
    """Options among ``names`` set to their safe value now: ``[(option, value)]``. Raises ``OptionsError`` naming
    the first one set to an unsafe value on purpose (not merely left at mitmproxy's default)."""
    fixes = []
    for pin in PINS:
        if pin.option not in names or pin.option not in options:
            continue
        value = getattr(options, pin.option)
        if pin.safe(value):
            continue
        if pin.fix is not _REFUSE and value == options.default(pin.option):
            fixes.append((pin.option, pin.fix))
            continue
        raise exceptions.OptionsError(f"{pin.option}={value!r} is refused by Warden: {pin.why}")
    return fixes


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


@dataclass
class Refusal:
    """The last edit of the rules file that was refused, while no later one has been applied."""

    sha256: str | None  # None: the file could not be read
    at: str
    error: str


class Config:
    def __init__(self) -> None:
        self.rules: Rules | None = None
        self.loaded_at: str | None = None
        self.reloads = 0  # applied since start-up
        self.refused: Refusal | None = None
        self.reloading: dict[str, str] | None = None  # the edit being prepared (its sha256, since when)
        self.interval: float | None = 1.0  # seconds between checks of the files; None: only on SIGHUP
        self.watch: FileWatch | None = None
        self._attempted: str | None = None  # sha256 of the last content loaded or refused
        self._publishing = False
        self._wake: asyncio.Event | None = None
        self._task: asyncio.Task | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "warden_rules", str, "rules/default.yaml",
            "Warden's rules file: upstreams (the only hosts reached, and their credentials) and policy rules.",
        )
        loader.add_option(
            "warden_rules_watch", str, "1",
            "Seconds between checks of the rules file (and the credential files it names) for changes, which are "
            "applied without a restart (an invalid edit is refused and the rules in force stay); 0: only on SIGHUP.",
        )
        loader.add_option(
            "warden_issuer_key", str, "certs/warden-issuer.key",
            "Ed25519 key of the embedded development issuer (identity.issuer: embedded); created if missing.",
        )

    def configure(self, updated: set[str]) -> None:
        fixes = check_pins(ctx.options, updated)
        if fixes:
            for option, value in fixes:
                log.info("warden: setting %s=%r: %s", option, value, next(p.why for p in PINS if p.option == option))
            ctx.options.update(**dict(fixes))
        if "warden_rules_watch" in updated:
            off = ctx.options.warden_rules_watch.strip() in ("0", "0s", "off")
            self.interval = None if off else seconds("warden_rules_watch")
        if "warden_rules" in updated and not self._publishing:  # publishing: the rules are this addon's own
            seen = stat_of(Path(ctx.options.warden_rules))
            self.rules = rules_from_option(ctx.options.warden_rules)
            self._loaded(self.rules, seen)

    def _loaded(self, rules: Rules, seen: Stat) -> None:
        """``rules`` are in force, loaded from their file as it was when ``seen``."""
        self.loaded_at, self.refused, self._attempted = _now(), None, rules.sha256
        files = credential_files(rules)
        self.watch = FileWatch([rules.path, *files], [seen, *map(stat_of, files)])

    def health(self) -> dict[str, Any]:
        """The rules in force and the fate of the last edit, for ``/healthz``."""
        return {"file": str(self.rules.path) if self.rules else None,
                "sha256": self.rules.sha256 if self.rules else None, "loaded_at": self.loaded_at,
                "reloads": self.reloads, "watch_seconds": self.interval, "reloading": self.reloading,
                "refused": None if self.refused is None else {"sha256": self.refused.sha256, "at": self.refused.at,
                                                              "error": self.refused.error}}

    # -- reload ---------------------------------------------------------------------------------------

    def running(self) -> None:
        loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        self._task = loop.create_task(self._watching())
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):  # not on this platform or thread
            loop.add_signal_handler(signal.SIGHUP, self._wake.set)

    def done(self) -> None:
        if self._task is not None:
            self._task.cancel()
            self._task = None
        with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
            asyncio.get_running_loop().remove_signal_handler(signal.SIGHUP)

    async def _watching(self) -> None:
        assert self._wake is not None
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.interval)
            signalled = self._wake.is_set()
            self._wake.clear()
            try:
                if signalled:
                    await self.reload("SIGHUP")
                elif self.watch is not None and self.watch.tick():
                    await self.reload("file changed")
            except Exception as e:  # the watch outlives any one reload
                log.error("warden: reloading the rules failed: %r", e, exc_info=e)

    async def reload(self, trigger: str) -> str:
        """Load the rules file again and apply it whole, or refuse it and keep the rules in force: ``"applied"``,
        ``"refused"``, or ``"unchanged"`` (the file changed, not its content, and no credential file changed)."""
        assert self.rules is not None and self.watch is not None
        path, before = self.rules.path, self.watch.stats()  # taken before reading: a later write is seen next tick
        content: bytes | None = None
        try:
            content = path.read_bytes()
        except OSError as e:
            unreadable = f"{path}: cannot read rules file: {e.strerror}"
        sha = hashlib.sha256(content).hexdigest() if content is not None else None
        if trigger != "SIGHUP" and sha == self._attempted and self.watch.only_rules_file_changed(before):
            self.watch.loaded(before)
            return "unchanged"
        self.watch.loaded(before)
        self._attempted, previous = sha, self.rules.sha256
        try:
            if content is None:
                raise RulesError(unreadable)
            rules = load_rules(path, content)
            self.reloading = {"sha256": rules.sha256, "since": _now()}
            try:
                await self._prepare(rules)
                self._publish(rules)
            finally:
                self.reloading = None
        except RulesError as e:
            self.refused = Refusal(sha, _now(), str(e))
            log.error("warden: the edit of %s (%s) was refused; the rules in force stay (sha256 %s):",
                      path, trigger, previous)
            for line in str(e).splitlines():
                log.error("warden: refused: %s", line)
            await self._record("refused", sha, previous, trigger, str(e))
            return "refused"
        self.reloads += 1
        self._loaded(rules, before[0])
        log.info("warden: rules reloaded from %s (%s): sha256 %s", path, trigger, rules.sha256)
        await self._record("applied", rules.sha256, previous, trigger)
        return "applied"

    async def _prepare(self, rules: Rules) -> None:
        """Let every addon that needs time get ready for ``rules`` (``prepare_rules``); RulesError refuses them."""
        for addon in traverse(ctx.master.addons.chain):
            prepare = getattr(addon, "prepare_rules", None)
            if callable(prepare):
                await prepare(rules)

    def _publish(self, rules: Rules) -> None:
        """Put ``rules`` in force: every addon's ``configure`` sees ``warden_rules`` changed, as at start-up. If one
        refuses them, the rules in force before are published again, and RulesError says which and why."""
        old, self.rules = self.rules, rules
        try:
            self._configure_all()
        except Exception as e:  # an addon's configure, whatever it raised: no addon may keep a half-applied file
            self.rules = old
            self._configure_all()
            raise RulesError(f"{rules.path}: not applied: {e}") from None

    def _configure_all(self) -> None:
        self._publishing = True
        try:
            for addon in ctx.master.addons.chain:
                ctx.master.addons.invoke_addon_sync(addon, hooks.ConfigureHook({"warden_rules"}))
        finally:
            self._publishing = False

    async def _record(self, outcome: str, sha: str | None, previous: str, trigger: str,
                      error: str | None = None) -> None:
        """The reload as a ``config`` event on the record (the file's digest, never its content)."""
        recorder = ctx.master.addons.get("recorder")
        if recorder is None:
            return
        assert self.rules is not None
        event = Event(kind="config", fate=outcome, reason=error, detail={
            "file": str(self.rules.path), "sha256": sha, "previous_sha256": previous, "trigger": trigger})
        try:
            await recorder.commit(event)
        except RecordingUnavailable as e:
            log.error("warden: the rules reload (%s, sha256 %s) could not be recorded: %s", outcome, sha, e)
