"""Second source: sklearn's bundled breast-cancer data, resampled with small jitter into daily observations."""

from __future__ import annotations

from datetime import date, timedelta
from functools import lru_cache

import numpy as np
import pandas as pd
from sklearn.datasets import load_breast_cancer


@lru_cache(maxsize=1)
def _base() -> tuple[list[str], np.ndarray, np.ndarray]:
    data = load_breast_cancer()
    names = [str(n).replace(" ", "_") for n in data.feature_names]  # "mean concave points" -> mean_concave_points
    malignant = (data.target == 0).astype(np.int64)  # sklearn codes malignant as 0
    return names, np.asarray(data.data, dtype=np.float64), malignant


def tumor_feature_columns() -> list[str]:
    return list(_base()[0])


def generate_tumors(
    start: date, days: int, *, rows_per_day: int = 200, seed: int = 7, label_delay_days: int = 1
) -> pd.DataFrame:
    """`rows_per_day` resampled tumours a day; day D depends only on (seed, D) like the transactions."""
    if days < 0 or rows_per_day < 1:
        raise ValueError(f"days={days} and rows_per_day={rows_per_day} must be positive")
    names, x, y = _base()
    scale = x.std(axis=0) * 0.05  # jitter: 5 % of each feature's spread, so the classes stay separable
    parts = []
    for i in range(days):
        day = start + timedelta(days=i)
        rng = np.random.default_rng([seed, day.toordinal()])
        pick = rng.integers(0, len(x), rows_per_day)
        feats = np.maximum(x[pick] + rng.standard_normal((rows_per_day, x.shape[1])) * scale, 0.0)
        # Observations cluster in working hours (06-20 UTC), ordered by time within the day.
        sec = np.sort(np.clip(rng.normal(13 * 3600, 3 * 3600, rows_per_day), 0, 86399).astype(np.int64))
        observed = np.datetime64(day, "ns") + sec.astype("timedelta64[s]")
        jitter = rng.integers(0, 6 * 3600, rows_per_day).astype("timedelta64[s]")
        part = pd.DataFrame(feats, columns=names)
        part.insert(0, "observed_at", observed)
        part.insert(0, "sample_id", [f"s{day:%Y%m%d}-{j:05d}" for j in range(rows_per_day)])
        part["malignant"] = y[pick]
        part["label_available_at"] = observed + np.timedelta64(label_delay_days, "D") + jitter
        parts.append(part)
    if not parts:
        cols = {
            "sample_id": object,
            "observed_at": "datetime64[ns]",
            **{n: "float64" for n in names},
            "malignant": "int64",
            "label_available_at": "datetime64[ns]",
        }
        return pd.DataFrame({c: pd.Series(dtype=t) for c, t in cols.items()})
    return pd.concat(parts, ignore_index=True)
