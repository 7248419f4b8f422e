"""Raw events at the real gateway, its online store the real Redis: the features it computes equal the batch
features of the same events, and so do the scores; two gateway processes share one state, a restarted one keeps
it, a retried event is counted once; a bad raw event gets a 4xx naming the field."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import httpx
import numpy as np
import pandas as pd

from tests.serving.conftest import GATEWAY_ENV, admin, wait_ready
from tests.serving.helpers import START

RAW = {"X-Input": "raw"}


def records(frame: pd.DataFrame) -> list[dict]:
    out = []
    for rec in frame.to_dict("records"):
        row = {}
        for k, v in rec.items():
            if isinstance(v, pd.Timestamp):
                v = v.isoformat()
            elif hasattr(v, "item"):
                v = v.item()
            row[k] = None if isinstance(v, float) and np.isnan(v) else v
        out.append(row)
    return out


def served_logs(store, cfg, request_ids: set[str]) -> pd.DataFrame:
    from ml_ops.rollout.deployment import serving_logs_prefix

    parts = [u for u in store.list(serving_logs_prefix(cfg) + "/") if u.endswith(".parquet")]
    logs = pd.concat([store.read_parquet(u) for u in parts], ignore_index=True)
    return logs[logs["request_id"].isin(request_ids)].set_index("request_id")


def wait_materialized(http, through: str, timeout: float = 90) -> dict:
    deadline = time.monotonic() + timeout
    while True:
        online = http.get("/pipelines").json()["pipelines"]["fraud"]["online"]
        if (online.get("materialized") or {}).get("through") == through or time.monotonic() > deadline:
            assert (online.get("materialized") or {}).get("through") == through, online
            return online
        time.sleep(0.5)


def test_raw_events_get_the_batch_features_and_scores_and_both_are_logged(http, stack, store, world):
    from ml_ops.local.sim import generate_transactions
    from ml_ops.pipeline.features import build_features
    from ml_ops.pipeline.steps import uri
    from ml_ops.privacy import keyed_hash

    cfg = world.cfg
    online = wait_materialized(http, world.days[-1])  # at start, from the world's validated raw days
    assert online["store"].startswith("redis://") and online["materialized"]["days"] == world.days

    day = (START + timedelta(days=len(world.days))).isoformat()  # the day after the world's last
    raw = generate_transactions(START, len(world.days) + 1, rows_per_day=1200, n_customers=400, seed=11)
    events = (
        raw[raw["ts"].dt.strftime("%Y-%m-%d") == day]
        .iloc[:40]
        .drop(columns=["is_fraud", "label_available_at"], errors="ignore")
    )
    ids = [f"raw-{i}" for i in range(len(events))]
    scores = []
    for rid, event in zip(ids, records(events), strict=True):  # one event per request, in time order
        resp = http.post(
            "/pipelines/fraud/invocations", json={"dataframe_records": [event]}, headers={**RAW, "X-Request-ID": rid}
        )
        assert resp.status_code == 200, resp.text
        scores.append(resp.json()["predictions"][0])

    history = pd.concat([store.read_parquet(uri(cfg, "raw", d)) for d in world.days], ignore_index=True)
    expected = build_features(
        events,
        history,
        entity="customer_id",
        timestamp="ts",
        amount="amount",
        passthrough=world.inputs[: len(cfg.features.numeric)] + cfg.features.categorical,
        time_parts=cfg.features.time_parts,
    )
    assert (expected["entity_txn_count_24h"] > 0).any()
    # the same inputs sent as model inputs (the explicit other mode) score the same
    direct = http.post(
        "/pipelines/fraud/invocations",
        json={"dataframe_records": records(expected[world.inputs])},
        headers={"X-Input": "model"},
    )
    assert direct.status_code == 200, direct.text
    np.testing.assert_allclose(scores, direct.json()["predictions"], rtol=1e-9)

    assert http.post("/admin/flush", headers=admin()).status_code == 200
    logged = served_logs(store, cfg, set(ids)).loc[ids]
    assert (logged["input_mode"] == "raw").all()
    for c in cfg.generated_features:
        np.testing.assert_allclose(logged[c].to_numpy(float), expected[c].to_numpy(float), rtol=1e-9, err_msg=c)
    assert (
        pd.to_datetime(logged["event_ts"], utc=True).dt.tz_localize(None).to_numpy() == events["ts"].to_numpy()
    ).all()
    assert logged["transaction_id"].tolist() == events["transaction_id"].tolist()
    key = stack.privacy_key.encode()
    assert logged["customer_id"].tolist() == [keyed_hash(key, c) for c in events["customer_id"]]  # never raw

    # the nightly skew check reads these logs as the gateway wrote them: nothing differs from the batch code
    from ml_ops.monitoring.skew import skew_check

    served_on = pd.Timestamp(logged["ts"].iloc[0]).strftime("%Y-%m-%d")  # the request's day (its log partition)
    skew = skew_check(cfg, store, served_on, key)
    assert skew["status"] == "compared" and skew["rows"] >= len(ids) and not skew["alarm"], skew
    assert all(f["mismatched"] == 0 for f in skew["features"].values()), skew["features"]


def test_bad_raw_events_get_a_4xx_naming_the_field(http, world):
    event = {"transaction_id": "bad-1", "ts": "2026-03-07T10:00:00Z", "customer_id": "c1", "amount": 3.0}
    event |= {c: 1 for c in ("customer_age", "account_age_days")}
    event |= {c: "x" for c in world.cfg.features.categorical}
    for broken, field in (
        ({k: v for k, v in event.items() if k != "customer_id"}, "'customer_id' (features.entity_column)"),
        ({**event, "ts": "not a time"}, "'ts' (source.timestamp_column)"),
    ):
        resp = http.post("/pipelines/fraud/invocations", json={"dataframe_records": [broken]}, headers=RAW)
        assert resp.status_code == 422 and field in resp.json()["error"], resp.text
    resp = http.post("/pipelines/fraud/invocations", json={"dataframe_records": [event]}, headers={"X-Input": "rows"})
    assert resp.status_code == 400 and "X-Input" in resp.json()["error"]


def test_two_gateways_share_the_redis_state_a_restart_keeps_it_and_a_retry_counts_once(
    http, stack, store, world, tmp_path
):
    from ml_ops.features.store import open_store
    from ml_ops.privacy import keyed_hash
    from tests.e2e.helpers import free_port

    port = free_port()
    env = {**stack.services()["gateway"].env, "MLOPS_GATEWAY_PORT": str(port)}
    second = f"http://127.0.0.1:{port}"

    def start():
        with open(tmp_path / "second-gateway.log", "ab") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "ml_ops.serving"], env=env, stdout=log, stderr=subprocess.STDOUT
            )
        wait_ready(second)
        return proc

    base = pd.Timestamp("2026-03-09T10:00:00")
    event = records(world.features.iloc[[0]][[*world.cfg.features.numeric, *world.cfg.features.categorical]])[0]

    def send(url: str, n: int, rid: str) -> None:
        body = {
            **event,
            "transaction_id": f"shared-{n}",
            "ts": (base + timedelta(minutes=10 * n)).isoformat(),
            "customer_id": "shared-customer",
        }
        resp = httpx.post(
            f"{url}/pipelines/fraud/invocations",
            json={"dataframe_records": [body]},
            headers={**RAW, "X-Request-ID": rid},
            timeout=30,
        )
        assert resp.status_code == 200, resp.text

    proc = start()
    try:
        send(stack.gateway_url, 1, "shared-a")
        send(second, 2, "shared-b")
        send(second, 1, "shared-a-retry")  # the first event again, through the other gateway
        send(stack.gateway_url, 3, "shared-c")
        proc.terminate()
        proc.wait(timeout=30)  # flushes its logs on the way out
        proc = start()  # the restarted gateway reads the same state
        send(second, 4, "shared-d")
        assert httpx.post(f"{second}/admin/flush", headers=admin(), timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    assert http.post("/admin/flush", headers=admin()).status_code == 200

    logged = served_logs(store, world.cfg, {"shared-a", "shared-b", "shared-a-retry", "shared-c", "shared-d"})
    counts = logged["entity_txn_count_1h"].astype(int).to_dict()
    assert counts == {"shared-a": 0, "shared-b": 1, "shared-a-retry": 0, "shared-c": 2, "shared-d": 3}, counts
    online = open_store(GATEWAY_ENV["MLOPS_ONLINE_STORE"], namespace=GATEWAY_ENV["MLOPS_ONLINE_NAMESPACE"])
    entity = keyed_hash(stack.privacy_key.encode(), "shared-customer")
    assert sorted(online.entity_events("fraud", entity)) == [f"shared-{n}" for n in (1, 2, 3, 4)]
    assert online.entity_events("fraud", "shared-customer") == {}  # keyed by the hash, never the raw id
    online.close()
