"""The second pipeline exists only as YAML + SQL + expectation suite: no Python of its own.
Running it end to end proves that adding a model is adding a YAML file."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from tests.e2e.helpers import run_day, source_counts

pytestmark = pytest.mark.e2e

D0 = date(2026, 3, 1)


def test_tumors_pipeline_trains_a_champion(stack, airflow, store, mlflow_client):
    from ml_ops.local.sim import generate_tumors, load_source

    load_source(stack.source_db_url, "tumors", generate_tumors(D0, 4, rows_per_day=150, seed=3, label_delay_days=1))
    runs = [run_day(airflow, "tumors_training", D0 + timedelta(days=i)) for i in range(4)]
    assert [r["state"] for r in runs] == ["success"] * 4, runs
    assert runs[2]["tasks"]["train"] == "skipped" and runs[3]["tasks"]["promote"] == "success"
    counts = source_counts(stack.source_db_url, "tumors", "observed_at")
    for i in range(4):
        ds = (D0 + timedelta(days=i)).isoformat()
        assert len(store.read_parquet(f"s3://mlops/pipelines/tumors/raw/ds={ds}/data.parquet")) == counts[ds]
    champion = mlflow_client.get_model_version_by_alias("tumors", "champion")
    assert champion.version == "1"
    assert mlflow_client.get_run(champion.run_id).data.metrics["roc_auc"] > 0.9
