"""MLflow hook: the tracking server's address and credentials come from an Airflow connection."""

from __future__ import annotations

import os

from airflow.sdk import BaseHook


class MlflowHook(BaseHook):
    """Connection ``mlflow_default`` (type http): host, port, schema (http/https), optional login/password.

    Example: ``AIRFLOW_CONN_MLFLOW_DEFAULT='{"conn_type": "http", "host": "mlflow", "port": 5000}'``.
    """

    conn_name_attr = "mlflow_conn_id"
    default_conn_name = "mlflow_default"
    conn_type = "http"
    hook_name = "MLflow"

    def __init__(self, mlflow_conn_id: str = default_conn_name) -> None:
        super().__init__()
        self.mlflow_conn_id = mlflow_conn_id

    def get_tracking_uri(self) -> str:
        conn = self.get_connection(self.mlflow_conn_id)
        scheme = conn.schema or "http"
        port = f":{conn.port}" if conn.port else ""
        if conn.login:
            # MLflow's client reads basic-auth credentials from the environment only.
            os.environ["MLFLOW_TRACKING_USERNAME"] = conn.login
            os.environ["MLFLOW_TRACKING_PASSWORD"] = conn.password or ""
        return f"{scheme}://{conn.host}{port}"

    def get_conn(self):
        from mlflow.tracking import MlflowClient

        return MlflowClient(tracking_uri=self.get_tracking_uri())
