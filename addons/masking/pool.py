"""PII analysis off the event loop: a process pool of Presidio analyzers, a result cache, chunking.

``AnalysisPool.analyze(texts)`` returns, for each text, the spans found in it (entity, start, end,
score). It never blocks the event loop: work goes to worker processes (``addons/masking/worker.py``)
and is awaited. What makes it fast enough for a gateway:

- **Cache by content.** A chat request resends the whole conversation every turn; each text (and
  each NER chunk of a long text) is analysed once and its spans cached under a hash of the text,
  so a turn costs only what is new.
- **Chunks.** Presidio's cost grows faster than the text, and one long text would occupy one
  worker. Texts over ``SPLIT_AT`` characters are cut at paragraph, line, sentence or word
  boundaries for NER and spread over the workers in batches (``nlp.pipe``); the pattern
  recognizers still see the whole text, so nothing they look for is cut in two.
- **Fail closed.** A timeout or a dead worker raises ``AnalysisUnavailable``; the caller refuses
  the request. A pool whose workers stop answering is replaced.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import logging
import os
import pickle
import re
import subprocess
import sys
import threading
import time
from collections import OrderedDict, deque
from pathlib import Path

from addons.flow import metrics
from addons.masking import worker as analyzer_worker
from addons.masking.recognizers import EngineSpec
from addons.masking.worker import Span, Unit

log = logging.getLogger("warden.pii")

SPLIT_AT = 1500  # characters: longer texts are chunked for NER
CHUNK = 1000  # target NER chunk size
MIN_BATCH = 1200  # characters of work below which a batch is not split further
CACHE_ENTRIES = 50_000
_BOUNDARIES = (re.compile(r"\n\s*\n"), re.compile(r"\n"), re.compile(r"(?<=[.!?])\s+"), re.compile(r"\s+"))

class AnalysisUnavailable(RuntimeError):
    """The analysis could not be completed (timeout, engine failure); nothing may be forwarded."""


def split_text(text: str, limit: int = CHUNK) -> list[tuple[int, str]]:
    """``text`` as (offset, chunk) pieces of at most about ``limit`` characters, cut at the coarsest boundary."""
    if len(text) <= limit:
        return [(0, text)]
    pieces, start = [], 0
    while len(text) - start > limit:
        window_end = start + limit
        cut = None
        for boundary in _BOUNDARIES:
            # the last boundary in the window's second half, so chunks stay reasonably large
            found = [m.end() for m in boundary.finditer(text, start + limit // 2, window_end)]
            if found:
                cut = found[-1]
                break
        cut = cut or window_end  # one unbroken run: cut it (patterns see the whole text anyway)
        pieces.append((start, text[start:cut]))
        start = cut
    pieces.append((start, text[start:]))
    return pieces


class _Cache:
    """Spans by (kind, sha256 of the text): an LRU of bounded size. Holds no text."""

    def __init__(self, size: int = CACHE_ENTRIES) -> None:
        self.size = size
        self._data: OrderedDict[bytes, list[Span]] = OrderedDict()
        self._lock = threading.Lock()

    @staticmethod
    def key(unit: Unit) -> bytes:
        kind = b"%d%d" % (unit.ner, unit.patterns)
        return kind + hashlib.sha256(unit.text.encode("utf-8", "surrogatepass")).digest()

    def get(self, key: bytes) -> list[Span] | None:
        with self._lock:
            found = self._data.get(key)
            if found is not None:
                self._data.move_to_end(key)
            return found

    def put(self, key: bytes, spans: list[Span]) -> None:
        with self._lock:
            self._data[key] = spans
            self._data.move_to_end(key)
            while len(self._data) > self.size:
                self._data.popitem(last=False)

    def clear(self) -> None:
        with self._lock:
            self._data.clear()


def plan(texts: list[str], has_ner: bool) -> list[list[tuple[Unit, int]]]:
    """For each text, the units to analyse and the offset of each unit in the text."""
    out = []
    for text in texts:
        if not has_ner or len(text) <= SPLIT_AT:
            out.append([(Unit(text, ner=has_ner, patterns=True), 0)])
        else:
            units = [(Unit(text, ner=False, patterns=True), 0)]
            units += [(Unit(chunk, ner=True, patterns=False), offset) for offset, chunk in split_text(text)]
            out.append(units)
    return out


def _cost(unit: Unit) -> float:
    # Per character, the pattern pass (recognizers, then tokens for context where something matched) costs
    # about as much as NER does now that NER runs only on sentences that could name someone (measured on
    # prose with a name or address in one sentence of twelve: 1.6 vs 1.5 ms per 1000 characters).
    return len(unit.text) * ((1.0 if unit.ner else 0.0) + (0.9 if unit.patterns else 0.0)) + 50


def batches(units: list[Unit], workers: int) -> list[list[int]]:
    """Indexes of ``units`` packed into at most one batch per worker, balanced by cost (largest first onto the
    lightest batch). Work under ``MIN_BATCH`` characters per batch is not spread: a round trip costs more."""
    total = sum(_cost(u) for u in units)
    count = max(1, min(workers, len(units), int(total // MIN_BATCH)))
    bins: list[list[int]] = [[] for _ in range(count)]
    loads = [0.0] * count
    for index in sorted(range(len(units)), key=lambda i: _cost(units[i]), reverse=True):
        lightest = loads.index(min(loads))
        bins[lightest].append(index)
        loads[lightest] += _cost(units[index])
    return [b for b in bins if b]


class _Worker:
    """One analyzer process (``python -m addons.masking.worker``) and the pipes to it."""

    def __init__(self, spec: EngineSpec) -> None:
        root = str(Path(__file__).resolve().parent.parent)
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))}
        self.process = subprocess.Popen(
            [sys.executable, "-m", "addons.masking.worker"], stdin=subprocess.PIPE, stdout=subprocess.PIPE, bufsize=0,
            env=env, cwd=root, start_new_session=True,  # the gateway decides when its workers stop
        )
        assert self.process.stdin is not None and self.process.stdout is not None
        self.inbox, self.outbox = self.process.stdin, self.process.stdout
        analyzer_worker.send(self.inbox, spec)
        self.ready = False
        self.task: tuple[int, asyncio.Future] | None = None  # (task id, future) being analysed
        self.busy_since = 0.0

    @property
    def pid(self) -> int:
        return self.process.pid

    def kill(self) -> None:
        for stream in (self.inbox, self.outbox):
            try:
                stream.close()
            except OSError:
                pass
        if self.process.poll() is None:
            self.process.kill()
        try:
            self.process.wait(timeout=5)
        except subprocess.TimeoutExpired:
            pass


class AnalysisPool:
    """Presidio in ``workers`` processes for one ``EngineSpec``; ``analyze`` is awaited on the event loop.

    Each worker is a process with a pipe, read by the event loop itself: a round trip costs a
    fraction of a millisecond (``ProcessPoolExecutor``'s queues and threads cost about 5 ms).
    Batches wait in a queue for the next idle worker. A worker that dies is replaced and its batch
    fails; one busy past the timeout is killed and replaced.
    """

    def __init__(self, spec: EngineSpec, workers: int, timeout: float) -> None:
        self.spec = spec
        self.workers = workers
        self.timeout = timeout
        self.cache = _Cache()
        self.last_error: str | None = None
        self.restarts = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._workers: list[_Worker] = []
        self._queue: deque[tuple[int, list[Unit], asyncio.Future]] = deque()
        self._ids = itertools.count()
        self._started_at = 0.0
        self._closed = False

    # -- life cycle ------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if self._loop is None or self._closed:
            return "stopped"
        if any(w.ready for w in self._workers):
            return "ready"
        return "failed" if self.last_error and not self._workers else "starting"

    def spawn(self) -> None:
        """Start the worker processes; they load the model while the gateway starts (no event loop needed)."""
        if self._workers or self._closed:
            return
        self._started_at = time.monotonic()
        for _ in range(self.workers):
            self._spawn()

    def start(self) -> None:
        """Attach the workers to the running event loop (spawning them if not done yet)."""
        self.spawn()
        self._loop = asyncio.get_running_loop()
        for worker in self._workers:
            self._loop.add_reader(worker.outbox.fileno(), self._on_answer, worker)

    def _spawn(self) -> None:
        worker = _Worker(self.spec)
        self._workers.append(worker)
        if self._loop is not None:
            self._loop.add_reader(worker.outbox.fileno(), self._on_answer, worker)

    def close(self) -> None:
        self._closed = True
        self.cache.clear()
        for worker in list(self._workers):
            self._drop(worker, "the gateway is shutting down")

    def _drop(self, worker: _Worker, why: str) -> None:
        """Kill and forget a worker; its batch (if any) fails."""
        if worker in self._workers:
            self._workers.remove(worker)
        if self._loop is not None and not worker.outbox.closed:
            self._loop.remove_reader(worker.outbox.fileno())
        if worker.task is not None and not worker.task[1].done():
            worker.task[1].set_exception(AnalysisUnavailable(f"the PII analyzer failed ({why}); it is restarting"))
        worker.task = None
        worker.kill()

    def _replace(self, worker: _Worker, why: str) -> None:
        log.error("warden: replacing a PII analyzer worker (pid %s): %s", worker.pid, why)
        self.last_error = why
        self.restarts += 1
        metrics.PII_RESTARTS.inc()
        self._drop(worker, why)
        if not self._closed:
            self._spawn()

    def _on_answer(self, worker: _Worker) -> None:
        try:
            task_id, ok, payload = analyzer_worker.receive(worker.outbox)
        except (EOFError, OSError, pickle.UnpicklingError) as e:
            code = worker.process.poll()
            self._replace(worker, f"worker process exited ({code if code is not None else type(e).__name__})")
            return
        if task_id is None:  # the start-up report
            if ok:
                worker.ready = True
                log.info("warden: PII analyzer worker %s ready in %.1f s", payload, time.monotonic() - self._started_at)
            else:
                self.last_error = f"the PII analyzer cannot start: {payload}"
                log.error("warden: %s", self.last_error)
                self._drop(worker, payload)  # not respawned: the same spec would fail again
                return
        elif worker.task is not None and worker.task[0] == task_id:
            future = worker.task[1]
            worker.task = None
            if not future.done():
                if ok:
                    future.set_result(payload)
                else:
                    future.set_exception(AnalysisUnavailable(f"PII analysis failed in the worker: {payload}"))
        self._dispatch()

    def _dispatch(self) -> None:
        for worker in self._workers:
            if not self._queue:
                return
            if not worker.ready or worker.task is not None:
                continue
            task_id, units, future = self._queue.popleft()
            if future.done():  # timed out while queued
                continue
            try:
                analyzer_worker.send(worker.inbox, (task_id, units))
            except OSError as e:
                self._queue.appendleft((task_id, units, future))
                self._replace(worker, f"cannot reach the worker: {e}")
                return
            worker.task = (task_id, future)
            worker.busy_since = time.monotonic()

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers]

    # -- analysis -------------------------------------------------------------------------------------

    async def analyze(self, texts: list[str]) -> list[list[Span]]:
        """Spans per text; raises ``AnalysisUnavailable`` on timeout or engine failure."""
        started = time.perf_counter()
        plans = [[(unit, offset, _Cache.key(unit)) for unit, offset in units]
                 for units in plan(texts, bool(self.spec.ner_entities))]
        known: dict[bytes, list[Span]] = {}
        needed: dict[bytes, Unit] = {}
        for units in plans:
            for unit, _, key in units:
                if key in known or key in needed:
                    continue
                cached = self.cache.get(key) if unit.text.strip() else []
                if cached is None:
                    needed[key] = unit
                else:
                    known[key] = cached
        metrics.PII_CACHE.labels(result="hit").inc(sum(len(u) for u in plans) - len(needed))
        metrics.PII_CACHE.labels(result="miss").inc(len(needed))
        if needed:
            found = await self._run(list(needed.values()))
            for key, spans in zip(needed, found, strict=True):
                self.cache.put(key, spans)
                known[key] = spans
        out = []
        for units in plans:
            spans = {(e, s + offset, t + offset, score) for unit, offset, key in units for e, s, t, score in known[key]}
            out.append(sorted(spans, key=lambda x: (x[1], x[2], x[0])))
        metrics.PII_LATENCY.observe(time.perf_counter() - started)
        return out

    async def _run(self, units: list[Unit]) -> list[list[Span]]:
        if self._loop is None or self._closed:
            raise AnalysisUnavailable("the PII analyzer is not running")
        if not self._workers:
            raise AnalysisUnavailable(self.last_error or "the PII analyzer has no workers")
        futures = []
        groups = batches(units, self.workers)
        for group in groups:
            future = self._loop.create_future()
            self._queue.append((next(self._ids), [units[i] for i in group], future))
            futures.append(future)
        self._dispatch()
        try:
            results = await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except TimeoutError:
            self._reap_stuck()
            raise AnalysisUnavailable(f"PII analysis did not finish within {self.timeout:g} s (warden_pii_timeout)") from None
        out: list[list[Span]] = [[] for _ in units]
        for group, found in zip(groups, results, strict=True):
            for index, spans in zip(group, found, strict=True):
                out[index] = spans
        return out

    def _reap_stuck(self) -> None:
        """Replace workers busy for longer than the timeout: they are not coming back in time."""
        now = time.monotonic()
        for worker in list(self._workers):
            if worker.task is not None and now - worker.busy_since >= self.timeout:
                self._replace(worker, f"busy for more than {self.timeout:g} s")
        self._dispatch()

    def health(self) -> dict:
        return {"state": self.state, "workers": len(self._workers), "ready_workers": sum(w.ready for w in self._workers),
                "pids": self.worker_pids(), "restarts": self.restarts, "last_error": self.last_error,
                "queued": len(self._queue), "cache_entries": len(self.cache._data), "model": self.spec.model}


def default_workers() -> int:
    """One worker per core, at least one: the event loop needs little CPU of its own."""
    return max(1, os.cpu_count() or 1)
