"""Gateway hardening against the real process (issue "Gateway hardening", items 1-5): nothing a client sends
loses logged rows, steers a canary, or gets a 5xx; every error response is counted; the OpenAPI document
describes the prediction and feedback routes. Ends with a bounded, seeded fuzz asserting zero 5xx."""

from __future__ import annotations

import json
import random
import re
import socket
import time
from contextlib import contextmanager
from urllib.parse import urlparse

import httpx
import pandas as pd
import pytest

from ml_ops.serving.routing import bucket
from tests.serving.conftest import admin
from tests.serving.test_gateway_api import split

pytestmark = pytest.mark.timeout(600)
JSON_HEADERS = {"Content-Type": "application/json"}


def post_raw(http, path: str, text: str | bytes, headers: dict | None = None) -> httpx.Response:
    """POST a body exactly as given (httpx's json= cannot send lone surrogates, NaN or duplicate keys)."""
    body = text.encode() if isinstance(text, str) else text
    return http.post(path, content=body, headers={**JSON_HEADERS, **(headers or {})})


def dumps(obj) -> str:
    """JSON text with escapes for everything non-ASCII: a lone surrogate becomes the 6 characters \\ud800."""
    return json.dumps(obj, ensure_ascii=True)


def metric_values(http) -> dict[tuple, float]:
    """Every sample of /metrics: (name, sorted labels) -> value."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(http.get("/metrics").text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def metric_sum(values: dict, name: str, **labels) -> float:
    return sum(v for (n, ls), v in values.items() if n == name and all(dict(ls).get(k) == x for k, x in labels.items()))


def flushed(http, store) -> tuple[dict, pd.DataFrame, pd.DataFrame]:
    """POST /admin/flush: (its reply, the prediction rows and the feedback rows it wrote)."""
    resp = http.post("/admin/flush", headers=admin())
    assert resp.status_code == 200, resp.text
    report = resp.json()
    frames = {
        log: pd.concat([store.read_parquet(u) for u in uris], ignore_index=True) if uris else pd.DataFrame()
        for log, uris in report["written"].items()
    }
    return report, frames["predictions"], frames["feedback"]


def keys_by_route(weight: float) -> tuple[str, str]:
    """A routing key the champion gets and one the canary gets at ``weight``."""
    keys = [f"route-key-{i}" for i in range(200)]
    return (
        next(k for k in keys if bucket("fraud", k) >= weight),
        next(k for k in keys if bucket("fraud", k) < weight),
    )


@contextmanager
def fraud_serving(http, include_dir, **settings):
    """fraud.yaml with extra ``serving:`` settings, applied now (/admin/reload re-reads a changed YAML)."""
    import os

    path = include_dir / "pipelines" / "fraud.yaml"
    original = path.read_text()
    extra = "".join(f"  {k}: {json.dumps(v)}\n" for k, v in settings.items())
    changed, n = re.subn(r"^serving:.*\n", lambda m: m.group(0) + extra, original, count=1, flags=re.M)
    assert n == 1
    stamp = path.stat().st_mtime
    try:
        path.write_text(changed)
        os.utime(path, (stamp + 1, stamp + 1))  # a new mtime even within the file system's clock tick
        assert http.post("/admin/reload", headers=admin(), timeout=120).status_code == 200
        yield
    finally:
        path.write_text(original)
        os.utime(path, (stamp + 2, stamp + 2))
        assert http.post("/admin/reload", headers=admin(), timeout=120).status_code == 200


# --------------------------------------------------------------------------- 1. the prediction log


def test_poison_values_are_refused_naming_the_field_and_every_normal_row_reaches_s3(
    http, store, world, canary, inverted
):
    canary.set(inverted, 0.5)  # the router hashes keys only at a weight strictly between 0 and 1
    row = world.rows(1, offset=11, extra=("transaction_id",))[0]
    before = metric_values(http)
    poison = [
        # (path, body text, status, message)
        (
            "/invocations",
            dumps({"dataframe_records": [{**row, "channel": "\ud800"}]}),
            422,
            "$.dataframe_records[0].channel holds a lone UTF-16 surrogate",
        ),
        (
            "/invocations",
            dumps(split([{**row, "customer_id": "c-\udfff"}])),  # the routing key column
            422,
            "$.dataframe_split.data[0][",
        ),
        (
            "/invocations",
            dumps({"instances": [{**row, "transaction_id": "\udbff"}]}),
            422,
            "$.instances[0].transaction_id holds a lone",
        ),
        (
            "/invocations",
            dumps({"dataframe_records": [{**row, "\ud800": 1}]}),
            422,
            "is a key holding a lone UTF-16 surrogate",
        ),
        (
            "/invocations",
            dumps({"dataframe_records": [{**row, "amount": 2**64}]}),
            422,
            "$.dataframe_records[0].amount is the integer 18446744073709551616, outside the int64 range",
        ),
        ("/invocations", dumps({"dataframe_records": [{**row, "customer_id": 2**63}]}), 422, "outside the int64 range"),
        (
            "/invocations",
            b'{"dataframe_records": [{"channel": "\xed\xa0\x80"}]}',
            400,
            "not UTF-8",
        ),  # encoded surrogate
        (
            "/pipelines/fraud/feedback",
            dumps({"request_id": "\ud800", "label": 1}),
            422,
            "$.request_id holds a lone UTF-16 surrogate",
        ),
        (
            "/pipelines/fraud/feedback",
            dumps({"request_id": "poison-fb", "label": 1, "row": 2**63}),
            422,
            "$.row is the integer 9223372036854775808, outside the int64 range",
        ),
        (
            "/pipelines/fraud/feedback",
            dumps({"labels": [{"request_id": "poison-fb", "label": 1, "row": -(2**63) - 1}]}),
            422,
            "$.labels[0].row is the integer",
        ),
    ]
    for i, (path, text, status, message) in enumerate(poison):
        headers = {"X-Request-ID": f"poison-{i}", **(admin() if path.endswith("/feedback") else {})}
        resp = post_raw(http, path, text, headers)
        assert resp.status_code == status and message in resp.json()["error"], (i, resp.status_code, resp.text)

    # normal traffic after the poison: every row of it is written, nothing goes to the dead letter
    ids = [f"after-poison-{i}" for i in range(30)]
    for i, request_id in enumerate(ids):
        rows = world.rows(1 + i % 3, offset=40 + i, extra=("transaction_id",))
        rows = [{**r, "customer_id": f"after-poison-customer-{i}"} for r in rows]
        resp = http.post("/invocations", json=split(rows), headers={"X-Request-ID": request_id})
        assert resp.status_code == 200, resp.text
        assert (
            http.post(
                "/pipelines/fraud/feedback", json={"request_id": request_id, "label": i % 2}, headers=admin()
            ).status_code
            == 200
        )
    report, logs, labels = flushed(http, store)
    assert report["failed"] == {} and report["dead_letter"] == {}, report
    normal = logs[logs["request_id"].isin(ids)]
    assert sorted(normal.groupby("request_id").size().items()) == sorted((r, 1 + i % 3) for i, r in enumerate(ids))
    assert normal["score"].notna().all() and set(normal["route"]) <= {"champion", "canary"}
    assert sorted(labels.loc[labels["request_id"].isin(ids), "request_id"]) == sorted(ids)
    # the refused prediction requests are logged as such (one row each, with the error), and writable
    refused = logs[logs["request_id"].str.startswith("poison-")].set_index("request_id")["error"]
    assert refused["poison-0"].startswith(
        "422: $.dataframe_records[0].channel holds a lone UTF-16 surrogate ('\\ud800')"
    )
    assert len(refused) == 7

    after = metric_values(http)
    for name in ("mlops_gateway_log_write_errors_total", "mlops_gateway_log_dead_letter_rows_total"):
        assert metric_sum(after, name) == metric_sum(before, name), name
    counted = metric_sum(after, "mlops_gateway_errors_total", kind="invalid") - metric_sum(
        before, "mlops_gateway_errors_total", kind="invalid"
    )
    assert counted == len(poison)


def test_rows_parquet_cannot_hold_go_to_the_dead_letter_and_the_rest_is_written(store):
    """The buffer's safety net (the boundary refuses these values first): the unwritable rows are set
    apart with their reason, every other row of the part is written, and nothing is retried forever."""
    from datetime import datetime, timezone

    from ml_ops import layout
    from ml_ops.serving.logbuffer import PartitionedLog

    dtypes = {"request_id": "object", "row": "int64", "ts": "datetime64[ns, UTC]", "score": "float64"}
    prefix = "s3://mlops/pipelines/dead-letter-test/serving_logs"
    counted = []
    buf = PartitionedLog(
        store, name="predictions", base_dtypes=dtypes, on_dead_letter=lambda name, n, why: counted.append((n, why))
    )
    t = datetime(2026, 3, 4, 9, 30, tzinfo=timezone.utc)
    for i in range(40):
        buf.append(prefix, t, 1, {"request_id": f"ok-{i}", "row": 0, "ts": t, "score": 0.25})
        if i == 7:
            buf.append(prefix, t, 1, {"request_id": "bad-\ud800", "row": 0, "ts": t, "score": 0.5})
        if i == 31:
            buf.append(prefix, t, 2, {"request_id": "huge", "row": [0, 2**64], "ts": t, "score": [0.1, 0.2]})
    report = buf.flush_report()
    assert report.failed == []
    (uri,) = report.written
    written = store.read_parquet(uri)
    assert sorted(written["request_id"]) == sorted([f"ok-{i}" for i in range(40)] + ["huge"])  # huge's row 0 too
    (letter,) = report.dead_letter
    assert letter["rows"] == 2 and letter["uri"].startswith(
        layout.dead_letter_prefix(prefix) + "/ds=2026-03-04/hour=09/part-"
    )
    lines = store.read_jsonl(letter["uri"])
    assert sorted(line["row"]["request_id"] for line in lines) == ["bad-\ud800", "huge"]
    reasons = {line["row"]["request_id"]: line["reason"] for line in lines}
    assert reasons["bad-\ud800"].startswith("UnicodeEncodeError") and "surrogates not allowed" in reasons["bad-\ud800"]
    assert reasons["huge"].startswith("OverflowError")
    assert all(line["part"] == uri and line["log"] == "predictions" for line in lines)
    assert sum(n for n, _ in counted) == 2 and buf.dead_letter_rows == 2
    assert buf.pending_rows == 0 and buf.flush_report().written == []  # nothing kept to fail again


def test_flush_reports_a_store_outage_and_writes_the_rows_once_it_is_back(http, stack, store, world):
    ids = [f"outage-{i}" for i in range(3)]
    for request_id in ids:
        assert (
            http.post("/invocations", json=split(world.rows(1)), headers={"X-Request-ID": request_id}).status_code
            == 200
        )
    before = metric_values(http)
    stack.stop("s3")
    try:
        # the gateway keeps answering from its loaded models while S3 (its deployment state, its logs) is gone for
        # a minute: 20 requests, one every 3 s (~120 failed polls of the state at this stack's 0.5 s interval)
        for i in range(20):
            request_id = f"outage-during-{i}"
            resp = http.post("/invocations", json=split(world.rows(1)), headers={"X-Request-ID": request_id})
            assert resp.status_code == 200, resp.text
            ids.append(request_id)
            time.sleep(3.0)
        resp = http.post("/admin/flush", headers=admin(), timeout=120)
        during = metric_values(http)
    finally:
        stack.up(["s3"])
    assert metric_sum(during, "mlops_gateway_log_buffered_rows", log="predictions") >= len(ids)
    assert metric_sum(during, "mlops_gateway_log_buffer_limit_rows", log="predictions") >= 1000
    assert metric_sum(during, "mlops_gateway_log_dropped_rows_total", log="predictions") == 0
    assert resp.status_code == 503, resp.text
    body = resp.json()
    assert body["error"].startswith("not written, kept for the next flush: predictions: ")
    assert body["failed"]["predictions"][0]["rows"] >= 3 and body["written"]["predictions"] == []
    after = metric_values(http)
    assert metric_sum(after, "mlops_gateway_log_write_errors_total", log="predictions") > metric_sum(
        before, "mlops_gateway_log_write_errors_total", log="predictions"
    )
    assert metric_sum(after, "mlops_gateway_errors_total", endpoint="admin", kind="unavailable") >= 1
    report, logs, _ = flushed(http, store)  # the kept rows go out with the next flush
    assert report["failed"] == {}
    assert set(ids) <= set(logs["request_id"])


# --------------------------------------------------------------------------- 2. who may steer a canary


def test_feedback_needs_the_token_and_labels_only_served_rows(http, store, world, include_dir):
    assert (
        http.post("/invocations", json=split(world.rows(2)), headers={"X-Request-ID": "fbk-served"}).status_code == 200
    )
    bad = http.post("/invocations", json={"dataframe_records": []}, headers={"X-Request-ID": "fbk-refused"})
    assert bad.status_code == 422
    label = {"request_id": "fbk-served", "label": 1}
    assert http.post("/pipelines/fraud/feedback", json=label).status_code == 401
    assert http.post("/pipelines/fraud/feedback", json=label, headers=admin("wrong")).status_code == 403

    before = metric_values(http)
    cases = [
        ({"request_id": "never-served", "label": 1}, "unknown request id(s) 'never-served'"),
        ({"request_id": "fbk-refused", "label": 0}, "unknown request id(s) 'fbk-refused'"),  # answered 422
        ({"labels": [label, {"request_id": "also-never", "label": 0}]}, "unknown request id(s) 'also-never'"),
        (
            {"request_id": "fbk-served", "label": 1, "row": 2},
            "row 2 of request 'fbk-served': that request had 2 row(s)",
        ),
    ]
    for body, message in cases:
        resp = http.post("/pipelines/fraud/feedback", json=body, headers=admin())
        assert resp.status_code == 422 and message in resp.json()["error"], resp.text
    after = metric_values(http)
    assert (
        metric_sum(after, "mlops_gateway_feedback_unknown_total", pipeline="fraud")
        - metric_sum(before, "mlops_gateway_feedback_unknown_total", pipeline="fraud")
        == 3
    )
    assert (
        metric_sum(
            after, "mlops_gateway_errors_total", endpoint="feedback", kind="unknown_request_id", pipeline="fraud"
        )
        - metric_sum(
            before, "mlops_gateway_errors_total", endpoint="feedback", kind="unknown_request_id", pipeline="fraud"
        )
        == 3
    )

    ok = http.post(
        "/pipelines/fraud/feedback", json={"labels": [label, {**label, "row": 1, "label": 0}]}, headers=admin()
    )
    assert ok.json() == {"accepted": 2, "pipeline": "fraud"}
    with fraud_serving(http, include_dir, feedback_requires_token=False):  # a pipeline may open its feedback
        assert http.post("/pipelines/fraud/feedback", json={**label, "label": 0}).status_code == 200
        assert (
            http.post("/pipelines/fraud/feedback", json={"request_id": "never-served", "label": 0}).status_code == 422
        )
    assert http.post("/pipelines/fraud/feedback", json=label).status_code == 401  # closed again

    _, _, labels = flushed(http, store)
    mine = labels[
        labels["request_id"].str.startswith("fbk-") | labels["request_id"].isin(["never-served", "also-never"])
    ]
    assert sorted(zip(mine["request_id"], mine["row"], mine["label"], strict=True)) == [
        ("fbk-served", 0, 0),
        ("fbk-served", 0, 1),
        ("fbk-served", 1, 0),
    ]  # refused batches recorded nothing


def test_client_routing_keys_are_honoured_only_when_the_pipeline_allows_it(http, world, canary, inverted, include_dir):
    canary.set(inverted, 0.5)
    champion_key, canary_key = keys_by_route(0.5)
    rows = [{**r, "customer_id": champion_key} for r in world.rows(3, offset=60)]
    steer = {"X-Routing-Key": canary_key}
    assert http.post("/invocations", json=split(rows)).json()["routes"] == ["champion"] * 3
    assert http.post("/invocations", json=split(rows), headers=steer).json()["routes"] == ["champion"] * 3
    with fraud_serving(http, include_dir, client_routing_key=True):
        assert http.post("/invocations", json=split(rows), headers=steer).json()["routes"] == ["canary"] * 3
        too_long = http.post("/invocations", json=split(rows), headers={"X-Routing-Key": "k" * 257})
        assert (
            too_long.status_code == 400 and "X-Routing-Key must be 1 to 256 printable ASCII" in too_long.json()["error"]
        )
    assert http.post("/invocations", json=split(rows), headers=steer).json()["routes"] == ["champion"] * 3


# --------------------------------------------------------------------------- 3 + 4. bodies


def test_deep_json_is_a_400_on_every_body_route(http, world):
    deep = "[" * 10_000 + "]" * 10_000
    for path in (
        "/invocations",
        "/pipelines/fraud/invocations",
        "/endpoints/fraud/invocations",
        "/pipelines/fraud/feedback",
    ):
        for text in (deep, '{"dataframe_records": ' + deep + "}", '{"labels": [' + "{" * 5000 + "}" * 5000 + "]}"):
            resp = post_raw(http, path, text, admin())
            assert resp.status_code == 400, (path, resp.status_code, resp.text[:200])
            assert "levels deep; at most 32 (MLOPS_GATEWAY_MAX_JSON_DEPTH)" in resp.json()["error"]
    nested = {"dataframe_records": [{**world.rows(1)[0]}], "params": {"a": json.loads("[" * 20 + "]" * 20)}}
    assert http.post("/invocations", json=nested).status_code == 200  # params may nest, within the limit


def test_bad_numbers_content_types_duplicate_keys_and_stalled_bodies(http, stack, world):
    row = world.rows(1, offset=5)[0]
    good = dumps({"dataframe_records": [row]})
    amount = json.dumps(row["amount"])
    assert f'"amount": {amount}' in good
    for literal in ("Infinity", "-Infinity", "NaN", "1e309", "-1e309"):
        resp = post_raw(
            http, "/pipelines/fraud/invocations", good.replace(f'"amount": {amount}', f'"amount": {literal}')
        )
        assert resp.status_code == 422, (literal, resp.text)
        assert "column 'amount' expects a finite double; row 0 has a non-finite number" in resp.json()["error"]
    resp = post_raw(http, "/invocations", good.replace('{"amount"', '{"amount": 1.0, "amount"'))
    assert resp.status_code == 400 and "duplicate key 'amount'" in resp.json()["error"]
    resp = post_raw(http, "/pipelines/fraud/feedback", '{"request_id": "a", "request_id": "b", "label": 1}', admin())
    assert resp.status_code == 400 and "duplicate key 'request_id'" in resp.json()["error"]

    for content_type in (
        "text/csv",
        "text/plain",
        "application/x-www-form-urlencoded",
        "application/json; charset=latin-1",
    ):
        resp = http.post("/invocations", content=good.encode(), headers={"Content-Type": content_type})
        assert resp.status_code == 415, (content_type, resp.text)
    assert http.post("/invocations", content=good.encode()).status_code == 415  # none at all
    fb = http.post(
        "/pipelines/fraud/feedback",
        content=b"request_id=x&label=1",
        headers={**admin(), "Content-Type": "application/x-www-form-urlencoded"},
    )
    assert fb.status_code == 415 and "Content-Type must be application/json" in fb.json()["error"]
    for content_type in ("application/json; charset=utf-8", "Application/JSON", 'application/json; charset="UTF-8"'):
        assert (
            http.post("/invocations", content=good.encode(), headers={"Content-Type": content_type}).status_code == 200
        )

    # a body that stalls is answered 408 after MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS (2 s here) and the connection closed
    url = urlparse(stack.gateway_url)
    for path, extra in (
        ("/invocations", ""),
        ("/pipelines/fraud/feedback", f"Authorization: Bearer {admin()['Authorization'].split()[1]}\r\n"),
    ):
        with socket.create_connection((url.hostname, url.port), timeout=20) as sock:
            head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n{extra}\r\n"
            sock.sendall(head.encode() + b'{"dataframe_records": [')
            t0 = time.monotonic()
            reply = b""
            while chunk := sock.recv(65536):
                reply += chunk
            waited = time.monotonic() - t0
        assert reply.startswith(b"HTTP/1.1 408 "), reply[:200]
        assert b"did not arrive within 2 s (MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS)" in reply
        assert 1.5 <= waited < 10, waited  # and then closed (recv returned b"")


# --------------------------------------------------------------------------- 5. metrics


def test_every_error_response_is_counted_by_kind(http, world):
    before = metric_values(http)
    good = split(world.rows(1))
    expected = [
        # (request, endpoint, kind, pipeline)
        (
            lambda: http.post("/invocations", content=b"{" + b" " * (1 << 20) + b"}", headers=JSON_HEADERS),
            "invocations",
            "too_large",
            "fraud",
        ),
        (lambda: http.post("/pipelines/nope/invocations", json=good), "invocations", "not_found", "none"),
        (
            lambda: http.post("/invocations", json=good, headers={"X-Pipeline": "nope-2"}),
            "invocations",
            "not_found",
            "none",
        ),
        (
            lambda: http.post("/invocations", json=good, headers={"X-Request-ID": "x" * 129}),
            "invocations",
            "invalid",
            "none",
        ),
        (
            lambda: http.post("/invocations", json=good, headers={"X-Request-ID": "tab\there"}),
            "invocations",
            "invalid",
            "none",
        ),
        (lambda: http.get("/invocations"), "invocations", "method", "none"),
        (
            lambda: http.post("/invocations", content=b"{}", headers={"Content-Type": "text/csv"}),
            "invocations",
            "media_type",
            "fraud",
        ),
        (lambda: post_raw(http, "/invocations", "[" * 100 + "]" * 100), "invocations", "invalid", "fraud"),
        (lambda: http.post("/pipelines/tumors/invocations", json=good), "invocations", "auth", "tumors"),
        (
            lambda: http.post("/pipelines/tumors/invocations", json=good, headers=admin()),
            "invocations",
            "unavailable",
            "tumors",
        ),
        (
            lambda: http.post("/pipelines/fraud/feedback", json={"request_id": "x", "label": 1}),
            "feedback",
            "auth",
            "fraud",
        ),
        (
            lambda: http.post("/pipelines/nope/feedback", json={"request_id": "x", "label": 1}),
            "feedback",
            "not_found",
            "none",
        ),
        (
            lambda: post_raw(http, "/pipelines/fraud/feedback", "{" * 60 + "}" * 60, admin()),
            "feedback",
            "invalid",
            "fraud",
        ),
        (
            lambda: http.post("/pipelines/fraud/feedback", json={"request_id": "nobody", "label": 1}, headers=admin()),
            "feedback",
            "unknown_request_id",
            "fraud",
        ),
        (lambda: http.post("/admin/flush"), "admin", "auth", "none"),
        (lambda: http.get("/no-such-route"), "other", "not_found", "none"),
    ]
    for send, endpoint, kind, _ in expected:
        assert send().status_code >= 400, (endpoint, kind)
    after = metric_values(http)
    for endpoint in ("invocations", "feedback", "admin", "other"):
        for kind in {k for _, e, k, _ in expected if e == endpoint}:
            for pipeline in {p for _, e, k, p in expected if e == endpoint and k == kind}:
                want = sum(1 for _, e, k, p in expected if (e, k, p) == (endpoint, kind, pipeline))
                labels = {"endpoint": endpoint, "kind": kind, "pipeline": pipeline}
                got = metric_sum(after, "mlops_gateway_errors_total", **labels) - metric_sum(
                    before, "mlops_gateway_errors_total", **labels
                )
                assert got == want, (labels, got, want)
    # prediction requests refused before any model answered are in requests_total too, with their status
    assert (
        metric_sum(after, "mlops_gateway_requests_total", pipeline="none", status="404")
        - metric_sum(before, "mlops_gateway_requests_total", pipeline="none", status="404")
        == 2
    )


def test_openapi_documents_the_prediction_and_feedback_routes(http):
    spec = http.get("/openapi.json").json()
    schemas = spec["components"]["schemas"]

    def resolve(schema: dict) -> dict:
        return schemas[schema["$ref"].rsplit("/", 1)[1]] if "$ref" in schema else schema

    for path in ("/invocations", "/pipelines/{pipeline}/invocations", "/endpoints/{pipeline}/invocations"):
        op = spec["paths"][path]["post"]
        body = op["requestBody"]["content"]["application/json"]["schema"]
        formats = {next(iter(resolve(s)["properties"])) for s in body["anyOf"]}
        assert formats == {"dataframe_split", "dataframe_records", "instances", "inputs"}, path
        assert resolve(op["responses"]["200"]["content"]["application/json"]["schema"])["required"] == [
            "predictions",
            "versions",
            "routes",
            "request_id",
        ]
        for status in ("400", "401", "404", "408", "413", "415", "422", "500", "503"):
            assert op["responses"][status]["content"]["application/json"]["schema"] == {
                "$ref": "#/components/schemas/ErrorBody"
            }
        assert {p["name"] for p in op["parameters"]} >= {"X-Request-ID", "X-Routing-Key"}
    op = spec["paths"]["/pipelines/{pipeline}/feedback"]["post"]
    body = op["requestBody"]["content"]["application/json"]["schema"]
    assert {tuple(resolve(s)["required"]) for s in body["anyOf"]} == {("request_id", "label"), ("labels",)}
    assert resolve(op["responses"]["200"]["content"]["application/json"]["schema"])["required"] == [
        "accepted",
        "pipeline",
    ]
    assert all(
        op["responses"][s]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorBody")
        for s in ("400", "401", "415", "422")
    )
    for ref in re.findall(r'"\$ref": "#/components/schemas/([^"]+)"', json.dumps(spec)):
        assert ref in schemas, ref  # every reference resolves


# --------------------------------------------------------------------------- fuzz (bounded, seeded)


class Raw(str):
    """JSON text inserted as is (Infinity, NaN, 1e309, a lone surrogate escape)."""


class Pairs(list):
    """A JSON object as (key, value) pairs: may repeat a key."""


def to_text(value) -> str:
    if isinstance(value, Raw):
        return str(value)
    if isinstance(value, Pairs):
        return "{" + ", ".join(f"{to_text(k)}: {to_text(v)}" for k, v in value) + "}"
    if isinstance(value, dict):
        return to_text(Pairs(value.items()))
    if isinstance(value, list):
        return "[" + ", ".join(to_text(v) for v in value) + "]"
    return json.dumps(value, ensure_ascii=True)


def random_scalar(rng: random.Random):
    return rng.choice(
        [
            lambda: rng.randint(-5, 5),
            lambda: rng.choice([2**63 - 1, 2**63, -(2**63) - 1, 2**64, 10**30, -(10**40)]),
            lambda: rng.uniform(-1e6, 1e6),
            lambda: Raw(rng.choice(["Infinity", "-Infinity", "NaN", "1e309", "-1e309", "1e-400", "-0.0", "1E5"])),
            lambda: rng.choice(["", "web", "pos", "DE", "é", "😀", "\x00", "a" * rng.randint(1, 3000)]),
            lambda: Raw(rng.choice(['"\\ud800"', '"x\\udfff"', '"\\ud83d\\ude00"', '"\\udbff\\udbff"'])),
            lambda: rng.choice([True, False, None]),
        ]
    )()


def random_value(rng: random.Random, depth: int = 0):
    roll = rng.random()
    if depth > 40 or roll < 0.55:
        return random_scalar(rng)
    if roll < 0.75:
        return [random_value(rng, depth + 1) for _ in range(rng.randint(0, 3))]
    if roll < 0.9:
        keys = [
            rng.choice(["a", "amount", "channel", "labels", "request_id", "row", "\\ud800", "dataframe_records"])
            for _ in range(rng.randint(0, 3))
        ]
        return Pairs((k if not k.startswith("\\") else Raw(f'"{k}"'), random_value(rng, depth + 1)) for k in keys)
    return Raw("[" * (d := rng.choice([31, 32, 33, 200, 3000])) + "]" * d)


def fuzz_invocation(rng: random.Random, rows: list[dict]) -> str:
    row = dict(rng.choice(rows))
    for _ in range(rng.choice([0, 0, 1, 1, 2, 5])):  # mutate a few values (none: a valid request)
        row[rng.choice([*row, "customer_id", "transaction_id", "extra", "\\ud800"])] = random_value(rng)
    records = [row] * rng.choice([1, 1, 2, 7])
    columns = list(row)
    shape = rng.random()
    if shape < 0.3:
        body = {"dataframe_records": records}
    elif shape < 0.55:
        body = {"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns] for r in records]}}
    elif shape < 0.7:
        body = {"instances": records, "params": random_value(rng)}
    elif shape < 0.8:
        body = {"inputs": {c: [r[c] for r in records] for c in columns}}
    elif shape < 0.9:
        body = Pairs([("dataframe_records", records), ("dataframe_records", records)])  # duplicate key
    else:
        body = random_value(rng)
    text = to_text(body)
    if rng.random() < 0.05:
        text = text[: rng.randint(0, len(text))]  # truncated
    return text


def fuzz_feedback(rng: random.Random, served: list[str]) -> str:
    def label():
        item = {"request_id": rng.choice([*served, "never", ""]) if served else "never", "label": rng.choice([0, 1, 1])}
        for key in rng.sample(["label", "row", "request_id", "extra"], rng.choice([0, 0, 1, 2])):
            item[key] = random_value(rng)
        return item

    return to_text(label() if rng.random() < 0.5 else {"labels": [label() for _ in range(rng.randint(0, 4))]})


def test_fuzz_bodies_headers_and_content_types_never_get_a_5xx(http, store, world):
    """A few hundred generated requests (fixed seed): random nesting, types, huge and non-finite numbers,
    surrogates, duplicate keys, truncated and non-UTF-8 bodies, wrong content types and headers. Not one
    5xx, and every row the gateway accepted is writable (the flush reports no dead letter and no failure).
    Schemathesis against the gateway's /openapi.json is in test_openapi_fuzz.py; this one sends what a schema
    cannot describe (raw JSON text: NaN, lone surrogates, duplicate keys, truncated and non-UTF-8 bodies)."""
    rng = random.Random(20260302)
    rows = world.rows(20, offset=123, extra=("transaction_id",))
    routes = [
        "/invocations",
        "/pipelines/fraud/invocations",
        "/endpoints/fraud/invocations",
        "/pipelines/tumors/invocations",
    ]
    content_types = [JSON_HEADERS["Content-Type"]] * 8 + [
        "text/csv",
        "application/json; charset=utf-16",
        "text/plain",
        None,
    ]
    statuses, served, five = {}, [], []
    for i in range(400):
        feedback = rng.random() < 0.25
        path = "/pipelines/fraud/feedback" if feedback else rng.choice(routes)
        text = fuzz_feedback(rng, served) if feedback else fuzz_invocation(rng, rows)
        body = text.encode("utf-8", "surrogatepass")
        if rng.random() < 0.03:
            body = body[:5] + rng.choice([b"\xff", b"\xed\xa0\x80", b"\xc3"]) + body[5:]  # not UTF-8
        headers = {"X-Request-ID": f"fuzz-{i}"}
        content_type = rng.choice(content_types)
        if content_type:
            headers["Content-Type"] = content_type
        if feedback or path.startswith("/pipelines/tumors") or rng.random() < 0.1:
            headers.update(admin())
        if rng.random() < 0.1:
            headers[rng.choice(["X-Request-ID", "X-Routing-Key", "X-Pipeline"])] = rng.choice(
                ["", "a b", b"\xe9t\xe9", "x" * 300, "tumors", "fraud"]
            )
        resp = http.post(path, content=body, headers=headers)
        statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
        if resp.status_code >= 500 and "has no champion model yet" not in resp.text:  # tumors has no model
            five.append((i, path, resp.status_code, resp.text[:300], body[:300]))
        if resp.status_code == 200 and not feedback:
            served.append(resp.headers["X-Request-ID"])
        assert resp.headers["content-type"].startswith("application/json")
    assert not five, five[:5]
    assert statuses.get(200, 0) >= 20 and statuses.get(400, 0) >= 20 and statuses.get(422, 0) >= 20, statuses
    assert {415, 413} & set(statuses) and len(served) >= 10, statuses
    report, logs, _ = flushed(http, store)
    assert report["failed"] == {} and report["dead_letter"] == {}, report
    assert set(served) <= set(logs["request_id"])
