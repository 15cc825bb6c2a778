"""A store of many recorded flows for the evidence benchmark, written through the store's own write path.

Each flow is a request event and a response event as the recorder writes them (identity with groups, a masked
~2 KB chat request with its entity counts, a ~2 KB answer, usage and latency), committed by ``Store.submit``:
the writer thread chains, journals (fsync per batch), signs checkpoints and loads them into DuckDB, exactly as
in the gateway. Nothing is inserted around it, so the chain verifies and every query sees what a gateway leaves.

Usage: ``python -m scripts.bench_store --flows 1000000 --store .bench/store/warden.duckdb``
"""

from __future__ import annotations

import argparse
import json
import random
import time
import uuid
from concurrent.futures import Future
from datetime import UTC, datetime, timedelta
from pathlib import Path

from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from addons.store.database import Store
from addons.store.events import Event
from addons.store.keys import SigningKey

USERS = [f"user{i:03d}" for i in range(200)]
GROUPS = ["dev", "data", "support", "finance", "security", "research"]
UPSTREAMS = [("openai", "api.openai.com", "/v1/chat/completions", "gpt-4o"),
             ("anthropic", "api.anthropic.com", "/v1/messages", "claude-sonnet-4"),
             ("internal", "llm.internal.example", "/v1/chat/completions", "llama-3-70b")]
WORDS = ("the quarterly report shows revenue growth across regions while support tickets decline and the team "
         "plans a migration of the billing service to a new cluster next month please summarise the risks and "
         "draft an email to stakeholders explaining the timeline budget and staffing needs for the project").split()
WINDOW = 20_000  # events in flight at most: the writer's queue holds them in memory


def _texts(rng: random.Random, size: int, count: int = 512) -> list[str]:
    """``count`` texts of about ``size`` characters of shuffled words (the generator's own cost stays small)."""
    texts = []
    for _ in range(count):
        words: list[str] = []
        length = 0
        while length < size:
            word = rng.choice(WORDS)
            words.append(word)
            length += len(word) + 1
        texts.append(" ".join(words))
    return texts


TEXTS = _texts(random.Random(7), 1880)


def flow_events(rng: random.Random, when: datetime, index: int) -> tuple[Event, Event]:
    """One flow's request and response events, as the recorder writes them for a masked chat call."""
    user = USERS[index % len(USERS)]
    groups = [GROUPS[index % len(GROUPS)], GROUPS[(index // 7) % len(GROUPS)]]
    upstream, host, path, model = UPSTREAMS[index % len(UPSTREAMS)]
    flow_id = str(uuid.UUID(int=rng.getrandbits(128), version=4))
    masked = index % 3 == 0
    # A ticket number unique to the flow: full-text search looks for one flow's words among all.
    contact = " contact <EMAIL_ADDRESS_1> or <PERSON_1>" if masked else ""
    prompt = f"ticket T{index:07d} {rng.choice(TEXTS)}{contact}"
    body = json.dumps({"model": model, "messages": [{"role": "user", "content": prompt}]}).encode()
    entities = {"EMAIL_ADDRESS": 1, "PERSON": 1} if masked else None
    blocked = index % 50 == 0
    request = Event(
        kind="request", flow_id=flow_id, ts=when, user=user, client=f"10.0.0.{index % 250}:{40000 + index % 9999}",
        mode="regular", method="POST", scheme="https", host=host, port=443, path=path, http_version="HTTP/1.1",
        fate="blocked" if blocked else "forwarded", decision="block" if blocked else "allow",
        rule="no-internal-models" if blocked else "default", upstream=upstream, model=model,
        headers=[["content-type", "application/json"], ["authorization", "[redacted]"]], body=body,
        body_size=len(body), body_truncated=False, entities=entities,
        detail={"identity": {"sub": user, "groups": groups, "method": "proxy-bearer", "kind": "person"},
                **({"pii": {"profile": "default", "findings": [["EMAIL_ADDRESS", "$.messages[0].content", 1, 2, 1.0,
                                                                "pseudonymize"]]}} if masked else {})},
    )
    if blocked:
        status, answer = 403, json.dumps({"error": {"type": "blocked", "message": "blocked by rule"}}).encode()
    else:
        status = 200
        answer = json.dumps({"id": f"chatcmpl-{index}", "model": model, "choices": [
            {"index": 0, "message": {"role": "assistant", "content": rng.choice(TEXTS)}}]}).encode()
    response = Event(
        kind="response", flow_id=flow_id, ts=when + timedelta(milliseconds=350), user=user, host=host, status=status,
        fate="blocked" if blocked else "completed", http_version="HTTP/1.1",
        headers=[["content-type", "application/json"]], body=answer, body_size=len(answer), body_truncated=False,
        tokens_in=None if blocked else 480, tokens_out=None if blocked else 470,
        latency_upstream_ms=None if blocked else 320.0, latency_total_ms=5.0 if blocked else 350.0,
    )
    return request, response


def generate(path: Path, key_path: Path, flows: int, days: int = 30, seed: int = 13) -> dict:
    """Write ``flows`` flows spread over the ``days`` before now into a new store at ``path``; returns timings."""
    if path.exists():
        raise SystemExit(f"{path} exists: remove it (and its journal) first")
    rng = random.Random(seed)
    store = Store(path, SigningKey.load_or_create(key_path), checkpoint_every=1000)
    store.start()
    start = datetime.now(UTC).replace(tzinfo=None) - timedelta(days=days)
    step = timedelta(days=days) / max(1, flows)
    started = time.perf_counter()
    last: Future | None = None
    in_flight: list[Future] = []
    columns = (TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
               TimeRemainingColumn())
    try:
        with Progress(*columns) as bar:
            task = bar.add_task("recording flows through the store", total=flows)
            for index in range(flows):
                for event in flow_events(rng, start + step * index, index):
                    last = store.submit(event)
                    in_flight.append(last)
                if len(in_flight) >= WINDOW:
                    in_flight[-1].result(timeout=600)
                    failed = next((f for f in in_flight if f.exception() is not None), None)
                    if failed is not None:
                        raise SystemExit(f"the store refused an event: {failed.exception()}")
                    in_flight.clear()
                    bar.update(task, completed=index + 1)
            if last is not None:
                last.result(timeout=600)
            bar.update(task, completed=flows)
    finally:
        store.close()
    elapsed = time.perf_counter() - started
    return {"flows": flows, "events": 2 * flows, "seconds": elapsed, "events_per_second": 2 * flows / elapsed,
            "bytes": path.stat().st_size}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--flows", type=int, default=1_000_000)
    p.add_argument("--store", type=Path, default=Path(".bench/store/warden.duckdb"))
    p.add_argument("--signing-key", type=Path, default=Path(".bench/store/warden-signing.key"))
    a = p.parse_args()
    print(json.dumps(generate(a.store, a.signing_key, a.flows)))


if __name__ == "__main__":
    main()
