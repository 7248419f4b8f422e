"""Private prediction logs (ml_ops.privacy, ml_ops.storage SSE) against the session's real S3 endpoint: keyed
hashes in written log parts, erasure of one entity across every partition with its audit record, retention by
prefix, and the server-side encryption header on every write."""

from __future__ import annotations

from datetime import date, datetime, timedelta, timezone

import boto3
import pandas as pd
import pytest
import sqlalchemy as sa
from botocore.stub import Stubber

from ml_ops import layout
from ml_ops.config import ConfigError, Retention, load_pipeline, load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import generate_transactions, load_source
from ml_ops.pipeline import history, steps
from ml_ops.privacy import Pseudonymizer, enforce_retention, erase_entity, keyed_hash
from ml_ops.serving.logbuffer import PartitionedLog
from ml_ops.serving.service import FEEDBACK_DTYPES, LOG_DTYPES
from ml_ops.storage import ObjectStore, sse_from_env

KEY = b"unit-test-privacy-key"
D0 = date(2026, 3, 1)
DAYS = [DayInterval.for_day(D0 + timedelta(days=i)) for i in range(2)]


@pytest.fixture(scope="module")
def store(s3_store):
    return s3_store  # the session's S3 endpoint (tests/unit/conftest.py)


def _cfg(name: str):
    return load_pipeline_by_name("fraud").model_copy(update={"name": name})


def _log_rows(cfg, store, rows: pd.DataFrame, ts: datetime, request_id: str) -> tuple[list[str], list[str]]:
    """Log ``rows`` (one request) and a label for each of them, as the gateway builds them; returns the parts."""
    pseudo = Pseudonymizer(cfg, KEY)
    dtypes = {**LOG_DTYPES, "customer_id": "object", "transaction_id": "object", "amount": "float64"}
    logs = PartitionedLog(store, name="predictions", base_dtypes=dtypes)
    n = len(rows)
    columns = {
        "request_id": request_id,
        "row": list(range(n)),
        "ts": ts,
        "version": 1,
        "route": "champion",
        "routing_key": rows["customer_id"].tolist(),
        "latency_ms": 1.0,
        "model_cpu_ms": 0.5,
        "score": [0.1] * n,
        "error": None,
        "amount": rows["amount"].to_numpy(),
        "customer_id": rows["customer_id"].tolist(),
        "transaction_id": rows["transaction_id"].tolist(),
    }
    logs.append(layout.stage_prefix(cfg.prefix(), layout.SERVING_LOGS), ts, n, pseudo.apply(columns))
    labels = PartitionedLog(store, name="feedback", base_dtypes=FEEDBACK_DTYPES)
    labels.append(
        layout.stage_prefix(cfg.prefix(), layout.FEEDBACK),
        ts + timedelta(hours=1),
        n,
        {"request_id": [request_id] * n, "row": list(range(n)), "label": [0] * n, "ts": ts + timedelta(hours=1)},
    )
    return logs.flush(), labels.flush()


@pytest.fixture(scope="module")
def world(store, tmp_path_factory):
    """Two days extracted, validated and featurised; a day of serving logs and feedback; labels partitions."""
    cfg = _cfg("fraud_privacy")
    path = tmp_path_factory.mktemp("source") / "source.db"
    tx = generate_transactions(D0, len(DAYS), rows_per_day=200, n_customers=40, seed=3)
    load_source(f"sqlite:///{path}", "transactions", tx)
    engine = sa.create_engine(f"sqlite:///{path}")
    for day in DAYS:
        steps.extract_step(cfg, store, day, engine)
        steps.validate_step(cfg, store, day)
        steps.features_step(cfg, store, day)
    engine.dispose()
    who = tx["customer_id"].value_counts().index[0]
    served = pd.concat([tx[tx["customer_id"] == who].head(3), tx[tx["customer_id"] != who].head(5)])
    ts = datetime.combine(DAYS[1].start.date(), datetime.min.time(), tzinfo=timezone.utc) + timedelta(hours=10)
    parts, feedback = _log_rows(cfg, store, served, ts, "req-1")
    for day in DAYS:  # labels of every event of the day
        ids = tx.loc[tx["ts"].dt.date == date.fromisoformat(day.ds), "transaction_id"]
        store.write_parquet(
            pd.DataFrame({"id": ids.to_numpy(), "label": 0, "labelled_at": pd.Timestamp(day.ds, tz="UTC")}),
            layout.partition(cfg.prefix(), layout.LABELS, day.ds),
        )
    return cfg, tx, who, served, parts, feedback


def test_personal_columns_are_written_as_keyed_hashes(store, world):
    cfg, tx, who, served, parts, feedback = world
    assert len(parts) == 1 and len(feedback) == 1
    raw = store.get_bytes(parts[0])
    assert who.encode() not in raw  # not in the parquet bytes at all (no stats, no dictionary)
    logged = store.read_parquet(parts[0])
    expected = [keyed_hash(KEY, c) for c in served["customer_id"]]
    assert logged["customer_id"].tolist() == expected
    assert logged["routing_key"].tolist() == expected  # the routing key is the personal column: hashed too
    assert logged["transaction_id"].tolist() == served["transaction_id"].tolist()  # not personal: kept clear
    assert all(len(h) == 64 for h in expected)
    # the same input hashes the same (joins work), another key or value does not
    assert keyed_hash(KEY, who) == keyed_hash(KEY, who) == logged["customer_id"].iloc[0]
    assert keyed_hash(b"other-key", who) != keyed_hash(KEY, who) != keyed_hash(KEY, who + "x")
    # feedback joins the served rows by request id, as the labels step does
    fb = store.read_parquet(feedback[0])
    joined = fb.merge(logged, on=["request_id", "row"])
    assert len(joined) == len(served) and joined["transaction_id"].tolist() == served["transaction_id"].tolist()


def test_without_a_key_personal_columns_are_logged_as_nulls(world):
    cfg = world[0]
    columns = {"customer_id": ["c1", "c2"], "routing_key": "c1", "transaction_id": ["t1", "t2"]}
    out = Pseudonymizer(cfg, None).apply(columns)
    assert out == {"customer_id": [None, None], "routing_key": None, "transaction_id": ["t1", "t2"]}


def test_erasure_removes_every_row_of_the_entity_and_writes_the_audit_record(store, world, tmp_path):
    from ml_ops.features.materialize import materialize
    from ml_ops.features.online import entity_keyer
    from ml_ops.features.store import open_store

    cfg, tx, who, served, parts, feedback = world
    prefix = cfg.prefix()
    mine = set(tx.loc[tx["customer_id"] == who, "transaction_id"])
    before = {stage: _rows(store, prefix, stage) for stage in ("raw", "features", "labels", "serving_logs", "feedback")}
    assert before["raw"]["customer_id"].eq(who).any() and before["labels"]["id"].isin(mine).any()
    # the gateway's online store (a real SQLite one), warmed from the raw days as the gateway does
    online = open_store(f"sqlite:///{tmp_path / 'online.db'}")
    materialize(cfg, store, online, KEY)
    keyed = entity_keyer(cfg, KEY)
    other = next(c for c in tx["customer_id"].unique() if c != who)
    kept_events = online.entity_events(cfg.name, keyed(other))
    assert online.entity_events(cfg.name, keyed(who)) and kept_events
    record = erase_entity(
        cfg,
        store,
        who,
        key=KEY,
        by="user admin",
        reason="GDPR request #42",
        run_id="manual__erasure-test",
        online_store=online,
    )
    # gone from the online store too, nobody else's events touched
    assert online.entity_events(cfg.name, keyed(who)) == {}
    assert online.entity_events(cfg.name, keyed(other)) == kept_events
    assert record["online_store_events_removed"] > 0
    after = {stage: _rows(store, prefix, stage) for stage in before}
    assert not after["raw"]["customer_id"].eq(who).any()
    assert not after["features"]["transaction_id"].isin(mine).any()  # features rows are events, by id
    assert not after["labels"]["id"].isin(mine).any()
    assert not after["serving_logs"]["customer_id"].eq(keyed_hash(KEY, who)).any()
    assert not after["serving_logs"]["transaction_id"].isin(mine).any()
    assert len(after["feedback"]) == len(before["feedback"]) - 3  # the labels of the entity's 3 served rows
    for stage in before:  # nobody else's rows went
        assert len(before[stage]) - len(after[stage]) == record["rows_by_prefix"].get(stage, 0), stage
    n_raw = int(before["raw"]["customer_id"].eq(who).sum())
    assert record["rows_by_prefix"]["raw"] == n_raw and record["rows_by_prefix"]["serving_logs"] == 3
    # the audit record: who, why, when, every object and its row counts; the entity only as its keyed hash
    (logged,) = store.read_jsonl(layout.erasure_log(prefix))
    assert logged["by"] == "user admin" and logged["reason"] == "GDPR request #42"
    assert logged["entity"] == keyed_hash(KEY, who) and who not in store.get_bytes(layout.erasure_log(prefix)).decode()
    assert logged["rows_removed"] == sum(o["rows_removed"] for o in logged["objects"]) > 0
    assert {o["uri"].split("/ds=")[0].rsplit("/", 1)[-1] for o in logged["objects"]} == set(before)
    assert datetime.fromisoformat(logged["at"]) <= datetime.now(timezone.utc)
    # rewritten raw days stay validated (the marker names the new bytes)
    assert history.status(store, cfg, [d.ds for d in DAYS]).validated == [d.ds for d in DAYS]
    # a second erasure finds nothing left
    again = erase_entity(cfg, store, who, key=KEY, by="user admin", reason="again", run_id="manual__again")
    assert again["rows_removed"] == 0 and again["objects"] == []


def _rows(store, prefix: str, stage: str) -> pd.DataFrame:
    uris = [u for u in store.list(layout.stage_prefix(prefix, stage) + "/ds=") if u.endswith(".parquet")]
    return pd.concat([store.read_parquet(u) for u in uris], ignore_index=True)


def test_erasure_needs_the_key_when_logs_are_hashed(store, world):
    with pytest.raises(ConfigError, match="MLOPS_PRIVACY_KEY"):
        erase_entity(world[0], store, "c1", key=None, by="user admin", reason="test")


def test_retention_deletes_only_what_is_older(store):
    cfg = _cfg("fraud_retention")
    cfg = cfg.model_copy(
        update={
            "privacy": cfg.privacy.model_copy(
                update={"retention_days": Retention(serving_logs=30, feedback=30, raw=400)}
            )
        }
    )
    prefix, today = cfg.prefix(), date(2026, 6, 30)
    df = pd.DataFrame({"x": [1]})
    old, edge, young = (today - timedelta(days=d) for d in (31, 30, 5))
    written = {}
    for day in (old, edge, young):
        for stage in (layout.RAW, layout.FEATURES):
            written[stage, day] = store.write_parquet(df, layout.partition(prefix, stage, day.isoformat()))
        for stage in (layout.SERVING_LOGS, layout.FEEDBACK):
            stage_uri = layout.stage_prefix(prefix, stage)
            written[stage, day] = store.write_parquet(
                df, layout.hourly_part(stage_uri, day.isoformat(), 3, "part-a.parquet")
            )
        dead = layout.dead_letter_prefix(layout.stage_prefix(prefix, layout.SERVING_LOGS))
        written["dead", day] = store.put_bytes(layout.hourly_part(dead, day.isoformat(), 3, "part-a.jsonl"), b"{}\n")
    late_rows = store.write_json({"kept": True}, layout.late_rows_log(prefix))  # not a day partition

    result = enforce_retention(cfg, store, today, run_id="scheduled__x", by="scheduled run x")
    gone = {k for k, uri in written.items() if not store.exists(uri)}
    # serving logs keep 30 days: the day 31 days back goes (with its dead letter), the one 30 days back stays
    assert gone == {(layout.SERVING_LOGS, old), ("dead", old), (layout.FEEDBACK, old)}
    assert store.exists(late_rows)
    assert result["prefixes"]["serving_logs"] == {
        "kept_days": 30,
        "cutoff": edge.isoformat(),
        "deleted": 2,
        "days": [old.isoformat()],
    }
    assert result["prefixes"]["features"]["kept_days"] == 365 and result["prefixes"]["labels"]["deleted"] == 0
    (audit,) = store.read_jsonl(layout.retention_log(prefix))
    assert (
        audit["by"] == "scheduled run x"
        and audit["day"] == today.isoformat()
        and audit["prefixes"]["feedback"]["deleted"] == 1
    )
    enforce_retention(cfg, store, today, run_id="scheduled__x")  # a retry adds its own line, deletes nothing more
    assert len(store.read_jsonl(layout.retention_log(prefix))) == 2


def test_sse_header_is_sent_on_every_write(store, monkeypatch):
    sent: list[tuple[str, str | None]] = []

    def capture(request, **_):
        sent.append((request.method, request.headers.get("x-amz-server-side-encryption")))

    client = store.client
    client.meta.events.register("before-send.s3.PutObject", capture)
    try:
        monkeypatch.delenv("MLOPS_S3_SSE", raising=False)
        encrypted = ObjectStore(client)
        assert encrypted.sse == "auto" and encrypted.sse_args == {"ServerSideEncryption": "AES256"}
        encrypted.put_bytes("s3://mlops/sse-test/a.bin", b"x")
        encrypted.write_json({"a": 1}, "s3://mlops/sse-test/a.json")
        encrypted.write_parquet(pd.DataFrame({"a": [1]}), "s3://mlops/sse-test/a.parquet")
        assert sent == [("PUT", b"AES256")] * 3 or sent == [("PUT", "AES256")] * 3, sent
        assert encrypted.read_json("s3://mlops/sse-test/a.json") == {"a": 1}  # reads are unchanged
        sent.clear()
        ObjectStore(client, sse="off").put_bytes("s3://mlops/sse-test/b.bin", b"x")
        assert sent == [("PUT", None)]
    finally:
        client.meta.events.unregister("before-send.s3.PutObject", capture)


def test_sse_modes():
    assert sse_from_env({}) == ("auto", {"ServerSideEncryption": "AES256"})
    assert sse_from_env({"MLOPS_S3_SSE": "off"}) == ("off", {})
    assert sse_from_env({"MLOPS_S3_SSE": "aws:kms", "MLOPS_S3_SSE_KMS_KEY_ID": "k1"}) == (
        "aws:kms",
        {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "k1"},
    )
    with pytest.raises(ValueError, match="MLOPS_S3_SSE"):
        sse_from_env({"MLOPS_S3_SSE": "rot13"})


def _stubbed(sse: str):
    client = boto3.client(
        "s3", region_name="us-east-1", aws_access_key_id="a", aws_secret_access_key="b", endpoint_url="http://x"
    )
    stub = Stubber(client)
    refuse = {"Bucket": "b", "Key": "k", "Body": b"x", "ContentType": "application/octet-stream"}
    stub.add_client_error(
        "put_object",
        service_error_code="NotImplemented",
        service_message="Server side encryption specified but KMS is not configured",
        http_status_code=501,
        expected_params={**refuse, "ServerSideEncryption": "AES256"},
    )
    return client, stub, refuse


def test_auto_sse_falls_back_where_the_endpoint_refuses_it_and_required_sse_fails():
    client, stub, plain = _stubbed("auto")
    stub.add_response("put_object", {}, expected_params=plain)
    stub.add_response("put_object", {}, expected_params=plain)  # the store stopped asking
    with stub:
        store = ObjectStore(client, sse="auto")
        store.put_bytes("s3://b/k", b"x")
        store.put_bytes("s3://b/k", b"x")
        assert store.sse == "off"
        stub.assert_no_pending_responses()
    client, stub, _ = _stubbed("AES256")
    with stub, pytest.raises(client.exceptions.ClientError, match="KMS is not configured"):
        ObjectStore(client, sse="AES256").put_bytes("s3://b/k", b"x")


def test_a_personal_model_input_is_refused_naming_the_field(tmp_path):
    from ml_ops.config import include_dir

    text = (include_dir() / "pipelines" / "fraud.yaml").read_text()
    assert "personal_columns: [customer_id]" in text
    bad = tmp_path / "fraud.yaml"
    bad.write_text(text.replace("personal_columns: [customer_id]", "personal_columns: [customer_id, channel]"))
    with pytest.raises(ConfigError, match=r"privacy.personal_columns: \['channel'\] named in features.categorical"):
        load_pipeline(bad)
    bad.write_text(text.replace("personal_columns: [customer_id]", "personal_columns: [transaction_id]"))
    with pytest.raises(ConfigError, match="source.id_column"):
        load_pipeline(bad)
    bad.write_text(text.replace("    raw: 365", "    raw: 10"))
    with pytest.raises(ConfigError, match=r"privacy.retention_days.raw: 10 days is less than the 31 days"):
        load_pipeline(bad)


def test_erasure_dag_and_retention_task():
    from ml_ops.airflow.dag_factory import build_erasure_dag, build_monitoring_dag

    cfg = load_pipeline_by_name("fraud")
    dag = build_erasure_dag(cfg)
    assert dag.dag_id == "fraud_erasure" and dag.schedule is None and [t.task_id for t in dag.tasks] == ["erase"]
    assert set(dag.params.keys()) == {"entity_id", "reason"}
    assert "retention" in {t.task_id for t in build_monitoring_dag(cfg).tasks}


def _context(run_type: str, **params):
    from types import SimpleNamespace

    day = datetime(2026, 6, 29, tzinfo=timezone.utc)
    return {
        "params": params,
        "dag_run": SimpleNamespace(run_type=run_type, triggering_user_name="admin" if run_type == "manual" else None),
        "run_id": f"{run_type}__2026-06-29",
        "ti": SimpleNamespace(try_number=1),
        "data_interval_start": day,
        "data_interval_end": day + timedelta(days=1),
        "logical_date": day,
    }


def test_operators_retention_on_scheduled_runs_only_and_erasure_audited_with_the_user(store, monkeypatch):
    from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

    from ml_ops.airflow.operators import EraseEntityOperator, RetentionOperator

    cfg = _cfg("fraud_privacy_ops")
    old = date(2026, 6, 30) - timedelta(days=200)
    part = store.write_parquet(
        pd.DataFrame({"request_id": ["r"], "row": [0], "customer_id": [keyed_hash(KEY, "c-9")]}),
        layout.hourly_part(
            layout.stage_prefix(cfg.prefix(), layout.SERVING_LOGS), old.isoformat(), 1, "part-x.parquet"
        ),
    )
    retention = RetentionOperator(task_id="retention", pipeline=cfg.name)
    retention.cfg, retention.store = cfg, lambda: store
    with pytest.raises(AirflowSkipException, match="scheduled nightly run only"):
        retention.execute(_context("manual"))
    assert store.exists(part)
    result = retention.execute(_context("scheduled"))
    assert result["prefixes"]["serving_logs"]["days"] == [old.isoformat()] and not store.exists(part)
    assert store.read_jsonl(layout.retention_log(cfg.prefix()))[0]["by"] == "scheduled run scheduled__2026-06-29"

    erase = EraseEntityOperator(task_id="erase", pipeline=cfg.name)
    erase.cfg, erase.store = cfg, lambda: store
    monkeypatch.setenv("MLOPS_PRIVACY_KEY", KEY.decode())
    out = erase.execute(_context("manual", entity_id="c-9", reason="ticket 7"))
    assert out["by"] == "user admin" and out["reason"] == "ticket 7" and out["objects"] == 0
    (audit,) = store.read_jsonl(layout.erasure_log(cfg.prefix()))
    assert audit["by"] == "user admin" and audit["entity"] == keyed_hash(KEY, "c-9")
    monkeypatch.delenv("MLOPS_PRIVACY_KEY")
    with pytest.raises(AirflowFailException, match="MLOPS_PRIVACY_KEY"):  # no key: fails at once, no retries
        erase.execute(_context("manual", entity_id="c-9", reason="ticket 7"))


def test_a_refusal_wrapped_by_upload_file_is_recognised():
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    from ml_ops.storage import _sse_refused

    refused = ClientError(
        {"Error": {"Code": "NotImplemented", "Message": "Server side encryption specified but KMS is not configured"}},
        "PutObject",
    )
    try:
        try:
            raise refused
        except ClientError as exc:  # what boto3.s3.transfer does
            raise S3UploadFailedError(f"Failed to upload a to b/k: {exc}")  # noqa: B904
    except S3UploadFailedError as wrapped:
        assert _sse_refused(wrapped)
    assert not _sse_refused(ClientError({"Error": {"Code": "AccessDenied", "Message": "no"}}, "PutObject"))
