"""PII analysis that cannot be done stops the request: a stuck analyzer (timeout) and a dead one (engine failure).

The failures are real: the analyzer worker processes are stopped and killed with signals.
"""

from __future__ import annotations

import os
import signal
import threading
import time

import httpx
import pytest

from tests.conftest import Gateway

pytestmark = pytest.mark.e2e


def analyzer(gw: Gateway) -> dict:
    return httpx.get(f"{gw.admin_url}/healthz", trust_env=False).json()["pii"][0]


def wait_ready(gw: Gateway, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        state = analyzer(gw)
        if state["state"] == "ready" and state["ready_workers"] == state["workers"]:
            return state
        time.sleep(0.2)
    raise AssertionError(f"the analyzer did not recover: {analyzer(gw)}")


def chat(client: httpx.Client, port: int, text: str) -> httpx.Response:
    return client.post(f"https://localhost:{port}/v1/chat/completions",
                       json={"model": "demo", "messages": [{"role": "user", "content": text}]})


def test_stuck_analyzer_times_out_closed_and_is_replaced(gateway_factory, upstream) -> None:
    gw = gateway_factory(extra_args=("--set", "warden_pii_timeout=2"))
    [pid] = analyzer(gw)["pids"]
    os.kill(pid, signal.SIGSTOP)
    try:
        with gw.client(timeout=30) as client:
            started = time.monotonic()
            r = chat(client, upstream.port, "Stuck: mail jane.stuck@example.com please")
            assert time.monotonic() - started < 10
            assert r.status_code == 503 and r.json()["error"]["type"] == "pii_unavailable"
            assert "did not finish within 2 s" in r.json()["error"]["message"]
            state = wait_ready(gw)
            assert pid not in state["pids"] and state["restarts"] == 1
            ok = chat(client, upstream.port, "Recovered: mail jane.ok@example.com please")
            assert ok.status_code == 200 and ok.json()["choices"][0]["message"]["content"].endswith("please")
    finally:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    sent = [r["body"].decode() for r in upstream.received]
    assert len(sent) == 1 and "jane.ok" not in sent[0] and "<EMAIL_ADDRESS_1>" in sent[0]
    fates = [f["fate"] for f in reversed(gw.flows())]
    assert fates == ["pii_unavailable", "completed"]


def test_dead_analyzer_fails_closed_and_is_replaced(gateway_factory, upstream) -> None:
    gw = gateway_factory()
    [pid] = analyzer(gw)["pids"]
    os.kill(pid, signal.SIGSTOP)  # hold the request in the worker, then kill it there
    result: dict = {}
    with gw.client(timeout=30) as client:
        thread = threading.Thread(target=lambda: result.update(r=chat(client, upstream.port, "Dead: call Ana Lee")))
        thread.start()
        time.sleep(1.0)
        os.kill(pid, signal.SIGKILL)
        thread.join(20)
        r = result["r"]
        assert r.status_code == 503 and r.json()["error"]["type"] == "pii_unavailable"
        assert "worker process exited" in r.json()["error"]["message"]
        wait_ready(gw)
        assert chat(client, upstream.port, "Alive again: call Ana Lee").status_code == 200
    assert [r["path"] for r in upstream.received] == ["/v1/chat/completions"]
    assert [f["fate"] for f in reversed(gw.flows())] == ["pii_unavailable", "completed"]
