"""MLflow stopped while a training task runs (issue 12, faults held): the step fails with an error naming the
MLflow server, of a kind the operator retries (not a model-building or configuration error), and the retry
completes once the server is back, registering one version, not two. Real MLflow server and S3 endpoint."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from ml_ops.config import ConfigError
from ml_ops.pipeline.train import ModelBuildError, train_and_register
from tests.e2e.helpers import free_port


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    from ml_ops.local.stack import Stack

    stack = Stack(
        home=tmp_path_factory.mktemp("mlflow-outage"),
        s3_port=free_port(),
        mlflow_port=free_port(),
        airflow_port=free_port(),
        startup_timeout=120,
    )
    stack.up(["s3", "mlflow"])
    yield stack
    stack.down()


def _frame(seed: int, n: int = 400) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 2))
    return pd.DataFrame({"a": x[:, 0], "b": x[:, 1], "y": (x[:, 0] + 0.5 * rng.normal(size=n) > 1).astype(int)})


def _train(stack):
    return train_and_register(
        _frame(0),
        _frame(1),
        tracking_uri=stack.mlflow_url,
        experiment="outage",
        model_name="outage",
        target="y",
        numeric=["a", "b"],
        categorical=[],
        estimator="sklearn.linear_model.LogisticRegression",
        params={},
        data_uris={"train": [], "holdout": []},
        tags={"pipeline": "outage"},
        idempotency_key="outage/2026-01-01",
    )


def test_training_fails_naming_mlflow_while_it_is_down_and_the_retry_completes(stack, monkeypatch):
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")  # fail fast: Airflow's retries do the waiting
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "10")
    stack.stop("mlflow")
    try:
        with pytest.raises(Exception) as failed:
            _train(stack)
    finally:
        stack.up(["mlflow"])
    # an infrastructure error: PipelineOperator turns only these two kinds into a failure without retries
    assert not isinstance(failed.value, (ModelBuildError, ConfigError)), repr(failed.value)
    assert stack.mlflow_url.split("//", 1)[1] in str(failed.value), str(failed.value)  # names the server

    result = _train(stack)  # the task's retry, with MLflow back
    assert str(result.version) == "1"
    again = _train(stack)  # and a second retry of the same day registers nothing new
    assert str(again.version) == "1"
