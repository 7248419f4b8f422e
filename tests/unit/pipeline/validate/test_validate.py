"""Validation stage end to end (validate_frame): the real GX suites on small generated frames (no mocks)."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from ml_ops.pipeline.validate import (
    DataValidationError,
    SuiteError,
    load_suite,
    raise_for_failures,
    validate_frame,
)
from tests.unit.pipeline.validate.frames import TUMORS_SUITE, assert_well_formed, failed, fraud_frame


def test_clean_frame_passes(suite, history):
    result = validate_frame(fraud_frame(), suite, history=history, label="fraud ds=2026-01-05")
    assert result.success, result.message()
    assert result.failures == []
    assert result.statistics["expectations_evaluated"] == len(suite["expectations"])
    assert result.statistics["stats_checks_evaluated"] > 0
    assert result.message().startswith("Validation passed for fraud ds=2026-01-05")
    raise_for_failures(result, "fraud ds=2026-01-05")  # must not raise


def test_suites_load_and_bad_suites_are_named(tmp_path):
    assert load_suite(TUMORS_SUITE)["name"] == "tumors"
    bad = tmp_path / "bad.json"
    bad.write_text(
        json.dumps(
            {
                "name": "x",
                "expectations": [
                    {"type": "expect_column_to_exist", "kwargs": {"column": "a"}},
                    {"type": "expect_column_values_to_be_purple", "kwargs": {"column": "b"}},
                ],
            }
        )
    )
    with pytest.raises(SuiteError, match=r"bad\.json.*#1.*expect_column_values_to_be_purple\(b\)"):
        load_suite(bad)
    bad.write_text('{"name": "x", "expectations": [')
    with pytest.raises(SuiteError, match=r"bad\.json: not valid JSON"):
        load_suite(bad)
    bad.write_text(
        json.dumps(
            {
                "name": "x",
                "expectations": [
                    {
                        "type": "expect_column_values_to_be_between",
                        "kwargs": {"column": "a", "min_value": "zero?", "mostly": 7},
                    }
                ],
            }
        )
    )
    with pytest.raises(SuiteError, match=r"#0 expect_column_values_to_be_between\(a\)"):
        load_suite(bad)


def test_missing_column_fails_and_names_it(suite):
    result = validate_frame(fraud_frame().drop(columns=["amount"]), suite)
    assert not result.success
    assert {("expect_column_to_exist", "amount"), ("expect_column_values_to_be_between", "amount")} <= failed(result)
    msg = result.message("fraud ds=2026-01-05")
    assert "expect_column_to_exist(amount): column 'amount' is missing" in msg
    assert msg.startswith("Validation failed for fraud ds=2026-01-05: ")


def test_wrong_types_fail_with_example_values(suite):
    df = fraud_frame()
    df["amount"] = df["amount"].astype(object)
    df.loc[:6, "amount"] = "n/a"
    df["customer_age"] = df["customer_age"].astype(str)  # "42" instead of 42
    result = validate_frame(df, suite)
    got = failed(result)
    assert ("expect_column_values_to_be_in_type_list", "amount") in got
    assert ("expect_column_values_to_be_in_type_list", "customer_age") in got
    # GX raises inside the range check (str vs number): reported as a failure, not an exception
    assert ("expect_column_values_to_be_between", "amount") in got
    line = next(ln for ln in result.message().splitlines() if "in_type_list(amount" in ln)
    assert "7 of 300 rows" in line and "'n/a'" in line


def test_flood_of_nulls_fails(suite, history):
    df = fraud_frame()
    df.loc[df.sample(frac=0.6, random_state=1).index, "customer_age"] = np.nan
    df["device"] = None
    result = validate_frame(df, suite, history=history)
    got = failed(result)
    assert ("expect_column_values_to_not_be_null", "customer_age") in got
    assert ("expect_column_values_to_not_be_null", "device") in got
    assert ("stats_null_share_vs_recent", "customer_age") in got
    assert (
        "expect_column_values_to_not_be_null(device, mostly 0.95): 300 of 300 rows (100.0%) are null"
        in result.message()
    )


def test_duplicate_ids_fail(suite):
    df = fraud_frame()
    df.loc[10:14, "transaction_id"] = df.loc[0, "transaction_id"]
    result = validate_frame(df, suite)
    assert failed(result) == {("expect_column_values_to_be_unique", "transaction_id")}
    assert (
        "expect_column_values_to_be_unique(transaction_id): 6 of 300 rows (2.0%), e.g. 't0-0000000'" in result.message()
    )


def test_out_of_range_and_unknown_categories(suite):
    df = fraud_frame()
    df.loc[:2, "amount"] = [-5.0, 0.0, 60_000.0]
    df.loc[:3, "channel"] = "carrier_pigeon"
    df.loc[:1, "is_fraud"] = 2
    result = validate_frame(df, suite)
    msg = result.message()
    assert "expect_column_values_to_be_between(amount, min > 0, max < 50000): 3 of 300 rows (1.0%)" in msg
    assert "-5" in msg and "60000" in msg
    assert "expect_column_values_to_be_in_set(channel" in msg and "'carrier_pigeon'" in msg
    assert ("expect_column_values_to_be_in_set", "is_fraud") in failed(result)


@pytest.mark.parametrize("empty", [pd.DataFrame(), fraud_frame().iloc[:0]], ids=["no-columns", "no-rows"])
def test_empty_day_fails_without_raising(suite, history, empty):
    result = validate_frame(empty, suite, history=history, label="fraud ds=2026-01-06")
    assert not result.success
    got = failed(result)
    assert ("expect_table_row_count_to_be_between", None) in got
    assert ("stats_row_count_vs_recent", None) in got
    assert "expect_table_row_count_to_be_between(min 100, max 2000000): observed 0" in result.message()
    json.dumps(result.to_json())


def test_duplicate_column_names_do_not_crash(suite):
    df = fraud_frame()
    df.columns = [*df.columns[:-1], "ts"]
    result = validate_frame(df, suite)
    assert ("ml_ops_expect_unique_column_names", "ts") in failed(result)


def test_stats_check_flags_10x_mean_shift_not_a_normal_day(suite, history):
    normal = validate_frame(fraud_frame(310, "2026-01-05", seed=42), suite, history=history)
    assert normal.success, normal.message()
    assert normal.statistics["columns"]["amount"]["shift_sigma"] < 3

    shifted = fraud_frame(300, "2026-01-05", seed=42)
    shifted["amount"] = shifted["amount"] * 10
    result = validate_frame(shifted, suite, history=history)
    assert failed(result) == {("stats_mean_vs_recent", "amount")}
    assert "stats_mean_vs_recent(amount" in result.message()


def test_stats_floor_keeps_near_identical_days_from_flagging(suite):
    # 3 identical history days: zero day-to-day spread; an ordinary new day must still pass.
    same = [fraud_frame(300, seed=1)] * 3
    result = validate_frame(fraud_frame(300, seed=2), suite, history=same)
    assert not any(f.expectation_type == "stats_mean_vs_recent" for f in result.failures), result.message()


def test_no_history_skips_stats_with_a_note(suite):
    result = validate_frame(fraud_frame(), suite, history=[])
    assert result.success
    assert result.statistics["stats_checks_evaluated"] == 0
    assert any("skipped" in n for n in result.notes)


def test_row_count_vs_recent(suite, history):
    result = validate_frame(fraud_frame(120), suite, history=[fraud_frame(3000, seed=s) for s in range(3)])
    assert ("stats_row_count_vs_recent", None) in failed(result)  # 120 < 10% of 3000
    assert ("stats_row_count_vs_recent", None) not in failed(validate_frame(fraud_frame(), suite, history=history))


def test_to_json_and_html(suite, history):
    df = fraud_frame()
    df.loc[:3, "merchant_category"] = "<script>alert(1)</script>"
    result = validate_frame(df, suite, history=history, label="fraud ds=2026-01-05")
    doc = result.to_json()
    text = json.dumps(doc)  # plain JSON types only
    assert doc["success"] is False
    assert (
        len(doc["outcomes"])
        == result.statistics["expectations_evaluated"] + result.statistics["stats_checks_evaluated"]
    )
    assert {o["source"] for o in doc["outcomes"]} == {"expectation", "stats"}
    assert "expect_column_values_to_be_in_set" in text

    page = result.to_html()
    assert "fraud ds=2026-01-05" in page and "FAILED" in page
    assert "expect_column_values_to_be_in_set" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert page.count('<tr class="bad">') == len(result.failures)
    assert_well_formed(page)

    with pytest.raises(DataValidationError) as info:
        raise_for_failures(result, "fraud ds=2026-01-05")
    assert info.value.result is result
    assert "merchant_category" in str(info.value)


def test_tumors_suite_on_the_bundled_data():
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer(as_frame=True)
    df = data.data.rename(columns=lambda c: c.replace(" ", "_"))
    df["malignant"] = (data.target == 0).astype("int64")
    df.insert(0, "observed_at", pd.Timestamp("2026-01-05") + pd.to_timedelta(range(len(df)), unit="min"))
    df.insert(0, "sample_id", [f"s{i:05d}" for i in range(len(df))])
    df["label_available_at"] = df["observed_at"] + pd.Timedelta(days=2)
    suite = load_suite(TUMORS_SUITE)
    assert validate_frame(df, suite).success
    df.loc[:4, "mean_radius"] = -1.0
    result = validate_frame(df, suite)
    assert failed(result) == {("expect_column_values_to_be_between", "mean_radius")}
