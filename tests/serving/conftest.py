"""The real parts for the gateway tests: an rclone S3 endpoint, an MLflow server (SQLite backend, artifacts
in that S3) and the gateway process (``python -m ml_ops.serving``), all started by ``ml_ops.local.stack.Stack``
in a temporary MLOPS_HOME on free ports; a small fraud model trained on simulated days as ``champion``."""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from pathlib import Path

import httpx
import pytest

from tests.e2e.helpers import free_port

REPO = Path(__file__).resolve().parents[2]
TOKEN = "test-gateway-token"
GATEWAY_ENV = {
    "MLOPS_GATEWAY_POLL_SECONDS": "0.5",
    "MLOPS_GATEWAY_FLUSH_SECONDS": "3600",  # only size, /admin/flush and shutdown write during the tests
    "MLOPS_GATEWAY_DEFAULT_PIPELINE": "fraud",
    "MLOPS_GATEWAY_TOKEN": TOKEN,
    "MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS": "2",  # a stalled body is answered 408 after 2 s (test_hardening)
    # raw events: the online store is the real Redis (127.0.0.1:6379 here and in CI), under a namespace of this
    # package's own, deleted afterwards (test_online_features)
    "MLOPS_ONLINE_STORE": os.environ.get("MLOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0"),
    "MLOPS_ONLINE_NAMESPACE": f"mlops-gateway-test-{uuid.uuid4().hex[:12]}",
}


@pytest.fixture(scope="package")
def include_dir(tmp_path_factory):
    """include/ with the tumors pipeline marked serving.require_token (it has no model: a second pipeline
    that answers 503 while fraud serves)."""
    target = tmp_path_factory.mktemp("gateway-include") / "include"
    shutil.copytree(REPO / "include", target)
    tumors = target / "pipelines" / "tumors.yaml"
    tumors.write_text(tumors.read_text() + "\nserving:\n  require_token: true\n")
    return target


@pytest.fixture(scope="package")
def stack(tmp_path_factory, include_dir):
    from ml_ops.local.stack import Stack

    home = tmp_path_factory.mktemp("gateway-home")
    env = {
        "MLOPS_HOME": str(home),
        "MLOPS_INCLUDE_DIR": str(include_dir),
        "MLOPS_S3_PORT": str(free_port()),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        "MLOPS_GATEWAY_PORT": str(free_port()),
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        **GATEWAY_ENV,
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    st = Stack.from_env()
    try:
        st.up(["s3", "mlflow", "gateway"])
        yield st
    finally:
        st.down()
        _forget_online_state()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def _forget_online_state() -> None:
    import redis

    client = redis.Redis.from_url(GATEWAY_ENV["MLOPS_ONLINE_STORE"])
    keys = list(client.scan_iter(match=f"{GATEWAY_ENV['MLOPS_ONLINE_NAMESPACE']}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


@pytest.fixture(scope="package")
def store(stack):
    from ml_ops.storage import ObjectStore

    return ObjectStore(stack.s3_client())


@pytest.fixture(scope="package")
def world(stack, store):
    from tests.serving.helpers import build_world

    w = build_world(store, stack.mlflow_url)
    wait_ready(stack.gateway_url)
    resp = httpx.post(f"{stack.gateway_url}/admin/reload", headers=admin(), timeout=120)  # loads v1 now
    assert resp.json()["pipelines"]["fraud"]["champion"]["serving"] == w.champion, resp.text
    wait_ready(stack.gateway_url)  # and its online store materialised (raw events are refused until then)
    return w


@pytest.fixture(scope="package")
def mlflow_client(stack):
    from mlflow import MlflowClient

    return MlflowClient(stack.mlflow_url)


@pytest.fixture
def http(stack, world):
    with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
        yield client


def admin(token: str = TOKEN) -> dict:
    return {"Authorization": f"Bearer {token}"}


def wait_ready(url: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{url}/ready", timeout=5)
            last = resp.json()
            if resp.status_code == 200:
                return last
        except httpx.HTTPError as exc:
            last = repr(exc)
        time.sleep(0.3)
    raise AssertionError(f"gateway not ready after {timeout}s: {last}")


class Canary:
    """Sets the canary the way the canary DAG does (alias + deployment state) and applies it now."""

    def __init__(self, stack, store, world, mlflow_client):
        self.stack, self.store, self.cfg, self.client = stack, store, world.cfg, mlflow_client

    def set(self, version: int, weight: float, *, reload: bool = True) -> dict:
        from ml_ops.rollout.deployment import write_state

        self.client.set_registered_model_alias(self.cfg.name, "canary", str(version))
        write_state(
            self.store,
            self.cfg,
            status="running",
            canary_version=version,
            champion_version=1,
            canary_weight=weight,
            step=0,
            run_id="gateway-tests",
        )
        return self.reload() if reload else {}

    def reload(self) -> dict:
        resp = httpx.post(f"{self.stack.gateway_url}/admin/reload", headers=admin(), timeout=120)
        assert resp.status_code == 200, resp.text
        return resp.json()["pipelines"][self.cfg.name]

    def clear(self) -> None:
        from ml_ops.rollout.deployment import reset_state

        reset_state(self.store, self.cfg, status="idle", reason="gateway tests")
        from mlflow.exceptions import MlflowException

        with contextlib.suppress(MlflowException):  # not set
            self.client.delete_registered_model_alias(self.cfg.name, "canary")
        self.client.set_registered_model_alias(self.cfg.name, "champion", "1")
        self.reload()


@pytest.fixture
def canary(stack, store, world, mlflow_client):
    c = Canary(stack, store, world, mlflow_client)
    yield c
    c.clear()


@pytest.fixture(scope="package")
def inverted(stack, world):
    """Version 2: the champion's pipeline returning 1 - p (tells canary answers from champion ones)."""
    from tests.model_variants import register_variant

    return register_variant(stack.mlflow_url, world.cfg.name, world.champion, invert=True)
