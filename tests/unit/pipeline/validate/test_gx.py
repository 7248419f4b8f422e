"""The GX half: bad data is a failed check (DataValidationError), a crash inside GX is ValidationInternalError
(retried), and failed type checks count the rows that are actually bad."""

from __future__ import annotations

import pytest

from ml_ops.pipeline.validate import (
    DataValidationError,
    ValidationInternalError,
    raise_for_failures,
    validate_frame,
)
from ml_ops.pipeline.validate.gx import _root_exception_type
from tests.unit.pipeline.validate.frames import failed, fraud_frame


def test_crash_inside_gx_on_one_expectation_is_internal_not_bad_data(suite, monkeypatch):
    """GX catches its own exception and reports it as the expectation's result; a clean float column does not
    explain a RuntimeError, so validation must not call the data bad."""
    from great_expectations.expectations.core.expect_column_values_to_be_between import (
        ExpectColumnValuesToBeBetween,
    )

    def crash(self, *args, **kwargs):
        raise RuntimeError("metric cache corrupted")

    monkeypatch.setattr(ExpectColumnValuesToBeBetween, "_validate", crash)
    with pytest.raises(ValidationInternalError) as info:
        validate_frame(fraud_frame(), suite)
    assert not isinstance(info.value, DataValidationError)  # the operator fails DataValidationError without retry
    message = str(info.value)
    assert "expect_column_values_to_be_between(amount)" in message  # names the expectation and column
    assert "RuntimeError: metric cache corrupted" in message
    assert "fraud_transactions" in message


def test_exception_escaping_gx_is_internal_and_names_what_was_running(suite, monkeypatch):
    from great_expectations.datasource.fluent.interfaces import Batch

    real = Batch.validate

    def flaky(self, expect, **kwargs):
        if any(getattr(e, "column", None) == "device" for e in expect.expectations):
            raise OSError("No space left on device")
        return real(self, expect, **kwargs)

    monkeypatch.setattr(Batch, "validate", flaky)
    with pytest.raises(ValidationInternalError, match=r"expect_column_to_exist\(device\).*OSError: No space left"):
        validate_frame(fraud_frame(), suite)


def test_gx_that_cannot_start_is_internal(suite, monkeypatch):
    import great_expectations as gx

    def no_context(*args, **kwargs):
        raise ImportError("cannot import name 'x' from partially initialized module")

    monkeypatch.setattr(gx, "get_context", no_context)
    with pytest.raises(ValidationInternalError, match="could not start.*fraud_transactions.*ImportError"):
        validate_frame(fraud_frame(), suite)


def test_gx_errors_the_data_explains_stay_failed_checks(suite):
    """Text in a numeric column makes GX raise TypeError inside the range check; tz-aware against naive
    timestamps makes the pair comparison raise: both are bad data, reported and raised as DataValidationError."""
    df = fraud_frame()
    df["amount"] = df["amount"].astype(str)
    df.loc[:3, "amount"] = "n/a"
    df["label_available_at"] = df["label_available_at"].dt.tz_localize("UTC")
    result = validate_frame(df, suite)  # does not raise
    assert {
        ("expect_column_values_to_be_between", "amount"),
        ("expect_column_pair_values_a_to_be_greater_than_b", "label_available_at, ts"),
    } <= failed(result)
    assert "'amount' holds text: 4 of 300 rows are not numbers, e.g. 'n/a'" in result.message()
    with pytest.raises(DataValidationError):
        raise_for_failures(result)


def test_text_in_a_numeric_column_counts_the_bad_rows_not_every_row(suite):
    """The pipeline-integrity issue: extract keeps a column with any text value as all-text, and GX's type
    check then fails every row ("3036 of 3036 rows (100.0%)"). Only the 31 rows that are not numbers are bad."""
    df = fraud_frame(3036, seed=7)
    df["amount"] = df["amount"].astype(object)
    df.loc[df.sample(31, random_state=0).index, "amount"] = "n/a"
    df["amount"] = df["amount"].map(str)  # as ml_ops.pipeline.extract stores a mixed column
    df["customer_age"] = df["customer_age"].astype(str)  # numbers as text, nothing unreadable
    result = validate_frame(df, suite)
    lines = result.message().splitlines()
    amount = next(ln for ln in lines if "in_type_list(amount" in ln)
    assert "31 of 3036 rows (1.0%) are not numbers, e.g. 'n/a'" in amount
    assert "the other 3005 values are numbers stored as text" in amount
    age = next(ln for ln in lines if "in_type_list(customer_age" in ln)
    assert "3036 of 3036 rows (100.0%) are whole numbers stored as text" in age
    failure = next(f for f in result.failures if f.line() == amount[3:])
    assert failure.unexpected_count == 31 and failure.examples == ["n/a"]


def test_root_exception_type_is_the_original_of_a_chain():
    chained = (
        "Traceback (most recent call last):\n"
        '  File "x.py", line 1, in f\n'
        "    raise TypeError('a')\n"
        "TypeError: Column values, min_value, and max_value must either be None or of the same type.\n"
        "\n"
        "The above exception was the direct cause of the following exception:\n"
        "\n"
        "Traceback (most recent call last):\n"
        '  File "y.py", line 2, in g\n'
        "great_expectations.exceptions.exceptions.MetricResolutionError: Column values ...\n"
    )
    assert _root_exception_type(chained) == "TypeError"
    assert _root_exception_type("Traceback (most recent call last):\n  File ...\nKeyError: 'x'\n") == "KeyError"
    assert _root_exception_type(None) is None
