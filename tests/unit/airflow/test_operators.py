"""Small pure helpers of the operators."""


def test_triggered_by_names_the_user_or_else_the_run():
    from types import SimpleNamespace

    from ml_ops.airflow.operators.pipeline import triggered_by

    by_user = {"dag_run": SimpleNamespace(triggering_user_name="alice", run_type="manual"), "run_id": "manual__1"}
    assert triggered_by(by_user) == "user alice"
    scheduled = {"dag_run": SimpleNamespace(triggering_user_name=None, run_type="asset_triggered"), "run_id": "a__1"}
    assert triggered_by(scheduled) == "asset_triggered run a__1"
