"""The online store: each entity's recent events and the global hourly sums, shared by every gateway process.

What it keeps, per pipeline: for each entity (its key: a keyed hash of the id when the entity column is
personal, ``ml_ops.features.online.entity_keys``) the events of the last ``ENTITY_WINDOW_NS`` (7 days) plus
``lateness_ns`` before its newest event, as (event id, timestamp, amount); and per whole UTC hour the sum and
count of non-null amounts of every event (the global fallback of ``ml_ops.features.definition``). It keeps
*events*, not running counters: a window count is exact whatever the order events arrive in, an event that
arrives late (up to ``lateness_ns`` behind its entity's newest) takes its place in time, and a sliding window
needs no expiry job. It knows nothing of features: the definition turns what it returns into them.

``observe(pipeline, events)`` records each event and returns its entity's events and the global sums of its
window, atomically per event: the event is added and counted in its hour **only if its id is new** for its
entity (a retried request does not count twice), so concurrent gateway replicas and a materialisation running
beside them cannot lose or double an update. ``ingest`` records without reading (materialisation).

Retention: an entity's events leave the store once they are older than the horizon of its newest event, and an
entity that stays idle is dropped after ``TTL_SECONDS`` (Redis: key expiry; SQLite: events whose time is that far
behind the newest bucket written, deleted every few thousand events); ``forget`` removes one entity at once.

Backends, chosen by URL (``open_store``; the gateway's setting is ``MLOPS_ONLINE_STORE``):

* ``redis://host:port/db`` (``rediss://`` for TLS): production. Several gateway replicas share one state, which
  survives a gateway restart. ``ml_ops.features.redis_store``: one Lua script per event (atomic, idempotent).
* ``sqlite:///path/to/file.db``: the embedded default (``make up`` puts it under ``$MLOPS_HOME``): nothing to
  install, the state survives restarts, processes on one machine share it. ``ml_ops.features.sqlite_store``.

Why not Feast (the field's usual open-source feature store): it is not in our lock, and installing feast 0.67
into this environment downgrades prometheus-client and tenacity (below what Airflow 3 pins) and brings dask
and mypy in as runtime dependencies. More to the point, its online store holds *precomputed* feature values
per entity (written by ``materialize`` from an offline store, or pushed); a count over the last hour at the
moment of the event needs the events up to that moment, which Feast leaves to a stream processor (Spark or
Flink behind a push source), with no idempotency by event id or tolerance of out-of-order events. What we
need is the small state machine above, over Redis we already run.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from ml_ops.features.definition import DAY_NS, ENTITY_WINDOW_NS, GLOBAL_BUCKETS

LATENESS_NS = DAY_NS  # an event this far behind its entity's newest is still recorded in its place
# Wall-clock lifetime of an idle entity's events and of a global bucket: every window is over by then.
TTL_SECONDS = int((ENTITY_WINDOW_NS + 2 * LATENESS_NS) // 1_000_000_000)


class StoreUnavailable(RuntimeError):
    """The online store cannot be reached or refused the operation (the message names the store)."""


@dataclass(frozen=True)
class Event:
    entity: str  # the entity's key in the store (a keyed hash when the entity column is personal)
    event_id: str
    ts: int  # ns since the epoch, UTC
    amount: float  # NaN: none
    first_bucket: int  # the global window's buckets [first_bucket, end_bucket) (definition.global_buckets)
    end_bucket: int

    @property
    def bucket(self) -> int:
        return self.end_bucket  # the event's own hour: the first bucket after its window


@dataclass
class EntityState:
    """What ``observe`` returns for one event: its entity's events (the event itself included once it is
    recorded; the definition takes only strictly earlier ones) and the global sums of its window."""

    ts: np.ndarray  # int64 ns
    amount: np.ndarray  # float64, NaN: none
    global_sum: float
    global_n: int
    recorded: bool  # False: the id was seen before (a retry), or the event is older than the entity's horizon


class OnlineStore(ABC):
    """Per-pipeline entity events and global hourly sums; see the module docstring."""

    kind = "?"

    def __init__(self, url: str, *, lateness_ns: int = LATENESS_NS, ttl_seconds: int = TTL_SECONDS):
        self.url = url
        self.keep_ns = ENTITY_WINDOW_NS + lateness_ns  # an entity's events this far before its newest are kept
        self.ttl_seconds = ttl_seconds
        self.global_buckets = GLOBAL_BUCKETS

    @staticmethod
    def horizon_cap() -> int:
        """The latest time an entity's horizon is measured from: a day past the clock (ns). An event stamped far
        in the future is still recorded, but does not push its entity's earlier events out."""
        import time

        return time.time_ns() + LATENESS_NS

    @property
    def label(self) -> str:
        """The URL without credentials, for messages and /pipelines."""
        from urllib.parse import urlsplit, urlunsplit

        parts = urlsplit(self.url)
        host = parts.hostname or ""
        netloc = f"{host}:{parts.port}" if parts.port else host
        return urlunsplit((parts.scheme, netloc, parts.path, "", ""))

    @abstractmethod
    def observe(self, pipeline: str, events: Sequence[Event]) -> list[EntityState]:
        """Record each event (once per id and entity) and return its entity's state, in ``events`` order."""

    @abstractmethod
    def ingest(self, pipeline: str, events: Sequence[Event]) -> int:
        """Record events without reading anything back (materialisation); returns how many were new."""

    @abstractmethod
    def entity_events(self, pipeline: str, entity: str) -> dict[str, tuple[int, float]]:
        """An entity's stored events, {event id: (ts ns, amount)} (inspection and tests)."""

    @abstractmethod
    def forget(self, pipeline: str, entity: str) -> int:
        """Remove one entity's events (erasure of a person); returns how many were removed. Its amounts stay in
        the hourly global sums, which hold no entity."""

    @abstractmethod
    def clear(self, pipeline: str) -> int:
        """Forget every entity and bucket of the pipeline; returns how many keys or rows were removed."""

    @abstractmethod
    def ping(self) -> None:
        """Raise ``StoreUnavailable`` unless the store answers."""

    def close(self) -> None:  # noqa: B027 - nothing to release by default
        pass


def open_store(url: str, *, namespace: str = "mlops", **kwargs) -> OnlineStore:
    """The store a URL names: ``redis://`` / ``rediss://`` / ``unix://`` (keys under ``namespace``) or
    ``sqlite:///<path>`` (the file is created with its folder)."""
    scheme = url.split("://", 1)[0].lower() if "://" in url else ""
    if scheme in ("redis", "rediss", "unix"):
        from ml_ops.features.redis_store import RedisStore

        return RedisStore(url, namespace=namespace, **kwargs)
    if scheme == "sqlite":
        from ml_ops.features.sqlite_store import SQLiteStore

        return SQLiteStore(url, **kwargs)
    raise ValueError(f"online store URL {url!r}: expected redis://host:port/db, rediss://... or sqlite:///path")
