"""Payload parsing, signature checks and the routing hash, without any server (fast)."""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest

from ml_ops.serving.errors import RequestError
from ml_ops.serving.routing import assign, bucket, route, routing_keys
from ml_ops.serving.schema import Column, InputSchema, check_columns, convert, parse_json, table_from_payload
from ml_ops.serving.settings import Settings

SCHEMA = InputSchema(
    (
        Column("amount", "double"),
        Column("n", "long"),
        Column("channel", "string"),
        Column("flag", "boolean", required=False),
    )
)


def table(payload):
    return table_from_payload(parse_json(json.dumps(payload).encode()))


def test_the_mlflow_formats_give_the_same_table():
    rows = [{"amount": 1.5, "n": 2, "channel": "pos"}, {"amount": None, "n": 3, "channel": None}]
    forms = [
        {
            "dataframe_split": {
                "columns": ["amount", "n", "channel"],
                "data": [[1.5, 2, "pos"], [None, 3, None]],
                "index": [0, 1],
            }
        },
        {"dataframe_records": rows},
        {"instances": rows, "params": {"anything": 1}},
        {"inputs": {"amount": [1.5, None], "n": [2, 3], "channel": ["pos", None]}},
    ]
    for payload in forms:
        t = table(payload)
        assert (t.n, t.columns) == (2, ["amount", "n", "channel"]), payload
        typed = convert(t, SCHEMA)
        assert typed["amount"].dtype == np.float64 and np.isnan(typed["amount"][1])
        assert typed["n"].tolist() == [2, 3] and typed["channel"].tolist() == ["pos", None]
        assert "flag" not in typed  # optional and absent: left out


@pytest.mark.parametrize(
    ("payload", "status", "message"),
    [
        (
            {"dataframe_records": [{"amount": True, "n": 1, "channel": "a"}]},
            422,
            "column 'amount' expects double; row 0 has bool True",
        ),
        (
            {"dataframe_records": [{"amount": 1, "n": 1.5, "channel": "a"}]},
            422,
            "column 'n' expects long; row 0 has float 1.5",
        ),
        (  # refused by the parser already: an integer beyond int64 cannot be logged whatever the column
            {"dataframe_records": [{"amount": 1, "n": 2**70, "channel": "a"}]},
            422,
            "$.dataframe_records[0].n is the integer 1180591620717411303424, outside the int64 range",
        ),
        (
            {"dataframe_records": [{"amount": 1, "n": 1, "channel": ["a"]}]},
            422,
            "column 'channel' expects string; row 0 has list",
        ),
        ({"instances": [[1, 2]]}, 400, "instances must name the columns"),
        ({"inputs": {"amount": [1], "n": [1, 2]}}, 400, "columns have different lengths [1, 2]"),
        ({"dataframe_split": {"columns": ["a", "a"], "data": []}}, 400, "names ['a'] more than once"),
        ({"dataframe_split": {"columns": ["a"], "data": [[1]], "orient": "x"}}, 400, "unknown key(s) ['orient']"),
        ({"dataframe_records": {"amount": 1}}, 400, "dataframe_records must be a list of objects"),
        ({}, 400, "exactly one of"),
    ],
)
def test_bad_payloads_name_the_problem(payload, status, message):
    with pytest.raises(RequestError) as err:
        convert(table(payload), SCHEMA)
    assert err.value.status == status and message in err.value.message, err.value.message


def test_missing_and_unexpected_columns():
    t = table({"dataframe_records": [{"amount": 1.0, "channel": "a", "customer_id": "c", "extra": 1}]})
    with pytest.raises(RequestError, match=r"missing column\(s\) \['n'\]"):
        check_columns(t, [SCHEMA], ["customer_id"], "m v1")
    t = table({"dataframe_records": [{"amount": 1.0, "n": 1, "channel": "a", "customer_id": "c", "extra": 1}]})
    with pytest.raises(RequestError, match=r"unexpected column\(s\) \['extra'\].*\['customer_id'\]"):
        check_columns(t, [SCHEMA], ["customer_id"], "m v1")
    check_columns(
        table({"dataframe_records": [{"amount": 1.0, "n": 1, "channel": "a", "customer_id": "c"}]}),
        [SCHEMA],
        ["customer_id", None],
        "m v1",
    )  # flag is optional, customer_id allowed


def test_malformed_json():
    for body in (b"{", b"\xff\xfe\x00", b"null"):
        with pytest.raises(RequestError) as err:
            parse_json(body)
        assert err.value.status == 400


def test_routing_hash_is_stable_sticky_and_monotone_in_the_weight():
    digest = hashlib.sha1(b"fraud\x00customer-1").digest()
    assert bucket("fraud", "customer-1") == int.from_bytes(digest[:8], "big") / 2**64  # the documented hash
    assert bucket("fraud", "customer-1") == pytest.approx(0.934167, abs=1e-6)  # the same in every process
    assert bucket("fraud", "customer-1") != bucket("tumors", "customer-1")  # salted per pipeline
    keys = [f"k{i}" for i in range(20_000)]
    for weight in (0.1, 0.25, 0.5):
        share = sum(r == "canary" for r in assign("fraud", keys, weight)) / len(keys)
        assert abs(share - weight) < 0.015, (weight, share)
    low, high = assign("fraud", keys, 0.1), assign("fraud", keys, 0.5)
    assert all(
        h == "canary" for lo, h in zip(low, high, strict=False) if lo == "canary"
    )  # raising the weight only adds keys
    assert set(assign("fraud", keys[:50], 0.0)) == {"champion"} and set(assign("fraud", keys[:50], 1.0)) == {"canary"}
    assert route("fraud", "customer-1", 0.5) == route("fraud", "customer-1", 0.5)
    assert routing_keys(2, header="h", column=["a", "b"], request_id="r") == ["h", "h"]
    assert routing_keys(3, header=None, column=["a", None, float("nan")], request_id="r") == ["a", "r", "r"]
    assert routing_keys(2, header=None, column=None, request_id="r") == ["r", "r"]


def test_settings_name_a_bad_variable():
    assert Settings.from_env({}).port == 8000 and Settings.from_env({}).max_body_bytes == 1 << 20
    with pytest.raises(ValueError, match="MLOPS_GATEWAY_POLL_SECONDS='soon' is not a number"):
        Settings.from_env({"MLOPS_GATEWAY_POLL_SECONDS": "soon"})
    with pytest.raises(ValueError, match="MLOPS_GATEWAY_FLUSH_ROWS='0' must be >= 1"):
        Settings.from_env({"MLOPS_GATEWAY_FLUSH_ROWS": "0"})


@pytest.mark.parametrize(
    ("body", "status", "message"),
    [
        (b'{"a": "\\ud800"}', 422, "$.a holds a lone UTF-16 surrogate"),
        (b'{"a": ["ok", {"b c": "x\\udfff"}]}', 422, "$.a[1]['b c'] holds a lone UTF-16 surrogate"),
        (b'{"\\udc00": 1}', 422, "is a key holding a lone UTF-16 surrogate"),
        (b'{"a": [9223372036854775808]}', 422, "$.a[0] is the integer 9223372036854775808, outside the int64 range"),
        (b'{"a": -9223372036854775809}', 422, "outside the int64 range"),
        (b'{"a": "\xed\xa0\x80"}', 400, "not UTF-8"),
        (b'{"a": 1, "a": 2}', 400, "duplicate key 'a'"),
        (b"[" * 33 + b"]" * 33, 400, "JSON nested 33 levels deep; at most 32"),
        (b'{"a":' * 10_000 + b"1" + b"}" * 10_000, 400, "nested 10000 levels deep"),
    ],
)
def test_parse_json_refuses_what_could_not_be_logged_or_parsed(body, status, message):
    with pytest.raises(RequestError) as err:
        parse_json(body)
    assert err.value.status == status and message in err.value.message, err.value.message


def test_parse_json_accepts_what_is_fine():
    assert parse_json('{"a": "\\ud83d\\ude00", "b": "é"}'.encode()) == {"a": "\U0001f600", "b": "é"}  # a pair
    assert parse_json(b'{"a": "[[[[\\"{{{{"}') == {"a": '[[[["{{{{'}  # brackets in strings are not depth
    assert (
        parse_json(b'{"a": [9223372036854775807, -9223372036854775808, 12345678901234567890.5]}')["a"][0] == 2**63 - 1
    )
    assert parse_json(b'{"a": [[[[[]]]]]}', max_depth=6) == {"a": [[[[[]]]]]}


def test_non_finite_numbers_are_refused_in_numeric_columns():
    for literal in ("Infinity", "-Infinity", "NaN", "1e309"):
        text = '{"dataframe_records": [{"amount": 1, "n": 1, "channel": "a"}, {"amount": X, "n": 1, "channel": "a"}]}'
        t = table_from_payload(parse_json(text.replace("X", literal).encode()))
        with pytest.raises(RequestError, match=r"column 'amount' expects a finite double; row 1 has a non-finite"):
            convert(t, SCHEMA)
    small = InputSchema((Column("x", "float"),))
    with pytest.raises(RequestError, match=r"column 'x' expects a finite float; row 0 has a number beyond float range"):
        convert(table({"dataframe_records": [{"x": 1e300}]}), small)
    assert np.isnan(convert(table({"dataframe_records": [{"x": None}]}), small)["x"][0])  # null: missing, fine
    untyped = InputSchema((Column("x", "any"),))
    assert convert(table({"dataframe_records": [{"x": float("inf")}]}), untyped)["x"].tolist() == [float("inf")]


def test_served_index_is_bounded_and_forgets_after_its_time():
    from ml_ops.serving.served import ServedIndex

    now = [0.0]
    index = ServedIndex(max_ids=3, seconds=10, clock=lambda: now[0])
    for i in range(4):
        index.add(f"r{i}", i + 1)
    assert index.rows("r0") is None and index.evicted == 1  # the oldest went first
    assert [index.rows(f"r{i}") for i in (1, 2, 3)] == [2, 3, 4]
    now[0] = 5
    index.add("r1", 1)  # a reused id keeps its widest request, and its time starts again
    assert index.rows("r1") == 2
    now[0] = 10.5
    assert index.rows("r2") is None and index.rows("r1") == 2
    now[0] = 20
    index.add("r9", 1)
    assert len(index) == 1 and index.rows("r9") == 1


def test_dead_letter_keys_come_from_layout_and_sit_beside_the_stage():
    from ml_ops import layout

    assert (
        layout.dead_letter_prefix("s3://mlops/pipelines/fraud/serving_logs")
        == "s3://mlops/pipelines/fraud/dead_letter/serving_logs"
    )
    assert (
        layout.dead_letter_prefix("s3://mlops/pipelines/fraud/feedback/")
        == "s3://mlops/pipelines/fraud/dead_letter/feedback"
    )


def test_routing_never_raises_on_a_surrogate_key():
    assert 0 <= bucket("fraud", "\ud800") < 1 and assign("fraud", ["\ud800", "ok"], 0.5)
    assert bucket("fraud", "customer-1") == pytest.approx(0.934167, abs=1e-6)  # valid keys hash as before


def test_new_settings_have_defaults_and_name_a_bad_value():
    s = Settings.from_env({})
    assert (s.body_timeout_seconds, s.max_json_depth, s.feedback_ids, s.feedback_seconds) == (10.0, 32, 100_000, 3600.0)
    with pytest.raises(ValueError, match="MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS='never' is not a number"):
        Settings.from_env({"MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS": "never"})
