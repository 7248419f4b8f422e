"""The second pipeline exists only as YAML + SQL + expectation suite: no Python of its own.
Running it end to end proves that adding a model is adding a YAML file."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import pytest

from tests.e2e.helpers import run_day, source_counts

pytestmark = pytest.mark.e2e

D0 = date(2026, 3, 1)
DAG = "tumors_training"


def test_tumors_days_triggered_at_once_run_in_order_and_train_a_champion(stack, airflow, store, mlflow_client):
    from ml_ops.local.sim import generate_tumors, load_source

    load_source(stack.source_db_url, "tumors", generate_tumors(D0, 4, rows_per_day=150, seed=3, label_delay_days=1))
    days = [D0 + timedelta(days=i) for i in range(4)]
    airflow.wait_for_dag(DAG, timeout=180)
    # Four days triggered at once: every request is in before the scheduler may start any (paused meanwhile),
    # newest day first, the arrival order in which Airflow's default (run_after = moment of the trigger) started
    # the latest day first, which then failed its history check while its predecessors queued behind it.
    airflow.pause(DAG)
    stamp = f"{datetime.now().timestamp():.0f}"
    run_ids = {
        day: airflow.trigger(
            DAG,
            logical_date=datetime(day.year, day.month, day.day, tzinfo=timezone.utc),
            run_id=f"e2e__{day.isoformat()}__{stamp}",
        )
        for day in reversed(days)
    }
    airflow.unpause(DAG)
    states = {day: airflow.wait_for_run(DAG, run_ids[day], timeout=600) for day in days}
    tasks = {day: {t["task_id"]: t for t in airflow.task_instances(DAG, run_ids[day])} for day in days}
    assert list(states.values()) == ["success"] * 4, {
        d: {t: ti["state"] for t, ti in tis.items()} for d, tis in tasks.items()
    }
    # In day order, one after another: each day's extract started after the previous day's promote ended.
    extract_starts = [tasks[day]["extract"]["start_date"] for day in days]
    assert extract_starts == sorted(extract_starts), extract_starts
    for before, after in zip(days, days[1:], strict=False):
        last_end = max(ti["end_date"] for ti in tasks[before].values() if ti["end_date"])
        assert tasks[after]["extract"]["start_date"] >= last_end, (before, after)
    assert tasks[days[2]]["train"]["state"] == "skipped" and tasks[days[3]]["promote"]["state"] == "success"
    counts = source_counts(stack.source_db_url, "tumors", "observed_at")
    for day in days:
        ds = day.isoformat()
        assert len(store.read_parquet(f"s3://mlops/pipelines/tumors/raw/ds={ds}/data.parquet")) == counts[ds]
    champion = mlflow_client.get_model_version_by_alias("tumors", "champion")
    assert champion.version == "1"
    assert mlflow_client.get_run(champion.run_id).data.metrics["roc_auc"] > 0.9

    # A day whose predecessor was never triggered fails at once (no retries holding the run slot), naming it.
    gap, skipped = D0 + timedelta(days=5), (D0 + timedelta(days=4)).isoformat()
    run = run_day(airflow, DAG, gap, timeout=300)
    assert run["state"] == "failed" and run["tasks"]["validate"] == "failed", run
    (validate,) = [t for t in airflow.task_instances(DAG, run["run_id"]) if t["task_id"] == "validate"]
    assert validate["try_number"] == 1
    log = airflow.task_log(DAG, run["run_id"], "validate")
    assert f"No run of {skipped} is queued or running" in log, log[-2000:]
