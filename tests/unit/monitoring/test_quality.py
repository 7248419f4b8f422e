"""Daily quality and the ADWIN detector, including a simulated concept change."""

from __future__ import annotations

from datetime import date

import numpy as np
import pytest
from sklearn.metrics import precision_score, recall_score, roc_auc_score

from ml_ops.local.sim import ConceptChange, generate_transactions
from ml_ops.monitoring.quality import adwin, quality_check, quality_metrics
from ml_ops.pipeline.train import build_model

NUMERIC = ["amount", "customer_age", "account_age_days"]
CATEGORICAL = ["merchant_category", "channel", "country", "device"]


def test_adwin_quiet_on_a_stationary_stream():
    rng = np.random.default_rng(0)
    fired = [adwin(rng.random(3000) < 0.1).detected for _ in range(20)]
    assert sum(fired) == 0


def test_adwin_finds_a_step_change_after_it_happens():
    rng = np.random.default_rng(1)
    stream = np.r_[rng.random(2000) < 0.05, rng.random(2000) < 0.2]
    res = adwin(stream)
    assert res.detected and 2000 <= res.index < 2600
    assert res.mean_before == pytest.approx(0.05, abs=0.02) and res.mean_after > 0.1
    with pytest.raises(ValueError, match=r"\[0, 1\]"):
        adwin([0.5, 2.0])


def test_metrics_match_sklearn():
    rng = np.random.default_rng(2)
    y = rng.random(500) < 0.2
    s = np.clip(y * 0.4 + rng.random(500) * 0.6, 0, 1)
    m = quality_metrics(y, s)
    assert m["roc_auc"] == pytest.approx(roc_auc_score(y, s))
    assert m["precision"] == pytest.approx(precision_score(y, s >= 0.5))
    assert m["recall"] == pytest.approx(recall_score(y, s >= 0.5))
    assert quality_metrics([0, 0], [0.1, 0.2])["roc_auc"] is None


def test_too_few_labels_give_no_verdict():
    res = quality_check([0, 1] * 10, [0.9, 0.1] * 10, reference_auc=0.9, quality_drop=0.05)
    assert not res.alarm and "too few" in res.reasons[0]


def test_concept_change_is_a_quality_alarm():
    change = date(2026, 1, 8)
    df = generate_transactions(
        date(2026, 1, 1), 10, rows_per_day=3000, n_customers=2000, events=[ConceptChange(change)]
    )
    day = df["ts"].dt.normalize()
    train = df[day < "2026-01-05"]
    holdout = df[(day >= "2026-01-05") & (day < "2026-01-08")]
    model = build_model(
        "sklearn.linear_model.LogisticRegression", {"C": 1.0, "max_iter": 300}, NUMERIC, CATEGORICAL
    ).fit(train, train["is_fraud"])
    ref_auc = roc_auc_score(holdout["is_fraud"], model.predict_proba(holdout)[:, 1])
    assert ref_auc > 0.8

    before = holdout[holdout["ts"].dt.normalize() == "2026-01-07"]
    res = quality_check(before["is_fraud"], model.predict_proba(before)[:, 1], reference_auc=ref_auc, quality_drop=0.05)
    assert not res.alarm, res.reasons

    # the labelled stream around the change: two days before it, two after, in time order
    stream = df[(day >= "2026-01-06") & (day < "2026-01-10")]
    recent = (stream["ts"].dt.normalize() == "2026-01-09").to_numpy()
    res = quality_check(
        stream["is_fraud"], model.predict_proba(stream)[:, 1], reference_auc=ref_auc, quality_drop=0.05, recent=recent
    )
    assert res.alarm and res.auc_drop >= 0.05, res
    assert any("roc_auc" in r for r in res.reasons)
    assert res.to_dict()["metrics"]["n"] == recent.sum()


def test_adwin_one_sided_sees_only_its_direction():
    rng = np.random.default_rng(3)
    falls = np.r_[rng.random(2000) < 0.2, rng.random(2000) < 0.05]
    assert adwin(falls).detected and adwin(falls, direction="decrease").detected
    assert not adwin(falls, direction="increase").detected
    rises = falls[::-1]
    assert adwin(rises, direction="increase").detected and not adwin(rises, direction="decrease").detected
    with pytest.raises(ValueError, match="direction"):
        adwin(falls, direction="up")


def test_an_error_rate_that_drops_is_reported_not_alarmed():
    """A champion whose errors fall (easier traffic, fixed upstream data) must not page anyone or ask for
    a retrain: the detector alarms on deterioration only and notes the improvement."""
    rng = np.random.default_rng(4)
    n = 3000
    y = (rng.random(n) < 0.2).astype(int)
    noise = np.r_[np.full(n // 2, 0.45), np.full(n - n // 2, 0.1)]  # confident misses, then mostly right
    s = np.clip(np.where(y == 1, 0.7, 0.3) + rng.normal(0, noise), 0, 1)
    errors = (s - y) ** 2
    assert errors[n // 2 :].mean() < errors[: n // 2].mean() / 2
    res = quality_check(y, s, reference_auc=None, quality_drop=0.05)
    assert not res.alarm and not res.drift_detected and res.reasons == [], res.reasons
    assert len(res.notes) == 1 and "fell" in res.notes[0] and "not an alarm" in res.notes[0]
    # the same stream the other way round is a deterioration: an alarm
    worse = quality_check(y[::-1], s[::-1], reference_auc=None, quality_drop=0.05)
    assert worse.alarm and worse.drift_detected and "rose" in worse.reasons[0] and worse.notes == []
