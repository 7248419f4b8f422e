"""The embedded online store: one SQLite file (``sqlite:///<absolute path>``), the laptop default.

Tables: ``events`` (pipeline, entity, event_id) -> (ts, amount), the primary key making a retried event a
no-op; ``buckets`` (pipeline, bucket) -> (total, n) of non-null amounts per whole UTC hour. One ``observe`` call
is one ``BEGIN IMMEDIATE`` transaction (a write lock taken before reading: no two processes interleave an
event's insert, its bucket update and its read). WAL mode, so readers do not block the writer; a busy file is
waited for up to 10 s. Processes on one machine share the file (the gateway, a materialisation task); it is
not for several machines (Redis is).
"""

from __future__ import annotations

import math
import sqlite3
import threading
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ml_ops.features.store import EntityState, Event, OnlineStore, StoreUnavailable

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    pipeline TEXT NOT NULL, entity TEXT NOT NULL, event_id TEXT NOT NULL, ts INTEGER NOT NULL, amount REAL,
    PRIMARY KEY (pipeline, entity, event_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS events_by_time ON events (pipeline, entity, ts);
CREATE TABLE IF NOT EXISTS buckets (
    pipeline TEXT NOT NULL, bucket INTEGER NOT NULL, total REAL NOT NULL, n INTEGER NOT NULL,
    PRIMARY KEY (pipeline, bucket)
) WITHOUT ROWID;
"""
_PRUNE_EVERY = 5000  # observes between deletions of old global buckets


def sqlite_path(url: str) -> Path:
    if not url.lower().startswith("sqlite:///"):
        raise ValueError(f"online store URL {url!r}: expected sqlite:///<absolute path>")
    path = "/" + url[len("sqlite:///") :].lstrip("/")
    return Path(path)


class SQLiteStore(OnlineStore):
    kind = "sqlite"

    def __init__(self, url: str, **kwargs):
        super().__init__(url, **kwargs)
        self.path = sqlite_path(url)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._conn = sqlite3.connect(self.path, timeout=10, isolation_level=None, check_same_thread=False)
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute("PRAGMA synchronous=NORMAL")
            self._conn.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None
        self._lock = threading.Lock()
        self._observed = 0

    @property
    def label(self) -> str:
        return f"sqlite:///{self.path}"

    def _transaction(self, fn):
        with self._lock:
            conn = self._conn
            try:
                conn.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(conn)
                except BaseException:
                    conn.execute("ROLLBACK")
                    raise
                conn.execute("COMMIT")
                return out
            except sqlite3.Error as exc:
                raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None

    def _record(self, conn: sqlite3.Connection, pipeline: str, e: Event) -> bool:
        row = conn.execute(
            "SELECT MAX(ts) FROM events WHERE pipeline = ? AND entity = ?", (pipeline, e.entity)
        ).fetchone()
        newest = e.ts if row[0] is None else max(row[0], e.ts)
        horizon = min(newest, self.horizon_cap()) - self.keep_ns
        recorded = False
        if e.ts >= horizon:
            amount = None if math.isnan(e.amount) else float(e.amount)
            cur = conn.execute(
                "INSERT OR IGNORE INTO events (pipeline, entity, event_id, ts, amount) VALUES (?, ?, ?, ?, ?)",
                (pipeline, e.entity, e.event_id, e.ts, amount),
            )
            recorded = cur.rowcount == 1
            if recorded and amount is not None:
                conn.execute(
                    "INSERT INTO buckets (pipeline, bucket, total, n) VALUES (?, ?, ?, 1) "
                    "ON CONFLICT (pipeline, bucket) DO UPDATE SET total = total + excluded.total, n = n + 1",
                    (pipeline, e.bucket, amount),
                )
        if row[0] is not None and e.ts > row[0]:  # a new newest event: older ones may have fallen behind
            conn.execute(
                "DELETE FROM events WHERE pipeline = ? AND entity = ? AND ts < ?", (pipeline, e.entity, horizon)
            )
        return recorded

    def observe(self, pipeline: str, events: Sequence[Event]) -> list[EntityState]:
        def run(conn: sqlite3.Connection) -> list[EntityState]:
            out = []
            for e in events:
                recorded = self._record(conn, pipeline, e)
                rows = conn.execute(
                    "SELECT ts, amount FROM events WHERE pipeline = ? AND entity = ?", (pipeline, e.entity)
                ).fetchall()
                g = conn.execute(
                    "SELECT COALESCE(SUM(total), 0.0), COALESCE(SUM(n), 0) FROM buckets "
                    "WHERE pipeline = ? AND bucket >= ? AND bucket < ?",
                    (pipeline, e.first_bucket, e.end_bucket),
                ).fetchone()
                ts = np.fromiter((r[0] for r in rows), np.int64, len(rows))
                amount = np.fromiter((np.nan if r[1] is None else r[1] for r in rows), np.float64, len(rows))
                out.append(EntityState(ts, amount, float(g[0]), int(g[1]), recorded))
            self._observed += len(events)
            if self._observed >= _PRUNE_EVERY and events:
                self._observed = 0
                self._prune_buckets(conn, pipeline, max(e.end_bucket for e in events))
            return out

        return self._transaction(run)

    def _prune_buckets(self, conn: sqlite3.Connection, pipeline: str, newest_bucket: int) -> None:
        """Old global buckets, and the events of idle entities (older than the TTL behind the newest bucket). The
        newest bucket counts at most a day past the clock: one event stamped far in the future must not empty the
        store."""
        hour = 3600 * 1_000_000_000
        newest_bucket = min(newest_bucket, time.time_ns() // hour + 24)
        keep = self.global_buckets + self.keep_ns // hour + 1
        conn.execute("DELETE FROM buckets WHERE pipeline = ? AND bucket < ?", (pipeline, newest_bucket - keep))
        idle = newest_bucket * hour - self.ttl_seconds * 1_000_000_000
        conn.execute("DELETE FROM events WHERE pipeline = ? AND ts < ?", (pipeline, idle))

    def ingest(self, pipeline: str, events: Sequence[Event]) -> int:
        def run(conn: sqlite3.Connection) -> int:
            new = sum(self._record(conn, pipeline, e) for e in events)
            if events:
                self._prune_buckets(conn, pipeline, max(e.end_bucket for e in events))
            return new

        return self._transaction(run)

    def entity_events(self, pipeline: str, entity: str) -> dict[str, tuple[int, float]]:
        def run(conn):
            rows = conn.execute(
                "SELECT event_id, ts, amount FROM events WHERE pipeline = ? AND entity = ?", (pipeline, entity)
            ).fetchall()
            return {r[0]: (r[1], math.nan if r[2] is None else r[2]) for r in rows}

        return self._transaction(run)

    def forget(self, pipeline: str, entity: str) -> int:
        return self._transaction(
            lambda conn: (
                conn.execute("DELETE FROM events WHERE pipeline = ? AND entity = ?", (pipeline, entity)).rowcount
            )
        )

    def clear(self, pipeline: str) -> int:
        def run(conn):
            n = conn.execute("DELETE FROM events WHERE pipeline = ?", (pipeline,)).rowcount
            return n + conn.execute("DELETE FROM buckets WHERE pipeline = ?", (pipeline,)).rowcount

        return self._transaction(run)

    def ping(self) -> None:
        self._transaction(lambda conn: conn.execute("SELECT 1").fetchone())

    def close(self) -> None:
        with self._lock:
            self._conn.close()
