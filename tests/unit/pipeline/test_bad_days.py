"""Bad input stops at validate: each defect of a broken upstream, through the real extract and validate
steps (SQLite source, real S3, real Great Expectations). The wrong-types day also runs through the
scheduler with its alerts in tests/e2e/test_fraud_training.py; these defects exercise only the steps."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from ml_ops import layout
from ml_ops.config import load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import generate_transactions, load_source
from ml_ops.pipeline import history, steps
from ml_ops.pipeline.validate import DataValidationError

D0 = date(2026, 1, 1)
GOOD = [DayInterval.for_day(D0 + timedelta(days=i)) for i in range(2)]
BAD_DAYS = {  # one defect per day, after the good history
    "missing_column": DayInterval.for_day(D0 + timedelta(days=2)),
    "null_flood": DayInterval.for_day(D0 + timedelta(days=3)),
    "duplicate_ids": DayInterval.for_day(D0 + timedelta(days=4)),
    "empty_day": DayInterval.for_day(D0 + timedelta(days=5)),
}
EXPECTED = {
    "missing_column": ("expect_column_to_exist", "device"),
    "null_flood": ("expect_column_values_to_not_be_null", "customer_id"),
    "duplicate_ids": ("expect_column_values_to_be_unique", "transaction_id"),
    "empty_day": ("expect_table_row_count_to_be_between", "0"),
}


@pytest.fixture(scope="module")
def world(s3_store, tmp_path_factory):
    path = tmp_path_factory.mktemp("bad-days") / "source.db"
    load_source(f"sqlite:///{path}", "transactions", generate_transactions(D0, 6, rows_per_day=1500, seed=11))
    con = sqlite3.connect(path)
    with con:

        def day(key):
            return BAD_DAYS[key].ds

        con.execute(
            "UPDATE transactions SET customer_id = NULL WHERE substr(ts,1,10) = ? AND rowid % 2 = 0",
            (day("null_flood"),),
        )
        con.execute(
            "INSERT INTO transactions SELECT * FROM transactions WHERE substr(ts,1,10) = ? AND rowid % 50 = 0",
            (day("duplicate_ids"),),
        )
        con.execute("DELETE FROM transactions WHERE substr(ts,1,10) = ?", (day("empty_day"),))
    con.close()
    store, engine = s3_store, sa.create_engine(f"sqlite:///{path}")
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": "fraud_bad_input"})  # its own prefix
    for good in GOOD:
        steps.extract_step(cfg, store, good, engine)
        steps.validate_step(cfg, store, good)
        steps.features_step(cfg, store, good)
    return cfg, store, engine


@pytest.mark.parametrize("defect", list(BAD_DAYS))
def test_bad_input_stops_at_validate(defect, world, monkeypatch):
    cfg, store, engine = world
    day = BAD_DAYS[defect]
    if defect == "missing_column":  # an upstream view lost a column
        sql = cfg.sql_text().replace("country, device,", "country,")
        monkeypatch.setattr(type(cfg), "sql_text", lambda self: sql)
    steps.extract_step(cfg, store, day, engine)
    with pytest.raises(DataValidationError) as failed:
        steps.validate_step(cfg, store, day)
    expectation, detail = EXPECTED[defect]
    assert expectation in str(failed.value) and detail in str(failed.value), str(failed.value)
    assert not store.exists(layout.partition(cfg.prefix(), "features", day.ds))
    assert store.read_json(layout.partition(cfg.prefix(), "validation", day.ds, "result.json"))["success"] is False
    assert store.exists(layout.partition(cfg.prefix(), "validation", day.ds, "report.html"))
    assert day.ds in history.status(store, cfg, [day.ds]).rejected  # quarantined
