from __future__ import annotations

import json
import os
import shutil
import socket
import tempfile
from contextlib import contextmanager
from datetime import date, datetime, timezone
from pathlib import Path


def run_day(airflow, dag_id: str, day: date, conf: dict | None = None, timeout: float = 600) -> dict:
    """Trigger ``dag_id`` for ``day`` through the REST API and wait for it to finish."""
    airflow.wait_for_dag(dag_id, timeout=180)
    airflow.unpause(dag_id)
    logical = datetime(day.year, day.month, day.day, tzinfo=timezone.utc)
    run_id = airflow.trigger(
        dag_id,
        logical_date=logical,
        conf=conf or {},
        run_id=f"e2e__{day.isoformat()}__{datetime.now().timestamp():.0f}",
    )
    state = airflow.wait_for_run(dag_id, run_id, timeout=timeout)
    tasks = {t["task_id"]: t["state"] for t in airflow.task_instances(dag_id, run_id)}
    return {"run_id": run_id, "state": state, "tasks": tasks}


# fraud.yaml reads its labels from their own table (transaction_labels) and counts a day as labelled 8 days after
# it ends: chargebacks 1-5 days late, legitimate transactions confirmed after 7. The e2e include copy
# (conftest.include_dir) shortens that to 1 day so the suites need few days; their labels tables are drawn with
# delays to match: chargebacks within hours (a small tail of days), confirmations after 6 hours, so a day's labels
# are all in a day after it ends, as the shipped config's are after 8.
E2E_LABEL_DELAY_DAYS = 1
E2E_LABEL_DELAYS = {
    "maturity_days": 0.25,
    "chargeback_days": (0.1, 0.6),
    "tail_share": 0.05,
    "tail_mean_days": 1.0,
    "max_delay_days": 5.0,
}
LABELS_TABLE = "transaction_labels"


def load_fraud_source(db_url: str, transactions, seed: int, labels=None):
    """``transactions`` (generate_transactions' frame) into the source as a real one holds them: the table
    ``transactions`` without the label (is_fraud, label_available_at), and their labels in ``transaction_labels``
    (default: ``generate_labels`` with the e2e delays). Returns load_source's result."""
    from ml_ops.local.sim import generate_labels, load_source
    from ml_ops.local.sim.transactions import LABEL_IN_ROW

    if labels is None:
        labels = generate_labels(transactions, seed, **E2E_LABEL_DELAYS)
    rows = transactions.drop(columns=[c for c in LABEL_IN_ROW if c in transactions.columns])
    return load_source(db_url, "transactions", rows, labels_table=LABELS_TABLE, labels=labels)


def source_counts(db_url: str, table: str, ts_column: str) -> dict[str, int]:
    import sqlalchemy as sa

    engine = sa.create_engine(db_url)
    with engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT substr({ts_column}, 1, 10), count(*) FROM {table} GROUP BY 1")).all()
    return {day: n for day, n in rows}


@contextmanager
def running_stack(inbox, extra_env: dict, *, prefix: str = "mlops-e2e-"):
    """A Stack in a temporary MLOPS_HOME on free ports, alerts wired to ``inbox``; stopped and the
    environment restored afterwards (the home is kept with MLOPS_KEEP_E2E_HOME=1)."""
    from ml_ops.local.stack import Stack

    home = Path(tempfile.mkdtemp(prefix=prefix))
    env = {
        "MLOPS_HOME": str(home),
        "MLOPS_SCHEDULES": "off",
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        "MLOPS_S3_PORT": str(free_port()),
        "MLOPS_GATEWAY_PORT": str(free_port()),
        "AIRFLOW_CONN_SMTP_DEFAULT": json.dumps(
            {
                "conn_type": "smtp",
                "host": "127.0.0.1",
                "port": inbox.smtp_port,
                "extra": {"disable_ssl": True, "disable_tls": True, "from_email": "airflow@example.com"},
            }
        ),
        "AIRFLOW_CONN_SLACK_ALERTS": json.dumps({"conn_type": "slackwebhook", "password": inbox.slack_url}),
        **extra_env,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    stack = Stack.from_env()
    try:
        stack.up()
        yield stack
    finally:
        stack.down()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        if os.environ.get("MLOPS_KEEP_E2E_HOME") != "1":
            shutil.rmtree(home, ignore_errors=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def assert_day_partitions(store, source_db_url: str, days, prefix: str = "s3://mlops/pipelines/fraud") -> None:
    """What a user checks after good days: raw rows = source rows, features for every row, reports."""
    counts = source_counts(source_db_url, "transactions", "ts")
    for day in days:
        ds = day.isoformat()
        raw = store.read_parquet(f"{prefix}/raw/ds={ds}/data.parquet")
        assert len(raw) == counts[ds] > 1000
        features = store.read_parquet(f"{prefix}/features/ds={ds}/data.parquet")
        assert len(features) == len(raw)
        assert {"entity_txn_count_24h", "amount_vs_entity_mean"} <= set(features.columns)
        assert store.read_json(f"{prefix}/validation/ds={ds}/result.json")["success"] is True
        html = store.get_bytes(f"{prefix}/validation/ds={ds}/report.html").decode()
        assert "<html" in html.lower() and ds in html


def assert_first_champion(history: dict, mlflow_client, days, first_model: int = 4) -> None:
    """Training skips until the window exists; the first model (on ``days[first_model]``) is version 1
    and holds `champion`."""
    first_model_day = days[first_model]
    early = [day for day in days[:first_model] if day in history]  # days built in-process have no DAG run
    assert early, "no day before the first model ran through the scheduler"
    for day in early:
        assert history[day]["tasks"]["train"] == "skipped", (day, history[day]["tasks"])
    assert history[first_model_day]["tasks"]["promote"] == "success"
    champion = mlflow_client.get_model_version_by_alias("fraud", "champion")
    assert champion.version == "1"
    run = mlflow_client.get_run(champion.run_id)
    assert run.info.experiment_id == mlflow_client.get_experiment_by_name("fraud").experiment_id
    for metric in ("roc_auc", "pr_auc", "f1", "precision", "recall", "log_loss"):
        assert metric in run.data.metrics
    assert run.data.metrics["roc_auc"] > 0.75
    assert champion.tags["data_date"] == first_model_day.isoformat()
    assert {"data_window", "code_version", "validation_uri"} <= set(champion.tags)
