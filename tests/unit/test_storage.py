"""ObjectStore against a real S3 endpoint (rclone serve s3 from the embedded stack)."""

from __future__ import annotations

import socket

import pandas as pd
import pytest

from ml_ops.layout import partition as partition_uri
from ml_ops.storage import parse_uri


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def store(s3_store):
    return s3_store  # the session's S3 endpoint (tests/unit/conftest.py)


def test_uris():
    assert parse_uri("s3://mlops/pipelines/p/raw/ds=2026-01-01/data.parquet") == (
        "mlops",
        "pipelines/p/raw/ds=2026-01-01/data.parquet",
    )
    assert (
        partition_uri("s3://mlops/pipelines/p/", "raw", "2026-01-01")
        == "s3://mlops/pipelines/p/raw/ds=2026-01-01/data.parquet"
    )
    with pytest.raises(ValueError, match="s3://bucket/key"):
        parse_uri("/tmp/file.parquet")


def test_parquet_roundtrip_and_overwrite(store):
    uri = "s3://mlops/t/raw/ds=2026-01-01/data.parquet"
    df = pd.DataFrame(
        {"id": ["a", "b"], "x": [1.5, 2.5], "ts": pd.to_datetime(["2026-01-01 00:00", "2026-01-01 01:00"])}
    )
    store.write_parquet(df, uri)
    pd.testing.assert_frame_equal(store.read_parquet(uri), df)
    store.write_parquet(df.iloc[:1], uri)  # re-running a day overwrites its partition
    assert len(store.read_parquet(uri)) == 1
    assert store.list("s3://mlops/t/raw/") == [uri]


def test_exists_and_json(store):
    uri = "s3://mlops/t/validation/ds=2026-01-01/result.json"
    assert not store.exists(uri)
    store.write_json({"success": False, "n": 3}, uri)
    assert store.exists(uri) and store.read_json(uri) == {"n": 3, "success": False}


def test_append_jsonl_is_keyed(store):
    uri = "s3://mlops/t/decisions/log.jsonl"
    assert store.read_jsonl(uri) == []
    assert store.append_jsonl(uri, {"key": "m:v1", "promote": True}, key="key")
    assert store.append_jsonl(uri, {"key": "m:v2", "promote": False}, key="key")
    assert not store.append_jsonl(uri, {"key": "m:v1", "promote": False}, key="key")  # a retried task
    assert [r["key"] for r in store.read_jsonl(uri)] == ["m:v1", "m:v2"]
    assert store.read_jsonl(uri)[0]["promote"] is True


def test_failed_write_leaves_previous_object(store):
    uri = "s3://mlops/t/features/ds=2026-01-02/data.parquet"
    store.write_parquet(pd.DataFrame({"a": [1, 2, 3]}), uri)
    bad = pd.DataFrame({"a": [object(), object()]})  # not serialisable: fails before any upload
    with pytest.raises((TypeError, ValueError)):  # pyarrow's ArrowTypeError/ArrowInvalid
        store.write_parquet(bad, uri)
    assert len(store.read_parquet(uri)) == 3
