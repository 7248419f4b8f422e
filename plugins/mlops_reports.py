"""FastAPI app mounted under the Airflow API server: serves pipeline reports from S3 to UI users.

    GET /mlops/reports/pipelines/<pipeline>/{validation,drift}/ds=YYYY-MM-DD/<file>.{html,json}

The bucket stays private: the API server reads the object with the ``aws_default`` connection and
streams it to a user who is logged in to Airflow (the UI's ``_token`` cookie or a Bearer token) and
may read the pipeline's training DAG. Only keys of that exact shape are served, so no other object
of the bucket (models, raw data) can be fetched through this route and ``..`` cannot escape it.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request, status
from fastapi.responses import StreamingResponse

from ml_ops import layout

URL_PREFIX = "/mlops"
REPORT_ROUTE = "/reports"
REPORT_KEY = layout.REPORT_KEY  # pipelines/<p>/<validation|drift>/ds=<day>/<file>.<html|json>
CONTENT_TYPES = {"html": "text/html; charset=utf-8", "json": "application/json"}


def report_path(key: str) -> str:
    """Path of a report under the API server (what the operator extra links point at)."""
    return f"{URL_PREFIX}{REPORT_ROUTE}/{key}"


def parse_report_key(key: str) -> re.Match:
    """The key's parts, or 404 for anything that is not a report key (traversal, other prefixes)."""
    match = REPORT_KEY.match(key)
    if not match or ".." in key:
        raise HTTPException(status.HTTP_404_NOT_FOUND, "not a pipeline report")
    return match


def bucket() -> str:
    return os.environ.get("MLOPS_BUCKET", "mlops")


def s3_client(aws_conn_id: str = "aws_default"):
    from airflow.providers.amazon.aws.hooks.s3 import S3Hook

    return S3Hook(aws_conn_id=aws_conn_id).get_conn()


async def _airflow_user(request: Request):
    # Airflow's own dependency: Bearer header first, else the UI session cookie; 401 when neither.
    # (imported here: the plugin module is also loaded by schedulers and workers, which never serve it)
    from airflow.api_fastapi.core_api.security import bearer_scheme, get_user

    return await get_user(request, None, await bearer_scheme(request))


def _authorize(user, pipeline: str) -> None:
    from airflow.api_fastapi.app import get_auth_manager
    from airflow.api_fastapi.auth.managers.models.resource_details import DagAccessEntity, DagDetails

    # A report belongs to a pipeline; whoever may read its training DAG's task instances may read it.
    allowed = get_auth_manager().is_authorized_dag(
        method="GET",
        user=user,
        access_entity=DagAccessEntity.TASK_INSTANCE,
        details=DagDetails(id=f"{pipeline}_training"),
    )
    if not allowed:
        raise HTTPException(status.HTTP_403_FORBIDDEN, f"no read access to the DAGs of pipeline {pipeline!r}")


def create_app() -> FastAPI:
    app = FastAPI(title="airflow-mlops reports", docs_url=None, redoc_url=None, openapi_url=None)

    @app.get(REPORT_ROUTE + "/{key:path}")
    def get_report(key: str, user: Annotated[Any, Depends(_airflow_user)]) -> StreamingResponse:
        match = parse_report_key(key)
        _authorize(user, match["pipeline"])
        client = s3_client()
        try:
            obj = client.get_object(Bucket=bucket(), Key=key)
        except client.exceptions.NoSuchKey:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"s3://{bucket()}/{key} does not exist") from None
        return StreamingResponse(
            obj["Body"].iter_chunks(64 * 1024),
            media_type=CONTENT_TYPES[match["ext"]],
            # Reports are rewritten when a day is re-run; never serve a stale copy.
            headers={"Cache-Control": "no-store", "Content-Length": str(obj["ContentLength"])},
        )

    return app
