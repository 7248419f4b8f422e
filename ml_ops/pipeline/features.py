"""Batch execution of the derived features (``ml_ops.features.definition``): a day's rows, with no future leakage.

A row's features use only rows with a strictly earlier timestamp (rows with an equal timestamp never see each other),
taken from `history` (the previous days' raw rows) and `today`. The definition (windows, fallbacks, cap) and the
step from window aggregates to features (``combine``) are in ``ml_ops.features.definition``, shared with the
online execution (``ml_ops.features.online``); this module finds the aggregates of a whole day at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from ml_ops.features.definition import (  # noqa: F401 - the names callers have imported from here
    COUNT_WINDOWS_NS,
    FEATURE_COLUMNS_AMOUNT,
    FEATURE_COLUMNS_ENTITY,
    FEATURE_COLUMNS_HISTORY,
    FEATURE_COLUMNS_TIME,
    GLOBAL_BUCKETS,
    MEAN_WINDOW_NS,
    PREV_WINDOW_NS,
    SECONDS_SINCE_PREV_CAP,
    TIME_PARTS,
    Aggregates,
    combine,
    feature_columns,
    global_buckets,
    time_part_values,
)
from ml_ops.features.definition import GLOBAL_BUCKET_NS as _BUCKET

if TYPE_CHECKING:  # numpy and pandas load on first use: the DAG factory reads the column names at parse time
    import numpy as np
    import pandas as pd


def _ns(frame: pd.DataFrame, column: str, name: str) -> np.ndarray:
    import numpy as np
    import pandas as pd

    if column not in frame.columns:
        raise KeyError(f"{name} has no timestamp column {column!r}")
    ts = pd.to_datetime(frame[column])
    if ts.isna().any():
        raise ValueError(f"{name}.{column} has {int(ts.isna().sum())} null timestamps")
    if ts.dt.tz is not None:
        ts = ts.dt.tz_convert("UTC").dt.tz_localize(None)
    return ts.to_numpy(dtype="datetime64[ns]").view(np.int64)


def build_features(
    today: pd.DataFrame,
    history: pd.DataFrame | None,
    *,
    entity: str | None,
    timestamp: str,
    amount: str | None,
    passthrough: list[str],
    time_parts: Sequence[str] = (),
) -> pd.DataFrame:
    """Features for `today`'s rows (same order and index): passthrough columns, then `feature_columns(...)`.

    With `entity` the entity history features are added (the amount ones only when `amount` is given too).
    """
    import numpy as np
    import pandas as pd

    missing = [c for c in passthrough if c not in today.columns]
    if missing:
        raise KeyError(f"passthrough columns missing from today's data: {missing}")
    generated = feature_columns(entity, amount, time_parts)
    clash = [c for c in passthrough if c in generated]
    if clash:
        raise ValueError(f"passthrough columns collide with generated features: {clash}")

    t_today = _ns(today, timestamp, "today")
    out = today[list(passthrough)].copy()
    if entity is not None:
        for c in (entity, amount):
            if c is not None and c not in today.columns:
                raise KeyError(f"today has no column {c!r}")
        hist = history if history is not None and len(history) else None
        if hist is not None:
            t_hist = _ns(hist, timestamp, "history")
            # Rows at or after today's first timestamp cannot be "history"; dropping them guards against leakage.
            keep = t_hist < (t_today.min() if len(t_today) else np.iinfo(np.int64).max)
            hist, t_hist = hist.loc[keep], t_hist[keep]
        else:
            t_hist = np.zeros(0, np.int64)
        ent_all = (
            pd.concat([hist[entity], today[entity]], ignore_index=True)
            if hist is not None
            else today[entity].reset_index(drop=True)
        )
        amt_all = None
        if amount is not None:
            amt_all = np.concatenate(
                [
                    hist[amount].to_numpy(np.float64) if hist is not None else np.zeros(0),
                    today[amount].to_numpy(np.float64),
                ]
            )
        feats = _entity_features(ent_all, np.concatenate([t_hist, t_today]), amt_all, len(t_hist))
        for c in generated:
            if c in feats:
                out[c] = feats[c]
    for part, values in time_part_values(t_today, time_parts).items():
        out[part] = values
    return out


def _entity_features(ent: pd.Series, t: np.ndarray, amt: np.ndarray | None, n_hist: int) -> dict[str, np.ndarray]:
    """Window features for rows [n_hist:] of (ent, t, amt), using all rows strictly earlier in time.

    Entities are coded to ints and timestamps to dense ranks, so (entity, time) fits one int64 sort key; every
    window bound is then a searchsorted on sorted keys, done with sorted needles so the lookups stay cache friendly.
    """
    import numpy as np
    import pandas as pd

    n = len(t)
    codes, _ = pd.factorize(ent, sort=False)
    codes = codes.astype(np.int64)
    null = codes < 0
    if null.any():  # a row without entity shares history with nobody
        codes[null] = codes.max() + 1 + np.arange(int(null.sum()))

    t_order = np.argsort(t, kind="stable")  # near-linear: history and today usually arrive sorted by time
    ts_sorted = t[t_order]
    new = np.r_[True, ts_sorted[1:] != ts_sorted[:-1]]
    uniq = ts_sorted[new]
    rank = np.empty(n, np.int64)
    rank[t_order] = np.cumsum(new) - 1
    m = np.int64(len(uniq) + 1)
    key = codes * m + rank
    order = np.argsort(key, kind="stable")
    skey = key[order]

    # Today's rows in time order (q_time) and in (entity, time) order (q_key), as indices into today.
    q_time = t_order[t_order >= n_hist] - n_hist
    pos_key = np.flatnonzero(order >= n_hist)
    q_key = order[pos_key] - n_hist
    q_t = t[n_hist:]
    q_code = codes[n_hist:]

    # First row of the same (entity, time) run: everything before it in the entity's run is strictly earlier.
    idx = np.arange(n)
    run_first = np.maximum.accumulate(np.where(np.r_[True, skey[1:] != skey[:-1]], idx, 0))
    hi = np.empty(n - n_hist, np.int64)
    hi[q_key] = run_first[pos_key]

    def lo(window_ns: int) -> np.ndarray:
        r = np.empty(n - n_hist, np.int64)
        r[q_time] = np.searchsorted(uniq, q_t[q_time] - window_ns, side="left")
        out = np.empty(n - n_hist, np.int64)
        out[q_key] = np.searchsorted(skey, q_code[q_key] * m + r[q_key], side="left")
        return out

    counts = {name: hi - lo(w) for name, w in COUNT_WINDOWS_NS.items()}
    lo_prev = lo(PREV_WINDOW_NS)
    prev_t = t[order[np.maximum(hi - 1, 0)]]
    agg = Aggregates(counts=counts, prev_gap=np.where(hi > lo_prev, q_t - prev_t, -1))

    if amt is not None:
        # Prefix sums over sorted rows; null amounts are skipped rather than poisoning every later sum.
        lo_mean = lo(MEAN_WINDOW_NS)
        valid = ~np.isnan(amt)
        filled = np.where(valid, amt, 0.0)
        csum = np.r_[0.0, np.cumsum(filled[order])]
        ccnt = np.r_[0, np.cumsum(valid[order])]
        # Global fallback: every entity's rows in the whole hours before the row's hour (definition).
        gsum = np.r_[0.0, np.cumsum(filled[t_order])]
        gcnt = np.r_[0, np.cumsum(valid[t_order])]
        first, end = global_buckets(q_t)
        g_hi, g_lo = np.empty(n - n_hist, np.int64), np.empty(n - n_hist, np.int64)
        g_hi[q_time] = np.searchsorted(ts_sorted, end[q_time] * _BUCKET, side="left")
        g_lo[q_time] = np.searchsorted(ts_sorted, first[q_time] * _BUCKET, side="left")
        agg.amount = amt[n_hist:]
        agg.amount_n, agg.amount_sum = ccnt[hi] - ccnt[lo_mean], csum[hi] - csum[lo_mean]
        agg.global_n, agg.global_sum = gcnt[g_hi] - gcnt[g_lo], gsum[g_hi] - gsum[g_lo]
    return combine(agg)
