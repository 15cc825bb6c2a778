"""Policy's plain functions: one spelling of a path for rules and upstream alike."""

from __future__ import annotations

import pytest

from addons.policy import normal_path


@pytest.mark.parametrize(("sent", "judged"), [
    ("/v1/chat/completions", "/v1/chat/completions"),
    ("/v1/%66iles", "/v1/files"),                      # an unreserved character, escaped
    ("/v1//files", "/v1/files"),                       # a repeated slash
    ("/x/../v1/./files", "/v1/files"),                 # dot segments
    ("/%2e%2e/v1/files?x=/../y", "/v1/files?x=/../y"),  # escaped dots; the query as sent
    ("/v1/%2ffiles", "/v1/%2Ffiles"),                  # a reserved escape stays escaped, in upper case
    ("/v1/files/", "/v1/files/"), ("/a/b/..", "/a/"), ("/a/.", "/a/"), ("/..", "/"), ("/", "/"),
    ("//v1", "/v1"), ("/v1/files//", "/v1/files/"),
])
def test_normal_path(sent: str, judged: str) -> None:
    assert normal_path(sent) == judged
