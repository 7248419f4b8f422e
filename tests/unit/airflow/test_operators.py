"""Small pure helpers of the operators, and how their errors reach Airflow."""

import pytest

from ml_ops.config import ConfigError
from ml_ops.pipeline.train import ModelBuildError


def test_triggered_by_names_the_user_or_else_the_run():
    from types import SimpleNamespace

    from ml_ops.airflow.operators.pipeline import triggered_by

    by_user = {"dag_run": SimpleNamespace(triggering_user_name="alice", run_type="manual"), "run_id": "manual__1"}
    assert triggered_by(by_user) == "user alice"
    scheduled = {"dag_run": SimpleNamespace(triggering_user_name=None, run_type="asset_triggered"), "run_id": "a__1"}
    assert triggered_by(scheduled) == "asset_triggered run a__1"


@pytest.mark.parametrize(
    ("raised", "retried"),
    [
        (ModelBuildError("features.categorical: column 'grade' ..."), False),
        (ConfigError("fraud.yaml: source.sql: does not bind [':end']"), False),
        (ConnectionError("S3 endpoint refused the connection"), True),
    ],
    ids=["model_build", "config", "infrastructure"],
)
def test_deterministic_errors_fail_at_once_and_infrastructure_errors_retry(raised, retried):
    from airflow.sdk.exceptions import AirflowFailException

    from ml_ops.airflow.operators.pipeline import PipelineOperator

    class Failing(PipelineOperator):
        per_day = False

        def run_step(self, context, interval):
            raise raised

    op = Failing(task_id="t", pipeline="fraud")
    with pytest.raises(Exception) as caught:
        op.execute({})
    assert isinstance(caught.value, AirflowFailException) is not retried, caught.value
    if not retried:
        assert "include/pipelines/fraud.yaml" in str(caught.value)
