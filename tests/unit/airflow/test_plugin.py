"""The Airflow plugin: extra-link URLs from XCom values, link registration on the operators, and the
report route (auth, key filtering, streaming a real object from a real S3 via ``aws_default``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / "plugins"))  # Airflow puts the plugins folder on sys.path the same way

import mlops_plugin as plugin
import mlops_reports as reports

TRAIN_XCOM = {"version": 7, "run_id": "0a1b2c3d4e", "model_uri": "models:/m-abc"}
COMPARE_XCOM = {"version": 7, "promote": False, "champion_version": 5, "reason": "roc_auc below floor"}
UI = "http://mlflow.example:5000"


# ---- links ----------------------------------------------------------------------------------------------
def test_mlflow_urls_from_xcom():
    assert plugin.run_url(UI, TRAIN_XCOM) == f"{UI}/#/runs/0a1b2c3d4e"
    assert plugin.model_version_url(UI, "fraud", TRAIN_XCOM) == f"{UI}/#/models/fraud/versions/7"
    assert plugin.model_version_url(UI, "fraud", COMPARE_XCOM) == f"{UI}/#/models/fraud/versions/7"
    assert plugin.champion_version_url(UI, "fraud", COMPARE_XCOM) == f"{UI}/#/models/fraud/versions/5"
    # no XCom yet (task running, skipped or failed): no link rather than a broken one
    assert plugin.run_url(UI, None) == "" and plugin.run_url(UI, COMPARE_XCOM) == ""
    assert plugin.champion_version_url(UI, "fraud", {**COMPARE_XCOM, "champion_version": None}) == ""


def test_mlflow_ui_url_override_and_connection(monkeypatch):
    monkeypatch.delenv("MLOPS_MLFLOW_UI_URL", raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MLFLOW_DEFAULT", json.dumps({"conn_type": "http", "host": "mlflow", "port": 5000}))
    assert plugin.mlflow_ui_url() == "http://mlflow:5000"
    monkeypatch.setenv("MLOPS_MLFLOW_UI_URL", "https://mlflow.example.com/")
    assert plugin.mlflow_ui_url() == "https://mlflow.example.com"


def test_report_urls():
    key = plugin.key_from_uri("s3://mlops/pipelines/fraud/validation/ds=2026-01-03/report.html")
    assert (
        key
        == plugin.report_key("fraud", "validation", "2026-01-03")
        == "pipelines/fraud/validation/ds=2026-01-03/report.html"
    )
    assert (
        plugin.report_url("http://localhost:8080/", key)
        == "http://localhost:8080/mlops/reports/pipelines/fraud/validation/ds=2026-01-03/report.html"
    )
    assert plugin.report_url("", key) == "/mlops/reports/pipelines/fraud/validation/ds=2026-01-03/report.html"
    assert plugin.key_from_uri(None) is None and plugin.key_from_uri("/tmp/report.html") is None
    # every link the plugin builds is accepted by its own route
    assert reports.parse_report_key(key)["pipeline"] == "fraud"


def test_pipeline_of_prefers_operator_field():
    class Op:
        pipeline = "tumors"

    assert plugin.pipeline_of(Op(), "whatever_training") == "tumors"
    assert plugin.pipeline_of(object(), "fraud_training") == "fraud"
    assert plugin.pipeline_of(object(), "fraud_drift") == "fraud"


def test_links_are_registered_on_the_pipeline_operators(monkeypatch):
    """The path the API server takes: plugin links attach to deserialized tasks by class and module."""
    from airflow import plugins_manager, settings
    from airflow.serialization.serialized_objects import DagSerialization

    from ml_ops.airflow.dag_factory import build_training_dag
    from ml_ops.config import load_pipeline_by_name

    caches = (plugins_manager._get_plugins, plugins_manager._get_extra_operators_links_plugins)
    monkeypatch.setattr(settings, "PLUGINS_FOLDER", str(REPO / "plugins"))
    for c in caches:
        c.cache_clear()
    try:
        plugins, errors = plugins_manager._get_plugins()
        assert "airflow_mlops" in [p.name for p in plugins], errors
        dag = DagSerialization.from_dict(DagSerialization.to_dict(build_training_dag(load_pipeline_by_name("fraud"))))
        assert dag.get_task("train").extra_links == ["MLflow model version", "MLflow run"]
        assert dag.get_task("compare").extra_links == ["MLflow champion version", "MLflow model version"]
        assert dag.get_task("validate").extra_links == ["Report"]
        assert dag.get_task("extract").extra_links == []
    finally:
        for c in caches:
            c.cache_clear()


# ---- report route -------------------------------------------------------------------------------------------
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    from ml_ops.local.stack import Stack

    stack = Stack(
        home=tmp_path_factory.mktemp("s3home"),
        s3_port=_free_port(),
        mlflow_port=_free_port(),
        airflow_port=_free_port(),
        startup_timeout=60,
    )
    stack.up(["s3"])
    yield stack
    stack.down()


@pytest.fixture(scope="module")
def airflow_auth():
    """A migrated metadata DB (token revocation is checked there) and Airflow's auth manager."""
    mp = pytest.MonkeyPatch()
    mp.setenv("AIRFLOW__API_AUTH__JWT_SECRET", "plugin-tests-" + "s" * 64)
    mp.setenv(
        "AIRFLOW__CORE__AUTH_MANAGER", "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager"
    )
    subprocess.run([str(Path(sys.executable).parent / "airflow"), "db", "migrate"], check=True, capture_output=True)
    from airflow.api_fastapi.app import init_auth_manager, purge_cached_app
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    am = init_auth_manager()
    yield am.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    purge_cached_app()
    mp.undo()


@pytest.fixture()
def client(s3, airflow_auth, monkeypatch):
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    monkeypatch.setenv("MLOPS_BUCKET", s3.bucket)
    monkeypatch.setenv(
        "AIRFLOW_CONN_AWS_DEFAULT",
        json.dumps(
            {
                "conn_type": "aws",
                "login": s3.s3_access_key,
                "password": s3.s3_secret_key,
                "extra": {"endpoint_url": s3.s3_url, "region_name": "us-east-1"},
            }
        ),
    )
    monkeypatch.setenv("AWS_REQUEST_CHECKSUM_CALCULATION", "when_required")
    monkeypatch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    root = FastAPI()
    root.mount(reports.URL_PREFIX, reports.create_app())  # as the API server mounts plugin apps
    return TestClient(root)


KEY = "pipelines/fraud/validation/ds=2026-01-03/report.html"
HTML = "<html><body><h1>fraud ds=2026-01-03</h1>" + "x" * 200_000 + "</body></html>"


def test_report_is_streamed_to_an_authenticated_user(client, s3, airflow_auth):
    s3.s3_client().put_object(Bucket=s3.bucket, Key=KEY, Body=HTML.encode())
    url = reports.report_path(KEY)

    resp = client.get(url, headers={"Authorization": f"Bearer {airflow_auth}"})
    assert resp.status_code == 200, resp.text
    assert resp.headers["content-type"].startswith("text/html")
    assert resp.text == HTML

    client.cookies.set("_token", airflow_auth)  # what a browser tab opened from the UI sends
    assert client.get(url).text == HTML


def test_report_requires_login(client, s3):
    s3.s3_client().put_object(Bucket=s3.bucket, Key=KEY, Body=HTML.encode())
    assert client.get(reports.report_path(KEY)).status_code == 401
    bad = client.get(reports.report_path(KEY), headers={"Authorization": "Bearer not-a-jwt"})
    assert bad.status_code == 403


@pytest.mark.parametrize(
    "key",
    [
        "pipelines/fraud/raw/ds=2026-01-03/data.parquet",  # data, not a report
        "pipelines/fraud/validation/ds=2026-01-03/../../raw/ds=2026-01-03/data.parquet",
        "pipelines/fraud/validation/ds=2026-01-03/%2e%2e/%2e%2e/raw/x.html",
        "pipelines/fraud/validation/ds=2026-01-03/..html",
        "mlflow/1/abc/artifacts/model.pkl",
        "pipelines/fraud/validation/report.html",
        "pipelines/Fraud/validation/ds=2026-01-03/report.html",
    ],
)
def test_report_route_rejects_other_keys(client, s3, airflow_auth, key):
    s3.s3_client().put_object(Bucket=s3.bucket, Key="pipelines/fraud/raw/ds=2026-01-03/data.parquet", Body=b"PAR1")
    resp = client.get(f"{reports.URL_PREFIX}/reports/{key}", headers={"Authorization": f"Bearer {airflow_auth}"})
    assert resp.status_code == 404, (key, resp.status_code)
    assert b"PAR1" not in resp.content


def test_missing_report_is_404(client, airflow_auth):
    resp = client.get(
        reports.report_path("pipelines/fraud/drift/ds=2030-01-01/report.html"),
        headers={"Authorization": f"Bearer {airflow_auth}"},
    )
    assert resp.status_code == 404 and "does not exist" in resp.json()["detail"]
