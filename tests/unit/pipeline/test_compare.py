"""Champion/challenger: pure decision rules + one end-to-end flow on a real sqlite MLflow store."""

import json

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from sklearn.datasets import make_classification
from sklearn.metrics import roc_auc_score

from ml_ops.pipeline.compare import BootstrapResult, Policy, compare_and_record, decide, paired_bootstrap
from ml_ops.pipeline.registry import current_version, promote
from ml_ops.pipeline.train import train_and_register
from tests.mlflow_store import fresh_store

NUMERIC = [f"f{i}" for i in range(6)]
CATEGORICAL = ["channel"]


# ----------------------------------------------------------------------------- pure functions

M = {"roc_auc": 0.80, "pr_auc": 0.40, "f1": 0.5, "precision": 0.6, "recall": 0.4, "log_loss": 0.30}


def test_first_model_checks_floors_only():
    policy = Policy(floors={"roc_auc": 0.7}, min_improvement={"roc_auc": 0.5})
    d = decide(M, None, None, policy)
    assert d.promote and [c["name"] for c in d.checks] == ["floor:roc_auc"]


def test_floor_failure_rejects():
    d = decide(M, None, None, Policy(floors={"roc_auc": 0.85}))
    assert not d.promote and "floor:roc_auc" in d.reason
    assert d.checks[0] == {
        "name": "floor:roc_auc",
        "metric": "roc_auc",
        "value": 0.80,
        "threshold": 0.85,
        "passed": False,
    }


def test_log_loss_is_lower_is_better():
    champion = dict(M, log_loss=0.30)
    better, worse = dict(M, log_loss=0.25), dict(M, log_loss=0.35)
    policy = Policy(primary_metric="log_loss", floors={"log_loss": 0.32}, min_improvement={"log_loss": 0.02})
    ci_below = BootstrapResult(-0.05, -0.08, -0.01, 1000, "log_loss")
    assert decide(better, champion, ci_below, policy).promote
    d = decide(worse, champion, BootstrapResult(0.05, 0.01, 0.08, 1000, "log_loss"), policy)
    assert not d.promote and {c["name"] for c in d.checks if not c["passed"]} == {
        "floor:log_loss",
        "min_improvement:log_loss",
        "significant:log_loss",
    }


def test_significance_requires_ci_above_zero():
    champion = dict(M, roc_auc=0.79)
    policy = Policy(min_improvement={"roc_auc": 0.005})
    crossing = BootstrapResult(0.01, -0.002, 0.02, 1000)
    assert not decide(M, champion, crossing, policy).promote
    assert decide(M, champion, BootstrapResult(0.01, 0.001, 0.02, 1000), policy).promote
    assert decide(M, champion, crossing, Policy(require_significant=False)).promote
    assert not decide(M, champion, None, policy).promote  # significance cannot be shown


def test_paired_bootstrap_matches_sklearn_and_handles_single_class():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 400)
    a, b = rng.random(400) + 0.3 * y, rng.random(400) + 0.1 * y
    r = paired_bootstrap(y, a, b, n=300)
    assert r.diff == pytest.approx(roc_auc_score(y, a) - roc_auc_score(y, b))
    assert r.ci_low < r.diff < r.ci_high and r.ci_low > 0 and r.n == 300
    same = paired_bootstrap(y, a, a, n=100)
    assert same.diff == same.ci_low == same.ci_high == 0
    rare = np.zeros(30, int)
    rare[0] = 1  # most resamples miss the single positive -> dropped, not NaN
    r = paired_bootstrap(rare, rng.random(30), rng.random(30), n=200)
    assert 0 < r.n < 200 and np.isfinite(r.ci_low)


def test_bootstrap_is_fast_enough():
    import time

    rng = np.random.default_rng(0)
    y = (rng.random(20_000) < 0.05).astype(int)
    t = time.perf_counter()
    paired_bootstrap(y, rng.random(20_000) + y, rng.random(20_000), n=1000)
    assert time.perf_counter() - t < 15  # ~2 s on 2 idle cores


# ----------------------------------------------------------------------------- end to end


def make_frame(n, seed) -> pd.DataFrame:
    X, y = make_classification(n, 6, n_informative=5, n_redundant=0, weights=[0.8], class_sep=0.8, random_state=seed)
    df = pd.DataFrame(X, columns=NUMERIC)
    df["channel"] = np.where(X[:, 5] > 0, "online", "pos")
    df["is_fraud"] = y
    return df


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    df = make_frame(4000, 1)
    return {"uri": fresh_store(tmp), "art": str(tmp / "artifacts"), "train": df.iloc[:2000], "holdout": df.iloc[2000:]}


def _train(store, numeric):
    return train_and_register(
        store["train"],
        store["holdout"],
        tracking_uri=store["uri"],
        experiment="train",
        model_name="fraud",
        target="is_fraud",
        numeric=numeric,
        categorical=CATEGORICAL,
        estimator="sklearn.linear_model.LogisticRegression",
        params={"max_iter": 300},
        data_uris={},
        tags={"data_window": "w"},
        reference_sample_rows=200,
        artifact_location=store["art"],
    )


def _compare(store, version, **kw):
    policy = Policy(floors={"roc_auc": 0.6}, min_improvement={"roc_auc": 0.0}, bootstrap_samples=300)
    return compare_and_record(
        tracking_uri=store["uri"],
        model_name="fraud",
        challenger_version=version,
        holdout_df=store["holdout"],
        target="is_fraud",
        policy=policy,
        experiment="compare",
        artifact_location=store["art"],
        **kw,
    )


def test_champion_challenger_flow(store):
    client = MlflowClient(store["uri"])
    weak = _train(store, ["f0", "f1"])  # informative but missing most signal
    first = _compare(store, weak.version)
    assert first.promote and first.champion_version is None and first.reason.startswith("promote: first")
    assert current_version(client, "fraud", "champion") is None  # compare never moves aliases
    promote(client, "fraud", weak.version, reason=first.reason)

    strong = _train(store, NUMERIC)
    win = _compare(store, strong.version, idempotency_key="cmp/strong")
    assert win.promote, win.reason
    assert win.bootstrap.ci_low > 0 and win.champion_version == weak.version
    tags = client.get_model_version("fraud", str(strong.version)).tags
    assert tags["decision"] == "promote" and tags["compared_to"] == str(weak.version)
    assert float(tags["roc_auc_ci_low"]) > 0
    json.dumps(win.to_dict())  # JSON-serialisable for XCom
    assert (
        _compare(store, strong.version, idempotency_key="cmp/strong").comparison_run_id == win.comparison_run_id
    )  # retried task reuses the recorded decision
    promote(client, "fraud", strong.version, reason=win.reason)

    # identical config -> identical scores: diff 0, CI touches 0 -> not significant
    twin = _train(store, NUMERIC)
    tie = _compare(store, twin.version)
    assert not tie.promote and "significant:roc_auc" in tie.reason
    # a worse challenger against the strong champion loses too
    worse = _compare(store, weak.version)
    assert not worse.promote and worse.bootstrap.ci_high < 0
    assert current_version(client, "fraud", "champion") == strong.version
    run = client.get_run(worse.comparison_run_id)
    assert run.data.tags["decision"] == "reject" and "diff.roc_auc" in run.data.metrics
