"""Serving logs: every row in its hour partition with the contract's columns, written by size, time,
/admin/flush and shutdown; failed writes are retried."""

from __future__ import annotations

import re
import time
from datetime import datetime, timedelta, timezone

import pandas as pd
import pytest

from tests.serving.conftest import admin
from tests.serving.test_gateway_api import split

pytestmark = pytest.mark.timeout(300)
PART = re.compile(
    r"^s3://mlops/pipelines/fraud/serving_logs/ds=(\d{4}-\d{2}-\d{2})/hour=(\d{2})/"
    r"part-\d{8}T\d{9}Z-[0-9a-f]{32}\.parquet$"
)


def test_every_row_is_logged_in_its_hour_partition(http, stack, store, world):
    from ml_ops.rollout.deployment import LOG_COLUMNS

    rows = world.rows(5, offset=300, extra=("transaction_id",))
    for i, r in enumerate(rows):
        r["customer_id"] = f"log-customer-{i}"
    ok = http.post("/invocations", json=split(rows), headers={"X-Request-ID": "log-a"}).json()
    http.post("/invocations", json=split(rows[:1]), headers={"X-Request-ID": "log-b"})
    bad = http.post(
        "/invocations", json={"dataframe_records": [{**rows[0], "amount": "lots"}]}, headers={"X-Request-ID": "log-c"}
    )
    assert bad.status_code == 422

    written = http.post("/admin/flush", headers=admin()).json()["written"]["predictions"]
    assert written and all(PART.match(u) for u in written), written
    frames = []
    for u in written:
        df = store.read_parquet(u)
        ds, hour = PART.match(u).groups()
        assert (df["ts"].dt.strftime("%Y-%m-%d") == ds).all() and (df["ts"].dt.strftime("%H") == hour).all()
        frames.append(df)
    logs = pd.concat(frames, ignore_index=True)
    assert list(logs.columns[: len(LOG_COLUMNS)]) == list(LOG_COLUMNS)
    assert set(world.inputs) | {"customer_id", "transaction_id"} <= set(logs.columns)

    a = logs[logs["request_id"] == "log-a"].sort_values("row")
    assert a["row"].tolist() == [0, 1, 2, 3, 4]
    assert a["score"].tolist() == pytest.approx(ok["predictions"])
    assert set(a["version"]) == {1} and set(a["route"]) == {"champion"} and a["error"].isna().all()
    # fraud's privacy: customer_id (its routing key) is personal: logged as its keyed hash, never in the clear
    from ml_ops.privacy import keyed_hash

    key = stack.privacy_key.encode()
    assert a["routing_key"].tolist() == [keyed_hash(key, f"log-customer-{i}") for i in range(5)]
    assert a["customer_id"].tolist() == a["routing_key"].tolist()
    assert a["transaction_id"].tolist() == [r["transaction_id"] for r in rows]
    assert a["amount"].tolist() == pytest.approx([r["amount"] for r in rows])
    assert a["channel"].tolist() == [r["channel"] for r in rows]
    assert a["latency_ms"].nunique() == 1 and a["latency_ms"].iloc[0] > 0  # the request's model time
    # and its CPU time in the model's thread, which the canary judge compares (at most the wall time)
    assert a["model_cpu_ms"].nunique() == 1 and 0 < a["model_cpu_ms"].iloc[0] <= a["latency_ms"].iloc[0] + 0.5
    assert len(logs[logs["request_id"] == "log-b"]) == 1

    c = logs[logs["request_id"] == "log-c"]
    assert len(c) == 1 and c["score"].isna().all() and c["version"].isna().all() and c["route"].isna().all()
    assert c["model_cpu_ms"].isna().all()
    assert c["error"].iloc[0].startswith("422: column 'amount' expects double; row 0 has str 'lots'")
    assert str(logs["version"].dtype) == "Int64" and str(logs["ts"].dtype) == "datetime64[ns, UTC]"


def test_buffer_writes_on_size_and_time_and_retries_failed_writes(stack, store):
    from ml_ops.serving.logbuffer import PartitionedLog
    from ml_ops.storage import ObjectStore

    dtypes = {"request_id": "object", "row": "int64", "ts": "datetime64[ns, UTC]", "score": "float64"}
    prefix = "s3://mlops/pipelines/buffer-test/serving_logs"
    buf = PartitionedLog(store, name="test", base_dtypes=dtypes, flush_rows=10, flush_seconds=1.0)
    buf.start()
    try:
        t10 = datetime(2026, 3, 2, 10, 59, 59, tzinfo=timezone.utc)
        for i in range(10):
            buf.append(prefix, t10, 1, {"request_id": f"r{i}", "row": 0, "ts": t10, "score": 0.5})
        deadline = time.monotonic() + 5
        while not store.list(f"{prefix}/ds=2026-03-02/hour=10/") and time.monotonic() < deadline:
            time.sleep(0.05)
        size_written = time.monotonic()
        assert store.list(f"{prefix}/ds=2026-03-02/hour=10/"), "10 rows did not trigger a write"

        t11 = t10 + timedelta(seconds=1)  # next hour, next partition
        buf.append(prefix, t11, 3, {"request_id": "multi", "row": [0, 1, 2], "ts": t11, "score": [0.1, 0.2, None]})
        while not store.list(f"{prefix}/ds=2026-03-02/hour=11/") and time.monotonic() < deadline + 5:
            time.sleep(0.05)
        (part,) = store.list(f"{prefix}/ds=2026-03-02/hour=11/")
        assert time.monotonic() - size_written >= 0.9  # written by the clock, not by size
        df = store.read_parquet(part)
        assert df["row"].tolist() == [0, 1, 2] and df["score"].isna().tolist() == [False, False, True]
        ten = pd.concat([store.read_parquet(u) for u in store.list(f"{prefix}/ds=2026-03-02/hour=10/")])
        assert sorted(ten["request_id"]) == sorted(f"r{i}" for i in range(10))
    finally:
        buf.close()

    # the store fails: rows stay buffered and go out with the next flush that works
    broken = PartitionedLog(ObjectStore(stack.s3_client(retries=0)), name="retry", base_dtypes=dtypes)
    missing = "s3://bucket-created-later/pipelines/x/serving_logs"
    broken.append(missing, t10, 2, {"request_id": "kept", "row": [0, 1], "ts": t10, "score": [0.3, 0.4]})
    assert broken.flush() == [] and broken.pending_rows == 2
    stack.s3_client().create_bucket(Bucket="bucket-created-later")
    (uri,) = broken.flush()
    assert uri.startswith(f"{missing}/ds=2026-03-02/hour=10/part-") and broken.pending_rows == 0
    assert store.read_parquet(uri)["score"].tolist() == [0.3, 0.4]


def test_beyond_its_limit_an_unwritable_buffer_drops_the_oldest_rows_and_counts_them(stack, store):
    from ml_ops.serving.logbuffer import PartitionedLog
    from ml_ops.storage import ObjectStore

    dtypes = {"request_id": "object", "row": "int64", "ts": "datetime64[ns, UTC]", "score": "float64"}
    t10 = datetime(2026, 3, 2, 10, 0, 0, tzinfo=timezone.utc)
    drops = []
    buf = PartitionedLog(
        ObjectStore(stack.s3_client(retries=0)),
        name="limited",
        base_dtypes=dtypes,
        max_rows=3,
        on_drop=lambda name, n: drops.append((name, n)),
    )
    missing = "s3://bucket-for-the-limit/pipelines/x/serving_logs"
    buf.append(missing, t10, 2, {"request_id": "oldest", "row": [0, 1], "ts": t10, "score": [0.1, 0.2]})
    assert buf.flush() == [] and buf.pending_rows == 2 and drops == []  # kept: within the limit
    buf.append(missing, t10, 2, {"request_id": "newer", "row": [0, 1], "ts": t10, "score": [0.3, 0.4]})
    assert buf.flush() == [] and buf.pending_rows == 2  # 4 > 3: the oldest part went
    assert drops == [("limited", 2)] and buf.dropped_rows == 2
    stack.s3_client().create_bucket(Bucket="bucket-for-the-limit")
    (uri,) = buf.flush()
    assert store.read_parquet(uri)["request_id"].tolist() == ["newer", "newer"]
