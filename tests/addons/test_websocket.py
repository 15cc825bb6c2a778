"""What counts as a WebSocket upgrade request, and pseudonyms reserved by later messages."""

from __future__ import annotations

import pytest
from mitmproxy.test import tutils

from addons.pseudonyms import Vault
from addons.websocket import wants_upgrade


@pytest.mark.parametrize(("headers", "wanted"), [
    ({}, False),
    ({"upgrade": "h2c"}, False),
    ({"upgrade": "websocket"}, True),
    ({"upgrade": "WebSocket"}, True),
    ({"upgrade": "foo, websocket"}, True),
    ({"sec-websocket-version": "13"}, True),  # what mitmproxy itself checks before it speaks WebSocket
    ({"sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ=="}, True),
])
def test_wants_upgrade(headers: dict[str, str], wanted: bool) -> None:
    request = tutils.treq()
    for name, value in headers.items():
        request.headers[name] = value
    assert wants_upgrade(request) is wanted


def test_a_later_message_reserves_the_pseudonyms_it_spells() -> None:
    vault = Vault()
    assert vault.pseudonym("EMAIL_ADDRESS", "a@example.org") == "<EMAIL_ADDRESS_1>"
    vault.reserve(["I typed <EMAIL_ADDRESS_2> and <EMAIL_ADDRESS_1> myself"])
    assert vault.pseudonym("EMAIL_ADDRESS", "b@example.org") == "<EMAIL_ADDRESS_3>"
    assert vault.restore("<EMAIL_ADDRESS_1>") == "a@example.org"  # an issued one stays restorable
