"""Policy's plain functions: one spelling of a path for rules and upstream alike."""

from __future__ import annotations

import pytest

from addons.policy import lenient_path, normal_path


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


@pytest.mark.parametrize(("sent", "lenient"), [
    ("/v1%2Ffine_tuning/jobs", "/v1/fine_tuning/jobs"),     # servers that decode %2F before routing
    ("/v1/chat/..%2Ffiles", "/v1/files"),                   # ... and then resolve dot segments
    ("/v1/..;/admin", "/admin"),                            # servers that drop ';' parameters
    ("/v1\\files", "/v1/files"),                            # backslashes as slashes
    ("/v1/chat/completions", "/v1/chat/completions"),
])
def test_lenient_path(sent: str, lenient: str) -> None:
    assert lenient_path(sent) == lenient
