"""Every file in dags/ imports cleanly, fast, without heavy libraries, and every DAG follows our rules."""

import itertools
import subprocess
import sys
from pathlib import Path

import pytest

from ml_ops.config import load_pipeline_by_name

REPO = Path(__file__).resolve().parents[2]
HEAVY = ("pandas", "sklearn", "mlflow", "evidently", "great_expectations", "pyarrow", "boto3")


@pytest.fixture(scope="module")
def dagbag():
    from airflow.dag_processing.dagbag import DagBag

    return DagBag(dag_folder=str(REPO / "dags"))


def test_no_import_errors(dagbag):
    assert dagbag.import_errors == {}
    assert {
        f"{p}_{kind}" for p in ("fraud", "tumors") for kind in ("training", "monitoring", "canary", "rollback")
    } <= set(dagbag.dag_ids)


def test_every_dag_has_tags_doc_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, dag_id
        assert dag.doc_md and len(dag.doc_md) > 100, dag_id
        assert dag.max_active_runs == 1, dag_id
        for task in dag.tasks:
            if dag_id.endswith("_rollback"):  # a retried rollback could undo two promotions: the user re-triggers
                assert task.retries == 0, dag_id
                continue
            assert task.retries >= 1, f"{dag_id}.{task.task_id} has no retries"
            assert task.retry_exponential_backoff, f"{dag_id}.{task.task_id}"
            assert task.execution_timeout is not None, f"{dag_id}.{task.task_id}"


def test_training_dag_shape(dagbag):
    dag = dagbag.dags["fraud_training"]
    order = [
        "extract",
        "validate",
        "features",
        "labels",  # fraud's labels arrive in their own table: joined before training
        "train",
        "compare",
        "challenger_won",
        "promote",
        "new_canary",
        "announce_canary",
    ]
    for up, down in itertools.pairwise(order):
        assert down in dag.get_task(up).downstream_task_ids, f"{up} -> {down}"
    assert set(dag.params.keys()) >= {"data_date", "force_retrain"}


def test_canary_dag_runs_on_the_promote_asset_and_always_releases_traffic(dagbag):
    dag = dagbag.dags["fraud_canary"]
    assert [a.name for a in dag.timetable.asset_condition.objects] == ["fraud_canary"]
    for name in ("fraud", "tumors"):  # a pipeline in canary mode hands its winner over through that Asset
        handed_on = "canary" if load_pipeline_by_name(name).promotion.mode == "canary" else "champion"
        training = dagbag.dags[f"{name}_training"]
        announce = training.get_task(f"announce_{handed_on}")
        assert [a.name for a in announce.outlets] == [f"{name}_{handed_on}"]
        assert training.get_task(f"new_{handed_on}").upstream_task_ids == {"promote"}
        assert not training.get_task("promote").outlets  # skipped (no hand-off) -> no Asset event
    release = dag.get_task("release_traffic")
    assert release.is_teardown and "canary" in release.upstream_task_ids
    assert dag.get_task("canary").execution_timeout.total_seconds() > 3600  # four steps of waiting fit
    assert {"version", "steps", "step_minutes", "pass_score"} <= set(dag.params.keys())
    assert set(dagbag.dags["fraud_rollback"].params.keys()) == {"reason"}


def test_dag_files_import_no_heavy_libraries():
    code = (
        "import sys, runpy; sys.path.insert(0, %r); runpy.run_path(%r);"
        "heavy = [m for m in %r if m in sys.modules]; print(heavy); sys.exit(1 if heavy else 0)"
    )
    for path in sorted((REPO / "dags").glob("*.py")):
        out = subprocess.run(
            [sys.executable, "-c", code % (str(REPO), str(path), HEAVY)], capture_output=True, text=True, check=False
        )
        assert out.returncode == 0, (
            f"{path.name} imports heavy modules at parse time: {out.stdout} {out.stderr[-2000:]}"
        )


def test_broken_yaml_is_left_out_not_fatal(tmp_path, caplog):
    from ml_ops.airflow.dag_factory import build_all

    good = REPO / "include" / "pipelines" / "tumors.yaml"
    bad = tmp_path / "broken.yaml"
    bad.write_text(good.read_text().replace("window_days: 2", "window_days: -1"))
    dags = build_all([good, bad])
    assert sorted(dags) == ["tumors_canary", "tumors_monitoring", "tumors_rollback", "tumors_training"]
    assert "broken.yaml: training.window_days" in caplog.text
