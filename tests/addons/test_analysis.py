"""The analyzer and its pool: real Presidio, real worker processes; splitting and batching as plain functions."""

from __future__ import annotations

import asyncio
import os
import signal

import pytest

from addons import analyzer_worker
from addons.analysis import SPLIT_AT, AnalysisPool, AnalysisUnavailable, batches, plan, split_text
from addons.analyzer_worker import Unit
from addons.masking_rules import Masking
from addons.recognizers import PATTERN_ENTITIES, _pattern_factories

SPEC = Masking.model_validate({"recognizers": [{"entity": "ACME_ID", "patterns": [r"\bACME-\d{6}\b"]}]}).engine_spec()
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


def test_pool_analyses_in_worker_processes_and_caches() -> None:
    async def scenario() -> None:
        pool = AnalysisPool(SPEC, workers=1, timeout=60)
        pool.start()
        try:
            long = ("Nothing to see here, just words. " * 80) + TEXT
            first = await pool.analyze([TEXT, long, ""])
            assert found(first[0], TEXT) >= {("PERSON", "Maria Garcia"), ("ACME_ID", "ACME-123456")}
            assert found(first[1], long) >= {("PERSON", "Maria Garcia"), ("ACME_ID", "ACME-123456")}
            assert first[2] == []
            entries = len(pool.cache._data)
            assert await pool.analyze([TEXT]) == [first[0]] and len(pool.cache._data) == entries  # from the cache
            [pid] = pool.worker_pids()
            os.kill(pid, signal.SIGSTOP)
            pool.timeout = 1
            with pytest.raises(AnalysisUnavailable, match="did not finish within 1 s"):
                await pool.analyze(["a fresh text for Jane Doe"])
            assert pid not in pool.worker_pids() and pool.restarts == 1  # the stuck worker was replaced
        finally:
            pool.close()

    asyncio.run(scenario())
