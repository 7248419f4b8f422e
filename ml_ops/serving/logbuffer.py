"""Buffered, partitioned parquet logs: rows appended in memory on the request path, written to
``<prefix>/ds=<YYYY-MM-DD>/hour=<HH>/part-<time>-<uuid>.parquet`` by a background thread.

A write happens when ``flush_rows`` rows are buffered, when the oldest buffered row is ``flush_seconds``
old, on ``flush()`` (the gateway's /admin/flush) and on ``close()`` (shutdown). Rows land in the partition
of their own timestamp. ``append`` only extends Python lists under a lock (microseconds): building frames,
parquet encoding and the upload happen in the flusher. Every part is written whole with
``ObjectStore.write_parquet`` (one atomic upload). A failed write keeps its rows for the next attempt,
up to ``max_rows`` buffered rows; beyond that the oldest rows are dropped and counted.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime, timezone

import numpy as np

from ml_ops import layout

log = logging.getLogger("ml_ops.serving.logbuffer")


class _Part:
    """Rows of one (prefix, hour): column name -> list of values."""

    __slots__ = ("cols", "dtypes", "hour", "n", "prefix")

    def __init__(self, prefix: str, hour: datetime):
        self.prefix, self.hour, self.n = prefix, hour, 0
        self.cols: dict[str, list] = {}
        self.dtypes: dict[str, str] = {}

    def add(self, n: int, columns: Mapping, dtypes: Mapping[str, str] | None) -> None:
        cols = self.cols
        for name, value in columns.items():
            target = cols.get(name)
            if target is None:
                target = cols[name] = [None] * self.n
            if isinstance(value, (list, tuple)):
                target.extend(value)
            elif isinstance(value, np.ndarray):
                target.extend(value.tolist())
            elif n == 1:
                target.append(value)
            else:
                target.extend([value] * n)
        if len(cols) != len(columns):
            for name, target in cols.items():
                if name not in columns:
                    target.extend([None] * n)
        if dtypes:
            self.dtypes.update(dtypes)
        self.n += n

    def frame(self, base_dtypes: Mapping[str, str]):
        import pandas as pd

        data = {}
        dtypes = {**self.dtypes, **base_dtypes}
        # every typed column is written, even when no row of this part has it (a part of failed requests
        # still has the model's input columns, as nulls): readers can rely on the columns being there
        names = list(dict.fromkeys([*base_dtypes, *self.dtypes, *self.cols]))
        for name in names:
            values = self.cols.get(name)
            if values is None:
                values = [None] * self.n
            dtype = dtypes.get(name)
            if dtype == "int64":
                data[name] = np.array(values, dtype="int64")
            elif dtype in ("float64", "float32"):
                data[name] = np.array(values, dtype=dtype)
            elif dtype in ("Int64", "boolean"):
                data[name] = pd.array(values, dtype=dtype)
            elif dtype == "object":
                arr = np.empty(len(values), dtype=object)
                arr[:] = values
                data[name] = arr
            elif dtype and dtype.startswith("datetime64"):
                data[name] = pd.to_datetime(pd.Series(values, dtype=object), utc=dtype.endswith("UTC]"))
            else:
                data[name] = values  # let pandas infer
        return pd.DataFrame(data)


class PartitionedLog:
    def __init__(
        self,
        store,
        *,
        name: str,
        base_dtypes: Mapping[str, str],
        flush_rows: int = 5000,
        flush_seconds: float = 10.0,
        max_rows: int | None = None,
        on_write: Callable[[str, int], None] | None = None,
        on_error: Callable[[str, Exception], None] | None = None,
    ):
        self.store, self.name = store, name
        self.base_dtypes = dict(base_dtypes)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.max_rows = max_rows or max(20 * flush_rows, 100_000)
        self.on_write, self.on_error = on_write, on_error
        self._lock = threading.Lock()  # guards _parts/_rows/_oldest (held for microseconds)
        self._flush_lock = threading.Lock()  # one flush at a time
        self._parts: dict[tuple, _Part] = {}
        self._retry: list[_Part] = []
        self._rows = 0
        self._oldest: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped_rows = 0
        self.written_rows = 0

    # ---- request path ---------------------------------------------------------------------------------
    def append(self, prefix: str, ts: datetime, n: int, columns: Mapping, dtypes: Mapping[str, str] | None = None):
        """Buffer ``n`` rows of ``columns`` (lists/arrays of length n, or scalars shared by all n rows)
        for the partition of ``ts``; ``dtypes`` types the columns in the written file."""
        key = (prefix, ts.year, ts.month, ts.day, ts.hour)
        with self._lock:
            part = self._parts.get(key)
            if part is None:
                part = self._parts[key] = _Part(prefix, ts.replace(minute=0, second=0, microsecond=0))
            part.add(n, columns, dtypes)
            self._rows += n
            if self._oldest is None:
                self._oldest = time.monotonic()
            if self._rows >= self.flush_rows:
                self._wake.set()

    @property
    def pending_rows(self) -> int:
        return self._rows + sum(p.n for p in self._retry)

    # ---- writing --------------------------------------------------------------------------------------
    def flush(self) -> list[str]:
        """Write everything buffered now; returns the URIs written."""
        with self._flush_lock:
            with self._lock:
                parts = [*self._retry, *self._parts.values()]
                self._parts, self._retry, self._rows, self._oldest = {}, [], 0, None
            written, failed = [], []
            for part in parts:
                stamp = datetime.now(timezone.utc)
                name = f"part-{stamp:%Y%m%dT%H%M%S}{stamp.microsecond // 1000:03d}Z-{uuid.uuid4().hex}.parquet"
                uri = layout.hourly_part(part.prefix, f"{part.hour:%Y-%m-%d}", part.hour.hour, name)
                try:
                    self.store.write_parquet(part.frame(self.base_dtypes), uri)
                except Exception as exc:  # noqa: BLE001 - keep the rows, try again next time
                    log.error(
                        "%s: writing %d rows to %s failed: %s: %s", self.name, part.n, uri, type(exc).__name__, exc
                    )
                    failed.append(part)
                    if self.on_error:
                        self.on_error(self.name, exc)
                    continue
                written.append(uri)
                self.written_rows += part.n
                if self.on_write:
                    self.on_write(uri, part.n)
            if failed:
                self._keep(failed)
            return written

    def _keep(self, failed: list[_Part]) -> None:
        with self._lock:
            self._retry = failed + self._retry
            total = sum(p.n for p in self._retry) + self._rows
            while total > self.max_rows and self._retry:
                gone = self._retry.pop(0)
                total -= gone.n
                self.dropped_rows += gone.n
                log.error(
                    "%s: dropped %d buffered rows of %s (store unavailable, buffer full)",
                    self.name,
                    gone.n,
                    gone.prefix,
                )
            if self._oldest is None:
                self._oldest = time.monotonic()

    # ---- background flusher ---------------------------------------------------------------------------
    def _due(self) -> float:
        """Seconds until the next time-based flush (a large number when nothing is buffered)."""
        oldest = self._oldest
        if oldest is None:
            return self.flush_seconds
        return max(0.0, oldest + self.flush_seconds - time.monotonic())

    def _warm_up(self) -> None:
        """Build and encode a tiny part once at start: the first frame/parquet in a process costs ~1 s of
        lazy imports, which would otherwise hold the GIL during the first flush under traffic."""
        import io

        import pyarrow as pa
        import pyarrow.parquet as pq

        now = datetime.now(timezone.utc)
        sample = {"int64": 0, "Int64": 1, "float64": 0.5, "float32": 0.5, "boolean": True}
        part = _Part("s3://warm-up/x", now)
        part.add(
            1,
            {
                name: now if dtype.startswith("datetime64") else sample.get(dtype, "x")
                for name, dtype in self.base_dtypes.items()
            },
            None,
        )
        pq.write_table(pa.Table.from_pandas(part.frame(self.base_dtypes), preserve_index=False), io.BytesIO())

    def _run(self) -> None:
        try:
            self._warm_up()
        except Exception:  # only a warm-up
            log.debug("%s: warm-up failed", self.name, exc_info=True)
        while not self._stop.is_set():
            self._wake.wait(timeout=self._due())
            self._wake.clear()
            if self._stop.is_set():
                break
            if self._rows >= self.flush_rows or (self._oldest is not None and self._due() <= 0):
                try:
                    self.flush()
                except Exception:
                    log.exception("%s: flush failed", self.name)
                    time.sleep(1.0)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name=f"flush-{self.name}", daemon=True)
            self._thread.start()

    def close(self) -> list[str]:
        """Stop the flusher and write what is left."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
        return self.flush()
