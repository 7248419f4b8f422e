"""The traffic generator's events (ml_ops.local.traffic.FreshEvents) against a real S3 endpoint: fresh days of
the same simulated world, after every extracted day, with the model inputs the batch features step computes
for them once they are extracted. The sending itself is tested against a real gateway in tests/serving."""

from __future__ import annotations

from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from ml_ops.config import Labels, load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import ConceptChange, generate_transactions
from ml_ops.local.traffic import FreshEvents, World, raw_days, window_days
from ml_ops.pipeline.history import mark_validated
from ml_ops.pipeline.steps import features_step, model_columns, uri

START = date(2025, 5, 5)
EXTRACTED = 9  # days extracted (raw + validated + features) before the traffic starts
WORLD = World(seed=3, n_customers=300, rows_per_day=600, events=(ConceptChange(START + timedelta(days=8)),))


def _extract(cfg, store, day: date, raw: pd.DataFrame) -> None:
    """What the extract and validate tasks leave behind for a day, then its features."""
    store.write_parquet(raw.reset_index(drop=True), uri(cfg, "raw", day.isoformat()))
    mark_validated(store, cfg, day.isoformat(), rows=len(raw))
    features_step(cfg, store, DayInterval.for_day(day))


@pytest.fixture(scope="module")
def world(s3_store):
    """EXTRACTED days of WORLD loaded as the pipeline would have (one long generator call, as the demo's
    loader makes); returns the pipeline and the days' rows."""
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": "traffic_unit"})
    rows = generate_transactions(
        START,
        EXTRACTED,
        rows_per_day=WORLD.rows_per_day,
        n_customers=WORLD.n_customers,
        seed=WORLD.seed,
        label_delay_days=cfg.target.label_delay_days,
        events=WORLD.events,
    )
    for i in range(EXTRACTED):
        day = START + timedelta(days=i)
        _extract(cfg, s3_store, day, rows[rows["ts"].dt.date == day])
    return cfg, rows


def test_fresh_days_follow_the_last_extracted_day_and_continue_the_same_world(s3_store, world):
    cfg, rows = world
    events = FreshEvents(cfg, s3_store, WORLD)
    first, second = events.next_day(), events.next_day()
    last = START + timedelta(days=EXTRACTED - 1)
    assert raw_days(cfg, s3_store)[-1] == last.isoformat()
    assert (first.ds, second.ds) == ((last + timedelta(days=1)).isoformat(), (last + timedelta(days=2)).isoformat())
    # no event of an extracted day (the only days a features partition, so a training window, can hold)
    for day in (first, second):
        assert (pd.to_datetime(day.raw["ts"]).dt.date.astype(str) == day.ds).all()
        assert not set(day.raw["transaction_id"]) & set(rows["transaction_id"])
    # the same world: the customers of the fresh days are the extracted days' customers
    known = set(rows["customer_id"])
    assert first.raw["customer_id"].isin(known).mean() > 0.95
    # and a longer generator call draws the very same events for those days
    longer = generate_transactions(
        START,
        EXTRACTED + 2,
        rows_per_day=WORLD.rows_per_day,
        n_customers=WORLD.n_customers,
        seed=WORLD.seed,
        label_delay_days=cfg.target.label_delay_days,
        events=WORLD.events,
    )
    tail = longer[longer["ts"].dt.date.astype(str).isin([first.ds, second.ds])].reset_index(drop=True)
    pd.testing.assert_frame_equal(pd.concat([first.raw, second.raw], ignore_index=True), tail)
    # after the concept change: the fraud the models were not trained on
    assert first.raw["is_fraud"].sum() > 0 and first.labels == first.raw["is_fraud"].tolist()
    # fraud.yaml's labels arrive in their own table: chargebacks in days, legitimate confirmed after 7
    assert cfg.labels is not None
    fraud = [d for d, y in zip(first.delay_days, first.labels, strict=True) if y == 1]
    legit = [d for d, y in zip(first.delay_days, first.labels, strict=True) if y == 0]
    assert min(fraud) >= 1 and 7 <= min(legit) <= max(legit) <= 8.5
    # a pipeline whose rows carry the label: label_available_at - ts, the label delay + up to 12 hours
    in_row = cfg.model_copy(
        update={
            "labels": None,
            "target": cfg.target.model_copy(update={"label_available_column": "label_available_at"}),
        }
    )
    again = FreshEvents(in_row, s3_store, WORLD).next_day()
    assert again.ds == first.ds and again.labels == first.labels
    delay = cfg.target.label_delay_days
    assert all(delay <= d <= delay + 0.5 for d in again.delay_days)


def test_inputs_equal_what_the_features_step_computes_once_the_days_are_extracted(s3_store, world):
    """The traffic's model inputs of two fresh days (the second one's history includes the first fresh day)
    are exactly those the batch pipeline writes when the days are extracted later."""
    cfg, _ = world
    other = cfg.model_copy(update={"name": "traffic_unit_later"})  # the same world, extracted further
    for ds in raw_days(cfg, s3_store):
        s3_store.write_parquet(s3_store.read_parquet(uri(cfg, "raw", ds)), uri(other, "raw", ds))
        mark_validated(s3_store, other, ds, rows=1)
    events = FreshEvents(cfg, s3_store, WORLD)
    numeric, categorical = model_columns(cfg)
    for _ in range(2):
        fresh = events.next_day()
        _extract(other, s3_store, date.fromisoformat(fresh.ds), fresh.raw)
        batch = s3_store.read_parquet(uri(other, "features", fresh.ds))
        pd.testing.assert_frame_equal(fresh.features.reset_index(drop=True), batch, check_exact=True)
        columns, requests = fresh.requests([*numeric, *categorical, "customer_id", "transaction_id"])
        sent = pd.DataFrame(requests, columns=columns)
        assert len(sent) == len(batch) and list(sent["transaction_id"]) == list(batch["transaction_id"])
        for c in numeric:
            assert (sent[c].to_numpy(float) == batch[c].to_numpy(float)).all(), c
        assert (sent["customer_id"] == fresh.raw["customer_id"]).all()
    # the history features saw the earlier days: customers with a transaction the day before have counts
    assert (batch["seconds_since_prev_txn"] < 7 * 24 * 3600).mean() > 0.5


def test_held_out_days_only_outside_every_model_window(s3_store, world):
    cfg, _ = world
    assert window_days("2025-05-05..2025-05-07 holdout 2025-05-08..2025-05-09") == {
        f"2025-05-0{d}" for d in range(5, 10)
    }
    with pytest.raises(ValueError, match="tracking URI"):
        FreshEvents(cfg, s3_store, WORLD, start=START + timedelta(days=3))  # extracted: only with MLflow's windows


def test_a_labels_table_gets_the_chargebacks_of_the_fresh_events(s3_store, world, tmp_path):
    cfg, _ = world
    with_labels = cfg.model_copy(update={"labels": Labels(sql="sql/fraud_labels.sql")})
    url = f"sqlite:///{tmp_path / 'labels.db'}"
    events = FreshEvents(with_labels, s3_store, WORLD, labels_db=url, labels_table="transaction_labels")
    fresh = events.next_day()
    table = pd.read_sql_table("transaction_labels", sa.create_engine(url))
    assert set(table["transaction_id"]) == set(fresh.raw["transaction_id"])
    final = table.sort_values("labelled_at").drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
    assert final.loc[fresh.raw["transaction_id"], "is_fraud"].tolist() == fresh.labels
    # chargebacks take days, a legitimate transaction is confirmed after 7: the delays are the table's
    fraud = [d for d, y in zip(fresh.delay_days, fresh.labels, strict=True) if y == 1]
    legit = [d for d, y in zip(fresh.delay_days, fresh.labels, strict=True) if y == 0]
    assert fraud and min(fraud) >= 1 and min(legit) >= 7


def test_an_extracted_day_without_labels_in_its_rows_gets_its_truth_from_the_world(s3_store, world):
    """Held-out days (``start``) are sent as extracted; fraud's extract carries no label, so the events' labels and
    delays come from the same world's day, as they would for a fresh day."""
    cfg, rows = world
    day = START + timedelta(days=2)
    raw = rows[rows["ts"].dt.date == day].drop(columns=["is_fraud", "label_available_at"]).reset_index(drop=True)
    events = FreshEvents(cfg, s3_store, WORLD)
    labels, delays = events._labels(day, raw)
    assert labels == rows.loc[rows["ts"].dt.date == day, "is_fraud"].tolist() and min(delays) >= 1
    other = raw.assign(transaction_id=raw["transaction_id"] + "-x")
    with pytest.raises(ValueError, match="not of World"):
        events._labels(day, other)
