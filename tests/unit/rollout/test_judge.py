"""The canary judge on synthetic samples and a hand-made serving log (pure: no Airflow, no I/O)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_ops.config import Canary
from ml_ops.rollout.judge import METRICS, judge, step_samples


def side(
    rng: np.random.Generator,
    n: int,
    *,
    latency: float = 1.0,
    error: float = 0.003,
    accuracy: float = 0.9,
    labels: int | None = None,
    score_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    return {
        "error_rate": (rng.random(n) < error).astype(float),
        "latency_ms": 5.0 * latency * rng.lognormal(0, 0.5, n),
        "score": np.minimum(score_scale * rng.beta(0.3, 8, n), 1.0),
        "accuracy": (rng.random(n if labels is None else labels) < accuracy).astype(float),
    }


def by_name(verdict) -> dict:
    return {m.name: m for m in verdict.metrics}


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


def test_identical_models_pass(rng):
    v = judge(side(rng, 2000), side(rng, 8000), Canary())
    assert v.outcome == "pass" and v.score == 100
    assert [m.name for m in v.metrics] == list(METRICS)
    assert all(m.verdict == "pass" for m in v.metrics)


def test_latency_regression_of_20_percent_fails(rng):
    v = judge(side(rng, 3000, latency=1.2), side(rng, 3000), Canary())
    lat = by_name(v)["latency_ms"]
    assert lat.verdict == "high" and lat.effect == pytest.approx(0.2, abs=0.05) and lat.p_value < 0.01
    assert v.outcome == "fail" and "latency_ms" in v.reason and "%" in v.reason


def test_latency_within_tolerance_passes(rng):
    v = judge(side(rng, 3000, latency=1.03), side(rng, 3000), Canary())
    assert by_name(v)["latency_ms"].verdict == "pass" and v.outcome == "pass"


def test_critical_error_rate_rise_fails_outright_even_with_a_high_score(rng):
    policy = Canary(
        metrics={**Canary().metrics, "latency_ms": Canary().metrics["latency_ms"].model_copy(update={"weight": 20.0})}
    )  # the score stays above pass_score without error_rate
    v = judge(side(rng, 2000, error=0.08), side(rng, 2000), policy)
    assert by_name(v)["error_rate"].verdict == "high"
    assert v.score >= policy.pass_score and v.outcome == "fail"
    assert v.reason.startswith("fail") and "critical error_rate" in v.reason


def test_a_canary_whose_every_request_fails_is_a_fail_not_nodata(rng):
    broken = {"error_rate": np.ones(500), "latency_ms": np.empty(0), "score": np.empty(0), "accuracy": np.empty(0)}
    v = judge(broken, side(rng, 2000), Canary())
    assert v.outcome == "fail" and by_name(v)["latency_ms"].verdict == "nodata"


def test_too_few_requests_is_nodata(rng):
    v = judge(side(rng, 150), side(rng, 5000), Canary())  # min_requests 200
    assert v.outcome == "nodata"
    assert {m.verdict for m in v.metrics} == {"nodata"}
    assert "150 canary" in v.reason and "need 200" in v.reason


def test_no_labels_leaves_accuracy_unjudged_but_the_step_can_pass(rng):
    v = judge(side(rng, 2000, labels=0), side(rng, 2000, labels=50), Canary())
    acc = by_name(v)["accuracy"]
    assert acc.verdict == "nodata" and acc.n_canary == 0 and np.isnan(acc.canary_value)
    assert v.outcome == "pass" and v.score == 100 and "accuracy" in v.reason


def test_accuracy_drop_is_detected(rng):
    v = judge(side(rng, 6000, accuracy=0.85), side(rng, 6000), Canary())
    acc = by_name(v)["accuracy"]
    assert acc.verdict == "low" and acc.effect == pytest.approx(-0.05, abs=0.02)
    assert v.outcome == "fail" and "accuracy" in v.reason


def test_score_shift_alone_is_marginal_with_or_without_labels(rng):
    for labels in (None, 0):
        v = judge(side(rng, 2000, score_scale=30, labels=labels), side(rng, 2000), Canary())
        assert by_name(v)["score"].verdict == "high" and v.outcome == "marginal", v.reason


def test_metrics_missing_from_the_policy_are_not_judged_and_unknown_ones_refused(rng):
    policy = Canary(metrics={"latency_ms": Canary().metrics["latency_ms"]})
    v = judge(side(rng, 500), side(rng, 500), policy)
    assert [m.name for m in v.metrics] == ["latency_ms"]
    with pytest.raises(ValueError, match="latency"):
        judge(side(rng, 500), side(rng, 500), Canary(metrics={"latency": Canary().metrics["latency_ms"]}))


def test_to_dict_is_json_and_mlflow_metrics_are_flat_floats(rng):
    v = judge(side(rng, 500, labels=0), side(rng, 500), Canary())
    back = json.loads(json.dumps(v.to_dict(), allow_nan=False))
    assert back["outcome"] == v.outcome and back["metrics"][3]["canary_value"] is None
    flat = v.mlflow_metrics()
    assert flat["score"] == v.score and "latency_ms.p_value" in flat and "latency_ms.canary" in flat
    assert all(isinstance(x, float) and np.isfinite(x) for x in flat.values())
    assert "accuracy.p_value" not in flat  # nodata: nothing to log


def test_step_samples_from_a_hand_made_log():
    logs = pd.DataFrame(
        {
            "request_id": ["a", "b", "b", "c", "d", "e"],
            "row": [0, 0, 1, 0, 0, 0],
            "ts": pd.Timestamp("2026-11-23", tz="UTC"),
            "version": [1, 2, 2, 2, 1, None],
            "route": ["champion", "canary", "canary", "canary", "champion", "champion"],
            "routing_key": "k",
            "latency_ms": [3.0, 7.0, 7.0, 9.0, 4.0, np.nan],
            "score": [0.9, 0.2, 0.7, np.nan, 0.1, np.nan],
            "error": [None, None, None, "timeout", None, "bad input"],
        }
    )
    feedback = pd.DataFrame(
        {
            "request_id": ["a", "b", "b", "c", "d", "b"],
            "row": [0, 0, 1, 0, 0, 1],
            "label": [1, 0, 0, 1, 1, 1],  # the later label of (b, 1) replaces the first
            "ts": pd.to_datetime(
                [
                    "2026-11-23 01:00",
                    "2026-11-23 01:00",
                    "2026-11-23 01:00",
                    "2026-11-23 01:00",
                    "2026-11-23 01:00",
                    "2026-11-23 02:00",
                ],
                utc=True,
            ),
        }
    )
    s = step_samples(logs, feedback, threshold=0.5)
    can, champ = s["canary"], s["champion"]
    assert sorted(can["error_rate"]) == [0.0, 1.0]  # b ok (two rows, one request), c failed
    assert list(can["latency_ms"]) == [7.0]  # one value per successful request
    assert sorted(can["score"]) == [0.2, 0.7]
    assert sorted(can["accuracy"]) == [1.0, 1.0]  # 0.2 vs 0, 0.7 vs the corrected 1
    assert sorted(champ["error_rate"]) == [0.0, 0.0, 1.0]
    assert sorted(champ["latency_ms"]) == [3.0, 4.0] and sorted(champ["score"]) == [0.1, 0.9]
    assert sorted(champ["accuracy"]) == [0.0, 1.0]  # a: 0.9 vs 1; d: 0.1 vs 1
    # no feedback: no accuracy; no logs or a missing route: empty arrays
    assert step_samples(logs, None)["canary"]["accuracy"].size == 0
    for empty in (None, logs.iloc[0:0]):
        out = step_samples(empty, None)
        assert all(a.size == 0 for r in ("canary", "champion") for a in out[r].values())
    only = step_samples(logs[logs["route"] == "champion"], feedback)
    assert all(a.size == 0 for a in only["canary"].values()) and only["champion"]["score"].size == 2
