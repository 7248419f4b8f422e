"""A model's inputs and outputs, one way for training, comparison, monitoring and the gateway.

Every model here is a binary classifier; its score is P(positive). MLflow pyfunc models answer with
a 1-D array, an (n, 2) ``predict_proba`` array, a Series or a one-column frame: all mean the same.

Categorical inputs are text everywhere (``category_text``): a column listed under ``features.categorical``
may hold integers, floats, booleans or text in the source, and the integer 3, the float 3.0 and the text
"3" are the one category "3". Training casts before fitting (so the fitted one-hot categories are text and
the signature declares the column ``string``), and everything that feeds a model casts the same way:
``model_input`` (comparison, monitoring) and the gateway's request conversion (``ml_ops.serving.schema``).
"""

from __future__ import annotations

import math
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


def _text(value) -> str | None:
    """One value as category text (None for a missing value); see ``category_text``."""
    if value is None or isinstance(value, str):
        return value
    if isinstance(value, bool | np.bool_):
        return "True" if value else "False"
    if isinstance(value, int | np.integer):
        return str(int(value))
    if isinstance(value, float | np.floating):
        if math.isnan(value):
            return None
        # 3.0 is the category "3"; other numbers keep their shortest text ("3.5", "inf")
        return str(int(value)) if math.isfinite(value) and float(value).is_integer() else str(value)
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    import pandas as pd

    if pd.api.types.is_scalar(value) and pd.isna(value):  # pd.NA, NaT
        return None
    return str(value)


def category_text(values) -> np.ndarray:
    """Values of one categorical column as text, an object array: text stays as it is, an integer (or a
    float holding one) is its decimal digits (3, 3.0 and "3" are all "3"), another float its shortest text
    ("3.5"), a boolean "True"/"False"; nulls (None, NaN, pd.NA, NaT) stay null, as None.

    The one cast of categorical inputs: training, ``model_input`` and the gateway (``values`` a list of JSON
    values there) all call it, so a category means the same in batch and serving."""
    if isinstance(values, list):
        if all(type(v) is str or v is None for v in values):  # the usual request: nothing to cast
            return np.array(values, dtype=object)
        arr = np.empty(len(values), dtype=object)
        arr[:] = values
    else:
        arr = np.asarray(values.to_numpy() if hasattr(values, "to_numpy") else values)
    import pandas as pd

    if arr.dtype.kind == "O":
        if pd.api.types.infer_dtype(arr, skipna=True) in ("string", "empty"):  # text and nulls: nulls as None
            out = arr.copy()
            out[pd.isna(arr)] = None
            return out
        return np.array([_text(v) for v in arr.tolist()], dtype=object)
    if arr.dtype.kind in "iufbMm":  # one dtype: cast each distinct value once
        codes, uniques = pd.factorize(arr)  # nulls get code -1
        # numpy scalars keep their own shortest text (float32 0.1 is "0.1"); times as pandas Timestamps
        items = list(pd.Index(uniques)) if arr.dtype.kind in "Mm" else list(uniques)
        texts = np.array([_text(v) for v in items] + [None], dtype=object)
        return texts[codes]
    return np.array([_text(v) for v in arr.tolist()], dtype=object)


def as_category_text(df: pd.DataFrame, columns) -> pd.DataFrame:
    """``df`` with each of ``columns`` cast by ``category_text`` (a copy; ``df`` is left as it is)."""
    out = df.copy()
    for c in columns:
        if c in out.columns:
            out[c] = category_text(out[c])
    return out


def model_input(model, df: pd.DataFrame) -> pd.DataFrame:
    """The columns the model's signature names, cast as training cast them: the columns it declares as
    string by ``category_text`` (categorical inputs), integers widened to float (the signature declares
    numeric inputs as double so that missing values are allowed; MLflow will not widen by itself)."""
    schema = model.metadata.get_input_schema()
    if schema is None or not schema.has_input_names():
        return df
    names = schema.input_names()
    missing = [c for c in names if c not in df.columns]
    if missing:
        raise ValueError(f"model input is missing column(s) {missing}")
    text = [spec.name for spec in schema.inputs if getattr(getattr(spec, "type", None), "name", None) == "string"]
    out = as_category_text(df[names], text)
    ints = out.select_dtypes("integer").columns
    out[ints] = out[ints].astype("float64")
    return out


def score(model, df: pd.DataFrame) -> np.ndarray:
    """P(positive) of every row of ``df`` from a pyfunc model."""
    return scores_from_output(model.predict(model_input(model, df)), len(df))
