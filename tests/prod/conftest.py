"""The stack in its production shape, without containers: Airflow on a PostgreSQL metadata DB with the
CeleryExecutor and two Celery workers on a Redis broker, MLflow on a PostgreSQL backend store.

Each run gets fresh databases (dropped afterwards) and a Redis database number nobody else uses.
Servers: MLOPS_TEST_PG_URL (default postgresql://postgres@127.0.0.1:5432/postgres, an admin connection
that may create databases) and MLOPS_TEST_REDIS_URL (default redis://127.0.0.1:6379). Where they are
absent the tests skip with the reason; with CI=true they fail instead.
"""

from __future__ import annotations

import os
import shutil
from urllib.parse import urlsplit, urlunsplit

import pytest

# Shared with the embedded e2e suite: the SMTP/Slack receiver and the include/ copy with a short window.
# Fixtures are found by name; airflow/store/mlflow_client use this suite's `stack`.
from tests.e2e.conftest import airflow, inbox, include_dir, mlflow_client, store  # noqa: F401
from tests.e2e.helpers import running_stack

PG_URL = os.environ.get("MLOPS_TEST_PG_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
REDIS_URL = os.environ.get("MLOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379")
WORKERS = 2
OWNER_KEY = "mlops-e2e:owner"  # claims a Redis DB number for one run


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"production-shape tests need their servers in CI: {reason}", pytrace=False)
    pytest.skip(reason)


def _with_db(url: str, db: str) -> str:
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{db}", parts.query, parts.fragment))


@pytest.fixture(scope="session")
def postgres():
    """An admin connection (autocommit) to the PostgreSQL server."""
    import psycopg2

    try:
        conn = psycopg2.connect(PG_URL, connect_timeout=3)
    except psycopg2.OperationalError as exc:
        _unavailable(f"PostgreSQL not reachable at {PG_URL}: {str(exc).strip().splitlines()[0]}")
    conn.autocommit = True
    yield conn
    conn.close()


@pytest.fixture(scope="package")
def databases(postgres):
    """Fresh, uniquely named databases for Airflow and MLflow; dropped (connections and all) afterwards."""
    names = {role: f"mlops_e2e_{os.getpid()}_{role}" for role in ("airflow", "mlflow")}
    with postgres.cursor() as cur:
        for name in names.values():
            cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')  # a crashed run with our pid
            cur.execute(f'CREATE DATABASE "{name}"')
    try:
        yield {role: _with_db(PG_URL, name) for role, name in names.items()}
    finally:
        if os.environ.get("MLOPS_KEEP_E2E_HOME") != "1":
            with postgres.cursor() as cur:
                for name in names.values():
                    cur.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="package")
def broker_url():
    """A Redis database number that is empty and claimed by this run (SET NX), flushed afterwards."""
    import redis

    base = REDIS_URL.rstrip("/")
    try:
        admin = redis.Redis.from_url(base, socket_connect_timeout=3)
        admin.ping()
        count = int(admin.config_get("databases").get("databases", 16))
    except redis.exceptions.ResponseError:  # CONFIG may be disabled on a managed Redis
        count = 16
    except redis.exceptions.RedisError as exc:
        _unavailable(f"Redis not reachable at {REDIS_URL}: {exc}")
    for n in range(count - 1, 0, -1):  # from the top: the lowest numbers are what apps use by default
        client = redis.Redis.from_url(f"{base}/{n}")
        if client.dbsize() == 0 and client.set(OWNER_KEY, f"pid {os.getpid()}", nx=True):
            try:
                yield f"{base}/{n}"
            finally:
                client.flushdb()
            return
    pytest.fail(f"no empty Redis database among 1..{count - 1} at {REDIS_URL}")


@pytest.fixture(scope="package")
def prod_include(include_dir, tmp_path_factory):  # noqa: F811 - include_dir is a fixture
    """The e2e include/ with a 1-day training window: the behaviours checked here (Celery workers, state in
    PostgreSQL, the first champion and a second comparison) need 4 days instead of 6."""
    target = tmp_path_factory.mktemp("prod") / "include"
    shutil.copytree(include_dir, target)
    fraud = target / "pipelines" / "fraud.yaml"
    text = fraud.read_text()
    assert "window_days: 3" in text
    fraud.write_text(text.replace("window_days: 3", "window_days: 1"))
    return target


@pytest.fixture(scope="package")
def stack(inbox, prod_include, broker_url, databases):  # noqa: F811 - inbox is a fixture

    env = {
        "MLOPS_INCLUDE_DIR": str(prod_include),
        "MLOPS_EXECUTOR": "celery",
        "MLOPS_DB_URL": databases["airflow"],
        "MLOPS_MLFLOW_DB_URL": databases["mlflow"],
        "MLOPS_BROKER_URL": broker_url,
        "MLOPS_CELERY_WORKERS": str(WORKERS),
    }
    # The stack stops before the databases are dropped: workers and the scheduler hold connections.
    with running_stack(inbox, env, prefix="mlops-prod-e2e-") as s:
        yield s
