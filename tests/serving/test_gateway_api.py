"""The gateway's HTTP API against the real process: MLflow payload formats and clients, validation
errors, tokens, feedback, metrics, readiness."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import TOKEN, admin

pytestmark = pytest.mark.timeout(600)


def split(rows: list[dict]) -> dict:
    columns = list(rows[0])
    return {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in rows]}}


def test_three_mlflow_formats_and_every_route_give_the_champions_scores(http, world, stack):
    import mlflow.pyfunc

    rows = world.rows(3, offset=100, extra=("transaction_id",))  # the id column is allowed besides the inputs
    inputs = pd.DataFrame([{k: v for k, v in r.items() if k != "transaction_id"} for r in rows])
    mlflow.set_tracking_uri(stack.mlflow_url)
    expected = mlflow.pyfunc.load_model("models:/fraud/1").predict(inputs.astype({c: "float64" for c in world.numeric}))

    bodies = {
        "dataframe_split": split(rows),
        "dataframe_records": {"dataframe_records": rows},
        "instances": {"instances": rows, "params": {"ignored": True}},
        "instances (columnar)": {"instances": {c: [r[c] for r in rows] for c in rows[0]}},
    }
    routes = [
        ("/invocations", {}),
        ("/invocations?pipeline=fraud", {}),
        ("/invocations", {"X-Pipeline": "fraud"}),
        ("/pipelines/fraud/invocations", {}),
        ("/endpoints/fraud/invocations", {}),
    ]
    for fmt, body in bodies.items():
        for path, headers in routes:
            resp = http.post(path, json=body, headers={**headers, "X-Request-ID": f"fmt-{len(path)}"})
            assert resp.status_code == 200, (fmt, path, resp.text)
            reply = resp.json()
            assert list(reply) == ["predictions", "versions", "routes", "request_id"]
            np.testing.assert_allclose(reply["predictions"], expected, rtol=1e-9, err_msg=f"{fmt} {path}")
            assert reply["versions"] == [1, 1, 1] and reply["routes"] == ["champion"] * 3
            assert reply["request_id"] == resp.headers["X-Request-ID"] == f"fmt-{len(path)}"
    generated = http.post("/invocations", json=split(rows[:1])).headers["X-Request-ID"]
    assert len(generated) == 32 and int(generated, 16) >= 0  # uuid4 hex when the client sends none


def test_existing_mlflow_clients_work(world, stack):
    from mlflow.deployments import get_deploy_client
    from mlflow.pyfunc.scoring_server.client import ScoringServerClient

    rows = world.rows(2, offset=7)
    df = pd.DataFrame(rows)
    host, port = stack.gateway_url.removeprefix("http://").split(":")
    client = ScoringServerClient(host, int(port))  # what `mlflow models predict`-style tooling uses
    client.wait_server_ready(timeout=10)  # GET /ping
    scores = client.invoke(df).get_predictions(predictions_format="ndarray")
    assert scores.shape == (2,) and ((0 <= scores) & (scores <= 1)).all()
    reply = get_deploy_client(stack.gateway_url).predict(endpoint="fraud", inputs=split(rows))
    np.testing.assert_allclose(reply["predictions"], scores)


def test_invalid_requests_get_a_4xx_naming_the_problem_and_the_gateway_keeps_serving(http, world):
    good = world.rows(2, offset=20)
    wrong_type = [dict(good[0]), {**good[1], "amount": "12.50 EUR"}]
    cases = [
        ("/invocations", b"{not json", 400, "malformed JSON"),
        ("/invocations", b"[1, 2]", 400, "expected a JSON object"),
        ("/invocations", json.dumps({"rows": good}).encode(), 400, "unknown key(s) ['rows']"),
        ("/invocations", json.dumps({"dataframe_records": good, "instances": good}).encode(), 400, "exactly one of"),
        (
            "/invocations",
            json.dumps({"dataframe_split": {"columns": ["amount"], "data": [[1, 2]]}}).encode(),
            400,
            "dataframe_split.data[0] has 2 values",
        ),
        (
            "/invocations",
            json.dumps({"dataframe_records": [{k: v for k, v in good[0].items() if k != "device"}]}).encode(),
            422,
            "missing column(s) ['device']",
        ),
        (
            "/invocations",
            json.dumps({"dataframe_records": [{**good[0], "is_fraud": 1}]}).encode(),
            422,
            "unexpected column(s) ['is_fraud']",
        ),
        (
            "/invocations",
            json.dumps({"dataframe_records": wrong_type}).encode(),
            422,
            "column 'amount' expects double; row 1 has str '12.50 EUR'",
        ),
        (
            "/invocations",
            # an int is a category's label (cast to "3", as in training); a list is no category at all
            json.dumps({"dataframe_records": [{**good[0], "channel": ["pos"]}]}).encode(),
            422,
            "column 'channel' expects string; row 0 has list",
        ),
        ("/invocations", json.dumps({"dataframe_records": []}).encode(), 422, "empty batch"),
        (
            "/invocations",
            json.dumps({"dataframe_records": good * 501}).encode(),
            413,
            "1002 rows in one request; pipeline 'fraud' takes at most 1000",
        ),
        (
            "/invocations",
            b'{"dataframe_records": [' + b" " * (1 << 20) + b"]}",
            413,
            "exceeds the limit of 1048576 bytes (MLOPS_GATEWAY_MAX_BODY_BYTES)",
        ),
        (
            "/pipelines/nope/invocations",
            json.dumps(split(good)).encode(),
            404,
            "unknown pipeline 'nope'; known pipelines: ['fraud', 'tumors']",
        ),
        (
            "/pipelines/fraud/feedback",
            json.dumps({"request_id": "r", "label": 2}).encode(),
            422,
            "label must be 0 or 1, got 2",
        ),
        (
            "/pipelines/fraud/feedback",
            json.dumps({"labels": [{"request_id": "r", "label": 1, "rwo": 0}]}).encode(),
            422,
            "labels[0]: unknown key(s) ['rwo']",
        ),
    ]
    for path, body, status, message in cases:
        auth = admin() if path.endswith("/feedback") else {}  # feedback needs the token (feedback_requires_token)
        resp = http.post(path, content=body, headers={"Content-Type": "application/json", **auth})
        assert resp.status_code == status, (message, resp.text)
        assert message in resp.json()["error"], (message, resp.json())
    # a pipeline without a champion answers 503 naming that, while fraud serves
    resp = http.post("/pipelines/tumors/invocations", json={"instances": [{"mean_radius": 1.0}]}, headers=admin())
    assert resp.status_code == 503
    assert "pipeline 'tumors' has no champion model yet" in resp.json()["error"]
    assert http.get("/health").json() == {"status": "ok"}
    resp = http.post("/invocations", json=split(good))
    assert resp.status_code == 200 and len(resp.json()["predictions"]) == 2


def test_tokens_guard_admin_routes_and_token_pipelines(http):
    for path in ("/admin/reload", "/admin/flush"):
        missing = http.post(path)
        assert missing.status_code == 401 and "Authorization: Bearer" in missing.json()["error"]
        assert missing.headers["WWW-Authenticate"] == "Bearer"
        wrong = http.post(path, headers=admin("not-the-token"))
        assert wrong.status_code == 403 and "invalid bearer token" in wrong.json()["error"]
        assert http.post(path, headers={"Authorization": f"Basic {TOKEN}"}).status_code == 403
        assert http.post(path, headers=admin()).status_code == 200
    # tumors has serving.require_token: its prediction and feedback routes need the token too
    body = {"instances": [{"mean_radius": 1.0}]}
    assert http.post("/pipelines/tumors/invocations", json=body).status_code == 401
    assert http.post("/pipelines/tumors/invocations", json=body, headers=admin("nope")).status_code == 403
    assert http.post("/pipelines/tumors/invocations", json=body, headers=admin()).status_code == 503  # past auth
    assert http.post("/pipelines/tumors/feedback", json={"request_id": "x", "label": 1}).status_code == 401
    # feedback decides canaries: it needs the token on every pipeline by default (serving.feedback_requires_token)
    refused = http.post("/pipelines/fraud/feedback", json={"request_id": "x", "label": 1})
    assert refused.status_code == 401 and "serving.feedback_requires_token" in refused.json()["error"]
    assert (
        http.post("/pipelines/fraud/feedback", json={"request_id": "x", "label": 1}, headers=admin("no")).status_code
        == 403
    )


def test_feedback_is_stored_with_the_feedback_columns(http, store, world):
    from ml_ops.rollout.deployment import FEEDBACK_COLUMNS

    for request_id, n in (("fb-1", 1), ("fb-2", 2)):  # only served requests can be labelled
        assert (
            http.post("/invocations", json=split(world.rows(n)), headers={"X-Request-ID": request_id}).status_code
            == 200
        )
    reply = http.post("/pipelines/fraud/feedback", json={"request_id": "fb-1", "label": 1}, headers=admin())
    assert reply.json()["accepted"] == 1
    batch = {"labels": [{"request_id": "fb-2", "label": 0, "row": 0}, {"request_id": "fb-2", "label": 1, "row": 1}]}
    reply = http.post("/pipelines/fraud/feedback", json=batch, headers=admin())
    assert reply.json() == {"accepted": 2, "pipeline": "fraud"}
    written = http.post("/admin/flush", headers=admin()).json()["written"]["feedback"]
    assert written and all(
        "/pipelines/fraud/feedback/ds=" in u and "/hour=" in u and u.endswith(".parquet") for u in written
    )
    df = pd.concat([store.read_parquet(u) for u in written], ignore_index=True)
    assert tuple(df.columns) == FEEDBACK_COLUMNS
    got = sorted(zip(df["request_id"], df["row"], df["label"], strict=False))
    assert [g for g in got if g[0].startswith("fb-")] == [("fb-1", 0, 1), ("fb-2", 0, 0), ("fb-2", 1, 1)]
    assert str(df["ts"].dtype) == "datetime64[ns, UTC]"


def test_metrics_ready_and_pipelines(http, world):
    http.post("/invocations", json=split(world.rows(2)))
    http.post("/invocations", content=b"{oops", headers={"Content-Type": "application/json"})
    text = http.get("/metrics").text
    for series in (
        'mlops_gateway_requests_total{pipeline="fraud",route="champion",status="200",version="1"}',
        'mlops_gateway_errors_total{endpoint="invocations",kind="invalid",pipeline="fraud",route="none",version="none"}',
        'mlops_gateway_latency_seconds_bucket{le="0.05",pipeline="fraud",route="champion",version="1"}',
        'mlops_gateway_score_count{pipeline="fraud",route="champion",version="1"}',
        'mlops_gateway_rows_total{pipeline="fraud",route="champion",version="1"}',
        'mlops_gateway_request_seconds_count{pipeline="fraud",status="200"}',
        'mlops_gateway_canary_weight{pipeline="fraud"} 0.0',
        'mlops_gateway_model_version{pipeline="fraud",route="champion"} 1.0',
        'mlops_gateway_log_buffered_rows{log="predictions"}',
    ):
        assert series in text, series
    assert http.get("/ready").json() == {"ready": True}
    status = http.get("/pipelines").json()["pipelines"]
    # a model ml_ops.pipeline.train logged is scored by the numpy scorer (checked against its pipeline at load)
    assert status["fraud"]["champion"] == {
        "version": 1,
        "serving": 1,
        "loaded": True,
        "variant": None,
        "scorer": "numpy",
    }
    assert status["fraud"]["inputs"] == world.inputs and status["fraud"]["routing_key"] == "customer_id"
    assert status["tumors"]["champion"]["version"] is None and status["tumors"]["require_token"] is True


def test_mlflow_unreachable_at_start_is_not_ready_and_says_why(stack, world, tmp_path):
    """A gateway whose MLflow does not answer: up (/health), not ready, 503 naming the cause; no crash."""
    import subprocess
    import sys
    import time

    import httpx

    from tests.e2e.helpers import free_port

    port = free_port()
    env = {
        **stack.services()["gateway"].env,
        "MLOPS_GATEWAY_PORT": str(port),
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{free_port()}",
        "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0",
    }
    with open(tmp_path / "gateway.log", "wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "ml_ops.serving"], env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                ready = httpx.get(f"{url}/ready", timeout=5)
                if "cannot resolve" in ready.text:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.3)
        assert httpx.get(f"{url}/health").status_code == 200
        assert ready.status_code == 503 and "cannot resolve fraud: " in ready.json()["error"], ready.text
        resp = httpx.post(f"{url}/pipelines/fraud/invocations", json=split(world.rows(1)))
        assert (
            resp.status_code == 503 and "pipeline 'fraud' is not available yet: cannot resolve" in resp.json()["error"]
        )
        assert proc.poll() is None
    finally:
        proc.terminate()
        proc.wait(timeout=30)  # uvicorn re-raises SIGTERM after its shutdown: the status is -15 either way
    assert "gateway stopped; final flush wrote" in (tmp_path / "gateway.log").read_text()  # a clean shutdown
