"""Deterministic per-day features with no future leakage.

A row's features use only rows with a strictly earlier timestamp (rows with an equal timestamp never see each other),
taken from `history` (the previous days' raw rows) and `today`. All windows are at most 7 days long, so the features
of a day are the same whatever the caller passes beyond a 7-day lookback.

Windows are half-open, [ts - w, ts): a prior row exactly w before the current one is counted.

Fallback for `entity_amount_mean_7d` when the entity has no earlier row within 7 days: the global mean amount of all
rows in [ts - 7d, ts) (any entity); if there is none either (very first row of a cold start), the row's own amount,
which makes `amount_vs_entity_mean` 1.0. A non-positive mean also gives a ratio of 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # numpy and pandas load on first use: the DAG factory reads the column names at parse time
    import numpy as np
    import pandas as pd

# Time parts of the row's timestamp, each opt-in per pipeline (features.time_parts): with a short training
# window day_of_week identifies days rather than describing them, so nothing is added unless declared.
TIME_PARTS = {"hour_of_day": lambda ts: ts.hour, "day_of_week": lambda ts: ts.dayofweek}
FEATURE_COLUMNS_TIME = list(TIME_PARTS)
FEATURE_COLUMNS_ENTITY = ["entity_txn_count_1h", "entity_txn_count_24h", "seconds_since_prev_txn"]
FEATURE_COLUMNS_AMOUNT = ["entity_amount_mean_7d", "amount_vs_entity_mean"]
FEATURE_COLUMNS_HISTORY = FEATURE_COLUMNS_ENTITY[:2] + FEATURE_COLUMNS_AMOUNT + FEATURE_COLUMNS_ENTITY[2:]

SECONDS_SINCE_PREV_CAP = 7 * 24 * 3600.0  # also the value when the entity has no earlier row in the lookback
_NS = 1_000_000_000
_H, _D = 3600 * _NS, 24 * 3600 * _NS


def feature_columns(entity: str | None, amount: str | None, time_parts: Sequence[str] = ()) -> list[str]:
    """The generated column names for these arguments (without passthrough), in output order."""
    unknown = [p for p in time_parts if p not in TIME_PARTS]
    if unknown:
        raise ValueError(f"unknown time part(s) {unknown}; known: {FEATURE_COLUMNS_TIME}")
    cols = []
    if entity is not None:
        cols = [c for c in FEATURE_COLUMNS_HISTORY if amount is not None or c not in FEATURE_COLUMNS_AMOUNT]
    return cols + [p for p in FEATURE_COLUMNS_TIME if p in time_parts]


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
    ts = pd.DatetimeIndex(t_today.view("datetime64[ns]"))
    for part in (p for p in FEATURE_COLUMNS_TIME if p in time_parts):
        out[part] = TIME_PARTS[part](ts).to_numpy(np.int64)
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

    lo_7d = lo(7 * _D)
    feats: dict[str, np.ndarray] = {
        "entity_txn_count_1h": hi - lo(_H),
        "entity_txn_count_24h": hi - lo(_D),
    }
    has_prev = hi > lo_7d
    prev_t = t[order[np.maximum(hi - 1, 0)]]
    feats["seconds_since_prev_txn"] = np.where(
        has_prev, np.minimum((q_t - prev_t) / _NS, SECONDS_SINCE_PREV_CAP), SECONDS_SINCE_PREV_CAP
    )

    if amt is not None:
        # Prefix sums over sorted rows; null amounts are skipped rather than poisoning every later sum.
        valid = ~np.isnan(amt)
        filled = np.where(valid, amt, 0.0)
        csum = np.r_[0.0, np.cumsum(filled[order])]
        ccnt = np.r_[0, np.cumsum(valid[order])]
        n_win = ccnt[hi] - ccnt[lo_7d]
        # Global fallback over the same 7-day window, any entity, strictly earlier.
        gsum = np.r_[0.0, np.cumsum(filled[t_order])]
        gcnt = np.r_[0, np.cumsum(valid[t_order])]
        g_hi, g_lo = np.empty(n - n_hist, np.int64), np.empty(n - n_hist, np.int64)
        g_hi[q_time] = np.searchsorted(ts_sorted, q_t[q_time], side="left")
        g_lo[q_time] = np.searchsorted(ts_sorted, q_t[q_time] - 7 * _D, side="left")
        g_n = gcnt[g_hi] - gcnt[g_lo]
        with np.errstate(invalid="ignore", divide="ignore"):
            ent_mean = (csum[hi] - csum[lo_7d]) / n_win
            g_mean = (gsum[g_hi] - gsum[g_lo]) / g_n
        own = amt[n_hist:]
        mean = np.where(n_win > 0, ent_mean, np.where(g_n > 0, g_mean, own))
        with np.errstate(invalid="ignore", divide="ignore"):
            ratio = np.where(mean > 0, own / mean, 1.0)
        feats["entity_amount_mean_7d"] = mean
        feats["amount_vs_entity_mean"] = ratio
    return feats
