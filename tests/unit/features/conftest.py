"""Real online stores for the feature tests: a SQLite file in the test's tmp dir, and the Redis server at
127.0.0.1:6379 (on every development and CI machine) under a namespace of the test's own, removed after it."""

from __future__ import annotations

import os
import uuid

import pytest

REDIS_URL = os.environ.get("MLOPS_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")


def redis_url() -> str:
    return REDIS_URL


@pytest.fixture
def redis_namespace():
    """A namespace of this test's own; every key under it is deleted afterwards."""
    import redis

    ns = f"mlops-test-{uuid.uuid4().hex[:12]}"
    yield ns
    client = redis.Redis.from_url(REDIS_URL)
    keys = list(client.scan_iter(match=f"{ns}:*", count=1000))
    if keys:
        client.unlink(*keys)
    client.close()


@pytest.fixture(params=["sqlite", "redis"])
def store_url(request, tmp_path, redis_namespace):
    """(url, namespace) of a fresh store of each kind."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'online' / 'features.db'}", redis_namespace
    return REDIS_URL, redis_namespace


@pytest.fixture
def online_store(store_url):
    from ml_ops.features.store import open_store

    url, ns = store_url
    store = open_store(url, namespace=ns)
    yield store
    store.close()
