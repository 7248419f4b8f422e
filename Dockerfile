# syntax=docker/dockerfile:1
# One image for every Airflow component and the MLflow server, built from pyproject.toml + uv.lock.
# Base: python slim, not apache/airflow: the lock is the only source of versions (Airflow itself is
# locked there), so nothing is installed twice or resolved against a second constraints file.
ARG PYTHON_VERSION=3.11
FROM python:${PYTHON_VERSION}-slim-bookworm

COPY --from=ghcr.io/astral-sh/uv:0.13.9 /uv /usr/local/bin/uv

# curl: container health checks; libpq5: psycopg2 at run time
RUN apt-get update \
 && apt-get install -y --no-install-recommends curl libpq5 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --uid 50000 --gid 0 --home-dir /opt/airflow --create-home airflow

ENV AIRFLOW_HOME=/opt/airflow \
    UV_PROJECT_ENVIRONMENT=/opt/venv \
    UV_COMPILE_BYTECODE=1 \
    UV_LINK_MODE=copy \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH
WORKDIR /opt/airflow

# Dependencies first: this layer is rebuilt only when the lock changes.
COPY pyproject.toml uv.lock README.md ./
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-install-project

COPY ml_ops ./ml_ops
COPY dags ./dags
COPY plugins ./plugins
COPY include ./include
RUN --mount=type=cache,target=/root/.cache/uv uv sync --frozen --no-editable \
 && mkdir -p logs auth \
 && chown -R airflow:0 /opt/airflow && chmod -R g=u /opt/airflow

USER airflow
CMD ["airflow", "version"]
