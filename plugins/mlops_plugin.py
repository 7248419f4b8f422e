"""Airflow UI integration of airflow-mlops: task → MLflow / report links, and the report route.

Links are registered on the existing operators through the plugin's ``operator_extra_links`` (matched
by class name and module). Airflow 3 evaluates such links in the API server when the UI asks for a
task's links, so ``get_link`` reads the task's XCom and DagRun from the metadata DB; tasks do not
push anything extra. Validate links also work for a failed validation (no XCom then): the report's
day is worked out from the DagRun exactly as the task did.
"""

from __future__ import annotations

import json
import os
from typing import ClassVar
from urllib.parse import quote

from airflow.plugins_manager import AirflowPlugin
from airflow.sdk import BaseOperatorLink
from mlops_reports import URL_PREFIX, create_app, report_path

from ml_ops import layout
from ml_ops.airflow.operators import pipeline as ops

DAG_SUFFIXES = ("_training", "_drift", "_monitoring")


# ---- URL builders: plain functions of XCom values (unit-tested) ------------------------------------------
def mlflow_ui_url(conn_id: str = "mlflow_default") -> str:
    """MLflow UI base URL: MLOPS_MLFLOW_UI_URL (what the browser can reach) or the Airflow connection."""
    if override := os.environ.get("MLOPS_MLFLOW_UI_URL"):
        return override.rstrip("/")
    from airflow.models.connection import Connection

    conn = Connection.get_connection_from_secrets(conn_id)
    port = f":{conn.port}" if conn.port else ""
    return f"{conn.schema or 'http'}://{conn.host}{port}"


def run_url(ui: str, xcom: dict | None) -> str:
    """MLflow's run page (``#/runs/<id>`` redirects to the run under its experiment)."""
    run_id = (xcom or {}).get("run_id")
    return f"{ui}/#/runs/{quote(str(run_id))}" if run_id else ""


def model_version_url(ui: str, model: str, xcom: dict | None) -> str:
    version = (xcom or {}).get("version")
    return f"{ui}/#/models/{quote(model)}/versions/{int(version)}" if version is not None else ""


def champion_version_url(ui: str, model: str, xcom: dict | None) -> str:
    version = (xcom or {}).get("champion_version")
    return f"{ui}/#/models/{quote(model)}/versions/{int(version)}" if version is not None else ""


def report_key(pipeline: str, stage: str, ds: str, filename: str = layout.REPORT_FILE) -> str:
    return layout.partition(layout.pipeline_key(pipeline), stage, ds, filename)


def report_url(base_url: str, key: str) -> str:
    return f"{base_url.rstrip('/')}{report_path(key)}"


def key_from_uri(uri: str | None) -> str | None:
    """``s3://bucket/pipelines/...`` → ``pipelines/...`` (the report route serves the configured bucket)."""
    if not uri or not uri.startswith("s3://"):
        return None
    return uri[len("s3://") :].split("/", 1)[1] if "/" in uri[len("s3://") :] else None


# ---- what the API server knows about a task instance -----------------------------------------------------
def pipeline_of(operator, dag_id: str) -> str:
    name = getattr(operator, "pipeline", None)
    if isinstance(name, str) and name and "{{" not in name:
        return name
    for suffix in DAG_SUFFIXES:
        if dag_id.endswith(suffix):
            return dag_id[: -len(suffix)]
    return dag_id


def xcom_return_value(ti_key) -> dict | None:
    from airflow.models.xcom import XComModel
    from airflow.utils.session import create_session

    with create_session() as session:
        row = session.execute(
            XComModel.get_many(
                key="return_value",
                run_id=ti_key.run_id,
                dag_ids=ti_key.dag_id,
                task_ids=ti_key.task_id,
                map_indexes=ti_key.map_index,
            ).with_only_columns(XComModel.value)
        ).first()
    if not row:
        return None
    value = row.value
    if isinstance(value, (str, bytes)):
        try:
            value = json.loads(value)
        except ValueError:
            return None
    return value if isinstance(value, dict) else None


def run_day(ti_key) -> str:
    """The run's data day, resolved as the operators resolve it (ml_ops.interval)."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session

    from ml_ops.interval import resolve_interval

    with create_session() as session:
        dr = session.query(DagRun).filter_by(dag_id=ti_key.dag_id, run_id=ti_key.run_id).one()
        return resolve_interval(
            data_date=(dr.conf or {}).get("data_date"),
            data_interval_start=dr.data_interval_start,
            data_interval_end=dr.data_interval_end,
            logical_date=dr.logical_date,
            run_after=dr.run_after,
        ).ds


def airflow_base_url() -> str:
    from airflow.configuration import conf

    # Empty base_url: a path-only link, which the browser resolves against the UI's own origin.
    return conf.get("api", "base_url", fallback="") or ""


# ---- the links -----------------------------------------------------------------------------------------
class MlflowRunLink(BaseOperatorLink):
    name = "MLflow run"
    operators: ClassVar[list] = [ops.TrainOperator]

    def get_link(self, operator, *, ti_key) -> str:
        return run_url(mlflow_ui_url(), xcom_return_value(ti_key))


class MlflowModelVersionLink(BaseOperatorLink):
    """Train: the version it registered. Compare: the challenger it judged (its XCom's ``version``)."""

    name = "MLflow model version"
    operators: ClassVar[list] = [ops.TrainOperator, ops.CompareOperator]

    def get_link(self, operator, *, ti_key) -> str:
        model = pipeline_of(operator, ti_key.dag_id)
        return model_version_url(mlflow_ui_url(), model, xcom_return_value(ti_key))


class MlflowChampionLink(BaseOperatorLink):
    name = "MLflow champion version"
    operators: ClassVar[list] = [ops.CompareOperator]

    def get_link(self, operator, *, ti_key) -> str:
        model = pipeline_of(operator, ti_key.dag_id)
        return champion_version_url(mlflow_ui_url(), model, xcom_return_value(ti_key))


class ReportLink(BaseOperatorLink):
    """The task's HTML report, served by the plugin's authenticated route (the bucket stays private)."""

    name = "Report"
    stage = "validation"
    operators: ClassVar[list] = [ops.ValidateOperator]

    def get_link(self, operator, *, ti_key) -> str:
        key = key_from_uri((xcom_return_value(ti_key) or {}).get("report"))
        if key is None:  # failed validation pushes no XCom, but its report is the one worth reading
            key = report_key(pipeline_of(operator, ti_key.dag_id), self.stage, run_day(ti_key))
        return report_url(airflow_base_url(), key)


LINKS = [MlflowRunLink(), MlflowModelVersionLink(), MlflowChampionLink(), ReportLink()]

if hasattr(ops, "DriftOperator"):  # the nightly drift DAG's operator, once it exists

    class DriftReportLink(ReportLink):
        name = "Drift report"
        stage = "drift"
        operators: ClassVar[list] = [ops.DriftOperator]

    LINKS.append(DriftReportLink())


class MlopsPlugin(AirflowPlugin):
    name = "airflow_mlops"
    operator_extra_links: ClassVar[list] = LINKS
    fastapi_apps: ClassVar[list] = [{"name": "mlops-reports", "app": create_app(), "url_prefix": URL_PREFIX}]
