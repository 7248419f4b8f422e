"""A numpy scorer for the pipelines ``ml_ops.pipeline.train.build_model`` makes, checked against the pipeline.

A one-row ``predict_proba`` of ``Pipeline(ColumnTransformer(SimpleImputer, StandardScaler, OneHotEncoder)
-> classifier)`` costs ~5 ms of CPU, nearly all of it in the ColumnTransformer's pandas column selection
and input validation; the classifier itself takes ~0.5 ms. ``compile_pipeline`` reads the fitted
statistics (imputation values, means and scales, one-hot categories) once and applies them with numpy,
then calls the same fitted classifier, so the scores are the pipeline's own. The gateway only uses it
after ``verified`` finds it equal to the pipeline on check rows; anything it does not recognise (another
transformer, options like ``drop`` or ``min_frequency``) returns None and the pipeline serves as is.

A binary ``HistGradientBoostingClassifier`` (the fraud model) is evaluated by ``hist_gradient_boosting``: its
``predict_proba`` walks the trees one Cython call each (~3 µs a tree, ~0.3-0.5 ms for 100 trees whatever the
rows), a fixed cost that dominated a one-row prediction; the same fitted nodes walked for all trees at once, one
numpy step per tree level, take ~0.1 ms for a few rows (beyond ``WALK_ROWS`` sklearn's loop is the cheaper).
Same nodes, same thresholds, same missing-value directions.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

Scorer = Callable[[dict[str, np.ndarray], int], np.ndarray]
WALK_ROWS = 32  # up to this many rows, all trees are walked at once (measured: 0.12 vs 0.5 ms for 3 rows)


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


def hist_gradient_boosting(clf) -> Callable[[np.ndarray], np.ndarray] | None:
    """``X -> P(class 1)`` of a fitted binary ``HistGradientBoostingClassifier`` on numeric features, walking all
    its trees at once; None for anything else (native categorical splits, several classes, interaction cuts do not
    matter at prediction)."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    if type(clf) is not HistGradientBoostingClassifier or getattr(clf, "n_trees_per_iteration_", 0) != 1:
        return None
    if getattr(clf, "is_categorical_", None) is not None and np.any(clf.is_categorical_):
        return None
    trees = [predictors[0].nodes for predictors in clf._predictors]
    if not trees or any(t["is_categorical"].any() for t in trees):
        return None
    starts = np.cumsum([0] + [len(t) for t in trees[:-1]])
    nodes = np.concatenate(trees)
    index = np.arange(len(nodes))
    leaf = nodes["is_leaf"].astype(bool)
    offset = np.repeat(starts, [len(t) for t in trees])
    # children[i] = (right, left) as absolute indices; a leaf points to itself, so extra steps leave it there
    children = np.stack(
        [np.where(leaf, index, nodes["right"] + offset), np.where(leaf, index, nodes["left"] + offset)], axis=1
    ).astype(np.intp)
    feature = np.where(leaf, 0, nodes["feature_idx"]).astype(np.intp)
    threshold = nodes["num_threshold"].astype(np.float64)
    missing_left = nodes["missing_go_to_left"].astype(bool)
    value = nodes["value"].astype(np.float64)
    depth = int(nodes["depth"].max())
    roots = starts.astype(np.intp)
    baseline = float(np.asarray(clf._baseline_prediction).ravel()[0])
    n_features = clf.n_features_in_
    loss = clf._loss

    def proba(X: np.ndarray) -> np.ndarray:
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2 or X.shape[1] != n_features:
            raise ValueError(f"expected {n_features} features, got shape {X.shape}")
        n = len(X)
        if n > WALK_ROWS:  # many rows: sklearn's per-tree loop over all of them is the cheaper one
            return np.asarray(clf.predict_proba(X))[:, 1]
        rows = np.repeat(np.arange(n), len(roots))
        at = np.tile(roots, n)
        for _ in range(depth):
            x = X[rows, feature[at]]
            go_left = (x <= threshold[at]) | (np.isnan(x) & missing_left[at])
            at = children[at, go_left.view(np.uint8)]
        raw = baseline + value[at].reshape(n, len(roots)).sum(axis=1)
        return loss.predict_proba(raw.reshape(-1, 1))[:, 1]

    return proba


def compile_pipeline(pipeline) -> Scorer | None:
    """``columns -> P(positive)`` equivalent to ``pipeline.predict_proba(frame)[:, 1]``, or None."""
    from sklearn.compose import ColumnTransformer
    from sklearn.pipeline import Pipeline

    if not isinstance(pipeline, Pipeline) or len(pipeline.steps) != 2:
        return None
    pre, clf = pipeline.steps[0][1], pipeline.steps[1][1]
    if not isinstance(pre, ColumnTransformer) or not hasattr(clf, "predict_proba") or list(clf.classes_) != [0, 1]:
        return None
    predict = hist_gradient_boosting(clf) or (lambda x: np.asarray(clf.predict_proba(x))[:, 1])
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
        return np.asarray(predict(np.hstack(parts)), dtype="float64")

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
