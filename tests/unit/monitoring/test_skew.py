"""The nightly skew check on a real S3 endpoint: raw events served with online features (a real SQLite store)
and logged as the gateway logs them match their batch recomputation; a window changed in the online path only
is caught, naming the feature."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import numpy as np
import pytest

from ml_ops import layout
from ml_ops.config import load_pipeline_by_name
from ml_ops.features import online as online_path
from ml_ops.features.definition import DAY_NS
from ml_ops.features.materialize import materialize
from ml_ops.features.online import OnlineFeatures, entity_keyer
from ml_ops.features.store import open_store
from ml_ops.monitoring.skew import skew_check
from ml_ops.pipeline.history import mark_validated
from ml_ops.pipeline.steps import uri
from ml_ops.privacy import Pseudonymizer
from ml_ops.rollout.deployment import INPUT_MODE_COLUMN, raw_log_name, serving_logs_prefix
from ml_ops.serving.logbuffer import PartitionedLog
from ml_ops.serving.service import LOG_DTYPES

KEY = b"skew-test-key"
START = date(2026, 7, 1)


@pytest.fixture(scope="module")
def days():
    from ml_ops.local.sim import generate_transactions

    raw = generate_transactions(START, 9, rows_per_day=400, n_customers=120, seed=9, label_delay_days=2)
    day = raw["ts"].dt.strftime("%Y-%m-%d")
    return {
        (START + timedelta(days=i)).isoformat(): raw[day == (START + timedelta(days=i)).isoformat()] for i in range(9)
    }


def serve(cfg, s3, tmp_path, days) -> str:
    """The last day's events served as raw events by the online path (store materialised from the 8 days before,
    whose raw partitions are validated in S3), logged as the gateway logs them. Returns the served day."""
    names = sorted(days)
    for ds in names[:-1]:
        s3.write_parquet(days[ds].reset_index(drop=True), uri(cfg, layout.RAW, ds))
        mark_validated(s3, cfg, ds, rows=len(days[ds]))
    store = open_store(f"sqlite:///{tmp_path / cfg.name / 'features.db'}")
    materialize(cfg, s3, store, KEY)
    online = OnlineFeatures(cfg, store, entity_keyer(cfg, KEY))
    today = days[names[-1]].sort_values("ts").reset_index(drop=True)
    ts = today["ts"].to_numpy("datetime64[ns]").view(np.int64)
    feats, _ = online.compute(today.customer_id.tolist(), today.transaction_id.tolist(), ts, today.amount.to_numpy())
    store.close()

    logs = PartitionedLog(s3, name="predictions", base_dtypes=LOG_DTYPES)
    at = datetime.fromisoformat(names[-1]).replace(hour=12, tzinfo=timezone.utc)
    inputs = [*cfg.features.numeric, *cfg.features.categorical]
    columns = {
        "request_id": [f"r{i}" for i in range(len(today))],
        "row": 0,
        "ts": at,
        "version": 1,
        "route": "champion",
        "routing_key": today.customer_id.tolist(),
        "latency_ms": 1.0,
        "model_cpu_ms": 0.5,
        "score": 0.1,
        "error": None,
        **{c: today[c].tolist() for c in inputs},
        **{c: v for c, v in feats.items()},
        "customer_id": today.customer_id.tolist(),
        "transaction_id": today.transaction_id.tolist(),
        raw_log_name("ts"): ts.tolist(),
        INPUT_MODE_COLUMN: "raw",
    }
    logs.append(
        serving_logs_prefix(cfg),
        at,
        len(today),
        Pseudonymizer(cfg, KEY).apply(columns),
        {"event_ts": "datetime64[ns, UTC]"},
    )
    assert logs.flush()
    return names[-1]


def test_served_online_features_match_their_batch_recomputation(s3_store, tmp_path, days):
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": "fraud_skew_ok"})
    ds = serve(cfg, s3_store, tmp_path, days)
    result = skew_check(cfg, s3_store, ds, KEY)
    assert result["status"] == "compared" and result["rows"] == len(days[ds]) and result["unmatched"] == 0
    assert not result["alarm"], result
    assert all(f["mismatched"] == 0 for f in result["features"].values()), result["features"]
    assert set(result["features"]) == set(cfg.generated_features)
    assert result["raw_days"] == sorted(days)[1:-1] and result["served_days"] == [ds]


def test_a_window_changed_in_the_online_path_only_is_caught(s3_store, tmp_path, days, monkeypatch):
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": "fraud_skew_bad"})
    windows = {**online_path.COUNT_WINDOWS_NS, "entity_txn_count_24h": 2 * DAY_NS}  # a serving-side bug
    monkeypatch.setattr(online_path, "COUNT_WINDOWS_NS", windows)
    ds = serve(cfg, s3_store, tmp_path, days)
    result = skew_check(cfg, s3_store, ds, KEY)
    assert result["alarm"] and result["alarm_features"] == ["entity_txn_count_24h"], result
    bad = result["features"]["entity_txn_count_24h"]
    assert bad["mismatch_share"] > cfg.monitoring.skew_threshold and bad["max_abs_diff"] >= 1
    assert result["features"]["entity_txn_count_1h"]["mismatched"] == 0
    assert "entity_txn_count_24h" in result["text"]


def test_without_raw_event_traffic_there_is_nothing_to_compare(s3_store):
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": "fraud_skew_none"})
    assert skew_check(cfg, s3_store, "2026-07-05", KEY)["status"] == "no raw-event predictions logged"
