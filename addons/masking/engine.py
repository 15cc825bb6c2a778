"""The PII analyzer the masking addon owns: the worker pool for the rules in force, the pattern scanner streamed
answers use, and, while a reload waits for it, the pool the next rules need.

A pool runs Presidio on spaCy in worker processes (``pool.py``, ``worker.py``) for one ``EngineSpec``; the pattern
scanner runs the same recognizers but NER in this process, for SSE deltas (``stream.py``). Presidio is imported on
a thread beside start-up, not in its way. A reload that needs another analyzer (entities, recognizers,
thresholds) starts it first (``prepare``) while the pool in force serves; ``configure`` then takes it over and
retires the old pool, whose analyses under way finish on it.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from concurrent.futures import Future

from addons.masking.joined import Window, windows
from addons.masking.operators import operators
from addons.masking.payloads import TextSlot
from addons.masking.pool import AnalysisPool, AnalysisUnavailable
from addons.masking.recognizers import EngineSpec, engine_spec, pattern_scanner
from addons.masking.recognizers.inert import inert_values
from addons.masking.request_parts import RequestParts
from addons.rules.masking import Masking
from addons.rules.model import Rules, RulesError

READY_WITHIN = 300.0  # seconds a reload waits for a new analyzer pool before it is refused


def _load_presidio(spec: EngineSpec, into: Future) -> None:
    try:
        operators()
        into.set_result(pattern_scanner(spec))
    except Exception as e:  # surfaces on first use, which fails closed
        into.set_exception(e)


def _started(spec: EngineSpec, workers: int, timeout: float) -> tuple[AnalysisPool, Future]:
    """A pool for ``spec`` (not started yet) and its pattern scanner for streams (being built)."""
    # First the scanner, so that a pool which cannot start leaves no stream waiting for one that was never built.
    scanner: Future = Future()
    threading.Thread(target=_load_presidio, args=(spec, scanner), name="warden-pii-load", daemon=True).start()
    return AnalysisPool(spec, workers, timeout), scanner


class Engine:
    """What analyses text for PII; ``analyze`` fails with ``AnalysisUnavailable`` (the caller fails closed)."""

    def __init__(self) -> None:
        self.pool: AnalysisPool | None = None
        self.prepared: tuple[AnalysisPool, Future] | None = None  # for rules being reloaded: pool, pattern scanner
        self._scanner: Future = Future()
        self.inert = lambda value: False  # values no recognizer can flag: never sent to the analyzer
        self.timeout = 30.0

    def configure(self, masking: Masking, workers: int) -> None:
        """The engine for ``masking``: the one in force if it fits, else the one a reload prepared, else a new one
        (started here: configure runs on mitmproxy's event loop, the workers load their model meanwhile)."""
        spec = engine_spec(masking)
        self.inert = inert_values(spec)
        old, prepared, self.prepared = self.pool, self.prepared, None
        if old is not None and old.spec == spec and old.workers == workers:
            old.timeout = self.timeout
            if prepared is not None:
                prepared[0].close()
            return
        if prepared is not None:
            if prepared[0].spec == spec and prepared[0].workers == workers:  # a reload made it ready beforehand
                self.pool, self._scanner = prepared
                self.pool.timeout = self.timeout
                if old is not None:
                    old.retire()  # analyses under way finish on it
                return
            prepared[0].close()
        self.pool, self._scanner = _started(spec, workers, self.timeout)
        if old is not None:
            old.close()
        self.pool.start()

    async def prepare(self, rules: Rules, workers: int) -> None:
        """If ``rules`` need another analyzer, start its pool and wait until it is ready, while the pool in force
        keeps serving. Raises ``RulesError`` if it cannot start."""
        spec = engine_spec(rules.masking)
        if self.pool is not None and self.pool.spec == spec and self.pool.workers == workers:
            return
        if self.prepared is not None:
            self.prepared[0].close()
        self.prepared = pool, scanner = _started(spec, workers, self.timeout)
        pool.start()
        why = None
        try:
            async with asyncio.timeout(READY_WITHIN):
                while pool.state == "starting":
                    await asyncio.sleep(0.1)
                await asyncio.wrap_future(scanner)
        except TimeoutError:
            why = f"not ready within {READY_WITHIN:g} s"
        except Exception as e:  # the pattern scanner could not be built
            why = f"{type(e).__name__}: {e}"
        if why is None and pool.state != "ready":
            why = pool.last_error or f"its workers are {pool.state}"
        if why is not None:
            pool.close()
            if self.prepared is not None and self.prepared[0] is pool:
                self.prepared = None
            raise RulesError(f"{rules.path}: masking: the PII analyzer for these rules cannot start ({why}); "
                             "the analyzer in force keeps serving")

    def scanner(self):
        """The pattern scanner for streamed answers (waits for Presidio's import the first time)."""
        return self._scanner.result()

    def running(self) -> None:
        if self.pool is not None and self.pool.state == "stopped":
            self.pool.start()

    def close(self) -> None:
        if self.pool is not None:
            self.pool.close()
        if self.prepared is not None:
            self.prepared[0].close()

    async def analyze(self, slots: Sequence[TextSlot], parts: RequestParts | None = None
                      ) -> tuple[list[list], list[Window], list[list], list[list]]:
        """Spans of each slot, of each window where two text parts of a message meet (``joined.py``), and of each
        of the request's query, path and header texts (``parts``; pattern recognizers only where it says)."""
        across = windows(slots)
        texts = [slot.text for slot in slots] + [w.text for w in across]
        ner = [True] * len(texts)
        if parts is not None:
            texts += parts.texts
            ner += parts.ner
        found = await self.analyze_texts(texts, ner)
        n, m = len(slots), len(slots) + len(across)
        return found[:n], across, found[n:m], found[m:]

    async def analyze_texts(self, texts: list[str], ner: list[bool] | None = None) -> list[list]:
        """Spans per text; ``ner[i]`` False: the pattern recognizers only, on ``texts[i]``."""
        spans: list[list] = [[] for _ in texts]
        needed = [i for i, text in enumerate(texts) if not self.inert(text)]
        if not needed:
            return spans
        if self.pool is None:
            raise AnalysisUnavailable("the PII analyzer is not configured")
        found = await self.pool.analyze([texts[i] for i in needed], [ner[i] for i in needed] if ner else None)
        for i, spans_of_text in zip(needed, found, strict=True):
            spans[i] = spans_of_text
        return spans
