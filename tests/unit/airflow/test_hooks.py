import base64
import json
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from ml_ops.airflow.hooks import MlflowHook


def test_tracking_uri_from_connection(monkeypatch):
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "host": "mlflow", "port": 5000}))
    assert MlflowHook().get_tracking_uri() == "http://mlflow:5000"


def test_https_and_basic_auth_travel_in_the_uri_not_the_environment(monkeypatch):
    monkeypatch.setenv(
        "AIRFLOW_CONN_TRACKING",
        json.dumps(
            {
                "conn_type": "http",
                "host": "mlflow.example.com",
                "schema": "https",
                "login": "bot",
                "password": "s3cr@t:/x",
            }
        ),
    )
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    assert MlflowHook("tracking").get_tracking_uri() == "https://bot:s3cr%40t%3A%2Fx@mlflow.example.com"
    assert "MLFLOW_TRACKING_USERNAME" not in os.environ and "MLFLOW_TRACKING_PASSWORD" not in os.environ
    client = MlflowHook("tracking").get_conn()
    assert client.tracking_uri == client._registry_uri == "https://bot:s3cr%40t%3A%2Fx@mlflow.example.com"


@pytest.fixture
def basic_auth_server():
    """A stand-in MLflow server that records the Authorization header of each request and answers ``{}``."""
    seen: list[str | None] = []

    class Handler(BaseHTTPRequestHandler):
        def _answer(self):
            seen.append(self.headers.get("Authorization"))
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            body = b"{}"
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = _answer

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server.server_address[1], seen
    server.shutdown()
    server.server_close()


def test_mlflow_client_sends_the_uris_credentials_as_basic_auth(monkeypatch, basic_auth_server):
    """MLflow's REST client + requests turn the URI's userinfo into ``Authorization: Basic``."""
    port, seen = basic_auth_server
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME", raising=False)
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD", raising=False)
    monkeypatch.setenv(
        "AIRFLOW_CONN_MLFLOW_DEFAULT",
        json.dumps({"conn_type": "http", "host": "127.0.0.1", "port": port, "login": "bot", "password": "s3cr@t:/x"}),
    )
    assert MlflowHook().get_conn().search_experiments() == []
    assert seen and set(seen) == {"Basic " + base64.b64encode(b"bot:s3cr@t:/x").decode()}


def test_proxied_artifact_uris_keep_the_credentials():
    from mlflow.store.artifact.mlflow_artifacts_repo import MlflowArtifactsRepository

    resolved = MlflowArtifactsRepository.resolve_uri(
        "mlflow-artifacts:/1/models/m-1/artifacts", "http://bot:pw@mlflow:5000"
    )
    assert resolved == "http://bot:pw@mlflow:5000/api/2.0/mlflow-artifacts/artifacts/1/models/m-1/artifacts"
