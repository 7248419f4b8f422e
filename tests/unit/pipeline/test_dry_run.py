"""`mlops pipeline dry-run` on a real S3 endpoint and a simulated SQLite source: every stage's output, every
day's validation (a bad day is reported with its failed expectation and the run goes on), the holdout
metrics and the gate, and nothing written where the live pipeline or the live MLflow registry would see it."""

from __future__ import annotations

import json
import sqlite3
from datetime import date, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa
from mlflow import MlflowClient

from ml_ops import cli, layout
from ml_ops.config import Labels, load_pipeline_by_name
from ml_ops.local.sim import generate_labels, generate_transactions, load_source
from ml_ops.local.sim.transactions import LABEL_IN_ROW
from ml_ops.local.stack_env import StackConfig
from ml_ops.pipeline import dry_run
from tests.e2e.helpers import free_port
from tests.mlflow_store import fresh_store

D0 = date(2026, 1, 1)
DAYS = dry_run.required_days(load_pipeline_by_name("fraud"))  # 6 + 2 + 8: the fraud YAML's training window
END = D0 + timedelta(days=DAYS - 1)
BAD = D0 + timedelta(days=1)  # a training-window day with duplicated ids


@pytest.fixture(scope="module")
def store(s3_store):
    return s3_store  # the session's S3 endpoint (tests/unit/conftest.py); this module writes under scratch/dry-run/


def test_required_days_follow_the_training_window():
    cfg = load_pipeline_by_name("fraud")
    assert DAYS == cfg.training.window_days + cfg.training.holdout_days + cfg.target.label_delay_days == 16
    with pytest.raises(dry_run.DryRunError, match=r"--days 15 is too few.*needs 16 days \(training.window_days 6"):
        dry_run.check_days(cfg, DAYS - 1)


def test_the_scratch_config_writes_only_under_the_scratch_prefix():
    cfg = load_pipeline_by_name("fraud")
    scratch = dry_run.scratch_config(cfg)
    assert scratch.prefix() == f"s3://{cfg.bucket}/scratch/dry-run/fraud" == layout.dry_run_prefix(cfg.bucket, "fraud")
    assert scratch.model_dump() == cfg.model_dump()  # every setting is the pipeline's own
    assert cfg.prefix() == f"s3://{cfg.bucket}/pipelines/fraud"  # the original is untouched


def test_dry_run_of_the_fraud_pipeline_touches_nothing_live(store, tmp_path, monkeypatch, capsys):
    db = tmp_path / "source.db"
    # as fraud.yaml reads its source: transactions without a label, chargebacks in transaction_labels
    tx = generate_transactions(D0, DAYS, rows_per_day=600, seed=3)
    load_source(
        f"sqlite:///{db}",
        "transactions",
        tx.drop(columns=list(LABEL_IN_ROW)),
        labels_table="transaction_labels",
        labels=generate_labels(tx, 3),
    )
    with sqlite3.connect(db) as con:  # a bad day: one row in ten gets one of 7 ids
        con.execute(
            "UPDATE transactions SET transaction_id = 'dup' || (rowid % 7)"
            " WHERE substr(ts,1,10) = ? AND rowid % 10 = 0",
            (BAD.isoformat(),),
        )
    live_mlflow = fresh_store(tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", live_mlflow)  # what a careless dry run would pick up
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    keys = StackConfig()  # the session endpoint's keys: the stack defaults (MLOPS_S3_ACCESS_KEY / _SECRET_KEY)
    monkeypatch.setenv("MLOPS_S3_ENDPOINT", store.client.meta.endpoint_url)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", keys.s3_access_key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", keys.s3_secret_key)
    stale = "s3://mlops/scratch/dry-run/fraud/raw/ds=2025-12-01/data.parquet"
    store.put_bytes(stale, b"an earlier dry run's partition")

    rc = cli.main(["pipeline", "dry-run", "fraud", "--days", str(DAYS), "--end", END.isoformat()])
    out = capsys.readouterr().out

    assert rc == 1, out  # the bad day is a problem to fix before switching the pipeline on
    assert "source: connection 'source_db' from AIRFLOW_CONN_SOURCE_DB: sqlite:///" in out
    scratch = "s3://mlops/scratch/dry-run/fraud"
    for i in range(DAYS):  # every day was run, the bad one did not stop the days after it
        ds = (D0 + timedelta(days=i)).isoformat()
        assert f"{ds}  extract" in out and f"-> {scratch}/raw/ds={ds}/data.parquet" in out, ds
        if ds != BAD.isoformat():
            assert f"-> {scratch}/features/ds={ds}/data.parquet" in out, ds
    bad_part = out.split(f"{BAD.isoformat()}  extract", 1)[1].split(f"{(BAD + timedelta(days=1)).isoformat()}  ", 1)[0]
    assert "validate  FAILED" in bad_part and "expect_column_values_to_be_unique(transaction_id)" in bad_part
    assert f"-> {scratch}/validation/ds={D0.isoformat()}/result.json" in out
    assert "holdout metrics: roc_auc=" in out and "log_loss=" in out
    assert "compare   gate would pass (first model: floors only)" in out
    assert f"decision -> {scratch}/decisions/log.jsonl" in out
    warnings = out.split("warnings (", 1)[1]
    assert (
        f"{BAD.isoformat()}: quarantined (1 failed check(s)); left out of the history of 7 later day(s)" in warnings
    )  # history_days 7
    assert "(2026-01-03..2026-01-09) and the training window" in warnings
    assert f"quarantined day(s) left out of the window: {BAD.isoformat()}" in out
    assert "great_expectations" not in out  # libraries' INFO lines stay out of the printout
    assert f"{BAD.isoformat()} fails validation: expect_column_values_to_be_unique(transaction_id)" in out

    assert store.list("s3://mlops/pipelines/fraud/") == []  # nothing live
    assert stale not in store.list(scratch + "/")  # an earlier dry run's objects were cleared first
    assert len(store.list(f"{scratch}/features/")) == DAYS - 1
    (decision,) = store.read_jsonl(f"{scratch}/decisions/log.jsonl")
    assert decision["promote"] and decision["airflow_run_id"] == "dry-run"
    assert MlflowClient(live_mlflow).search_registered_models() == []
    assert MlflowClient(live_mlflow).search_experiments(filter_string="name = 'fraud'") == []


def test_a_pipeline_with_a_labels_table_runs_its_labels_task(store, tmp_path):
    """With labels: the labels task runs after each day's features, as in the DAG, and training uses them."""
    base = load_pipeline_by_name("fraud")
    cfg = base.model_copy(
        update={
            "name": "fraud_dry_labels",
            "labels": Labels(sql="sql/fraud_labels.sql"),
            "target": base.target.model_copy(update={"label_delay_days": 2}),
            "training": base.training.model_copy(update={"window_days": 3, "holdout_days": 1, "min_rows": 100}),
        }
    )
    days = dry_run.required_days(cfg)
    assert days == 6
    db = tmp_path / "source.db"
    tx = generate_transactions(D0, days, rows_per_day=600, seed=4, label_delay_days=2)
    load_source(f"sqlite:///{db}", "transactions", tx)
    labels = tx[["transaction_id", "is_fraud"]].assign(labelled_at=tx["ts"] + pd.Timedelta(hours=30))
    engine = sa.create_engine(f"sqlite:///{db}")
    labels.to_sql("transaction_labels", engine, index=False)
    tracking_uri = fresh_store(tmp_path)
    MlflowClient(tracking_uri).create_experiment(cfg.name, artifact_location=str(tmp_path / "artifacts"))
    lines: list[str] = []
    end = D0 + timedelta(days=days - 1)
    report = dry_run.run(
        cfg, days=days, end=end, engine=engine, store=store, tracking_uri=tracking_uri, echo=lines.append
    )
    out = "\n".join(lines)
    assert report.ok, out
    assert out.count(" labels  ") == days and "-> s3://mlops/scratch/dry-run/fraud_dry_labels/labels/" in out
    assert report.days[-1].labels["labelled"] > 0 and report.days[-1].labels["unmatched"] == 0
    assert report.trained["metrics"]["holdout_rows"] > 100 and report.decision is not None
    assert store.list("s3://mlops/pipelines/fraud_dry_labels/") == []


def test_a_dry_run_that_cannot_reach_s3_says_so(tmp_path, monkeypatch, capsys):
    db = tmp_path / "source.db"
    db.touch()
    monkeypatch.setenv("AIRFLOW_CONN_SOURCE_DB", json.dumps({"conn_type": "sqlite", "host": str(db)}))
    monkeypatch.setenv("MLOPS_S3_ENDPOINT", f"http://127.0.0.1:{free_port()}")  # nothing listens
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "x")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "y")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert cli.main(["pipeline", "dry-run", "fraud", "--days", str(DAYS)]) == 2
    err = capsys.readouterr().err
    assert "bucket 'mlops' on S3 from MLOPS_S3_ENDPOINT/AWS_*" in err and "is not reachable" in err
