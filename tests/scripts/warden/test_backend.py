"""The CLI's admin API backend: errors carry the API's HTTP status, and a flow the gateway does not know is none."""

from __future__ import annotations

import httpx
import pytest

from scripts.warden.backend import AdminBackend, AdminRefused, BackendError


def backend_answering(status: int, body: dict) -> AdminBackend:
    backend = AdminBackend("127.0.0.1:1")
    backend.client.close()
    backend.client = httpx.Client(base_url="http://127.0.0.1:1",
                                  transport=httpx.MockTransport(lambda request: httpx.Response(status, json=body)))
    return backend


def test_a_flow_the_admin_api_does_not_know_has_no_events() -> None:
    backend = backend_answering(404, {"error": {"message": "no flow f-1"}})
    assert backend.flow_events("f-1") == []


def test_other_refusals_carry_their_status() -> None:
    backend = backend_answering(500, {"error": {"message": "HTTP 404 in the text is not a 404"}})
    with pytest.raises(AdminRefused) as e:
        backend.flow_events("f-1")
    assert e.value.status == 500 and isinstance(e.value, BackendError)
    assert str(e.value) == "admin API http://127.0.0.1:1/api/flows/f-1: HTTP 500: HTTP 404 in the text is not a 404"


def test_an_unreachable_gateway_is_a_backend_error() -> None:
    backend = AdminBackend("127.0.0.1:1")
    backend.client.close()
    backend.client = httpx.Client(base_url="http://127.0.0.1:1", transport=httpx.MockTransport(
        lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused", request=request))))
    with pytest.raises(BackendError, match="cannot reach the gateway's admin API") as e:
        backend.flow_events("f-1")
    assert not isinstance(e.value, AdminRefused)
