"""The fraud training DAG, unchanged, on the production shape: Airflow metadata on PostgreSQL, the
CeleryExecutor with two workers on a Redis broker, MLflow on PostgreSQL. Same history and outcomes as the
embedded e2e test (tests/e2e/test_fraud_training.py), plus: the tasks really ran on both workers, and the
state really lives in PostgreSQL."""

from __future__ import annotations

import re
from datetime import date, timedelta

import pytest

from tests.e2e.helpers import assert_day_partitions, assert_first_champion, load_fraud_source, run_day

pytestmark = pytest.mark.e2e

DAG = "fraud_training"
D0 = date(2026, 1, 1)
# this suite's YAML trains on a 1-day window: + holdout 1 + delay 1 -> first model on day 3, v2 on day 4
GOOD_DAYS = [D0 + timedelta(days=i) for i in range(4)]
FIRST_MODEL = 2
PREFIX = "s3://mlops/pipelines/fraud"


@pytest.fixture(scope="module")
def history(stack, airflow):
    """Six good days of source data, run in order; each run's task instances as the REST API shows them."""
    from ml_ops.local.sim import generate_transactions

    # no label in the rows; chargebacks in their own table, which each run's labels task joins
    rows = generate_transactions(D0, len(GOOD_DAYS), rows_per_day=1500, seed=11)
    load_fraud_source(stack.source_db_url, rows, seed=11)
    runs = {day: run_day(airflow, DAG, day) for day in GOOD_DAYS}
    for run in runs.values():
        run["task_instances"] = airflow.task_instances(DAG, run["run_id"])
    return runs


def _query(url: str, sql: str) -> list[tuple]:
    import psycopg2

    with psycopg2.connect(url) as conn, conn.cursor() as cur:
        cur.execute(sql)
        rows = cur.fetchall()
    conn.close()
    return rows


def test_partitions_reports_and_row_counts(history, stack, store):
    for day, run in history.items():
        assert run["state"] == "success", (day, run["tasks"])
    assert_day_partitions(store, stack.source_db_url, GOOD_DAYS, PREFIX)


def test_first_days_skip_training_then_version_1_is_champion(history, mlflow_client):
    assert_first_champion(history, mlflow_client, GOOD_DAYS, first_model=FIRST_MODEL)


def test_decision_log_records_every_comparison(history, store):
    log = store.read_jsonl(f"{PREFIX}/decisions/log.jsonl")
    assert [d["key"] for d in log] == ["fraud:v1", "fraud:v2"]
    assert log[0]["promote"] is True and log[0]["data_date"] == GOOD_DAYS[FIRST_MODEL].isoformat()


def test_tasks_ran_on_both_workers(history, stack):
    workers = {stack.celery_hostname(n) for n in stack.worker_names}
    assert len(workers) == 2
    ran = [
        (day, t["task_id"], t["hostname"])
        for day, run in history.items()
        for t in run["task_instances"]
        if t["state"] == "success"
    ]
    assert len(ran) >= len(GOOD_DAYS) * 4, ran  # at least extract, validate, features, labels every day
    hosts = {host for _, _, host in ran}
    assert hosts == workers, sorted(ran)  # every task ran on one of our workers, and both took some
    # The workers' own logs agree: each Celery worker received and executed Airflow workloads.
    for name in stack.worker_names:
        log = stack.log_path(name).read_text(errors="replace")
        assert re.search(r"Task execute_workload\[[0-9a-f-]+\] succeeded", log), f"{name} log shows no executed task"


def test_state_lives_in_postgres(history, databases):
    runs = _query(databases["airflow"], f"SELECT count(*) FROM dag_run WHERE dag_id = '{DAG}' AND state = 'success'")
    assert runs == [(len(GOOD_DAYS),)]
    # The Celery result backend (db+postgresql) recorded the workloads the workers executed.
    assert (
        _query(databases["airflow"], "SELECT count(*) FROM celery_taskmeta WHERE status = 'SUCCESS'")[0][0]
        >= len(GOOD_DAYS) * 4
    )
    aliases = _query(databases["mlflow"], "SELECT alias, version FROM registered_model_aliases WHERE name = 'fraud'")
    assert ("champion", 1) in aliases
    versions = _query(databases["mlflow"], "SELECT count(*) FROM model_versions WHERE name = 'fraud'")
    assert versions == [(2,)]
