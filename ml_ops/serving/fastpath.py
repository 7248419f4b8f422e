"""A numpy scorer for the pipelines ``ml_ops.pipeline.train.build_model`` makes, checked against the pipeline.

A one-row ``predict_proba`` of ``Pipeline(ColumnTransformer(SimpleImputer, StandardScaler, OneHotEncoder)
-> classifier)`` costs ~5 ms of CPU, nearly all of it in the ColumnTransformer's pandas column selection
and input validation; the classifier itself takes ~0.5 ms. ``compile_pipeline`` reads the fitted
statistics (imputation values, means and scales, one-hot categories) once and applies them with numpy,
then calls the same fitted classifier, so the scores are the pipeline's own. The gateway only uses it
after ``verified`` finds it equal to the pipeline on check rows; anything it does not recognise (another
transformer, options like ``drop`` or ``min_frequency``) returns None and the pipeline serves as is.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Scorer = Callable[[dict[str, np.ndarray], int], np.ndarray]


def _is_missing(values: np.ndarray) -> np.ndarray:
    if values.dtype.kind == "f":
        return np.isnan(values)
    if values.dtype.kind == "O":  # NaN only, as scikit-learn's imputer: None is a category of its own
        return np.fromiter((v != v for v in values), dtype=bool, count=len(values))  # noqa: PLR0124 - NaN test
    return np.zeros(len(values), dtype=bool)


def _numeric_step(step) -> Callable[[np.ndarray], np.ndarray] | None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import StandardScaler

    if isinstance(step, SimpleImputer):
        missing = step.missing_values
        if (
            step.add_indicator
            or not (isinstance(missing, float) and np.isnan(missing))
            or np.asarray(step.statistics_).dtype.kind not in "fiu"
        ):  # a string fill: the categorical block
            return None
        fill = np.asarray(step.statistics_, dtype="float64")

        def impute(x):
            return np.where(np.isnan(x), fill, x)

        return impute
    if isinstance(step, StandardScaler):
        mean = np.zeros(step.n_features_in_) if step.mean_ is None else step.mean_
        scale = np.ones(step.n_features_in_) if step.scale_ is None else step.scale_

        def standardise(x):
            return (x - mean) / scale

        return standardise
    return None


def _categorical_block(steps: list) -> Callable[[list[np.ndarray]], np.ndarray] | None:
    from sklearn.impute import SimpleImputer
    from sklearn.preprocessing import OneHotEncoder

    fill = None
    if len(steps) == 2:
        imputer, steps = steps[0], steps[1:]
        if (
            not isinstance(imputer, SimpleImputer)
            or imputer.add_indicator
            or imputer.strategy != "constant"
            or not (isinstance(imputer.missing_values, float) and np.isnan(imputer.missing_values))
        ):
            return None
        fill = imputer.statistics_
    encoder = steps[0] if len(steps) == 1 else None
    if (
        not isinstance(encoder, OneHotEncoder)
        or encoder.handle_unknown != "ignore"
        or encoder.drop is not None
        or encoder.sparse_output
        or encoder.min_frequency is not None
        or encoder.max_categories is not None
    ):
        return None
    lookups = [{c: i for i, c in enumerate(cats.tolist())} for cats in encoder.categories_]
    offsets = np.cumsum([0] + [len(c) for c in encoder.categories_])

    def encode(columns: list[np.ndarray]) -> np.ndarray:
        n = len(columns[0])
        out = np.zeros((n, offsets[-1]), dtype="float64")
        for j, (values, lookup) in enumerate(zip(columns, lookups, strict=False)):
            if fill is not None:
                missing = _is_missing(values)
                if missing.any():
                    values = np.where(missing, fill[j], values)
            for row, value in enumerate(values.tolist()):
                index = lookup.get(value)
                if index is not None:  # unknown category: all zeros, as handle_unknown="ignore"
                    out[row, offsets[j] + index] = 1.0
        return out

    return encode


def compile_pipeline(pipeline) -> Scorer | None:
    """``columns -> P(positive)`` equivalent to ``pipeline.predict_proba(frame)[:, 1]``, or None."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    pre, clf = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(pre, ColumnTransformer) or not hasattr(clf, "predict_proba") or list(clf.classes_) != [0, 1]:
        return None
    blocks = []
    for name, transformer, columns in pre.transformers_:
        if transformer == "drop" or (name == "remainder" and len(columns) == 0):
            continue
        if not isinstance(transformer, Pipeline) or not all(isinstance(c, str) for c in columns):
            return None
        steps = [s for _, s in transformer.steps]
        numeric = [_numeric_step(s) for s in steps]
        if all(f is not None for f in numeric):
            blocks.append(("numeric", list(columns), numeric))
            continue
        encode = _categorical_block(steps)
        if encode is None:
            return None
        blocks.append(("categorical", list(columns), encode))

    def score(columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        parts = []
        for kind, names, ops in blocks:
            if kind == "numeric":
                x = np.column_stack([np.asarray(columns[c], dtype="float64") for c in names])
                for op in ops:
                    x = op(x)
                parts.append(x)
            else:
                parts.append(ops([np.asarray(columns[c], dtype=object) for c in names]))
        return np.asarray(clf.predict_proba(np.hstack(parts)))[:, 1].astype("float64")

    return score


def verified(fast: Scorer, reference: Scorer, rows: list[dict[str, np.ndarray]]) -> str | None:
    """None when ``fast`` gives ``reference``'s scores on every check row (rows the reference rejects
    are skipped), else why not."""
    compared = 0
    for columns in rows:
        n = len(next(iter(columns.values())))
        try:
            expected = reference(columns, n)
        except Exception:  # noqa: BLE001, S112 - the pipeline rejects this row: nothing to compare
            continue
        try:
            got = fast(columns, n)
        except Exception as exc:  # noqa: BLE001
            return f"{type(exc).__name__}: {exc}"
        if not np.allclose(got, expected, rtol=1e-9, atol=1e-12):
            return f"scores differ: {got[:3].tolist()} vs {expected[:3].tolist()}"
        compared += n
    return None if compared else "no check row could be scored by the pipeline"
