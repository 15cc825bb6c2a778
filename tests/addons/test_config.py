"""The Config addon's pins, against mitmproxy's own option declarations (mitmdump's addons): an unsafe value set on
purpose is refused by name; an unsafe value that is merely mitmproxy's default is made safe."""

from __future__ import annotations

import asyncio

import pytest
from mitmproxy import exceptions, options, optmanager
from mitmproxy.tools.dump import DumpMaster

from addons.config import PINS, check_pins


def mitmdump_options() -> optmanager.OptManager:
    """mitmdump's option declarations (names, types, defaults), detached from the addons that act on them."""

    async def declared() -> optmanager.OptManager:
        return DumpMaster(options.Options(), with_termlog=False, with_dumper=True).options

    opts = optmanager.OptManager()
    for name, option in asyncio.run(declared()).items():
        opts.add_option(name, option.typespec, option.default, option.help, option.choices)
    return opts


UNSAFE = [
    ("stream_large_bodies", "1m"), ("ssl_insecure", True), ("websocket", False), ("ignore_hosts", [".*"]),
    ("allow_hosts", ["api.openai.com"]), ("tcp_hosts", [".*"]), ("udp_hosts", [".*"]), ("keep_host_header", True),
    ("mode", ["regular", "socks5@1080"]), ("mode", ["transparent"]), ("mode", ["upstream:http://proxy:3128"]),
    ("mode", ["wireguard"]), ("mode", ["reverse:tcp://example.com:22"]), ("save_stream_file", "out.flows"),
    ("hardump", "out.har"), ("flow_detail", 3), ("proxy_debug", True), ("validate_inbound_headers", False),
    ("tls_version_server_min", "TLS1"), ("tls_version_client_min", "TLS1_1"), ("ciphers_server", "aNULL"),
    ("tls_ecdh_curve_server", "prime256v1"), ("rfile", "old.flows"), ("map_remote", ["|//a.example|//b.example"]),
    ("map_local", ["|example.com/|/tmp"]), ("modify_headers", ["/~q/Authorization/x"]),
    ("modify_body", ["/~q/a/b"]), ("server_replay", ["old.flows"]), ("client_replay", ["old.flows"]),
    ("stickycookie", ".*"), ("stickyauth", ".*"), ("upstream_auth", "user:pass"), ("block_list", ["/~u x/404"]),
]


def test_mitmdumps_defaults_are_made_safe_not_refused() -> None:
    opts = mitmdump_options()
    fixes = dict(check_pins(opts, set(opts.keys())))
    assert fixes == {"connection_strategy": "lazy", "rawtcp": False, "flow_detail": 0}


@pytest.mark.parametrize(("name", "value"), UNSAFE)
def test_an_unsafe_value_is_refused_naming_the_option(name, value) -> None:
    opts = mitmdump_options()
    opts.update(**{name: value})
    with pytest.raises(exceptions.OptionsError, match=f"^{name}=.*refused by Warden: "):
        check_pins(opts, {name})


def test_every_pin_is_tried_here() -> None:
    """A pin added without an unsafe value in this file is a pin nobody checked."""
    assert {pin.option for pin in PINS} - {"intercept"} == {name for name, _ in UNSAFE} | {"connection_strategy",
                                                                                          "rawtcp"}


def test_safe_modes_pass() -> None:
    opts = mitmdump_options()
    opts.update(mode=["regular@8080", "reverse:https://api.openai.com@8090", "reverse:http://localhost:9000@8091"])
    assert check_pins(opts, {"mode"}) == []
