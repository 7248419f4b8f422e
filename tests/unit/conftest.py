"""Real services shared by the unit tests: one S3 endpoint (rclone serve s3, as the embedded stack runs it)
for the whole session. Each test module writes under its own pipeline name or key prefix."""

from __future__ import annotations

import pytest

from tests.e2e.helpers import free_port


@pytest.fixture(scope="session")
def s3_store(tmp_path_factory):
    from ml_ops.local.stack import Stack
    from ml_ops.storage import ObjectStore

    stack = Stack(
        home=tmp_path_factory.mktemp("unit-s3"),
        s3_port=free_port(),
        mlflow_port=free_port(),
        airflow_port=free_port(),
        startup_timeout=60,
    )
    stack.up(["s3"])
    yield ObjectStore(stack.s3_client())
    stack.down()
