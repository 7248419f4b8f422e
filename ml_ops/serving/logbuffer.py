"""Buffered, partitioned parquet logs: rows appended in memory on the request path, written to
``<prefix>/ds=<YYYY-MM-DD>/hour=<HH>/part-<time>-<uuid>.parquet`` by a background thread.

A write happens when ``flush_rows`` rows are buffered, when the oldest buffered row is ``flush_seconds``
old, on ``flush()`` (the gateway's /admin/flush) and on ``close()`` (shutdown). Rows land in the partition
of their own timestamp. ``append`` only extends Python lists under a lock (microseconds): building frames,
parquet encoding and the upload happen in the flusher. Every part is encoded in memory and uploaded whole
(one atomic PUT).

Two kinds of failure, handled apart:

* the part cannot be *encoded* (a value parquet cannot hold: a string with a lone surrogate, an integer
  beyond int64; the gateway refuses these at the boundary, so this is the safety net): retrying would fail
  forever and hold every row of the window back. The rows that cannot be encoded are found by bisection
  and written as JSON lines, each with the reason, to the dead letter
  (``<prefix>/dead_letter/<stage>/ds=<day>/hour=<hh>/part-*.jsonl``, ``ml_ops.layout.dead_letter_prefix``);
  every other row of the part is written as usual.
* the *upload* fails (store unreachable): the rows are kept for the next attempt, up to ``max_rows``
  buffered rows; beyond that the oldest rows are dropped and counted.

``flush_report()`` says what happened (written URIs, dead letters with their reason, parts kept for a retry
with the error); ``flush()`` returns only the written URIs.
"""

from __future__ import annotations

import io
import json
import logging
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
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

    def take(self, rows: list[int]) -> _Part:
        """A part of the given rows only."""
        sub = _Part(self.prefix, self.hour)
        sub.n, sub.dtypes = len(rows), self.dtypes
        sub.cols = {name: [values[i] for i in rows] for name, values in self.cols.items()}
        return sub

    def row(self, i: int) -> dict:
        return {name: values[i] for name, values in self.cols.items()}

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


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _json_line(record: dict) -> str:
    # ensure_ascii: a lone surrogate becomes the escape "\\ud800", so the line itself is always writable
    try:
        return json.dumps(record, default=str, ensure_ascii=True)
    except (TypeError, ValueError) as exc:
        return json.dumps({**record, "row": ascii(record.get("row")), "row_error": _reason(exc)}, default=str)


@dataclass
class FlushReport:
    """What one flush did."""

    written: list[str] = field(default_factory=list)  # parquet parts
    dead_letter: list[dict] = field(default_factory=list)  # {"uri", "rows", "reason"}: rows parquet cannot hold
    failed: list[dict] = field(default_factory=list)  # {"uri", "rows", "error"}: not written, kept for a retry

    def as_dict(self) -> dict:
        return {"written": self.written, "dead_letter": self.dead_letter, "failed": self.failed}


@dataclass
class _DeadLetter:
    uri: str
    data: bytes
    rows: int
    reason: str


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
        on_dead_letter: Callable[[str, int, str], None] | None = None,
        on_drop: Callable[[str, int], None] | None = None,
    ):
        self.store, self.name = store, name
        self.base_dtypes = dict(base_dtypes)
        self.flush_rows, self.flush_seconds = flush_rows, flush_seconds
        self.max_rows = max_rows or max(20 * flush_rows, 100_000)
        self.on_write, self.on_error, self.on_dead_letter = on_write, on_error, on_dead_letter
        self.on_drop = on_drop
        self._lock = threading.Lock()  # guards _parts/_rows/_oldest (held for microseconds)
        self._flush_lock = threading.Lock()  # one flush at a time
        self._parts: dict[tuple, _Part] = {}
        self._retry: list[_Part] = []
        self._dead: list[_DeadLetter] = []  # dead letters whose upload failed, for the next flush
        self._rows = 0
        self._oldest: float | None = None
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.dropped_rows = 0
        self.written_rows = 0
        self.dead_letter_rows = 0

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
        return self._rows + sum(p.n for p in self._retry) + sum(d.rows for d in self._dead)

    # ---- writing --------------------------------------------------------------------------------------
    def flush(self) -> list[str]:
        """Write everything buffered now; returns the URIs written (``flush_report`` for the rest)."""
        return self.flush_report().written

    def flush_report(self) -> FlushReport:
        """Write everything buffered now: parquet parts, and the dead letter for rows parquet cannot hold."""
        report = FlushReport()
        with self._flush_lock:
            with self._lock:
                parts = [*self._retry, *self._parts.values()]
                dead, self._dead = self._dead, []
                self._parts, self._retry, self._rows, self._oldest = {}, [], 0, None
            failed = []
            for part in parts:
                stamp = datetime.now(timezone.utc)
                name = f"part-{stamp:%Y%m%dT%H%M%S}{stamp.microsecond // 1000:03d}Z-{uuid.uuid4().hex}"
                uri = layout.hourly_part(part.prefix, f"{part.hour:%Y-%m-%d}", part.hour.hour, f"{name}.parquet")
                try:
                    data = self._encode(part)
                except Exception as exc:  # noqa: BLE001 - a value parquet cannot hold: set those rows apart
                    part, data, letter = self._set_apart(part, uri, name, exc)
                    dead.append(letter)
                if part is None:
                    continue
                try:
                    self.store.put_bytes(uri, data)
                except Exception as exc:  # noqa: BLE001 - keep the rows, try again next time
                    log.error("%s: writing %d rows to %s failed: %s", self.name, part.n, uri, _reason(exc))
                    failed.append(part)
                    report.failed.append({"uri": uri, "rows": part.n, "error": _reason(exc)})
                    if self.on_error:
                        self.on_error(self.name, exc)
                    continue
                report.written.append(uri)
                self.written_rows += part.n
                if self.on_write:
                    self.on_write(uri, part.n)
            kept = []
            for letter in dead:
                try:
                    self.store.put_bytes(letter.uri, letter.data, "application/x-ndjson")
                except Exception as exc:  # noqa: BLE001 - keep it, try again next time
                    log.error("%s: writing the dead letter %s failed: %s", self.name, letter.uri, _reason(exc))
                    kept.append(letter)
                    report.failed.append({"uri": letter.uri, "rows": letter.rows, "error": _reason(exc)})
                    if self.on_error:
                        self.on_error(self.name, exc)
                    continue
                report.dead_letter.append({"uri": letter.uri, "rows": letter.rows, "reason": letter.reason})
            if failed or kept:
                self._keep(failed, kept)
            return report

    def _encode(self, part: _Part) -> bytes:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pandas(part.frame(self.base_dtypes), preserve_index=False)
        out = io.BytesIO()
        pq.write_table(table, out, compression="snappy")
        return out.getvalue()

    def _split(self, part: _Part, rows: list[int]) -> tuple[list[int], list[tuple[int, str]]]:
        """(rows that encode together, [(row, reason)] for the others), by bisection."""
        try:
            self._encode(part.take(rows))
            return rows, []
        except Exception as exc:  # noqa: BLE001
            if len(rows) == 1:
                return [], [(rows[0], _reason(exc))]
        mid = len(rows) // 2
        good_a, bad_a = self._split(part, rows[:mid])
        good_b, bad_b = self._split(part, rows[mid:])
        if good_a and good_b:
            try:
                self._encode(part.take(good_a + good_b))
            except Exception as exc:  # noqa: BLE001 - rows fine apart, not together (one column, two types)
                return good_a, bad_a + bad_b + [(i, _reason(exc)) for i in good_b]
        return good_a + good_b, bad_a + bad_b

    def _set_apart(
        self, part: _Part, uri: str, name: str, exc: Exception
    ) -> tuple[_Part | None, bytes | None, _DeadLetter]:
        """The part without the rows that cannot be encoded (and its parquet bytes), and those rows as a
        dead letter."""
        reason = _reason(exc)
        good, bad = self._split(part, list(range(part.n)))
        rest, data = (part.take(good) if good else None), None
        if rest is not None:
            try:
                data = self._encode(rest)
            except Exception as again:  # noqa: BLE001 - not a matter of some rows: nothing of it is writable
                bad, rest = bad + [(i, _reason(again)) for i in good], None
        if not bad:  # the whole failed, every part of it encodes: should not happen; keep the rows anyway
            bad, rest, data = [(i, reason) for i in range(part.n)], None, None
        dead_uri = layout.hourly_part(
            layout.dead_letter_prefix(part.prefix), f"{part.hour:%Y-%m-%d}", part.hour.hour, f"{name}.jsonl"
        )
        lines = [_json_line({"log": self.name, "part": uri, "reason": why, "row": part.row(i)}) for i, why in bad]
        letter = _DeadLetter(dead_uri, ("\n".join(lines) + "\n").encode(), len(bad), reason)
        log.error(
            "%s: %d of %d rows for %s cannot be written as parquet (%s): they go to %s",
            self.name,
            len(bad),
            part.n,
            uri,
            reason,
            dead_uri,
        )
        self.dead_letter_rows += len(bad)
        if self.on_dead_letter:
            self.on_dead_letter(self.name, len(bad), reason)
        return rest, data, letter

    def _keep(self, failed: list[_Part], dead: list[_DeadLetter] = ()) -> None:
        with self._lock:
            self._retry = failed + self._retry
            self._dead = [*dead, *self._dead]
            total = sum(p.n for p in self._retry) + self._rows
            while total > self.max_rows and self._retry:
                gone = self._retry.pop(0)
                total -= gone.n
                self.dropped_rows += gone.n
                if self.on_drop:
                    self.on_drop(self.name, gone.n)
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

    def stop(self) -> None:
        """Stop the background flusher (after the flush it may be running)."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def close(self) -> list[str]:
        """Stop the flusher and write what is left."""
        self.stop()
        return self.flush()
