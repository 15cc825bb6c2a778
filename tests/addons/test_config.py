"""The Config addon's pins: an unsafe value set on purpose is refused by name; a mitmproxy default is made safe."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from mitmproxy import exceptions, optmanager

from addons.config import check_pins


def options() -> optmanager.OptManager:
    """mitmproxy's own declarations of the pinned options (their real types and defaults)."""
    opts = optmanager.OptManager()
    opts.add_option("connection_strategy", str, "eager", "", choices=("eager", "lazy"))
    opts.add_option("stream_large_bodies", str | None, None, "")
    opts.add_option("ssl_insecure", bool, False, "")
    opts.add_option("rawtcp", bool, True, "")
    opts.add_option("websocket", bool, True, "")
    for name in ("ignore_hosts", "allow_hosts", "tcp_hosts", "udp_hosts"):
        opts.add_option(name, Sequence[str], [], "")
    opts.add_option("keep_host_header", bool, False, "")
    opts.add_option("mode", Sequence[str], ["regular"], "")
    opts.add_option("save_stream_file", str | None, None, "")
    opts.add_option("hardump", str, "", "")
    opts.add_option("flow_detail", int, 1, "")
    opts.add_option("proxy_debug", bool, False, "")
    return opts


def test_defaults_are_made_safe_not_refused() -> None:
    opts = options()
    fixes = dict(check_pins(opts, set(opts.keys())))
    assert fixes == {"connection_strategy": "lazy", "rawtcp": False, "flow_detail": 0}


@pytest.mark.parametrize(("name", "value"), [
    ("stream_large_bodies", "1m"), ("ssl_insecure", True), ("websocket", False), ("ignore_hosts", [".*"]),
    ("allow_hosts", ["api.openai.com"]), ("tcp_hosts", [".*"]), ("udp_hosts", [".*"]), ("keep_host_header", True),
    ("mode", ["regular", "socks5@1080"]), ("mode", ["transparent"]), ("mode", ["upstream:http://proxy:3128"]),
    ("mode", ["wireguard"]), ("mode", ["reverse:tcp://example.com:22"]), ("save_stream_file", "out.flows"),
    ("hardump", "out.har"), ("flow_detail", 3), ("proxy_debug", True),
])
def test_an_unsafe_value_is_refused_naming_the_option(name, value) -> None:
    opts = options()
    opts.update(**{name: value})
    with pytest.raises(exceptions.OptionsError, match=f"^{name}=.*refused by Warden: "):
        check_pins(opts, {name})


def test_safe_modes_pass() -> None:
    opts = options()
    opts.update(mode=["regular@8080", "reverse:https://api.openai.com@8090", "reverse:http://localhost:9000@8091"])
    assert check_pins(opts, {"mode"}) == []
