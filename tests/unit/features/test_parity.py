"""One definition, two executions: features computed online, one event at a time from the online store (real
SQLite and real Redis), equal the batch features of the same events, row for row; and so do the model's scores."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ml_ops.config import load_pipeline_by_name
from ml_ops.features.definition import COUNT_WINDOWS_NS, FEATURE_COLUMNS_HISTORY
from ml_ops.features.online import OnlineFeatures, entity_keyer, make_events
from ml_ops.pipeline.features import build_features

KEY = b"parity-test-key"
START = date(2026, 5, 4)
FLOATS = [c for c in FEATURE_COLUMNS_HISTORY if c not in COUNT_WINDOWS_NS]


@pytest.fixture(scope="module")
def cfg():
    return load_pipeline_by_name("fraud")


@pytest.fixture(scope="module")
def days(cfg):
    """Nine simulated days of fraud transactions (150 customers: many are cold on the first day)."""
    from ml_ops.local.sim import generate_transactions

    raw = generate_transactions(START, 9, rows_per_day=500, n_customers=150, seed=3, label_delay_days=2)
    day = raw["ts"].dt.strftime("%Y-%m-%d")
    return [raw[day == (START + timedelta(days=i)).isoformat()].reset_index(drop=True) for i in range(9)]


def batch(cfg, today, history):
    f = cfg.features
    return build_features(
        today,
        history,
        entity=f.entity_column,
        timestamp=cfg.source.timestamp_column,
        amount=f.amount_column,
        passthrough=[cfg.source.id_column],
        time_parts=f.time_parts,
    )


def ns(frame, cfg) -> np.ndarray:
    return frame[cfg.source.timestamp_column].to_numpy("datetime64[ns]").view(np.int64)


def ingest(cfg, store, frames):
    key = entity_keyer(cfg, KEY)
    df = pd.concat(frames, ignore_index=True).sample(frac=1.0, random_state=0)  # arrival order does not matter
    events = make_events(
        [key(v) for v in df[cfg.features.entity_column]],
        df[cfg.source.id_column].tolist(),
        ns(df, cfg),
        df[cfg.features.amount_column].to_numpy(np.float64),
    )
    return store.ingest(cfg.name, events)


def replay(cfg, store, today, per_request: int = 1) -> pd.DataFrame:
    """Today's events sent in time order, ``per_request`` per call, as a gateway receives them."""
    online = OnlineFeatures(cfg, store, entity_keyer(cfg, KEY))
    today = today.sort_values(cfg.source.timestamp_column, kind="stable")
    parts = []
    for i in range(0, len(today), per_request):
        rows = today.iloc[i : i + per_request]
        cols, recorded = online.compute(
            rows[cfg.features.entity_column].tolist(),
            rows[cfg.source.id_column].tolist(),
            ns(rows, cfg),
            rows[cfg.features.amount_column].to_numpy(np.float64),
        )
        assert all(recorded)
        parts.append(pd.DataFrame(cols, index=rows.index))
    return pd.concat(parts).loc[today.index]


def assert_same_features(online: pd.DataFrame, expected: pd.DataFrame, columns: list[str]) -> None:
    for c in columns:
        if c in FLOATS:
            np.testing.assert_allclose(online[c].to_numpy(), expected[c].to_numpy(), rtol=1e-9, err_msg=c)
        else:  # counts and time parts: exact
            np.testing.assert_array_equal(online[c].to_numpy(), expected[c].to_numpy(), err_msg=c)


def test_online_equals_batch_after_materialised_history(cfg, days, online_store):
    today, history = days[8], days[1:8]  # the features step's lookback: the 7 days before
    assert ingest(cfg, online_store, history) == sum(len(d) for d in history)
    expected = batch(cfg, today, pd.concat(history, ignore_index=True))
    got = replay(cfg, online_store, today)
    assert_same_features(got, expected, cfg.generated_features)
    assert (expected["entity_txn_count_24h"] > 0).mean() > 0.5  # the windows were really exercised


def test_online_equals_batch_from_a_cold_store_including_global_fallback(cfg, days, online_store):
    today = days[0]
    expected = batch(cfg, today, None)
    got = replay(cfg, online_store, today, per_request=7)  # a few events per request, in time order
    assert_same_features(got, expected, cfg.generated_features)
    # cold customers after the first hour: the mean is the global fallback, neither their own amount nor 1.0
    cold = (expected["entity_txn_count_24h"] == 0) & (today.loc[expected.index, "ts"].dt.hour >= 2)
    assert cold.sum() > 10
    assert (expected.loc[cold, "amount_vs_entity_mean"] != 1.0).all()


@pytest.mark.parametrize("store_url", ["redis"], indirect=True)  # the scores follow the features: one store will do
def test_scores_equal(cfg, days, online_store):
    from ml_ops.pipeline.steps import model_columns
    from ml_ops.pipeline.train import build_model

    numeric, categorical = model_columns(cfg)
    train = pd.concat(
        [
            batch(cfg, days[d], pd.concat(days[max(0, d - 7) : d], ignore_index=True) if d else None).join(
                days[d][[*cfg.features.numeric, *cfg.features.categorical, cfg.target.column]]
            )
            for d in range(1, 8)
        ],
        ignore_index=True,
    )
    model = build_model(cfg.model.estimator, {**cfg.model.params, "max_iter": 30}, numeric, categorical)
    model.fit(train[numeric + categorical], train[cfg.target.column])

    ingest(cfg, online_store, days[1:8])
    today = days[8]
    passthrough = today[[*cfg.features.numeric, *cfg.features.categorical]]
    expected = batch(cfg, today, pd.concat(days[1:8], ignore_index=True)).join(passthrough)
    got = replay(cfg, online_store, today).join(passthrough)
    s_batch = model.predict_proba(expected[numeric + categorical])[:, 1]
    s_online = model.predict_proba(got.loc[expected.index, numeric + categorical])[:, 1]
    np.testing.assert_allclose(s_online, s_batch, rtol=1e-9, atol=1e-12)
