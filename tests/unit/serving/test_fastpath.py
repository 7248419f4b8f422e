"""The gateway's numpy scorer gives the scikit-learn pipeline's own scores, or is not used."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_ops.pipeline.train import build_model
from ml_ops.serving.fastpath import WALK_ROWS, compile_pipeline, hist_gradient_boosting, verified

NUMERIC = ["amount", "age", "days"]
CATEGORICAL = ["channel", "country"]


def frame(rng, n: int, *, holes: bool) -> pd.DataFrame:
    df = pd.DataFrame({c: rng.normal(size=n) * 10 for c in NUMERIC})
    df["channel"] = rng.choice(["web", "pos", "app"], n).astype(object)
    df["country"] = rng.choice(["DE", "FR", "NL", "US"], n).astype(object)
    if holes:  # missing numbers, missing strings (None and NaN) and categories never seen in training
        df.loc[df.index % 5 == 0, "amount"] = np.nan
        df.loc[df.index % 7 == 0, "channel"] = None
        df.loc[df.index % 11 == 0, "country"] = np.nan
        df.loc[df.index % 13 == 0, "country"] = "XX"
    return df


def columns(df: pd.DataFrame) -> dict[str, np.ndarray]:
    return {c: (df[c].to_numpy(dtype="float64") if c in NUMERIC else df[c].to_numpy(dtype=object)) for c in df}


@pytest.mark.parametrize(
    "estimator, params",
    [
        ("sklearn.ensemble.HistGradientBoostingClassifier", {"max_iter": 30, "random_state": 0}),
        ("sklearn.linear_model.LogisticRegression", {"max_iter": 500}),
    ],
)
def test_numpy_scorer_gives_the_pipelines_scores(estimator, params):
    rng = np.random.default_rng(3)
    train = frame(rng, 2000, holes=True)
    y = ((train["amount"].fillna(0) > 5) ^ (train["channel"] == "web")).astype(int)
    pipeline = build_model(estimator, params, NUMERIC, CATEGORICAL).fit(train, y)
    fast = compile_pipeline(pipeline)
    assert fast is not None
    test = frame(rng, 500, holes=True)
    expected = pipeline.predict_proba(test)[:, 1]
    np.testing.assert_allclose(fast(columns(test), len(test)), expected, rtol=1e-9, atol=1e-12)
    one = test.iloc[[7]]  # one row, as most requests are
    np.testing.assert_allclose(fast(columns(one), 1), expected[[7]], rtol=1e-9, atol=1e-12)
    few = test.iloc[:WALK_ROWS]  # a small batch: the trees walked at once
    np.testing.assert_allclose(fast(columns(few), len(few)), expected[:WALK_ROWS], rtol=1e-9, atol=1e-12)


def test_the_tree_walk_gives_hist_gradient_boostings_scores_with_missing_values():
    from sklearn.ensemble import HistGradientBoostingClassifier

    rng = np.random.default_rng(5)
    X = rng.normal(size=(3000, 6))
    X[rng.random(X.shape) < 0.1] = np.nan  # NaN goes where each split learnt to send it
    y = ((np.nan_to_num(X[:, 0]) + np.isnan(X[:, 1]) + rng.normal(size=3000)) > 0.5).astype(int)
    clf = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(X, y)
    walk = hist_gradient_boosting(clf)
    test = rng.normal(size=(WALK_ROWS, 6))
    test[rng.random(test.shape) < 0.2] = np.nan
    np.testing.assert_allclose(walk(test), clf.predict_proba(test)[:, 1], rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(walk(test[:1]), clf.predict_proba(test[:1])[:, 1], rtol=1e-12, atol=1e-15)
    with pytest.raises(ValueError, match="expected 6 features"):
        walk(test[:, :5])
    native = HistGradientBoostingClassifier(max_iter=5, categorical_features=[0]).fit(
        np.c_[rng.integers(0, 4, 3000), X[:, 1:]], y
    )
    assert hist_gradient_boosting(native) is None  # categorical splits: sklearn's own predict_proba


def test_unknown_steps_keep_the_pipeline():
    from sklearn.compose import ColumnTransformer
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import MinMaxScaler, OneHotEncoder

    rng = np.random.default_rng(4)
    df, y = frame(rng, 300, holes=False), rng.integers(0, 2, 300)
    other_scaler = Pipeline(
        [
            ("pre", ColumnTransformer([("num", Pipeline([("s", MinMaxScaler())]), NUMERIC)])),
            ("clf", LogisticRegression()),
        ]
    ).fit(df, y)
    dropping = Pipeline(
        [
            (
                "pre",
                ColumnTransformer(
                    [("cat", Pipeline([("o", OneHotEncoder(drop="first", sparse_output=False))]), CATEGORICAL)]
                ),
            ),
            ("clf", LogisticRegression()),
        ]
    ).fit(df, y)
    assert compile_pipeline(other_scaler) is None
    assert compile_pipeline(dropping) is None
    assert compile_pipeline(LogisticRegression().fit(df[NUMERIC], y)) is None


def test_verified_names_a_mismatch_and_skips_rows_the_pipeline_rejects():
    row = {"x": np.array([1.0])}

    def reference(cols, n):
        if np.isnan(cols["x"]).any():
            raise ValueError("NaN")
        return cols["x"] * 2

    assert verified(lambda cols, n: cols["x"] * 2, reference, [row, {"x": np.array([np.nan])}]) is None
    assert "differ" in verified(lambda cols, n: cols["x"] * 3, reference, [row])
    assert verified(lambda cols, n: cols["x"], reference, [{"x": np.array([np.nan])}]) is not None  # nothing compared
