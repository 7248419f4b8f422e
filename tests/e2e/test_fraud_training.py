"""Drive the fraud training DAG through Airflow's REST API on the real stack, day after day, and
check what a user would look at: S3 partitions, validation reports, MLflow runs, versions and
aliases, the decision log, and the alerts that reached the SMTP server and the Slack endpoint."""

from __future__ import annotations

import html
import sqlite3
from datetime import date, timedelta

import pytest
import yaml

from tests.e2e.helpers import assert_day_partitions, assert_first_champion, load_fraud_source, run_day

pytestmark = pytest.mark.e2e

DAG = "fraud_training"
D0 = date(2026, 1, 1)
GOOD_DAYS = [D0 + timedelta(days=i) for i in range(6)]  # window 3 + holdout 1 + delay 1 -> first model on day 5
# The first three days are history only (extract, validate, features; nothing to train yet): built in-process by
# the DAG's own step functions against the stack's source, S3 and the same YAML (each DAG run costs ~40 s).
# Through the scheduler: a day that still skips training, the first model, the second.
WARM_DAYS, RUN_DAYS = GOOD_DAYS[:3], GOOD_DAYS[3:]
CRIPPLED_DAY = D0 + timedelta(days=6)
# One defect through the scheduler, with its alerts; the other defects of tests/unit/pipeline/test_bad_days.py
# exercise only the validate step and run there against real S3 (each DAG run here costs ~40 s).
BAD_DAYS = {"wrong_types": D0 + timedelta(days=7)}


def _source_path(stack) -> str:
    return stack.source_db_url.replace("sqlite:///", "", 1)


@pytest.fixture(scope="module")
def history(stack, airflow, store):
    """Source loaded with 8 days (the last ones made defective); the good days built in order (the first three
    in-process, the rest through the scheduler); the crippled and defective days are run by their tests."""
    from ml_ops.local.sim import generate_transactions

    # transactions without a label; chargebacks in their own table (the e2e delays: a day is labelled a day later)
    load_fraud_source(stack.source_db_url, generate_transactions(D0, 8, rows_per_day=1500, seed=11), seed=11)
    _inject_defects(_source_path(stack))
    _build_history_in_process(stack, store, WARM_DAYS)
    runs = {day: run_day(airflow, DAG, day) for day in RUN_DAYS}
    return runs


def _build_history_in_process(stack, store, days) -> None:
    import sqlalchemy as sa

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.interval import DayInterval
    from ml_ops.pipeline.steps import extract_step, features_step, validate_step

    cfg, engine = load_pipeline_by_name("fraud"), sa.create_engine(stack.source_db_url)
    try:
        for day in days:  # in order, as the DAG runs them: each day's features read the validated days before
            interval = DayInterval.for_day(day)
            extract_step(cfg, store, interval, engine)
            validate_step(cfg, store, interval)  # raises on a failed expectation
            features_step(cfg, store, interval)
    finally:
        engine.dispose()


def _inject_defects(path: str) -> None:
    con = sqlite3.connect(path)
    with con:  # text in a numeric column, as a broken upstream export would write it
        con.execute(
            "UPDATE transactions SET amount = 'n/a' WHERE substr(ts,1,10) = ? AND rowid % 20 = 0",
            (BAD_DAYS["wrong_types"].isoformat(),),
        )
    con.close()


def test_partitions_reports_and_row_counts(history, stack, store):
    for day, run in history.items():
        assert run["state"] == "success", (day, run)
    assert_day_partitions(store, stack.source_db_url, GOOD_DAYS)


def test_labels_come_from_their_own_table(history, store):
    """The extracted rows carry no label; each run's labels task joined the chargebacks table to the features of
    its trailing days: after the last good day's run, every earlier day is labelled (the e2e label delay is a
    day), all from the table."""
    from ml_ops import layout

    prefix = "s3://mlops/pipelines/fraud"
    raw = store.read_parquet(f"{prefix}/raw/ds={GOOD_DAYS[0]}/data.parquet")
    assert not {"is_fraud", "label_available_at"} & set(raw.columns), list(raw.columns)
    assert history[GOOD_DAYS[-1]]["tasks"]["labels"] == "success"
    positives = 0
    for day in GOOD_DAYS[:-1]:
        summary = store.read_json(layout.partition(prefix, layout.LABELS, day.isoformat(), layout.LABELS_SUMMARY))
        assert summary["written_by"] == GOOD_DAYS[-1].isoformat(), summary
        assert summary["labelled"] == summary["rows"] > 1000 and summary["by_source"] == {"table": summary["rows"]}
        positives += summary["positives"]
    assert positives > 50


def test_first_days_skip_training_then_version_1_is_champion(history, mlflow_client):
    assert_first_champion(history, mlflow_client, GOOD_DAYS)
    champion = mlflow_client.get_model_version_by_alias("fraud", "champion")
    artifacts = {a.path for a in mlflow_client.list_artifacts(champion.run_id)}
    assert any("reference" in a for a in artifacts), artifacts


def test_decision_log_records_every_comparison(history, store):
    log = store.read_jsonl("s3://mlops/pipelines/fraud/decisions/log.jsonl")
    assert [d["key"] for d in log] == ["fraud:v1", "fraud:v2"]
    first = log[0]
    assert first["promote"] is True and first["data_date"] == GOOD_DAYS[4].isoformat()


def test_crippled_challenger_does_not_take_the_alias(history, airflow, mlflow_client, include_dir, store, inbox):
    before = mlflow_client.get_model_version_by_alias("fraud", "champion").version
    path = include_dir / "pipelines" / "fraud.yaml"
    original = path.read_text()
    cfg = yaml.safe_load(original)
    # A config change that cripples the model: a one-split stump on a single iteration.
    cfg["model"]["params"] = {"max_iter": 1, "max_depth": 1, "learning_rate": 0.01}
    path.write_text(yaml.safe_dump(cfg))
    try:
        run = run_day(airflow, DAG, CRIPPLED_DAY)
    finally:
        path.write_text(original)
    assert run["state"] == "success", run
    assert run["tasks"]["compare"] == "success"
    assert run["tasks"]["challenger_won"] == "success" and run["tasks"]["promote"] == "skipped"
    assert mlflow_client.get_model_version_by_alias("fraud", "champion").version == before
    crippled = max(int(v.version) for v in mlflow_client.search_model_versions("name='fraud'"))
    log = store.read_jsonl("s3://mlops/pipelines/fraud/decisions/log.jsonl")
    assert log[-1]["key"] == f"fraud:v{crippled}" and log[-1]["promote"] is False
    assert inbox.matching(f"challenger v{crippled} does not win")


def test_rerun_is_idempotent(history, airflow, store, mlflow_client):
    day = GOOD_DAYS[4]
    prefix = "s3://mlops/pipelines/fraud"
    keys = [
        f"{prefix}/{stage}/ds={day}/{name}"
        for stage, name in (
            ("raw", "data.parquet"),
            ("features", "data.parquet"),
            ("validation", "result.json"),
            ("validation", "report.html"),
            ("validation", "validated.json"),
        )
    ]
    before = {k: store.get_bytes(k) for k in keys}
    versions = len(mlflow_client.search_model_versions("name='fraud'"))
    log_before = store.read_jsonl(f"{prefix}/decisions/log.jsonl")
    airflow.clear_task_instances(DAG, history[day]["run_id"])
    state = airflow.wait_for_run(DAG, history[day]["run_id"], timeout=600)
    assert state == "success"
    after = {k: store.get_bytes(k) for k in keys}
    for key in keys:
        assert after[key] == before[key], f"{key} changed on re-run"
    assert len(mlflow_client.search_model_versions("name='fraud'")) == versions
    assert store.read_jsonl(f"{prefix}/decisions/log.jsonl") == log_before


EXPECTED = {"wrong_types": ("expect_column_values_to_be_in_type_list", "amount")}


@pytest.mark.parametrize("defect", list(BAD_DAYS))
def test_bad_input_stops_at_validate(defect, history, airflow, store, mlflow_client, include_dir, inbox):
    day = BAD_DAYS[defect]
    versions = len(mlflow_client.search_model_versions("name='fraud'"))
    champion = mlflow_client.get_model_version_by_alias("fraud", "champion").version
    run = run_day(airflow, DAG, day)
    assert run["state"] == "failed"
    assert run["tasks"]["extract"] == "success" and run["tasks"]["validate"] == "failed"
    assert all(run["tasks"][t] == "upstream_failed" for t in ("features", "train", "compare")), run["tasks"]
    prefix = "s3://mlops/pipelines/fraud"
    assert not store.exists(f"{prefix}/features/ds={day}/data.parquet")
    assert store.read_json(f"{prefix}/validation/ds={day}/result.json")["success"] is False
    assert store.exists(f"{prefix}/validation/ds={day}/report.html")
    assert len(mlflow_client.search_model_versions("name='fraud'")) == versions
    assert mlflow_client.get_model_version_by_alias("fraud", "champion").version == champion
    expectation, detail = EXPECTED[defect]
    mails = [m for m in inbox.matching("validate failed") if day.isoformat() in m["body"]]
    assert mails, [m["subject"] for m in inbox.emails]
    body = html.unescape(mails[-1]["body"])
    assert expectation in body and detail in body, body
    assert any(
        "validate failed" in s["payload"].get("text", "") and day.isoformat() in s["payload"].get("text", "")
        for s in inbox.slack
    ), inbox.slack
