from datetime import date, datetime, timezone

import pytest

from ml_ops.interval import DayInterval, resolve_interval, training_window

UTC = timezone.utc


def test_data_date_param_wins():
    iv = resolve_interval(data_date="2026-03-04", logical_date=datetime(2026, 1, 1, tzinfo=UTC))
    assert iv.ds == "2026-03-04"
    assert iv.start == datetime(2026, 3, 4, tzinfo=UTC) and iv.end == datetime(2026, 3, 5, tzinfo=UTC)


def test_bad_data_date_names_the_param():
    with pytest.raises(ValueError, match="data_date"):
        resolve_interval(data_date="yesterday")


def test_data_interval_is_used_when_it_spans_time():
    iv = resolve_interval(
        data_interval_start=datetime(2026, 2, 1, tzinfo=UTC),
        data_interval_end=datetime(2026, 2, 2, tzinfo=UTC),
        logical_date=datetime(2026, 2, 1, tzinfo=UTC),
    )
    assert iv.ds == "2026-02-01"


def test_point_interval_falls_back_to_logical_date():
    moment = datetime(2026, 2, 3, 7, tzinfo=UTC)
    assert (
        resolve_interval(data_interval_start=moment, data_interval_end=moment, logical_date=moment).ds == "2026-02-03"
    )


def test_no_logical_date_uses_day_before_run_after():
    iv = resolve_interval(run_after=datetime(2026, 5, 10, 3, tzinfo=UTC))
    assert iv.ds == "2026-05-09"


def test_previous_days_oldest_first():
    assert DayInterval.for_day(date(2026, 1, 3)).previous_days(2) == ["2026-01-01", "2026-01-02"]


def test_training_window_leaves_label_delay_and_holdout_last():
    w = training_window(DayInterval.for_day(date(2026, 1, 20)), label_delay_days=2, window_days=3, holdout_days=2)
    assert w.train_days == ["2026-01-14", "2026-01-15", "2026-01-16"]
    assert w.holdout_days == ["2026-01-17", "2026-01-18"]
    assert w.labels_known_at == datetime(2026, 1, 21, tzinfo=UTC)


def test_far_future_day_is_a_clear_error_and_the_param_refuses_it():
    from airflow.sdk import Param

    from ml_ops.airflow.dag_factory import day_param

    with pytest.raises(ValueError, match="data_date='9999-12-31'"):
        resolve_interval(data_date="9999-12-31")
    param = day_param("a day")
    assert isinstance(param, Param)
    assert param.resolve("2026-03-04") == "2026-03-04" and param.resolve(None) is None
    for bad in ("9999-12-31", "2026-13-01", "0001-01-01"):
        with pytest.raises(Exception, match="does not match|is not a .date"):
            param.resolve(bad)
