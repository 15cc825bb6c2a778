"""PII analysis off the event loop: a pool of Presidio analyzer processes, awaited on the loop.

``AnalysisPool.analyze(texts)`` returns, for each text, the spans found in it (entity, start, end,
score). It never blocks the event loop: work goes to worker processes (``addons/masking/worker.py``)
and is awaited. What makes it fast enough for a gateway:

- **Cache by content** (``cache.py``): a turn of a chat costs only what is new.
- **Chunks** (``chunking.py``): long texts are cut for NER and spread over the workers in batches.
- **One round trip per batch**: a batch is one message written to an idle worker's stdin and one
  answer read from its stdout (``protocol.py``), through asyncio's subprocess streams.
- **Fail closed.** A timeout or a dead worker raises ``AnalysisUnavailable``; the caller refuses
  the request. A worker that stops answering is replaced.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import os
import sys
import time
from collections import deque
from collections.abc import Coroutine
from pathlib import Path
from typing import cast

from addons.flow import metrics
from addons.masking import protocol
from addons.masking.cache import AnalysisCache
from addons.masking.chunking import batches, plan
from addons.masking.protocol import Span, Unit
from addons.masking.recognizers import EngineSpec

log = logging.getLogger("warden.pii")


class AnalysisUnavailable(RuntimeError):
    """The analysis could not be completed (timeout, engine failure); nothing may be forwarded."""


class WorkerProcess:
    """One analyzer process (``python -m addons.masking.worker``) and the streams to it."""

    def __init__(self) -> None:
        self.process: asyncio.subprocess.Process | None = None  # None until launched
        self.life: asyncio.Task | None = None  # launches the process, then reads its answers
        self.ready = False
        self.task: tuple[int, asyncio.Future] | None = None  # (task id, future) being analysed
        self.busy_since = 0.0

    @property
    def pid(self) -> int | None:
        return None if self.process is None else self.process.pid

    async def launch(self) -> None:
        """Start the process; it builds its analyzer once it is sent its ``EngineSpec``."""
        # ``-m`` runs the module found from the working directory first: the same ``addons`` this gateway loaded.
        root = str(Path(__file__).resolve().parent.parent.parent)
        self.process = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "addons.masking.worker", stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE, cwd=root,
            start_new_session=True,  # the gateway decides when its workers stop
        )

    async def send(self, message: object) -> None:
        """Write one message; raises ``OSError`` (e.g. ``ConnectionResetError``) if the worker is gone."""
        assert self.process is not None and self.process.stdin is not None
        self.process.stdin.write(protocol.encode(message))
        await self.process.stdin.drain()

    async def receive(self) -> protocol.Answer:
        """The worker's next answer; raises ``protocol.ProtocolError`` if the worker is gone."""
        assert self.process is not None and self.process.stdout is not None
        return cast(protocol.Answer, await protocol.receive_async(self.process.stdout))

    def kill(self) -> None:
        """Stop reading, close the pipe and kill the process, without waiting for it to exit."""
        if self.life is not None and self.life is not asyncio.current_task():
            self.life.cancel()
        if self.process is None:
            return
        if self.process.stdin is not None:
            self.process.stdin.close()
        if self.process.returncode is None:
            with contextlib.suppress(ProcessLookupError):  # it exited meanwhile
                self.process.kill()


async def _reap(process: asyncio.subprocess.Process) -> None:
    """Wait for a killed worker to exit, so its pipes are closed while the event loop still runs."""
    try:
        await process.wait()
    except asyncio.CancelledError:
        # asyncio.run cancels every task at exit: reap anyway, or the pipes are left for a closed loop to close
        task = asyncio.current_task()
        if task is not None:
            task.uncancel()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(process.wait(), 5)


class AnalysisPool:
    """Presidio in ``workers`` processes for one ``EngineSpec``; ``analyze`` is awaited on the event loop.

    Batches wait in a queue for the next idle worker, which gets each in one message and answers it
    in one. A worker that dies is replaced and its batch fails; one busy past the timeout is killed
    and replaced. ``start``, ``close`` and ``analyze`` are called on the event loop's thread.
    """

    def __init__(self, spec: EngineSpec, workers: int, timeout: float) -> None:
        self.spec = spec
        self.workers = workers
        self.timeout = timeout
        self.cache = AnalysisCache()
        self.last_error: str | None = None
        self.restarts = 0
        self._workers: list[WorkerProcess] = []
        self._queue: deque[tuple[int, list[Unit], asyncio.Future]] = deque()
        self._tasks: set[asyncio.Task] = set()  # kept referenced until done (the loop holds tasks weakly)
        self._ids = itertools.count()
        self._started_at = 0.0
        self._started = False
        self._closed = False
        self._retiring = False

    # -- life cycle ------------------------------------------------------------------------------------

    @property
    def state(self) -> str:
        if not self._started or self._closed:
            return "stopped"
        if any(w.ready for w in self._workers):
            return "ready"
        return "failed" if self.last_error and not self._workers else "starting"

    def start(self) -> None:
        """Launch the worker processes on the running event loop and return at once: each loads the model,
        warms up and reports ready on its own (see ``state``). Needs a running loop (mitmproxy's ``configure``
        has one)."""
        if self._started or self._closed:
            return
        asyncio.get_running_loop()  # fail here, not in a task, when there is none
        self._started = True
        self._started_at = time.monotonic()
        for _ in range(self.workers):
            self._spawn()

    def close(self) -> None:
        """Kill every worker without waiting (they are reaped in the background) and fail what waits for them."""
        self._closed = True
        self.cache.clear()
        for worker in list(self._workers):
            self._drop(worker, "the gateway is shutting down")
        self._fail_queued("the PII analyzer is shutting down")

    def retire(self) -> None:
        """Close once the batches it holds are answered (at the latest after the timeout, when they have failed):
        for a pool another has replaced, so that analyses already on it finish. Takes no new work after."""
        self._retiring = True
        asyncio.get_running_loop().call_later(self.timeout, self.close)
        self._close_if_idle()

    def _close_if_idle(self) -> None:
        if self._retiring and not self._closed and not self._queue and all(w.task is None for w in self._workers):
            self.close()

    def _fail_queued(self, why: str) -> None:
        while self._queue:
            _, _, future = self._queue.popleft()
            if not future.done():
                future.set_exception(AnalysisUnavailable(why))

    def _background(self, work: Coroutine) -> asyncio.Task:
        task = asyncio.get_running_loop().create_task(work)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _spawn(self) -> None:
        worker = WorkerProcess()
        self._workers.append(worker)
        worker.life = self._background(self._serve(worker))

    async def _serve(self, worker: WorkerProcess) -> None:
        """A worker's life: launch it, hand it the spec, then take its messages until it goes."""
        try:
            await worker.launch()
        except OSError as e:
            self._cannot_start(worker, f"cannot start a PII analyzer worker: {e}")
            return
        try:
            await worker.send(self.spec)
            while worker in self._workers:
                self._on_message(worker, await worker.receive())
        except (protocol.ProtocolError, OSError) as e:
            code = worker.process.returncode if worker.process is not None else None
            self._replace(worker, f"worker process exited ({code if code is not None else e})")

    def _drop(self, worker: WorkerProcess, why: str) -> None:
        """Kill and forget a worker; its batch (if any) fails."""
        if worker in self._workers:
            self._workers.remove(worker)
        if worker.task is not None and not worker.task[1].done():
            worker.task[1].set_exception(AnalysisUnavailable(f"the PII analyzer failed ({why}); it is restarting"))
        worker.task = None
        worker.kill()
        if worker.process is not None:
            self._background(_reap(worker.process))

    def _replace(self, worker: WorkerProcess, why: str) -> None:
        if worker not in self._workers:  # already dropped (its reader and its writer can both notice)
            return
        log.error("warden: replacing a PII analyzer worker (pid %s): %s", worker.pid, why)
        self.last_error = why
        self.restarts += 1
        metrics.PII_RESTARTS.inc()
        self._drop(worker, why)
        if not self._closed:
            self._spawn()

    def _cannot_start(self, worker: WorkerProcess, why: str) -> None:
        """Drop a worker that could not start; not respawned, as the next would fail alike."""
        self.last_error = why
        log.error("warden: %s", why)
        self._drop(worker, why)
        if not self._workers:  # no worker is coming to take what waits
            self._fail_queued(why)

    def _on_message(self, worker: WorkerProcess, message: protocol.Answer) -> None:
        task_id, ok, payload = message
        if task_id is None:  # the start-up report
            if ok:
                worker.ready = True
                log.info("warden: PII analyzer worker %s ready in %.1f s", payload, time.monotonic() - self._started_at)
            else:
                self._cannot_start(worker, f"the PII analyzer cannot start: {payload}")
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
        self._close_if_idle()

    def _dispatch(self) -> None:
        """Hand queued batches to idle ready workers, one each."""
        for worker in list(self._workers):
            if not worker.ready or worker.task is not None or worker not in self._workers:
                continue
            batch = self._next_batch()
            if batch is None:
                return
            task_id, units, future = batch
            worker.task = (task_id, future)
            worker.busy_since = time.monotonic()
            self._background(self._send(worker, (task_id, units), future))

    def _next_batch(self) -> tuple[int, list[Unit], asyncio.Future] | None:
        while self._queue:
            batch = self._queue.popleft()
            if not batch[2].done():  # else it timed out while queued
                return batch
        return None

    async def _send(self, worker: WorkerProcess, request: protocol.Request, future: asyncio.Future) -> None:
        try:
            await worker.send(request)
        except OSError as e:
            task_id, units = request
            if worker.task is not None and worker.task[0] == task_id:
                worker.task = None
                if not future.done():  # the batch is not to blame: another worker takes it
                    self._queue.appendleft((task_id, units, future))
            self._replace(worker, f"cannot reach the worker: {e}")

    def worker_pids(self) -> list[int]:
        return [w.pid for w in self._workers if w.pid is not None]

    # -- analysis -------------------------------------------------------------------------------------

    async def analyze(self, texts: list[str], ner: list[bool] | None = None) -> list[list[Span]]:
        """Spans per text; ``ner[i]`` False runs only the pattern recognizers on ``texts[i]`` (default: all
        recognizers on every text). Raises ``AnalysisUnavailable`` on timeout or engine failure."""
        started = time.perf_counter()
        has_ner = bool(self.spec.ner_entities)
        flags = [has_ner and wanted for wanted in ner] if ner is not None else has_ner
        plans = [[(unit, offset, AnalysisCache.key(unit)) for unit, offset in units] for units in plan(texts, flags)]
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
            merged = {(e, s + offset, t + offset, score)
                      for unit, offset, key in units for e, s, t, score in known[key]}
            out.append(sorted(merged, key=lambda x: (x[1], x[2], x[0])))
        metrics.PII_LATENCY.observe(time.perf_counter() - started)
        return out

    async def _run(self, units: list[Unit]) -> list[list[Span]]:
        if not self._started or self._closed or self._retiring:
            raise AnalysisUnavailable("the PII analyzer is not running")
        if not self._workers:
            raise AnalysisUnavailable(self.last_error or "the PII analyzer has no workers")
        loop = asyncio.get_running_loop()
        futures = []
        groups = batches(units, self.workers)
        for group in groups:
            future = loop.create_future()
            self._queue.append((next(self._ids), [units[i] for i in group], future))
            futures.append(future)
        self._dispatch()
        try:
            if len(futures) == 1:  # most requests: awaited without gather's extra turn of the loop
                results = [await asyncio.wait_for(futures[0], self.timeout)]
            else:
                results = await asyncio.wait_for(asyncio.gather(*futures), self.timeout)
        except TimeoutError:
            self._reap_stuck()
            raise AnalysisUnavailable(
                f"PII analysis did not finish within {self.timeout:g} s (warden_pii_timeout)") from None
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
        return {"state": self.state, "workers": len(self._workers),
                "ready_workers": sum(w.ready for w in self._workers), "pids": self.worker_pids(),
                "restarts": self.restarts, "last_error": self.last_error,
                "queued": len(self._queue), "cache_entries": len(self.cache), "model": self.spec.model}


def default_workers() -> int:
    """One worker per core, at least one: the event loop needs little CPU of its own."""
    return max(1, os.cpu_count() or 1)
