"""Plain JSON values from what numpy, pandas and our results hold, one way for every JSON we write.

Strict JSON has no NaN or infinity: they become None, as do NaT and pandas' NA. Timestamps and dates
become ISO strings; tuples and sets lists; dict keys strings.
"""

from __future__ import annotations

import datetime as _dt
import math
from typing import Any

import numpy as np


def to_jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, dict):
        return {str(k): to_jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [to_jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return [to_jsonable(v) for v in value.tolist()]
    if isinstance(value, np.bool_):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        return float(value) if math.isfinite(value) else None
    if isinstance(value, (_dt.datetime, _dt.date, np.datetime64)):
        import pandas as pd

        ts = pd.Timestamp(value)
        return None if pd.isna(ts) else ts.isoformat()
    try:
        import pandas as pd

        if value is pd.NA or value is pd.NaT:
            return None
    except ImportError:  # pragma: no cover - pandas is a dependency
        pass
    return value
