"""Materialisation from the validated raw partitions (real S3 endpoint, real SQLite/Redis): a warm store gives
the next day's events what the features step gives them; re-running it adds nothing; a quarantined day stays out."""

from __future__ import annotations

from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ml_ops import layout
from ml_ops.features.materialize import materialize
from ml_ops.interval import DayInterval
from ml_ops.pipeline.history import mark_rejected, mark_validated
from ml_ops.pipeline.steps import features_step, uri
from tests.unit.features.test_parity import KEY, assert_same_features, replay

START = date(2026, 6, 1)


@pytest.fixture(scope="module")
def world(s3_store):
    """Nine simulated days of a copy of the fraud pipeline in S3: raw partitions validated, day 8's features
    built by the features step."""
    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.sim import generate_transactions

    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": "fraud_materialize"})
    raw = generate_transactions(START, 9, rows_per_day=400, n_customers=120, seed=5, label_delay_days=2)
    days = [(START + timedelta(days=i)).isoformat() for i in range(9)]
    frames = {}
    for ds in days:
        frames[ds] = raw[raw["ts"].dt.strftime("%Y-%m-%d") == ds].reset_index(drop=True)
        s3_store.write_parquet(frames[ds], uri(cfg, layout.RAW, ds))
        mark_validated(s3_store, cfg, ds, rows=len(frames[ds]))
    features_step(cfg, s3_store, DayInterval.for_day(date.fromisoformat(days[8])))
    return cfg, days, frames


def test_a_materialised_store_serves_the_next_day_as_the_features_step_built_it(world, s3_store, online_store):
    cfg, days, frames = world
    done = materialize(cfg, s3_store, online_store, KEY, until=days[7])
    assert done["days"] == days[0:8] and done["through"] == days[7]
    assert done["new"] == done["events"] == sum(len(frames[d]) for d in days[0:8])
    assert materialize(cfg, s3_store, online_store, KEY, until=days[7])["new"] == 0  # a merge: nothing twice

    expected = s3_store.read_parquet(uri(cfg, layout.FEATURES, days[8]))
    got = replay(cfg, online_store, frames[days[8]], per_request=3)
    assert_same_features(got, expected, cfg.generated_features)


def test_a_quarantined_day_is_left_out_and_a_rebuild_forgets_the_rest(world, s3_store, online_store):
    cfg, days, frames = world
    materialize(cfg, s3_store, online_store, KEY, until=days[8])
    mark_rejected(s3_store, cfg, days[5], failed=["test"], report="none")
    try:
        done = materialize(cfg, s3_store, online_store, KEY, until=days[8], rebuild=True)
    finally:
        mark_validated(s3_store, cfg, days[5], rows=len(frames[days[5]]))
    assert days[5] not in done["days"] and done["cleared"] > 0
    assert done["new"] == done["events"] == sum(len(frames[d]) for d in done["days"])


def test_a_personal_entity_needs_the_key_and_nothing_is_cleared_without_it(world, s3_store, online_store):
    from ml_ops.privacy import PrivacyKeyMissing

    cfg, days, _ = world
    materialize(cfg, s3_store, online_store, KEY, until=days[1])
    with pytest.raises(PrivacyKeyMissing, match="MLOPS_PRIVACY_KEY"):
        materialize(cfg, s3_store, online_store, None, rebuild=True)
    # the state is still there, keyed by the keyed hash (never the raw id)
    from ml_ops.privacy import keyed_hash

    customer = str(pd.concat(world[2].values()).customer_id.iloc[0])
    assert online_store.entity_events(cfg.name, customer) == {}
    assert online_store.entity_events(cfg.name, keyed_hash(KEY, customer))
    assert np.isfinite(next(iter(online_store.entity_events(cfg.name, keyed_hash(KEY, customer)).values()))[0])
