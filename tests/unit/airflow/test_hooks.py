import json
import os

from ml_ops.airflow.hooks import MlflowHook


def test_tracking_uri_from_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "host": "mlflow", "port": 5000}))
    assert MlflowHook().get_tracking_uri() == "http://mlflow:5000"


def test_https_and_basic_auth_go_to_mlflow_env(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRACKING",
        json.dumps(
            {"conn_type": "http", "host": "mlflow.example.com", "schema": "https", "login": "bot", "password": "s3cret"}
        ),
    )
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert MlflowHook("tracking").get_tracking_uri() == "https://mlflow.example.com"
    assert os.environ["MLFLOW_TRACKING_USERNAME"] == "bot" and os.environ["MLFLOW_TRACKING_PASSWORD"] == "s3cret"
