"""Flow search (``warden flows`` and ``/api/flows``): each filter, paging, text over masked bodies, CSV."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path

import duckdb
import pytest

from addons.store.database import Store, connect
from addons.store.events import Event
from addons.store.keys import SigningKey
from addons.store.search import FLOW_COLUMNS, FlowFilter, search_flows
from scripts.warden.flows import write_csv


def _flow(flow_id: str, user: str, *, status: int = 200, fate: str = "completed", body: bytes | None = b"{}",
          answer: bytes | None = b"{}", **request: object) -> list[Event]:
    return [
        Event(kind="request", flow_id=flow_id, user=user, host="api.example", method="POST", path="/v1/chat",
              fate="forwarded", body=body, **request),  # type: ignore[arg-type]
        Event(kind="response", flow_id=flow_id, user=user, host="api.example", status=status, fate=fate, body=answer),
    ]


@pytest.fixture(scope="module")
def con(tmp_path_factory) -> Iterator[duckdb.DuckDBPyConnection]:
    """Six flows (f1 oldest .. f6 newest) with what each filter tells apart, written through the store."""
    tmp: Path = tmp_path_factory.mktemp("search")
    store = Store(tmp / "w.duckdb", SigningKey.load_or_create(tmp / "sign.key"))
    store.start()
    approval = {"approval": "ap-1", "grant": None, "outcome": "passed"}
    events = [
        *_flow("f1", "alice", body="Weather in Zürich?".encode(), answer=b'{"answer": "sunny"}', model="gpt-4o",
               decision="allow", rule="default", entities={"LOCATION": 1}),
        *_flow("f2", "bob", status=403, fate="blocked", body=b"upload", answer=b'{"error": "no files"}',
               decision="block", rule="no-files"),
        Event(kind="approval", fate="requested", decision="requested", user="carol", rule="review",
              detail={"approval": "ap-1"}),
        Event(kind="approval", fate="approved", decision="approved", user="dave", rule="review",
              detail={"approval": "ap-1", "groups": ["security"]}),
        *_flow("f3", "carol", body=b"bulk export", model="gpt-4o", decision="allow", rule="review",
               detail={"approval": approval}),
        *_flow("f4", "carol", body=b"again", decision="allow", rule="review",
               detail={"approval": {**approval, "grant": "gr-9"}}),
        *_flow("f5", "erin", body=b"\xff\xfe zurich in latin-1", decision="allow", rule="default"),
        *_flow("f6", "frank", status=502, fate="upstream_error", body=None, answer=b"ZURICH upstream down",
               decision="allow", rule="default", detail={"body_withheld": "zurich"}),
    ]
    for event in events:
        store.submit(event).result(timeout=10)
    store.close()
    con = connect(tmp / "w.duckdb", read_only=True)
    yield con
    con.close()


def ids(con: duckdb.DuckDBPyConnection, **filters: object) -> list[str]:
    return [row["flow_id"] for row in search_flows(con, FlowFilter(**filters))]  # type: ignore[arg-type]


def test_no_filter_gives_every_flow_newest_first(con) -> None:
    assert ids(con) == ["f6", "f5", "f4", "f3", "f2", "f1"]


@pytest.mark.parametrize(("filters", "expected"), [
    ({"model": "gpt-4o"}, ["f3", "f1"]),
    ({"rule": "no-files"}, ["f2"]),
    ({"rule": "review"}, ["f4", "f3"]),
    ({"decision": "block"}, ["f2"]),
    ({"status": 502}, ["f6"]),
    ({"status": 200}, ["f5", "f4", "f3", "f1"]),
    ({"approval": "ap-1"}, ["f4", "f3"]),  # f4 passed under a grant of ap-1
    ({"approval": "gr-9"}, ["f4"]),
    ({"approval": "passed"}, ["f4", "f3"]),
    ({"approval": "ap-2"}, []),
    ({"approver": "dave"}, ["f4", "f3"]),
    ({"approver": "carol"}, []),  # she asked, she did not decide
    ({"entity": "LOCATION"}, ["f1"]),
    ({"user": "carol", "approver": "dave", "model": "gpt-4o"}, ["f3"]),
])
def test_each_filter(con, filters: dict, expected: list[str]) -> None:
    assert ids(con, **filters) == expected


def test_text_matches_request_or_response_bodies_in_any_case(con) -> None:
    assert ids(con, text="zürich") == ["f1"]  # f5's body is not UTF-8; f6's request body was withheld
    assert ids(con, text="SUNNY") == ["f1"]
    assert ids(con, text="upstream zurich") == ["f6"]  # every word, in the request or the answer
    assert ids(con, text="weather sunny") == ["f1"]
    assert ids(con, text="weather rain") == []
    assert ids(con, text="a_swer") == []  # no LIKE wildcard, no regular expression: the word as written
    assert ids(con, text="sunn.") == ids(con, text="(sunny|rain)") == ids(con, text="su*") == []
    assert ids(con, text='"sunny"}') == ["f1"]
    assert ids(con, text="zürich", since=datetime(2000, 1, 1)) == ["f1"]
    assert ids(con, text="zürich", since=datetime.now() + timedelta(days=1)) == []


def test_paging_by_offset_and_by_chain_position(con) -> None:
    assert ids(con, limit=2) == ["f6", "f5"]
    assert ids(con, limit=2, offset=2) == ["f4", "f3"]
    page = search_flows(con, FlowFilter(limit=2))
    assert ids(con, limit=2, before_seq=page[-1]["seq"]) == ["f4", "f3"]
    assert ids(con, limit=None, offset=5) == ["f1"]


def test_csv_has_a_header_and_one_row_per_flow(con) -> None:
    rows = search_flows(con, FlowFilter(entity="LOCATION"))
    buffer = io.StringIO()
    write_csv(rows, buffer)
    read = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert tuple(read[0]) == FLOW_COLUMNS
    assert [(r["flow_id"], r["user"], r["status"], r["entities"]) for r in read] == [
        ("f1", "alice", "200", '{"LOCATION": 1}')]
    rows[0]["user"], rows[0]["path"] = "=HYPERLINK(\"http://evil.example\")", "-1+cmd|' /C calc'!A0"
    buffer = io.StringIO()
    write_csv(rows, buffer)
    [read] = list(csv.DictReader(io.StringIO(buffer.getvalue())))
    assert (read["user"], read["path"]) == ("'" + rows[0]["user"], "'" + rows[0]["path"])  # text in a spreadsheet
