"""MLflow hook: the tracking server's address and credentials come from an Airflow connection.

The one way an Airflow task reaches MLflow: ``MlflowHook(conn_id).get_tracking_uri()`` (or ``get_conn()`` for
an ``MlflowClient`` on it), passed explicitly to the Airflow-free steps. Nothing is written to the process
environment and MLflow's process-global tracking URI is never set.

Credentials travel inside the URI (``https://user:password@host:port``). MLflow's REST client sends requests
to ``<tracking URI><endpoint>`` (``mlflow.utils.rest_utils.http_request``) and ``requests`` turns the URL's
userinfo into an HTTP Basic ``Authorization`` header, the header MLflow's basic-auth server checks; proxied
artifact URIs (``mlflow-artifacts:/``) are resolved against the tracking URI's netloc, userinfo included
(``MlflowArtifactsRepository.resolve_uri``). MLflow's own alternatives (``MLFLOW_TRACKING_USERNAME`` /
``_PASSWORD`` or ``~/.mlflow/credentials``) are process-global, so they are not used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING
from urllib.parse import quote

from airflow.sdk import BaseHook

if TYPE_CHECKING:
    from mlflow import MlflowClient


def tracking_uri(
    host: str,
    *,
    schema: str | None = None,
    port: int | None = None,
    login: str | None = None,
    password: str | None = None,
) -> str:
    """``<schema>://[login[:password]@]host[:port]`` with login and password percent-encoded."""
    scheme = schema or "http"
    userinfo = ""
    if login:
        userinfo = quote(login, safe="") + (f":{quote(password, safe='')}" if password else "") + "@"
    return f"{scheme}://{userinfo}{host}{f':{port}' if port else ''}"


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
        """The tracking URI, credentials included: pass it on, never log it."""
        conn = self.get_connection(self.mlflow_conn_id)
        if conn.password and quote(conn.password, safe="") != conn.password:
            # Airflow masks the connection's password in task logs; the URI carries it percent-encoded.
            from airflow.sdk.log import mask_secret

            mask_secret(quote(conn.password, safe=""))
        return tracking_uri(conn.host, schema=conn.schema, port=conn.port, login=conn.login, password=conn.password)

    def get_conn(self) -> MlflowClient:
        """An ``MlflowClient`` whose tracking and registry URIs are both the connection's."""
        from mlflow import MlflowClient

        uri = self.get_tracking_uri()
        return MlflowClient(tracking_uri=uri, registry_uri=uri)
