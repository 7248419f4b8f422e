import numpy as np
import pandas as pd
import pytest

from ml_ops.pipeline.features import (
    FEATURE_COLUMNS_HISTORY,
    SECONDS_SINCE_PREV_CAP,
    build_features,
    feature_columns,
)

T0 = pd.Timestamp("2024-03-04 00:00:00")  # a Monday


def frame(rows):
    """rows: (id, entity, minutes after T0, amount)."""
    return pd.DataFrame(rows, columns=["id", "cust", "minutes", "amount"]).assign(
        ts=lambda d: T0 + pd.to_timedelta(d.pop("minutes"), unit="min")
    )


ALL_TIME = ["hour_of_day", "day_of_week"]


def feats(today, history=None, **kw):
    args = {"entity": "cust", "timestamp": "ts", "amount": "amount", "passthrough": ["id"], "time_parts": ALL_TIME}
    args.update(kw)
    return build_features(today, history, **args)


def brute_force(today, history):
    """Reference implementation: one row at a time, straight from the definitions."""
    allr = pd.concat([history, today], ignore_index=True) if history is not None else today
    out = []
    for _, r in today.iterrows():
        earlier = allr[allr.ts < r.ts]
        mine = earlier[earlier.cust == r.cust]

        def within(d, w, ts=r.ts):
            return d[d.ts >= ts - w]

        m7 = within(mine, pd.Timedelta(days=7))
        hour = r.ts.floor("h")  # the global fallback: the 7 x 24 whole hours before the row's hour
        g7 = allr[(allr.ts < hour) & (allr.ts >= hour - pd.Timedelta(days=7))]
        mean = m7.amount.mean() if len(m7) else (g7.amount.mean() if len(g7) else r.amount)
        prev = (r.ts - m7.ts.max()).total_seconds() if len(m7) else SECONDS_SINCE_PREV_CAP
        out.append(
            [
                len(within(mine, pd.Timedelta(hours=1))),
                len(within(mine, pd.Timedelta(hours=24))),
                mean,
                r.amount / mean,
                min(prev, SECONDS_SINCE_PREV_CAP),
            ]
        )
    return pd.DataFrame(out, columns=FEATURE_COLUMNS_HISTORY, index=today.index)


def test_exact_counts_on_hand_made_example():
    history = frame(
        [
            ("h1", "a", -60 * 24 * 8, 1000.0),  # 8 days back: outside every window
            ("h2", "a", -60 * 23, 10.0),  # 23 h before midnight
            ("h3", "b", -30, 50.0),
        ]
    )
    today = frame(
        [
            ("t1", "a", 0, 20.0),
            ("t2", "a", 30, 30.0),
            ("t3", "a", 60, 60.0),  # exactly 1 h after t1: t1 is inside [ts - 1h, ts)
            ("t4", "b", 10, 5.0),
        ]
    )
    f = feats(today, history).set_index("id")
    assert f.entity_txn_count_1h.to_dict() == {"t1": 0, "t2": 1, "t3": 2, "t4": 1}
    assert f.entity_txn_count_24h.to_dict() == {"t1": 1, "t2": 2, "t3": 3, "t4": 1}
    assert f.entity_amount_mean_7d.to_dict() == pytest.approx({"t1": 10.0, "t2": 15.0, "t3": 20.0, "t4": 50.0})
    assert f.amount_vs_entity_mean.to_dict() == pytest.approx({"t1": 2.0, "t2": 2.0, "t3": 3.0, "t4": 0.1})
    assert f.seconds_since_prev_txn.to_dict() == pytest.approx({"t1": 23 * 3600, "t2": 1800, "t3": 1800, "t4": 2400})
    assert f.hour_of_day.to_dict() == {"t1": 0, "t2": 0, "t3": 1, "t4": 0}
    assert (f.day_of_week == 0).all()


def test_equal_timestamps_do_not_see_each_other():
    today = frame([("x", "a", 5, 10.0), ("y", "a", 5, 30.0), ("z", "a", 6, 50.0)])
    f = feats(today).set_index("id")
    assert f.entity_txn_count_1h.to_dict() == {"x": 0, "y": 0, "z": 2}
    # x and y have no earlier row at all: the mean falls back to their own amounts.
    assert f.entity_amount_mean_7d.to_dict() == pytest.approx({"x": 10.0, "y": 30.0, "z": 20.0})
    assert f.loc[["x", "y"], "amount_vs_entity_mean"].tolist() == [1.0, 1.0]


def test_cold_start_with_history_none_and_empty():
    today = frame([("t1", "a", 0, 20.0), ("t2", "b", 10, 40.0), ("t3", "a", 20, 10.0), ("t4", "c", 70, 30.0)])
    f = feats(today, None).set_index("id")
    assert f.entity_txn_count_24h.tolist() == [0, 0, 1, 0]
    # b has no own history and no row lies in a whole hour before its own: its own amount.
    assert f.loc["t2", "entity_amount_mean_7d"] == pytest.approx(40.0)
    # c neither, but hour 00:00-01:00 is whole before its hour: global fallback = mean of t1, t2, t3.
    assert f.loc["t4", "entity_amount_mean_7d"] == pytest.approx(70.0 / 3)
    assert f.loc["t1", "seconds_since_prev_txn"] == SECONDS_SINCE_PREV_CAP
    pd.testing.assert_frame_equal(f, feats(today, today.iloc[0:0]).set_index("id"))


def random_days(seed, n_today=400, n_hist=1500):
    rng = np.random.default_rng(seed)

    def part(n, lo_min, hi_min, prefix):
        return pd.DataFrame(
            {
                "id": [f"{prefix}{i}" for i in range(n)],
                "cust": rng.choice(list("abcdefgh"), n),
                "ts": T0 + pd.to_timedelta(rng.integers(lo_min, hi_min, n), unit="min"),  # many equal timestamps
                "amount": rng.lognormal(3, 1, n).round(2),
            }
        )

    history = part(n_hist, -8 * 24 * 60, 0, "h").sort_values("ts", kind="stable")
    today = part(n_today, 0, 24 * 60, "t")  # deliberately unsorted
    return today, history


def test_matches_brute_force_reference():
    today, history = random_days(1, n_today=150, n_hist=600)
    got = feats(today, history)
    pd.testing.assert_frame_equal(got[FEATURE_COLUMNS_HISTORY], brute_force(today, history), check_dtype=False)
    assert got.index.equals(today.index) and got.id.tolist() == today.id.tolist()


def test_no_leakage_later_rows_do_not_change_earlier_features():
    today, history = random_days(2)
    today = today.sort_values("ts", kind="stable").reset_index(drop=True)
    full = feats(today, history)
    cut = today.ts.iloc[len(today) // 2]
    early = today[today.ts < cut]
    pd.testing.assert_frame_equal(feats(early, history), full.loc[early.index])
    # Also: changing a later row's amount leaves earlier rows alone.
    bumped = today.copy()
    bumped.loc[today.ts >= cut, "amount"] *= 100
    pd.testing.assert_frame_equal(feats(bumped, history).loc[early.index], full.loc[early.index])


def test_history_rows_not_before_today_are_ignored():
    today, history = random_days(3)
    leaky = pd.concat([history, today.assign(id=lambda d: "dup" + d.id)])
    pd.testing.assert_frame_equal(feats(today, leaky), feats(today, history))


def test_deterministic_and_order_preserving():
    today, history = random_days(4)
    a, b = feats(today, history), feats(today.copy(), history.copy())
    pd.testing.assert_frame_equal(a, b, check_exact=True)
    assert list(a.columns) == ["id"] + feature_columns("cust", "amount", ALL_TIME)


def test_without_entity_only_time_features():
    today, _ = random_days(5)
    f = build_features(
        today, None, entity=None, timestamp="ts", amount=None, passthrough=["id", "amount"], time_parts=ALL_TIME
    )
    assert list(f.columns) == ["id", "amount", "hour_of_day", "day_of_week"]
    assert f.hour_of_day.tolist() == today.ts.dt.hour.tolist()


def test_entity_without_amount_skips_amount_features():
    today, history = random_days(6)
    f = build_features(today, history, entity="cust", timestamp="ts", amount=None, passthrough=[], time_parts=ALL_TIME)
    assert list(f.columns) == [
        "entity_txn_count_1h",
        "entity_txn_count_24h",
        "seconds_since_prev_txn",
        "hour_of_day",
        "day_of_week",
    ]


def test_errors_name_the_column():
    today, _ = random_days(7)
    with pytest.raises(KeyError, match="nope"):
        feats(today, passthrough=["nope"])
    with pytest.raises(ValueError, match="hour_of_day"):
        feats(today.assign(hour_of_day=1), passthrough=["hour_of_day"])
    with pytest.raises(ValueError, match="null timestamps"):
        feats(today.assign(ts=pd.NaT))


def test_time_parts_are_opt_in_and_named():
    today, history = random_days(8)
    plain = build_features(today, history, entity="cust", timestamp="ts", amount="amount", passthrough=["id"])
    assert not {"hour_of_day", "day_of_week"} & set(plain.columns)  # nothing added that was not declared
    hour = feats(today, history, time_parts=["hour_of_day"])
    assert "hour_of_day" in hour.columns and "day_of_week" not in hour.columns
    with pytest.raises(ValueError, match=r"unknown time part\(s\) \['minute'\]"):
        feats(today, history, time_parts=["minute"])


def test_time_parts_are_pandas_hour_and_weekday_before_and_after_1970():
    from ml_ops.features.definition import time_part_values

    ts = pd.to_datetime(["1969-12-31 23:59:59", "1970-01-01 00:00:00", "2024-02-29 13:05:00", "2026-03-08 23:00:00"])
    got = time_part_values(ts.to_numpy("datetime64[ns]").view(np.int64), ALL_TIME)
    assert got["hour_of_day"].tolist() == ts.hour.tolist() and got["day_of_week"].tolist() == ts.dayofweek.tolist()
