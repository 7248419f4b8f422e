"""Pipeline integrity through the real steps (SQLite source, real S3 endpoint, real Great Expectations):
a rejected day stays quarantined, run order is guarded, re-runs rewrite identical bytes."""

from __future__ import annotations

import sqlite3
from datetime import date, timedelta

import pytest
import sqlalchemy as sa

from ml_ops import layout
from ml_ops.config import load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import generate_transactions, generate_tumors, load_source
from ml_ops.pipeline import history, steps
from ml_ops.pipeline.validate import DataValidationError

D0 = date(2026, 1, 1)
DAYS = [DayInterval.for_day(D0 + timedelta(days=i)) for i in range(7)]
BAD = DAYS[3]


@pytest.fixture(scope="module")
def store(s3_store):
    return s3_store  # the session's S3 endpoint (tests/unit/conftest.py)


def _world(tmp_path, name: str, bad_day_sql: str | None):
    """A pipeline named ``name`` over its own SQLite source; ``bad_day_sql`` spoils BAD's rows."""
    path = tmp_path / f"{name}.db"
    load_source(
        f"sqlite:///{path}",
        "transactions",
        generate_transactions(D0, len(DAYS), rows_per_day=300, seed=3, label_delay_days=1),
    )
    if bad_day_sql:
        with sqlite3.connect(path) as con:
            con.execute(bad_day_sql, (BAD.ds,))
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": name})
    return cfg, sa.create_engine(f"sqlite:///{path}")


def _run(cfg, store, engine, day: DayInterval) -> str:
    """extract → validate → features of one day, as the DAG runs them; the outcome in one word."""
    steps.extract_step(cfg, store, day, engine)
    try:
        steps.validate_step(cfg, store, day)
    except DataValidationError:
        return "rejected"
    steps.features_step(cfg, store, day)
    return "ok"


def _objects(store, cfg, stage: str, ds: str) -> dict[str, bytes]:
    prefix = layout.day_prefix(cfg.prefix(), stage, ds)
    return {u.rsplit("/", 1)[-1]: store.get_bytes(u) for u in store.list(prefix)}


def test_a_rejected_day_never_reaches_later_days(store, tmp_path):
    # World A: the bad day holds absurd amounts (they would swamp the next week's history features).
    spoiled, engine_a = _world(tmp_path, "fraud_bad", "UPDATE transactions SET amount = 1e12 WHERE substr(ts,1,10) = ?")
    # World B: the same source without the bad day's rows at all (an empty day, rejected too).
    clean, engine_b = _world(tmp_path, "fraud_clean", "DELETE FROM transactions WHERE substr(ts,1,10) = ?")
    outcomes = {day.ds: (_run(spoiled, store, engine_a, day), _run(clean, store, engine_b, day)) for day in DAYS}
    assert outcomes[BAD.ds] == ("rejected", "rejected")
    assert all(o == ("ok", "ok") for ds, o in outcomes.items() if ds != BAD.ds), outcomes

    for day in DAYS[4:]:  # the days after the bad one: same features, same validation, byte for byte
        assert _objects(store, spoiled, "features", day.ds) == _objects(store, clean, "features", day.ds)
        a, b = (
            store.read_json(layout.partition(c.prefix(), "validation", day.ds, "result.json")) for c in (spoiled, clean)
        )
        assert a == b
    quarantined = history.quarantine(store, spoiled)
    assert [(r["ds"], r["status"]) for r in quarantined] == [(BAD.ds, "rejected")]
    assert quarantined[0]["failed"] and quarantined[0]["report"].endswith("report.html")
    found = history.status(store, spoiled, [d.ds for d in DAYS])
    assert found.rejected == [BAD.ds] and not found.missing

    # Fixed at the source and re-run: the day is released and used again.
    with sqlite3.connect(tmp_path / "fraud_bad.db") as con:
        con.execute("UPDATE transactions SET amount = 42.0 WHERE substr(ts,1,10) = ?", (BAD.ds,))
    assert _run(spoiled, store, engine_a, BAD) == "ok"
    assert [r["status"] for r in history.quarantine(store, spoiled)] == ["rejected", "released"]
    assert BAD.ds in history.status(store, spoiled, [BAD.ds]).validated


def test_a_day_run_before_its_predecessors_names_them(store, tmp_path):
    cfg, engine = _world(tmp_path, "fraud_order", None)
    for day in DAYS[:2]:
        assert _run(cfg, store, engine, day) == "ok"
    steps.extract_step(cfg, store, DAYS[5], engine)
    with pytest.raises(history.IncompleteHistory, match=f"{DAYS[2].ds}, {DAYS[3].ds}, {DAYS[4].ds}") as gap:
        steps.validate_step(cfg, store, DAYS[5])
    assert gap.value.missing == [DAYS[2].ds, DAYS[3].ds, DAYS[4].ds]  # what the operator asks Airflow about
    # Extracted but not validated yet is missing too: neither validate nor features may read unvalidated rows.
    steps.extract_step(cfg, store, DAYS[2], engine)
    steps.extract_step(cfg, store, DAYS[3], engine)
    for step in (steps.validate_step, steps.features_step):
        with pytest.raises(history.IncompleteHistory, match=f"needs the earlier day\\(s\\) {DAYS[2].ds},"):
            step(cfg, store, DAYS[3])


def test_a_rerun_rewrites_identical_bytes(store, tmp_path):
    cfg, engine = _world(tmp_path, "fraud_rerun", None)
    for day in DAYS[:3]:
        assert _run(cfg, store, engine, day) == "ok"
    before = {u: store.get_bytes(u) for u in store.list(cfg.prefix() + "/")}
    assert _run(cfg, store, engine, DAYS[2]) == "ok"  # a cleared run of the last day
    after = {u: store.get_bytes(u) for u in store.list(cfg.prefix() + "/")}
    assert after.keys() == before.keys()
    changed = [u for u in before if before[u] != after[u]]
    assert not changed, changed  # report.html included
    assert any(u.endswith("report.html") for u in before)


def test_late_rows_for_a_processed_day_are_reported(store, tmp_path):
    cfg, engine = _world(tmp_path, "fraud_late", None)
    for day in DAYS[:3]:
        assert _run(cfg, store, engine, day) == "ok"
    with sqlite3.connect(tmp_path / "fraud_late.db") as con:  # 5 rows of day 1 land in the source late
        con.execute(
            "INSERT INTO transactions SELECT transaction_id || '-late', ts, customer_id, amount, merchant_category,"
            " channel, country, device, customer_age, account_age_days, is_fraud, label_available_at"
            " FROM transactions WHERE substr(ts,1,10) = ? LIMIT 5",
            (DAYS[1].ds,),
        )
    result = steps.extract_step(cfg, store, DAYS[3], engine)
    assert result["late_rows"] == {DAYS[1].ds: 5}
    (record,) = store.read_jsonl(layout.late_rows_log(cfg.prefix()))
    assert (record["ds"], record["late_rows"], record["seen_by"]) == (DAYS[1].ds, 5, DAYS[3].ds)
    steps.extract_step(cfg, store, DAYS[3], engine)  # a re-run does not report the same rows twice
    assert len(store.read_jsonl(layout.late_rows_log(cfg.prefix()))) == 1

    reextract = cfg.model_copy(update={"source": cfg.source.model_copy(update={"late_rows": "reextract"})})
    with sqlite3.connect(tmp_path / "fraud_late.db") as con:
        con.execute("DELETE FROM transactions WHERE transaction_id LIKE '%-late' AND rowid % 2 = 0")
        in_source = con.execute(
            "SELECT count(*) FROM transactions WHERE substr(ts,1,10) = ?", (DAYS[1].ds,)
        ).fetchone()[0]
    raw = layout.partition(cfg.prefix(), "raw", DAYS[1].ds)
    before = store.parquet_rows(raw)
    assert steps.extract_step(reextract, store, DAYS[3], engine)["late_rows"] == {DAYS[1].ds: in_source - before}
    assert store.parquet_rows(raw) == in_source  # rewritten with the late rows, and validated again
    assert DAYS[1].ds in history.status(store, cfg, [DAYS[1].ds]).validated


def test_a_query_that_cannot_run_fails_at_once_with_a_report(store, tmp_path):
    cfg, engine = _world(tmp_path, "fraud_schema", None)
    with sqlite3.connect(tmp_path / "fraud_schema.db") as con:  # upstream dropped a column the SQL selects
        con.execute("ALTER TABLE transactions DROP COLUMN device")
    with pytest.raises(DataValidationError, match="no such column: device") as failed:
        steps.extract_step(cfg, store, DAYS[0], engine)
    assert "report:" in str(failed.value)
    result = store.read_json(layout.partition(cfg.prefix(), "validation", DAYS[0].ds, "result.json"))
    assert result["success"] is False
    report = store.get_bytes(layout.partition(cfg.prefix(), "validation", DAYS[0].ds, "report.html")).decode()
    assert "no such column: device" in report
    assert [r["status"] for r in history.quarantine(store, cfg)] == ["rejected"]


@pytest.mark.parametrize(
    ("pipeline", "spoil", "column"),
    [
        # 30 % of the day's rows from a country no earlier day and no suite value set knows
        ("fraud", "UPDATE transactions SET country = 'ZZ' WHERE substr(ts,1,10) = ? AND rowid % 10 < 3", "country"),
        # the label rate of a source whose rows carry the label (tumors; fraud's labels arrive in their own
        # table): a day without a single malignant tumour
        ("tumors", "UPDATE tumors SET malignant = 0 WHERE substr(observed_at,1,10) = ?", "malignant"),
    ],
    ids=["unseen_category", "no_positive_label"],
)
def test_checks_on_by_default_name_the_column(store, tmp_path, pipeline, spoil, column):
    path = tmp_path / "source.db"
    url = f"sqlite:///{path}"
    if pipeline == "fraud":
        load_source(url, "transactions", generate_transactions(D0, 4, rows_per_day=1500, seed=5, label_delay_days=1))
    else:
        load_source(url, "tumors", generate_tumors(D0, 4, rows_per_day=200, seed=5, label_delay_days=1))
    day = DAYS[3]
    with sqlite3.connect(path) as con:
        con.execute(spoil, (day.ds,))
    cfg = load_pipeline_by_name(pipeline).model_copy(update={"name": f"{pipeline}_{column}"})
    engine = sa.create_engine(url)
    for good in DAYS[:3]:
        assert _run(cfg, store, engine, good) == "ok"
    steps.extract_step(cfg, store, day, engine)
    with pytest.raises(DataValidationError) as failed:
        steps.validate_step(cfg, store, day)
    assert f"({column}" in str(failed.value), str(failed.value)
    assert day.ds in history.status(store, cfg, [day.ds]).rejected
