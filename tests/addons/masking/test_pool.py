"""The analyzer and its pool: real Presidio, real worker processes; splitting and batching as plain functions."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import signal

import pytest

from addons.masking import worker as analyzer_worker
from addons.masking.chunking import SPLIT_AT, batches, plan, split_text
from addons.masking.pool import AnalysisPool, AnalysisUnavailable
from addons.masking.protocol import Unit
from addons.masking.recognizers import _pattern_factories, engine_spec
from addons.rules.entities import PATTERN_ENTITIES
from addons.rules.masking import Masking

SPEC = engine_spec(Masking.model_validate({"recognizers": [{"entity": "ACME_ID", "patterns": [r"\bACME-\d{6}\b"]}]}))
TEXT = "Hi, I'm Maria Garcia (maria.garcia@corp.internal, +1 415-867-5309), ticket ACME-123456, ip 203.0.113.7."


def found(spans: list, text: str) -> set[tuple[str, str]]:
    return {(entity, text[start:end]) for entity, start, end, _ in spans}


def test_split_text_cuts_at_the_coarsest_boundary() -> None:
    text = ("A sentence that goes on. " * 30 + "\n\n") * 4
    pieces = split_text(text, 1000)
    assert "".join(chunk for _, chunk in pieces) == text
    assert all(text[offset:offset + len(chunk)] == chunk for offset, chunk in pieces)
    assert all(len(chunk) <= 1000 for _, chunk in pieces)
    assert all(chunk.endswith(("\n\n", ". ")) for _, chunk in pieces[:-1])
    assert split_text("x" * 2500, 1000)[1] == (1000, "x" * 1000)  # no boundary at all: cut anyway


def test_long_texts_keep_patterns_whole_and_spread_ner() -> None:
    long = "word " * (SPLIT_AT // 2)
    [[whole], [patterns, *chunks]] = plan(["short", long], has_ner=True)
    assert whole[0] == Unit("short") and patterns[0] == Unit(long, ner=False, patterns=True)
    assert all(unit.ner and not unit.patterns for unit, _ in chunks)
    assert plan([long], has_ner=False) == [[(Unit(long, ner=False, patterns=True), 0)]]
    units = [Unit("a" * 1000), Unit("b" * 1000), Unit("c" * 100)]
    groups = batches(units, workers=2)
    assert sorted(i for g in groups for i in g) == [0, 1, 2] and len(groups) == 2
    assert batches([Unit("tiny"), Unit("small")], workers=2) == [[1, 0]]  # not worth two round trips


def test_a_two_kilobyte_prompt_runs_its_pattern_pass_beside_its_ner() -> None:
    # The pattern pass costs about as much as windowed NER: it gets a worker of its own.
    text = "The budget review went well and nobody asked questions. " * 36
    [units] = plan([text], has_ner=True)
    groups = batches([unit for unit, _ in units], workers=2)
    assert len(groups) == 2 and units[0][0].patterns and not units[0][0].ner
    [with_patterns] = [g for g in groups if 0 in g]
    [other] = [g for g in groups if 0 not in g]
    ner_chars = [sum(len(units[i][0].text) for i in g if units[i][0].ner) for g in (with_patterns, other)]
    assert ner_chars[0] < ner_chars[1]  # most of the NER goes to the other worker


def test_catalogue_matches_the_factories() -> None:
    assert set(_pattern_factories()) == set(PATTERN_ENTITIES)


@pytest.fixture(scope="module")
def analyzer() -> analyzer_worker.Analyzer:
    return analyzer_worker.Analyzer(SPEC)


def test_analyzer_finds_named_and_pattern_entities_offline(analyzer) -> None:
    [spans] = analyzer.analyze([Unit(TEXT)])
    assert {("PERSON", "Maria Garcia"), ("EMAIL_ADDRESS", "maria.garcia@corp.internal"),
            ("PHONE_NUMBER", "+1 415-867-5309"), ("ACME_ID", "ACME-123456"), ("IP_ADDRESS", "203.0.113.7")} <= \
        found(spans, TEXT)
    [ner_only, patterns_only] = analyzer.analyze([Unit(TEXT, patterns=False), Unit(TEXT, ner=False)])
    assert {e for e, *_ in ner_only} == {"PERSON"}
    assert "PERSON" not in {e for e, *_ in patterns_only}


def test_context_words_still_raise_the_score_of_a_match(analyzer) -> None:
    # Only the recognizers that matched run a second time, with tokens: context must still count.
    [[plain]] = analyzer.analyze([Unit("call 212-555-0123 now", ner=False)])
    [[with_context]] = analyzer.analyze([Unit("phone: 212-555-0123", ner=False)])
    assert plain[0] == with_context[0] == "PHONE_NUMBER" and with_context[3] > plain[3]
    assert analyzer.analyze([Unit("nothing to match here", ner=False)]) == [[]]


def test_pool_analyses_in_worker_processes_and_caches() -> None:
    async def scenario() -> None:
        pool = AnalysisPool(SPEC, workers=1, timeout=60)
        pool.start()
        try:
            long = ("Nothing to see here, just words. " * 80) + TEXT
            first = await pool.analyze([TEXT, long, ""])
            if hasattr(os, "SCHED_BATCH"):  # a woken worker must not preempt the event loop
                assert os.sched_getscheduler(pool.worker_pids()[0]) == os.SCHED_BATCH
            assert found(first[0], TEXT) >= {("PERSON", "Maria Garcia"), ("ACME_ID", "ACME-123456")}
            assert found(first[1], long) >= {("PERSON", "Maria Garcia"), ("ACME_ID", "ACME-123456")}
            assert first[2] == []
            entries = len(pool.cache)
            assert await pool.analyze([TEXT]) == [first[0]] and len(pool.cache) == entries  # from the cache
            [pid] = pool.worker_pids()
            os.kill(pid, signal.SIGSTOP)
            pool.timeout = 1
            with pytest.raises(AnalysisUnavailable, match="did not finish within 1 s"):
                await pool.analyze(["a fresh text for Jane Doe"])
            assert pid not in pool.worker_pids() and pool.restarts == 1  # the stuck worker was replaced
        finally:
            pool.close()

    asyncio.run(scenario())


def test_a_worker_that_dies_mid_request_fails_its_batch_and_is_replaced() -> None:
    async def scenario() -> None:
        pool = AnalysisPool(SPEC, workers=1, timeout=60)
        pool.start()
        try:
            await pool.analyze(["Warm: Jane Doe"])
            [pid] = pool.worker_pids()
            os.kill(pid, signal.SIGSTOP)  # the request reaches the worker's pipe, the answer never comes
            analysis = asyncio.ensure_future(pool.analyze(["a fresh text for Ana Lee"]))
            while pool.health()["queued"]:  # until the batch is handed to the worker
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.2)  # and written
            os.kill(pid, signal.SIGKILL)
            with pytest.raises(AnalysisUnavailable, match="worker process exited"):
                await analysis
            assert pid not in pool.worker_pids() and pool.restarts == 1 and pool.health()["workers"] == 1
            [spans] = await pool.analyze([TEXT])  # the replacement answers
            assert ("PERSON", "Maria Garcia") in found(spans, TEXT)
            assert pid not in pool.worker_pids()
        finally:
            pool.close()
        assert pool.state == "stopped" and pool.worker_pids() == []

    asyncio.run(scenario())


def test_a_worker_that_cannot_start_fails_closed_and_is_not_respawned() -> None:
    async def scenario() -> None:
        pool = AnalysisPool(dataclasses.replace(SPEC, model="en_no_such_model"), workers=1, timeout=60)
        pool.start()
        try:
            with pytest.raises(AnalysisUnavailable, match="cannot start"):
                await pool.analyze(["Ana Lee"])
            assert pool.state == "failed" and pool.restarts == 0 and pool.worker_pids() == []
            with pytest.raises(AnalysisUnavailable, match="cannot start"):
                await pool.analyze(["Ana Lee, again"])
        finally:
            pool.close()

    asyncio.run(scenario())


def test_a_retired_pool_finishes_what_it_holds_then_closes() -> None:
    """A reload replaces the pool: an analysis already on the old one is answered, then its workers stop."""
    async def scenario() -> None:
        pool = AnalysisPool(SPEC, workers=1, timeout=60)
        pool.start()
        try:
            await pool.analyze(["Warm: Jane Doe"])
            [pid] = pool.worker_pids()
            os.kill(pid, signal.SIGSTOP)  # hold the next batch in the worker while the pool is retired
            analysis = asyncio.ensure_future(pool.analyze([TEXT]))
            await asyncio.sleep(0.2)  # the batch is handed to the (stopped) worker
            pool.retire()
            assert pool.state == "ready"  # busy: not closed under the analysis
            with pytest.raises(AnalysisUnavailable, match="not running"):
                await pool.analyze(["new work goes to the pool that replaced it"])
            os.kill(pid, signal.SIGCONT)
            [spans] = await analysis
            assert ("PERSON", "Maria Garcia") in found(spans, TEXT)
            assert pool.state == "stopped" and pool.worker_pids() == []
        finally:
            pool.close()

    asyncio.run(scenario())
