"""The canary judge on synthetic samples and a hand-made serving log (pure: no Airflow, no I/O)."""

from __future__ import annotations

import itertools
import json

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import average_precision_score, roc_auc_score

from ml_ops.config import Canary, CanaryMetric
from ml_ops.rollout.judge import (
    _delong,
    _log_loss_test,
    average_precision,
    judge,
    row_log_loss,
    step_samples,
)

BASE_RATE = 0.02  # fraud-like
TRAFFIC = ["error_rate", "latency_ms", "score"]
QUALITY = ["log_loss", "roc_auc"]


def labelled(rng: np.random.Generator, n: int, auc: float = 0.92, logit_shift: float = 0.0):
    """Calibrated scores of a binormal model (latent N(d y, 1), AUC = Phi(d / sqrt 2)) at the base rate."""
    y = (rng.random(n) < BASE_RATE).astype(float)
    d = np.sqrt(2) * stats.norm.ppf(auc)
    x = rng.normal(d * y, 1.0)
    logit = np.log(BASE_RATE / (1 - BASE_RATE)) + d * x - d * d / 2 + logit_shift
    return 1 / (1 + np.exp(-logit)), y


def same_scores_lower_auc(rng: np.random.Generator, n: int, auc: float):
    """A worse ranking with exactly the champion's score distribution: champion-model scores handed out
    by the rank of a weaker model's latent variable."""
    scores, _ = labelled(rng, n)
    y = (rng.random(n) < BASE_RATE).astype(float)
    d = np.sqrt(2) * stats.norm.ppf(auc)
    x = rng.normal(d * y, 1.0)
    return np.sort(scores)[np.argsort(np.argsort(x))], y


def side(
    rng: np.random.Generator,
    n: int,
    *,
    latency: float = 1.0,
    error: float = 0.003,
    labels: int | None = None,
    quality: tuple | None = None,
    score_scale: float = 1.0,
) -> dict[str, np.ndarray]:
    """One route: n requests; ``labels`` labelled rows (default n) from ``quality`` (scores, labels) or the
    champion model."""
    s, y = quality if quality is not None else labelled(rng, n if labels is None else labels)
    return {
        "error_rate": (rng.random(n) < error).astype(float),
        "latency_ms": 5.0 * latency * rng.lognormal(0, 0.5, n),
        "score": np.minimum(score_scale * rng.beta(0.3, 8, n), 1.0),
        "label": y,
        "label_score": s,
    }


def by_name(verdict) -> dict:
    return {m.name: m for m in verdict.metrics}


@pytest.fixture()
def rng() -> np.random.Generator:
    return np.random.default_rng(7)


# --------------------------------------------------------------------------- traffic metrics


def test_identical_models_pass_on_every_default_metric(rng):
    v = judge(side(rng, 5000), side(rng, 20000), Canary())
    assert v.outcome == "pass" and v.score == 100, v.reason
    assert [m.name for m in v.metrics] == TRAFFIC + QUALITY  # accuracy only where configured
    assert all(m.verdict == "pass" for m in v.metrics)
    ll = by_name(v)["log_loss"]
    assert 60 < ll.positives_canary < 140 and ll.positives_champion > 300


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
    broken = {"error_rate": np.ones(500)}
    v = judge(broken, side(rng, 2000), Canary())
    assert v.outcome == "fail" and by_name(v)["latency_ms"].verdict == "nodata"
    assert by_name(v)["roc_auc"].verdict == "nodata"


def test_too_few_requests_is_nodata(rng):
    v = judge(side(rng, 150), side(rng, 5000), Canary())  # min_requests 200
    assert v.outcome == "nodata"
    assert {m.verdict for m in v.metrics if m.name in TRAFFIC} == {"nodata"}
    assert "150 canary" in v.reason and "need 200" in v.reason


def test_score_shift_alone_is_marginal_with_or_without_labels(rng):
    for labels in (None, 0):
        v = judge(side(rng, 2000, score_scale=30, labels=labels), side(rng, 2000, labels=labels), Canary())
        assert by_name(v)["score"].verdict == "high" and v.outcome == "marginal", v.reason


# --------------------------------------------------------------------------- quality metrics


def test_a_worse_ranking_with_the_same_score_distribution_fails_on_quality(rng):
    worse = same_scores_lower_auc(rng, 20000, auc=0.82)
    v = judge(side(rng, 20000, quality=worse), side(rng, 20000), Canary())
    m = by_name(v)
    auc = m["roc_auc"]
    assert auc.verdict == "low" and auc.effect == pytest.approx(-0.10, abs=0.03) and auc.p_value < 0.001
    assert auc.canary_value == pytest.approx(roc_auc_score(worse[1], worse[0]))
    assert m["log_loss"].verdict == "high"  # the same scores on a worse ranking are also worse probabilities
    assert m["score"].verdict == "pass"  # the score distribution alone cannot see it
    assert v.outcome == "fail" and "critical roc_auc" in v.reason and "critical log_loss" in v.reason


def test_a_miscalibrated_model_fails_on_log_loss_though_its_ranking_is_the_same(rng):
    overconfident = labelled(rng, 10000, logit_shift=1.65)  # x1.5 log loss (bench), the same AUC
    v = judge(side(rng, 10000, quality=overconfident), side(rng, 10000), Canary())
    m = by_name(v)
    assert m["log_loss"].verdict == "high" and m["log_loss"].effect > 0.3, m["log_loss"].reason
    assert m["roc_auc"].verdict == "pass"
    assert v.outcome == "fail" and "log_loss" in v.reason and "%" in v.reason


def test_a_better_model_passes_the_one_sided_quality_tests(rng):
    better = labelled(rng, 20000, auc=0.96)
    v = judge(side(rng, 20000, quality=better), side(rng, 20000), Canary())
    assert by_name(v)["roc_auc"].effect > 0.02 and by_name(v)["log_loss"].effect < 0
    assert {m.verdict for m in v.metrics} == {"pass"} and v.outcome == "pass"


def test_too_few_labels_or_positives_is_nodata_and_does_not_block_the_step(rng):
    few_labels = judge(side(rng, 2000, labels=150), side(rng, 2000), Canary())  # min_labels 200
    few_positives = judge(side(rng, 2000, labels=1000), side(rng, 20000), Canary())  # ~20 < min_per_class 30
    for v in (few_labels, few_positives):
        for name in QUALITY:
            assert by_name(v)[name].verdict == "nodata", by_name(v)[name].reason
        assert v.outcome == "pass" and "not judged yet: log_loss, roc_auc" in v.reason
    assert "need 200 labels and 30 of each class per side" in by_name(few_positives)["roc_auc"].reason
    none = judge(side(rng, 2000, labels=0), side(rng, 2000, labels=0), Canary())
    ll = by_name(none)["log_loss"]
    assert ll.verdict == "nodata" and ll.n_canary == 0 and np.isnan(ll.canary_value)


def test_accuracy_is_judged_only_where_configured_and_cannot_see_a_worse_ranking(rng):
    assert "accuracy" not in Canary().metrics
    worse = same_scores_lower_auc(rng, 20000, auc=0.82)
    policy = Canary(metrics={"accuracy": CanaryMetric(direction="decrease", tolerance=0.02, critical=True)})
    acc = by_name(judge(side(rng, 20000, quality=worse), side(rng, 20000), policy))["accuracy"]
    assert acc.canary_value > 0.97 and acc.champion_value > 0.97  # ~98 % for any model at a 2 % base rate
    assert acc.verdict == "pass"


def test_pr_auc_where_configured(rng):
    policy = Canary(metrics={"pr_auc": CanaryMetric(direction="decrease", tolerance=0.02, critical=True)})
    worse = same_scores_lower_auc(rng, 10000, auc=0.75)
    v = judge(side(rng, 10000, quality=worse), side(rng, 10000), policy)
    assert by_name(v)["pr_auc"].verdict == "low" and v.outcome == "fail", v.reason
    same = judge(side(rng, 10000), side(rng, 10000), policy)
    assert by_name(same)["pr_auc"].verdict == "pass" and same.outcome == "pass"


def test_delong_matches_sklearn_and_the_brute_force_variance(rng):
    s, y = labelled(rng, 600)
    s = np.round(s, 2)  # ties count half
    auc, var = _delong(s[y > 0.5], s[y < 0.5])
    assert auc == pytest.approx(roc_auc_score(y, s))
    pos, neg = s[y > 0.5], s[y < 0.5]
    psi = (pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :])  # DeLong (1988), directly
    brute = psi.mean(1).var(ddof=1) / pos.size + psi.mean(0).var(ddof=1) / neg.size
    assert var == pytest.approx(brute)


def test_average_precision_matches_sklearn(rng):
    s, y = labelled(rng, 3000)
    for scores in (s, np.round(s, 2)):
        assert average_precision(scores, y)[0] == pytest.approx(average_precision_score(y, scores))


def test_log_loss_is_post_stratified_at_the_pooled_base_rate():
    # identical per-class losses, different positive counts: a raw mean would differ by x2, this does not
    c = (np.r_[np.full(10, 0.2), np.full(990, 0.01)], np.r_[np.ones(10), np.zeros(990)])
    h = (np.r_[np.full(20, 0.2), np.full(980, 0.01)], np.r_[np.ones(20), np.zeros(980)])
    assert row_log_loss(*c).mean() / row_log_loss(*h).mean() < 0.65
    effect, p_hi, p_lo, llc, llh = _log_loss_test(c, h, 0.2, True, True)
    assert effect == pytest.approx(0.0) and llc == pytest.approx(llh)
    assert p_hi == 1.0 and p_lo == 1.0  # constant losses per class: the zero effect is exact, beyond neither way
    worse = (np.r_[np.full(10, 0.1), np.full(990, 0.01)], c[1])  # loss of each positive 2.3 instead of 1.6
    effect, p_hi, _, _, _ = _log_loss_test(worse, h, 0.2, True, False)
    assert effect > 0.2 and p_hi == 0.0


def test_either_direction_splits_alpha_and_flags_both_ways(rng):
    policy = Canary(metrics={"roc_auc": CanaryMetric(direction="either", tolerance=0.01)})
    better = judge(side(rng, 20000, quality=labelled(rng, 20000, auc=0.98)), side(rng, 20000), policy)
    assert by_name(better)["roc_auc"].verdict == "high" and better.outcome == "fail"  # non-critical, score 0


# --------------------------------------------------------------------------- plumbing


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
    assert "log_loss.p_value" not in flat  # nodata: nothing to log
    judged = judge(side(rng, 5000), side(rng, 5000), Canary()).mlflow_metrics()
    assert {"roc_auc.canary", "roc_auc.positives_canary", "log_loss.passed"} <= set(judged)


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
            "ts": pd.to_datetime(["2026-11-23 01:00"] * 5 + ["2026-11-23 02:00"], utc=True),
        }
    )
    s = step_samples(logs, feedback)
    can, champ = s["canary"], s["champion"]
    assert sorted(can["error_rate"]) == [0.0, 1.0]  # b ok (two rows, one request), c failed
    assert list(can["latency_ms"]) == [7.0]  # one value per successful request
    assert sorted(can["score"]) == [0.2, 0.7]
    assert sorted(zip(can["label_score"], can["label"], strict=True)) == [(0.2, 0.0), (0.7, 1.0)]  # corrected
    assert sorted(champ["error_rate"]) == [0.0, 0.0, 1.0]
    assert sorted(champ["latency_ms"]) == [3.0, 4.0] and sorted(champ["score"]) == [0.1, 0.9]
    assert sorted(zip(champ["label_score"], champ["label"], strict=True)) == [(0.1, 1.0), (0.9, 1.0)]
    # no feedback: no labels; no logs or a missing route: empty arrays
    assert step_samples(logs, None)["canary"]["label"].size == 0
    for empty in (None, logs.iloc[0:0]):
        out = step_samples(empty, None)
        assert all(a.size == 0 for r in ("canary", "champion") for a in out[r].values())
    only = step_samples(logs[logs["route"] == "champion"], feedback)
    assert all(a.size == 0 for a in only["canary"].values()) and only["champion"]["score"].size == 2


def test_labels_and_scores_must_pair_up(rng):
    bad = {**side(rng, 500), "label": np.ones(3)}
    with pytest.raises(ValueError, match="pair up"):
        judge(bad, side(rng, 500), Canary())


def test_every_metric_of_the_module_is_configurable():
    from ml_ops.rollout.judge import METRICS

    for name, direction in itertools.product(METRICS, ("increase", "decrease", "either")):
        Canary(metrics={name: CanaryMetric(direction=direction, tolerance=0.1)})
