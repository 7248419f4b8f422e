"""One prediction thread per loaded model version, with natural batching.

Requests hand their typed columns to the model's runner and await the result; the runner's thread takes
whatever is queued (up to ``max_rows`` rows), scores it in one model call and hands each request its
slice. With one request in flight nothing waits for company, so an idle gateway answers as fast as a
direct call; under load, concurrent requests share one call (the per-call overhead of a scikit-learn
pipeline dominates a one-row prediction). Model calls never run on the event loop, so a slow model
(or a sleeping fault-injection variant) delays only the requests routed to it.

A model call that raises fails only the request that caused it: a failed call of several requests is
retried once per request, except for the exception types in ``shared_errors`` (a store that is down fails
every request of the call at once). The thread exits after a minute without work and is restarted on demand.
The gateway's online store calls (``ml_ops.serving.featurestore``) are batched by the same runner.
"""

from __future__ import annotations

import asyncio
import logging
import queue
import threading
import time
from collections.abc import Callable

import numpy as np

log = logging.getLogger("ml_ops.serving.runner")
IDLE_SECONDS = 60.0


class _Item:
    __slots__ = ("columns", "future", "loop", "n")

    def __init__(self, columns: dict[str, np.ndarray], n: int, loop, future):
        self.columns, self.n, self.loop, self.future = columns, n, loop, future


def _deliver(item: _Item, result=None, error: BaseException | None = None) -> None:
    def _set():
        if item.future.done():  # the request went away (client disconnect, cancelled)
            return
        if error is not None:
            item.future.set_exception(error)
        else:
            item.future.set_result(result)

    try:
        item.loop.call_soon_threadsafe(_set)
    except RuntimeError:  # the event loop is closed (shutdown): nobody is waiting any more
        pass


class ModelRunner:
    def __init__(
        self,
        score: Callable[[dict[str, np.ndarray], int], np.ndarray],
        *,
        name: str,
        max_rows: int = 256,
        threads: int | None = 1,
        inline: bool = False,
        shared_errors: tuple[type[BaseException], ...] = (),
    ):
        self.score, self.name, self.max_rows, self.threads = score, name, max_rows, threads
        self.shared_errors = shared_errors
        self.inline = inline  # predict on the event loop itself (no thread hand-off, no batching)
        self._queue: queue.SimpleQueue[_Item] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.calls = 0
        self.batched_requests = 0

    async def predict(self, columns: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, float, float]:
        """Scores of the ``n`` rows, and the wall and CPU seconds of the model call they were part of."""
        if self.inline:
            return self._call(columns, n)
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Item(columns, n, loop, future))
        self._ensure_thread()
        return await future

    def _ensure_thread(self) -> None:
        with self._lock:  # under the lock: an exiting thread either sees the new item or has cleared itself
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name=f"model-{self.name}", daemon=True)
                self._thread.start()

    def _run(self) -> None:
        if self.threads:
            try:  # OpenMP's thread count is per calling thread: set it in the thread that predicts
                from threadpoolctl import threadpool_limits

                threadpool_limits(self.threads)
            except Exception:
                log.debug("threadpoolctl unavailable", exc_info=True)
        while True:
            try:
                first = self._queue.get(timeout=IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if self._queue.empty():
                        self._thread = None
                        return
                continue
            batch, rows = [first], first.n
            while rows < self.max_rows:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                batch.append(item)
                rows += item.n
            self._execute(batch, rows)

    def _call(self, columns: dict[str, np.ndarray], n: int) -> tuple[np.ndarray, float, float]:
        # Thread CPU time besides wall time: a model taking 10 % of the traffic shares the GIL with the
        # majority model's thread far more often than the other way round, which inflates its wall time
        # alone (+23 % for an identical model on a busy machine); its CPU time is the model's own cost.
        t0, c0 = time.perf_counter(), time.thread_time()
        scores = self.score(columns, n)
        self.calls += 1
        return scores, time.perf_counter() - t0, time.thread_time() - c0

    def _execute(self, batch: list[_Item], rows: int) -> None:
        if len(batch) == 1:
            item = batch[0]
            try:
                _deliver(item, self._call(item.columns, item.n))
            except Exception as exc:  # noqa: BLE001 - goes to the request as a model error
                _deliver(item, error=exc)
            return
        names = list(batch[0].columns)
        try:
            if any(list(it.columns) != names for it in batch):
                raise ValueError("requests with different columns")  # not expected: one schema per model
            joined = {c: np.concatenate([it.columns[c] for it in batch]) for c in names}
            scores, seconds, cpu_seconds = self._call(joined, rows)
            if len(scores) != rows:
                raise ValueError(f"model returned {len(scores)} scores for {rows} rows")
        except self.shared_errors as exc:
            for item in batch:
                _deliver(item, error=exc)
            return
        except Exception:  # noqa: BLE001 - find the request that fails, spare the others
            for item in batch:
                self._execute([item], item.n)
            return
        self.batched_requests += len(batch)
        start = 0
        for item in batch:
            _deliver(item, (scores[start : start + item.n], seconds, cpu_seconds))
            start += item.n
