"""The derived features, defined once: per-entity history over time windows, and time parts.

Two executions compute them from this definition: batch (``ml_ops.pipeline.features.build_features``: a day's
rows with the earlier days of its lookback, vectorised) and online (``ml_ops.features.online``: one event at a
time, from its entity's events in the online store). Each execution finds, for every event, the same window
*aggregates* (``Aggregates``: counts, amount sums, the previous event, the global fallback's sums) with its own
index machinery (sorted keys in batch, the entity's few events online), and both turn them into features with
the same function, ``combine``. Parity of the two is a test (tests/unit/features/test_parity.py).

Semantics (UTC, nanosecond timestamps):

* An event sees only events of its entity with a strictly earlier timestamp (equal timestamps never see each
  other). Windows are half-open, [t - w, t): an event exactly w before is counted.
* ``entity_txn_count_1h`` / ``entity_txn_count_24h``: such events in the last hour / 24 hours.
* ``entity_amount_mean_7d``: mean of their non-null amounts in the last 7 days. With none, the **global
  fallback**: the mean non-null amount of every event (any entity) in the 7 x 24 whole UTC hours before the
  event's hour, [floor_h(t) - 7 d, floor_h(t)); with none either (a cold start), the event's own amount.
  Whole hours, so that an online store can keep the global sums as hourly buckets and give exactly the value
  the batch code gives (an exact sliding global window would need every event of the last week online).
* ``amount_vs_entity_mean``: amount / that mean; 1.0 when the mean is not positive.
* ``seconds_since_prev_txn``: seconds since the entity's previous event within 7 days, capped at 7 days; the
  cap when there is none.
* Time parts (opt-in per pipeline, ``features.time_parts``): ``hour_of_day`` and ``day_of_week`` of t.

Every entity window is at most ``ENTITY_WINDOW_NS`` (7 days) and the global one starts at most 7 days before
the event's day: the batch features of a day are the same whatever lookback beyond 7 days the caller passes,
and the online store keeps an entity's events that long (plus the lateness it tolerates).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and pandas load on first use: the DAG factory reads the column names at parse time
    import numpy as np

NS = 1_000_000_000
HOUR_NS = 3600 * NS
DAY_NS = 24 * HOUR_NS

# --------------------------------------------------------------------------- names
TIME_PARTS = {"hour_of_day": lambda ts: ts.hour, "day_of_week": lambda ts: ts.dayofweek}
FEATURE_COLUMNS_TIME = list(TIME_PARTS)
FEATURE_COLUMNS_ENTITY = ["entity_txn_count_1h", "entity_txn_count_24h", "seconds_since_prev_txn"]
FEATURE_COLUMNS_AMOUNT = ["entity_amount_mean_7d", "amount_vs_entity_mean"]
FEATURE_COLUMNS_HISTORY = FEATURE_COLUMNS_ENTITY[:2] + FEATURE_COLUMNS_AMOUNT + FEATURE_COLUMNS_ENTITY[2:]

# --------------------------------------------------------------------------- windows
COUNT_WINDOWS_NS = {"entity_txn_count_1h": HOUR_NS, "entity_txn_count_24h": DAY_NS}
MEAN_WINDOW_NS = 7 * DAY_NS  # entity_amount_mean_7d
PREV_WINDOW_NS = 7 * DAY_NS  # seconds_since_prev_txn looks this far back
SECONDS_SINCE_PREV_CAP = 7 * 24 * 3600.0  # also the value when the entity has no earlier event in that window
GLOBAL_BUCKET_NS = HOUR_NS  # the global fallback's buckets: whole UTC hours
GLOBAL_BUCKETS = 7 * 24  # ... the 168 before the event's hour
# An entity's events older than this before its event cannot change its features: what an online store keeps.
ENTITY_WINDOW_NS = max(*COUNT_WINDOWS_NS.values(), MEAN_WINDOW_NS, PREV_WINDOW_NS)


def feature_columns(entity: str | None, amount: str | None, time_parts: Sequence[str] = ()) -> list[str]:
    """The generated column names for these arguments (without passthrough), in output order."""
    unknown = [p for p in time_parts if p not in TIME_PARTS]
    if unknown:
        raise ValueError(f"unknown time part(s) {unknown}; known: {FEATURE_COLUMNS_TIME}")
    cols = []
    if entity is not None:
        cols = [c for c in FEATURE_COLUMNS_HISTORY if amount is not None or c not in FEATURE_COLUMNS_AMOUNT]
    return cols + [p for p in FEATURE_COLUMNS_TIME if p in time_parts]


def global_buckets(t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The global fallback's bucket range [first, end) for events at ``t`` (ns): the whole hours before each
    event's hour. A bucket's index is its start // GLOBAL_BUCKET_NS (``bucket_of``)."""
    end = bucket_of(t)
    return end - GLOBAL_BUCKETS, end


def bucket_of(t):
    """Global bucket index of timestamps ``t`` (ns since the epoch, UTC); floor division, so before 1970 too."""
    return t // GLOBAL_BUCKET_NS


def time_part_values(t: np.ndarray, parts: Sequence[str]) -> dict[str, np.ndarray]:
    """The declared time parts of timestamps ``t`` (int64 ns since the epoch, UTC), in output order: integer
    arithmetic on the epoch (1970-01-01 was a Thursday, day 3 with Monday 0), the values of ``TIME_PARTS``."""
    import numpy as np

    t = np.asarray(t, dtype=np.int64)
    values = {"hour_of_day": lambda: (t // HOUR_NS) % 24, "day_of_week": lambda: (t // DAY_NS + 3) % 7}
    return {p: values[p]().astype(np.int64) for p in FEATURE_COLUMNS_TIME if p in parts}


@dataclass
class Aggregates:
    """Window aggregates of events (arrays, one value per event), as both executions find them.

    ``count_*``: earlier events of the entity in each of COUNT_WINDOWS_NS; ``amount_n`` / ``amount_sum``: their
    non-null amounts in MEAN_WINDOW_NS; ``prev_gap``: ns since the entity's latest earlier event within
    PREV_WINDOW_NS (-1: none); ``global_n`` / ``global_sum``: non-null amounts of every event in the global
    buckets (``global_buckets``); ``amount``: the event's own amount (NaN: none)."""

    counts: dict[str, np.ndarray]
    prev_gap: np.ndarray
    amount: np.ndarray | None = None
    amount_n: np.ndarray | None = None
    amount_sum: np.ndarray | None = None
    global_n: np.ndarray | None = None
    global_sum: np.ndarray | None = None


def combine(agg: Aggregates) -> dict[str, np.ndarray]:
    """The history features from their aggregates (the amount ones only when the aggregates have amounts)."""
    import numpy as np

    feats: dict[str, np.ndarray] = {name: np.asarray(agg.counts[name], np.int64) for name in COUNT_WINDOWS_NS}
    gap = np.asarray(agg.prev_gap, np.int64)
    feats["seconds_since_prev_txn"] = np.where(
        gap >= 0, np.minimum(gap / NS, SECONDS_SINCE_PREV_CAP), SECONDS_SINCE_PREV_CAP
    )
    if agg.amount is not None:
        own = np.asarray(agg.amount, np.float64)
        n, g_n = np.asarray(agg.amount_n), np.asarray(agg.global_n)
        with np.errstate(invalid="ignore", divide="ignore"):
            ent_mean = np.asarray(agg.amount_sum, np.float64) / n
            g_mean = np.asarray(agg.global_sum, np.float64) / g_n
        mean = np.where(n > 0, ent_mean, np.where(g_n > 0, g_mean, own))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(mean > 0, own / mean, 1.0)
        feats["entity_amount_mean_7d"] = mean
        feats["amount_vs_entity_mean"] = ratio
    return feats
