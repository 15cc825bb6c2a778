"""A follower's polls of ``/api/events`` come to rest: a poll that would read only its own earlier access events (same
caller, same cursor) is not recorded again; every poll that reads anything else is."""

from __future__ import annotations

import json
from pathlib import Path

import httpx

from tests.addons.test_admin import admin_api, run, token


async def poll(client: httpx.AsyncClient, headers: dict, after: int, cursor: str | None = "siem-a") -> list[dict]:
    params: dict = {"after_seq": after, **({"cursor": cursor} if cursor else {})}
    response = await client.get("/api/events", params=params, headers=headers)
    assert response.status_code == 200, response.text
    return response.json()["events"]


def cursor_of(event: dict) -> str | None:
    return json.loads(event["record"])["detail"]["query"].get("cursor", [None])[0]


def test_idle_polls_come_to_rest_and_real_reads_stay_on_the_record(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            siem = token(tmp_path, "siem", groups=["warden-admin"])
            auditor = token(tmp_path, "auditor", groups=["warden-admin"])
            assert await poll(client, siem, -1) == []  # an empty store: nothing read
            await poll(client, auditor, -1, cursor=None)
            first = await poll(client, siem, -1)
            assert [(e["user"], cursor_of(e)) for e in first] == [("auditor", None), ("siem", "siem-a")]
            head = first[-1]["seq"]
            for _ in range(3):  # idle: only its own access event lies ahead, so nothing new is recorded
                assert await poll(client, siem, head) == []
            # An idle poll from before its own last access event reads just that event, unrecorded.
            assert [e["seq"] for e in await poll(client, siem, head - 1)] == [head]

            # Someone else's read is something to read: the poll that reads it is on the record.
            await poll(client, auditor, head, cursor=None)
            seen = await poll(client, siem, head)
            assert [(e["user"], cursor_of(e)) for e in seen] == [("auditor", None), ("siem", "siem-a")]
            head = seen[-1]["seq"]
            assert await poll(client, siem, head) == []

            # Another cursor of the same caller, and the same cursor name from another caller, are reads too.
            other_cursor = await poll(client, siem, head - 1, cursor="siem-b")
            assert [(e["user"], cursor_of(e)) for e in other_cursor] == [("siem", "siem-a"), ("siem", "siem-b")]
            head = other_cursor[-1]["seq"]
            impostor = token(tmp_path, "mallory", groups=["warden-admin"])
            stolen = await poll(client, impostor, head - 1)
            assert [(e["user"], cursor_of(e)) for e in stolen] == [("siem", "siem-b"), ("mallory", "siem-a")]

            # Every access event, read without a cursor: the idle polls left none behind.
            everything = await poll(client, auditor, -1, cursor=None)
            polls = [(e["user"], cursor_of(e)) for e in everything if e["kind"] == "access"]
            assert polls == [("auditor", None), ("siem", "siem-a"), ("auditor", None), ("siem", "siem-a"),
                             ("siem", "siem-b"), ("mallory", "siem-a"), ("auditor", None)]

    run(scenario)


def test_a_bad_poll_is_refused_and_recorded(tmp_path: Path) -> None:
    async def scenario() -> None:
        async with admin_api(tmp_path) as client:
            siem = token(tmp_path, "siem", groups=["warden-admin"])
            bad = await client.get("/api/events", params={"after_seq": "x", "cursor": "siem-a"}, headers=siem)
            assert bad.status_code == 400
            since = await client.get("/api/events", params={"since": "1h", "cursor": "siem-a"}, headers=siem)
            assert since.status_code == 200  # it reads only the refused poll's record: its own, so not again
            queries = [json.loads(e["record"])["detail"]["query"] for e in since.json()["events"]]
            assert queries == [{"after_seq": ["x"], "cursor": ["siem-a"]}]

    run(scenario)
