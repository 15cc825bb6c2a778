"""Bodies mitmproxy stopped reading at body_size_limit: known by the declared length where there is one."""

from __future__ import annotations

from mitmproxy import flow as mflow
from mitmproxy.addons.proxyserver import Proxyserver
from mitmproxy.test import taddons, tflow, tutils

from addons.flow.meta import ERROR
from addons.intake import Intake, stopped_at_limit

LIMIT = 1000
OVER_REQUEST = "Request body exceeds mitmproxy's body_size_limit."
OVER_RESPONSE = "Response body exceeds mitmproxy's body_size_limit."


def failed(error: str, response_headers: dict[str, str] | None = None, method: str = "GET"):
    flow = tflow.tflow(req=tutils.treq(method=method.encode(), headers=((b"transfer-encoding", b"chunked"),)))
    if response_headers is not None:
        flow.response = tutils.tresp(headers=tuple((k.encode(), v.encode()) for k, v in response_headers.items()),
                                     content=None)
    flow.error = mflow.Error(error)
    return flow


def test_which_body_stopped_at_the_limit() -> None:
    intake = Intake()
    with taddons.context(Proxyserver(), intake) as tctx:
        tctx.configure(intake, warden_max_body=LIMIT, warden_max_response=LIMIT)
        # a declared length decides, whatever the message
        assert stopped_at_limit(failed("any text", {"content-length": str(LIMIT + 1)})) == "response"
        assert stopped_at_limit(failed(OVER_RESPONSE, {"content-length": str(LIMIT)})) is None
        assert stopped_at_limit(failed("any", {"content-length": str(LIMIT + 1)}, method="HEAD")) is None  # no body
        # an undeclared length: mitmproxy's message for that side is the one sign
        assert stopped_at_limit(failed(OVER_RESPONSE, {"transfer-encoding": "chunked"})) == "response"
        assert stopped_at_limit(failed("Server disconnected.", {"transfer-encoding": "chunked"})) is None
        assert stopped_at_limit(failed(OVER_REQUEST)) == "request"
        assert stopped_at_limit(failed(OVER_RESPONSE)) is None  # no answer yet: it was not the answer's body
        assert stopped_at_limit(failed("Client disconnected.")) is None


def test_the_outcome_is_named_for_its_side() -> None:
    intake = Intake()
    with taddons.context(Proxyserver(), intake) as tctx:
        tctx.configure(intake, warden_max_body=LIMIT, warden_max_response=LIMIT)
        upload = failed(OVER_REQUEST)
        intake.error(upload)
        assert ERROR.of(upload) is not None and ERROR.of(upload).type == "body_too_large"
        answer = failed("any text", {"content-length": str(10 * LIMIT)})
        intake.error(answer)
        assert ERROR.of(answer) is not None and ERROR.of(answer).type == "response_too_large"
        gone = failed("Client disconnected.")
        intake.error(gone)
        assert ERROR.of(gone) is None
