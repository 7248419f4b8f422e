"""A model's output as scores, one way for training, comparison, monitoring and the gateway.

Every model here is a binary classifier; its score is P(positive). MLflow pyfunc models answer with
a 1-D array, an (n, 2) ``predict_proba`` array, a Series or a one-column frame: all mean the same.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

SCORE_THRESHOLD = 0.5  # probability cut-off for the threshold metrics (f1, precision, recall, accuracy)


def scores_from_output(out, n: int | None = None) -> np.ndarray:
    """A pyfunc output as float scores; with ``n``, checks there is one score per row."""
    if hasattr(out, "to_numpy"):
        out = out.to_numpy()
    arr = np.asarray(out, dtype="float64")
    if arr.ndim == 2 and arr.shape[1] == 2:  # sklearn-flavor model logged with predict_proba
        arr = arr[:, 1]
    arr = arr.reshape(-1)
    if n is not None and arr.shape[0] != n:
        raise ValueError(f"model returned {arr.shape[0]} scores for {n} rows")
    return arr


def model_input(model, df: pd.DataFrame) -> pd.DataFrame:
    """The columns the model's signature names, integers widened to float (the signature declares
    numeric inputs as double so that missing values are allowed; MLflow will not widen by itself)."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return df
    names = schema.input_names()
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"model input is missing column(s) {missing}")
    out = df[names].copy()
    ints = out.select_dtypes("integer").columns
    out[ints] = out[ints].astype("float64")
    return out


def score(model, df: pd.DataFrame) -> np.ndarray:
    """P(positive) of every row of ``df`` from a pyfunc model."""
    return scores_from_output(model.predict(model_input(model, df)), len(df))
