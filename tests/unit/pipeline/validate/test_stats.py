"""Statistics against recent days, checked by default: categorical values never seen before and the label rate,
whatever the pipeline YAML's stats_columns narrows."""

from __future__ import annotations

import pytest

from ml_ops.config import Validation
from ml_ops.pipeline.validate import always_compared_columns, load_suite, validate_frame
from tests.unit.pipeline.validate.frames import FRAUD_SUITE, TUMORS_SUITE, failed, fraud_frame

YAML_STATS_COLUMNS = ["amount", "customer_age", "account_age_days"]  # include/pipelines/fraud.yaml narrows to these


@pytest.fixture(scope="module")
def big_history() -> list:
    return [fraud_frame(3000, f"2026-01-0{d}", seed=d) for d in range(1, 6)]


def without_country_set(suite: dict) -> dict:
    """The suite as a team would write it before listing the country codes: history is the only reference."""
    keep = [
        e
        for e in suite["expectations"]
        if not (e["type"] == "expect_column_values_to_be_in_set" and e["kwargs"].get("column") == "country")
    ]
    return {**suite, "expectations": keep}


@pytest.mark.parametrize("stats_columns", [None, YAML_STATS_COLUMNS], ids=["suite-default", "yaml-narrowed"])
def test_unseen_country_on_a_sizeable_share_fails_naming_the_column(suite, history, stats_columns):
    df = fraud_frame(seed=42)
    df.loc[:29, "country"] = "XX"  # 10% of the rows: a code in neither the suite nor the last 5 days
    result = validate_frame(df, without_country_set(suite), history=history, stats_columns=stats_columns)
    assert failed(result) == {("stats_unseen_values_vs_recent", "country")}, result.message()
    shipped = validate_frame(df, suite, history=history, stats_columns=stats_columns)  # its value set catches it too
    assert failed(shipped) == {
        ("stats_unseen_values_vs_recent", "country"),
        ("expect_column_values_to_be_in_set", "country"),
    }
    line = next(ln for ln in result.message().splitlines() if "stats_unseen_values_vs_recent(country" in ln)
    assert "'XX' on 30 of 300 rows (10.0%): never seen in the last 5 days" in line


def test_the_long_tail_of_rare_values_passes_with_its_count(suite, history):
    """Rare codes the last days happened not to show are not a new category: 7 of 300 rows (2.3%) across three
    codes, none on more than 1% of the day (a false alarm the first version of this check raised on the sim)."""
    df = fraud_frame(seed=42)
    df.loc[:2, "country"] = "LU"
    df.loc[3:5, "country"] = "CH"
    df.loc[6, "country"] = "BR"
    result = validate_frame(df, without_country_set(suite), history=history)
    assert result.success, result.message()
    [outcome] = [o for o in result.outcomes if o.check == "stats_unseen_values_vs_recent" and o.column == "country"]
    assert outcome.unexpected_count == 7 and outcome.examples == ["CH", "LU", "BR"]
    assert "7 of 300 rows (2.3%) hold 3 value(s) never seen in the last 5 days" in outcome.summary()


def test_text_columns_of_few_values_are_categorical_without_any_declaration(suite, history):
    """A suite without the ml_ops meta keys and no stats_columns: low-cardinality text columns are still
    checked for unseen values; ids are not (every day brings new ones)."""
    bare = {**suite, "meta": {}}
    df = fraud_frame(seed=42)
    df.loc[:29, "country"] = "XX"
    result = validate_frame(df, bare, history=history)
    assert ("stats_unseen_values_vs_recent", "country") in failed(result)
    checked = {o.column for o in result.outcomes if o.check == "stats_unseen_values_vs_recent"}
    assert "customer_id" not in checked and "transaction_id" not in checked


@pytest.mark.parametrize("stats_columns", [None, YAML_STATS_COLUMNS], ids=["suite-default", "yaml-narrowed"])
def test_day_without_any_positive_label_fails_naming_the_label(suite, big_history, stats_columns):
    df = fraud_frame(3036, seed=42)
    df["is_fraud"] = 0
    result = validate_frame(df, suite, history=big_history, stats_columns=stats_columns)
    assert failed(result) == {("stats_label_rate_vs_recent", "is_fraud")}, result.message()
    line = next(ln for ln in result.message().splitlines() if "stats_label_rate_vs_recent(is_fraud" in ln)
    assert "0 of 3036 labelled rows have is_fraud = 1 (0.00%); the quietest of the last 5 days had" in line


def test_label_rate_is_judged_at_a_stated_false_alarm_rate(suite, history, big_history):
    # 300 rows at a 2% rate have no positive by chance 0.2% of the time: that alone is no evidence.
    small = fraud_frame(300, seed=42)
    small["is_fraud"] = 0
    assert validate_frame(small, suite, history=history).success
    # An ordinary day passes; so does a fraud wave (positives come in bursts: data to learn from, not a defect).
    assert validate_frame(fraud_frame(3000, seed=42), suite, history=big_history).success
    assert validate_frame(fraud_frame(3000, seed=42, fraud_rate=0.1), suite, history=big_history).success
    # Labels lost on the way in: a rate far below recent days fails, zero or not.
    low = fraud_frame(3000, seed=42, fraud_rate=0.002)
    assert ("stats_label_rate_vs_recent", "is_fraud") in failed(validate_frame(low, suite, history=big_history))


def test_a_first_positive_after_days_without_any_is_not_flagged(suite):
    history = [fraud_frame(300, seed=s, fraud_rate=0.0) for s in range(1, 4)]
    today = fraud_frame(300, seed=42, fraud_rate=0.0)
    today.loc[0, "is_fraud"] = 1
    result = validate_frame(today, suite, history=history)
    assert ("stats_label_rate_vs_recent", "is_fraud") not in failed(result), result.message()


def test_yaml_list_narrows_the_mean_checks_only(suite, history):
    result = validate_frame(fraud_frame(seed=42), suite, history=history, stats_columns=["amount"])
    checks = {(o.check, o.column) for o in result.outcomes if o.source == "stats"}
    assert ("stats_mean_vs_recent", "amount") in checks
    assert ("stats_mean_vs_recent", "customer_age") not in checks
    assert ("stats_label_rate_vs_recent", "is_fraud") in checks
    assert {c for k, c in checks if k == "stats_unseen_values_vs_recent"} == {
        "merchant_category",
        "channel",
        "country",
        "device",
    }


def test_config_appends_the_suites_label_and_categorical_columns():
    """The step reads only cfg.validation.stats_columns of past days, so the config appends the columns
    validation compares in any case; its JSON-only rule must match the validate package's."""
    for path in (FRAUD_SUITE, TUMORS_SUITE):
        assert Validation.suite_compared_columns(path) == always_compared_columns(load_suite(path)), path
    cfg = Validation(suite="expectations/fraud.json", stats_columns=YAML_STATS_COLUMNS)
    # the shipped fraud suite has no label column (labels arrive in their own table): categorical columns only
    assert cfg.stats_columns == [*YAML_STATS_COLUMNS, "merchant_category", "channel", "country", "device"]
    labelled = Validation(suite=str(FRAUD_SUITE), stats_columns=YAML_STATS_COLUMNS)
    categorical = ["merchant_category", "channel", "country", "device"]
    assert labelled.stats_columns == [*YAML_STATS_COLUMNS, "is_fraud", *categorical]
    assert Validation(suite="expectations/fraud.json").stats_columns == []  # empty: all columns are read


def test_config_rule_matches_without_meta(tmp_path):
    import json

    suite = {
        "name": "bare",
        "expectations": [
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "y", "value_set": [0, 1]}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "tier", "value_set": ["a", "b"]}},
            {"type": "expect_column_values_to_be_in_set", "kwargs": {"column": "stars", "value_set": [1, 2, 3]}},
        ],
    }
    path = tmp_path / "bare.json"
    path.write_text(json.dumps(suite))
    assert always_compared_columns(suite) == ["y", "tier"]
    assert Validation.suite_compared_columns(path) == ["y", "tier"]
