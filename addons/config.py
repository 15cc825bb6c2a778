"""Config: first in the chain, the one owner of the gateway's configuration.

It declares the options every addon shares (``warden_rules``, ``warden_issuer_key``), loads and
resolves the rules file once per change (the other addons read it with ``rules.current_rules()``),
and pins the mitmproxy options Warden's guarantees depend on. An option set to a value that would
open a way around the chain stops start-up with a line naming it; an option that merely still has
mitmproxy's default (``connection_strategy=eager``, ``rawtcp=true``, ``flow_detail=1``) is set to
the safe value, and the log says so.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from mitmproxy import ctx, exceptions
from mitmproxy.proxy.mode_specs import ProxyMode

from addons.rules.model import Rules, rules_from_option

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


class Config:
    def __init__(self) -> None:
        self.rules: Rules | None = None

    def load(self, loader) -> None:
        loader.add_option(
            "warden_rules", str, "rules/default.yaml",
            "Warden's rules file: upstreams (the only hosts reached, and their credentials) and policy rules.",
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
        if "warden_rules" in updated:
            self.rules = rules_from_option(ctx.options.warden_rules)
