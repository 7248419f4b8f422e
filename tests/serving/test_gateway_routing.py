"""Routing by alias + deployment state on the real gateway: sticky per key, per row, followed without a
restart and without failed requests, resumed after a restart; fault-injection variants in the logs.

Keys are the rows' routing-key column (customer_id): the X-Routing-Key header is ignored unless a pipeline
sets serving.client_routing_key (tests/serving/test_hardening.py)."""

from __future__ import annotations

import random
import threading
import time

import httpx
import numpy as np
import pandas as pd
import pytest

from ml_ops.serving.routing import bucket
from tests.serving.conftest import admin, wait_ready
from tests.serving.test_gateway_api import split

pytestmark = pytest.mark.timeout(600)


def expected_route(key: str, weight: float) -> str:
    return "canary" if bucket("fraud", key) < weight else "champion"


def keyed(rows: list[dict], key: str) -> list[dict]:
    """The rows as sent by customer ``key`` (the routing-key column)."""
    return [{**r, "customer_id": key} for r in rows]


def wait_for(http, check, what: str, timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status = http.get("/pipelines").json()["pipelines"]["fraud"]
        if check(status):
            return status
        time.sleep(0.2)
    raise AssertionError(f"gateway never showed {what}: {status}")


def test_routing_is_sticky_per_key_and_per_row(http, world, canary, inverted):
    status = canary.set(inverted, 0.3)
    assert status["effective_weight"] == 0.3 and status["canary"]["serving"] == inverted
    row = world.rows(1, offset=3)
    keys = [f"customer-{i}" for i in range(400)]
    routes = {}
    for key in keys:
        reply = http.post("/invocations", json=split(keyed(row, key))).json()
        routes[key] = reply["routes"][0]
        assert reply["versions"] == [inverted if routes[key] == "canary" else 1]
    assert routes == {k: expected_route(k, 0.3) for k in keys}  # the documented hash, nothing else
    share = sum(r == "canary" for r in routes.values()) / len(keys)
    assert 0.22 <= share <= 0.38, share
    for key in random.Random(0).sample(keys, 20):  # the same key sees the same model, request after request
        assert http.post("/invocations", json=split(keyed(row, key))).json()["routes"] == [routes[key]]

    # one request, many customers: each row is routed by its own customer_id
    rows = world.rows(60, offset=200)
    for i, r in enumerate(rows):
        r["customer_id"] = keys[i]
    reply = http.post("/invocations", json=split(rows)).json()
    assert reply["routes"] == [routes[k] for k in keys[:60]]
    assert reply["versions"] == [inverted if routes[k] == "canary" else 1 for k in keys[:60]]
    champion_key = next(k for k in keys if routes[k] == "champion")
    plain = http.post("/invocations", json=split(keyed(rows, champion_key))).json()
    assert plain["routes"] == ["champion"] * 60
    # a client's X-Routing-Key is ignored by default (serving.client_routing_key: false)
    canary_key = next(k for k in keys if routes[k] == "canary")
    steered = http.post("/invocations", json=split(keyed(rows, champion_key)), headers={"X-Routing-Key": canary_key})
    assert steered.json()["routes"] == ["champion"] * 60
    canary_rows = np.array([r == "canary" for r in reply["routes"]])
    got, champion_scores = np.array(reply["predictions"]), np.array(plain["predictions"])
    np.testing.assert_allclose(got[canary_rows], 1 - champion_scores[canary_rows])  # really the inverted model
    np.testing.assert_allclose(got[~canary_rows], champion_scores[~canary_rows])


def test_alias_and_weight_changes_apply_without_restart_and_no_request_fails(
    http, stack, world, canary, inverted, mlflow_client
):
    from ml_ops.rollout.deployment import reset_state
    from tests.model_variants import register_variant

    rows = world.rows(50, offset=500)
    stop, results, lock = threading.Event(), [], threading.Lock()

    def hammer(seed: int) -> None:
        rng = random.Random(seed)
        with httpx.Client(base_url=stack.gateway_url, timeout=30) as client:
            while not stop.is_set():
                row = rows[rng.randrange(len(rows))]
                try:
                    resp = client.post("/invocations", json=split(keyed([row], f"k{rng.randrange(10_000)}")))
                    outcome = (resp.status_code, tuple(resp.json().get("versions", ())))
                except httpx.HTTPError as exc:
                    outcome = (repr(exc), ())
                with lock:
                    results.append(outcome)

    threads = [threading.Thread(target=hammer, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        time.sleep(1)
        canary.set(inverted, 0.5, reload=False)  # picked up by polling alone
        wait_for(http, lambda s: s["effective_weight"] == 0.5 and s["canary"]["serving"] == inverted, "weight 0.5")
        time.sleep(1)
        slow = register_variant(stack.mlflow_url, "fraud", 1, delay_ms=5)  # a new version, loaded under load
        canary.set(slow, 1.0, reload=False)
        wait_for(http, lambda s: s["canary"]["serving"] == slow and s["effective_weight"] == 1.0, f"canary v{slow}")
        time.sleep(1)
        mlflow_client.set_registered_model_alias("fraud", "champion", str(inverted))  # promotion
        reset_state(canary.store, canary.cfg, status="promoted", reason="test")
        wait_for(http, lambda s: s["champion"]["serving"] == inverted and s["effective_weight"] == 0.0, "promotion")
        time.sleep(1)
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    statuses = {s for s, _ in results}
    assert statuses == {200}, [r for r in results if r[0] != 200][:5]
    seen = {v for _, versions in results for v in versions}
    assert {1, inverted, slow} <= seen, seen
    assert len(results) > 100, len(results)


def test_a_restarted_gateway_resumes_the_weights_and_flushes_on_sigterm(http, stack, store, world, canary, inverted):
    from ml_ops.rollout.deployment import serving_logs_prefix

    canary.set(inverted, 0.3)
    row = world.rows(1, offset=42)
    keys = [f"restart-{i}" for i in range(40)]
    before = {}
    for i, key in enumerate(keys):
        resp = http.post("/invocations", json=split(keyed(row, key)), headers={"X-Request-ID": f"sigterm-{i}"})
        before[key] = resp.json()["routes"][0]
    assert set(before.values()) == {"canary", "champion"}

    t0 = time.monotonic()
    stack.stop("gateway")  # SIGTERM: in-flight requests finish, then the shutdown writes the buffers
    stopped_in = time.monotonic() - t0
    parts = [u for u in store.list(serving_logs_prefix(world.cfg) + "/") if u.endswith(".parquet")]
    logged = pd.concat([store.read_parquet(u, columns=["request_id", "route"]) for u in parts], ignore_index=True)
    mine = logged[logged["request_id"].str.startswith("sigterm-")]
    assert sorted(mine["request_id"]) == sorted(f"sigterm-{i}" for i in range(40)), "rows lost at shutdown"
    assert stopped_in < 15, stopped_in  # a clean exit, not the SIGKILL after the grace period

    stack.up(["gateway"])
    wait_ready(stack.gateway_url)
    status = http.get("/pipelines").json()["pipelines"]["fraud"]
    assert status["effective_weight"] == 0.3 and status["canary"]["serving"] == inverted  # read back from S3
    after = {k: http.post("/invocations", json=split(keyed(row, k))).json()["routes"][0] for k in keys}
    assert after == before


def test_variants_show_as_latency_and_errors_in_the_logs(http, stack, store, world, canary):
    from ml_ops.rollout.deployment import LOG_COLUMNS
    from tests.model_variants import register_variant

    row = world.rows(1, offset=77)
    slow = register_variant(stack.mlflow_url, "fraud", 1, delay_ms=40)
    assert canary.set(slow, 0.5)["canary"]["variant"] == "delay_ms=40"
    assert canary.reload()["canary"]["scorer"] == "pipeline"  # a fault-injecting variant keeps its own predict
    for i in range(60):
        assert http.post("/invocations", json=split(row), headers={"X-Request-ID": f"slow-{i}"}).status_code == 200

    flaky = register_variant(stack.mlflow_url, "fraud", 1, error_rate=0.5, seed=3)
    canary.set(flaky, 1.0)
    answers = [http.post("/invocations", json=split(row), headers={"X-Request-ID": f"flaky-{i}"}) for i in range(40)]
    failed = [a for a in answers if a.status_code != 200]
    assert {a.status_code for a in answers} == {200, 500} and 8 <= len(failed) <= 32, len(failed)
    assert all(
        f"model fraud v{flaky} (canary) failed: InjectedFailure: injected failure" in a.json()["error"] for a in failed
    )
    canary.clear()
    assert http.post("/invocations", json=split(row)).status_code == 200  # still serving

    written = http.post("/admin/flush", headers=admin()).json()["written"]["predictions"]
    logs = pd.concat([store.read_parquet(u) for u in written], ignore_index=True)
    assert set(LOG_COLUMNS) <= set(logs.columns)
    slow_rows = logs[logs["request_id"].str.startswith("slow-")]
    by_route = slow_rows.groupby("route")["latency_ms"].median()
    assert set(slow_rows["version"]) == {1, slow}
    assert (slow_rows.loc[slow_rows["route"] == "canary", "latency_ms"] >= 40).all()
    assert by_route["champion"] < 40 <= by_route["canary"], by_route
    flaky_rows = logs[logs["request_id"].str.startswith("flaky-")]
    errors = flaky_rows[flaky_rows["error"].notna()]
    assert len(errors) == len(failed) and errors["score"].isna().all()
    assert set(errors["version"]) == {flaky} and set(errors["route"]) == {"canary"}
    assert errors["error"].str.startswith("InjectedFailure: injected failure").all()
    assert flaky_rows.loc[flaky_rows["error"].isna(), "score"].notna().all()
