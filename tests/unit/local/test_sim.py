from datetime import date, datetime, timedelta

import pandas as pd
import pytest
import sqlalchemy as sa

from ml_ops.local.sim import (
    ConceptChange,
    CovariateShift,
    generate_labels,
    generate_transactions,
    generate_tumors,
    load_source,
)
from ml_ops.local.sim.transactions import CATEGORIES, CHANNELS, COLUMNS, DEVICES, LABEL_COLUMNS

START = date(2024, 3, 4)


def day_rows(df, day, col="ts"):
    lo = pd.Timestamp(day)
    return df[(df[col] >= lo) & (df[col] < lo + pd.Timedelta(days=1))].reset_index(drop=True)


@pytest.fixture(scope="module")
def month():
    return generate_transactions(START, 28, rows_per_day=2000, n_customers=1500)


def test_same_seed_same_frame_other_seed_differs():
    a = generate_transactions(START, 3, rows_per_day=500)
    pd.testing.assert_frame_equal(a, generate_transactions(START, 3, rows_per_day=500), check_exact=True)
    b = generate_transactions(START, 3, rows_per_day=500, seed=8)
    assert not a.amount.equals(b.amount)


def test_day_alone_equals_day_inside_a_longer_range(month):
    day = START + timedelta(days=9)
    alone = generate_transactions(day, 1, rows_per_day=2000, n_customers=1500)
    pd.testing.assert_frame_equal(alone, day_rows(month, day), check_exact=True)
    pieces = pd.concat(
        [
            generate_transactions(START, 5, rows_per_day=2000, n_customers=1500),
            generate_transactions(START + timedelta(days=5), 23, rows_per_day=2000, n_customers=1500),
        ],
        ignore_index=True,
    )
    pd.testing.assert_frame_equal(pieces, month, check_exact=True)


def test_schema_and_dtypes(month):
    assert list(month.columns) == COLUMNS
    assert month.transaction_id.is_unique
    assert month.transaction_id.iloc[0] == "t20240304-000000"
    for c in ("ts", "label_available_at"):
        assert month[c].dtype == "datetime64[ns]"
    for c in ("customer_age", "account_age_days", "is_fraud"):
        assert month[c].dtype == "int64", c
    assert month.amount.dtype == "float64" and (month.amount > 0).all()
    assert set(month.merchant_category) <= set(CATEGORIES)
    assert set(month.channel) == set(CHANNELS)
    assert set(month.device) == set(DEVICES)
    assert month.country.str.fullmatch(r"[A-Z]{2}").all()
    assert set(month.is_fraud) == {0, 1}
    assert month.customer_age.between(18, 90).all() and (month.account_age_days >= 0).all()
    assert month.ts.is_monotonic_increasing
    assert month.notna().all().all()


def test_volume_and_fraud_rate(month):
    per_day = month.groupby(month.ts.dt.date).size()
    assert len(per_day) == 28 and per_day.between(1600, 2400).all()
    # Weekends differ from mid-week (the weekday profile), by a little.
    by_dow = month.groupby(month.ts.dt.dayofweek).size()
    assert by_dow.max() / by_dow.min() > 1.1
    assert 0.018 <= month.is_fraud.mean() <= 0.032
    night = month.ts.dt.hour < 5
    assert night.mean() < 0.06  # realistic hour profile: few legit night transactions...
    assert month[night].is_fraud.mean() > 3 * month.is_fraud.mean()  # ...where fraud is over-represented


def test_customers_have_stable_profiles(month):
    per_cust = month.groupby("customer_id").agg(
        n_age=("customer_age", "nunique"), n_days=("ts", lambda s: s.dt.date.nunique())
    )
    assert (per_cust.n_age == 1).all()
    assert per_cust.n_days.median() > 5  # the same customers come back day after day
    # Account age grows by one a day for the same customer id.
    c = month.groupby("customer_id").filter(lambda g: len(g) > 10).customer_id.iloc[0]
    g = month[month.customer_id == c]
    assert ((g.account_age_days - (g.ts - g.ts.iloc[0]).dt.days) == g.account_age_days.iloc[0]).all()


def test_fraud_signal_is_learnable(month):
    legit, fraud = month[month.is_fraud == 0], month[month.is_fraud == 1]
    assert fraud.amount.median() > 1.5 * legit.amount.median()
    assert (fraud.device == "unknown").mean() > 5 * (legit.device == "unknown").mean()
    assert (fraud.account_age_days < 90).mean() > 2 * (legit.account_age_days < 90).mean()


def test_label_delay_respected(month):
    delay = month.label_available_at - month.ts
    assert (delay >= pd.Timedelta(days=3)).all() and (delay <= pd.Timedelta(days=3, hours=12)).all()
    assert delay.nunique() > 100  # jittered
    one = generate_transactions(START, 1, rows_per_day=200, label_delay_days=1)
    assert ((one.label_available_at - one.ts) < pd.Timedelta(days=2)).all()


def test_covariate_shift_changes_distributions_from_its_day():
    shift = START + timedelta(days=3)
    base = generate_transactions(START, 6, rows_per_day=2000)
    shifted = generate_transactions(START, 6, rows_per_day=2000, events=[CovariateShift(shift, share=0.3)])
    before = base.ts < pd.Timestamp(shift)
    pd.testing.assert_frame_equal(shifted[shifted.ts < pd.Timestamp(shift)], base[before])
    after, ref = shifted[shifted.ts >= pd.Timestamp(shift)], base[~before]
    assert after.customer_age.mean() < ref.customer_age.mean() - 5
    assert after.country.isin(["GB", "IE", "SE", "PT"]).mean() > 0.15
    assert ref.country.isin(["GB", "IE", "SE", "PT"]).mean() < 0.03
    assert (after.channel == "online").mean() > (ref.channel == "online").mean() + 0.05


def test_concept_change_moves_fraud_to_small_contactless():
    change = START + timedelta(days=4)
    df = generate_transactions(START, 8, rows_per_day=3000, events=[ConceptChange(change)])
    fraud = df[df.is_fraud == 1]
    old, new = fraud[fraud.ts < pd.Timestamp(change)], fraud[fraud.ts >= pd.Timestamp(change)]
    assert new.amount.max() <= 25 and old.amount.median() > 2 * new.amount.median()
    assert (new.channel.isin(["contactless", "pos"])).all() and (new.device == "terminal").all()
    assert (old.channel == "online").mean() > 0.3
    assert 0.015 <= df[df.ts >= pd.Timestamp(change)].is_fraud.mean() <= 0.035


def test_event_validation():
    with pytest.raises(ValueError, match="share"):
        generate_transactions(START, 1, events=[CovariateShift(START, share=1.5)])
    assert len(generate_transactions(START, 0)) == 0


def test_tumors_schema_and_determinism():
    t = generate_tumors(START, 3, rows_per_day=150)
    assert len(t) == 450 and t.sample_id.is_unique
    assert list(t.columns[:3]) == ["sample_id", "observed_at", "mean_radius"]
    assert list(t.columns[-3:]) == ["worst_fractal_dimension", "malignant", "label_available_at"]
    assert t.shape[1] == 34 and t.observed_at.dtype == "datetime64[ns]" and t.malignant.dtype == "int64"
    assert 0.25 < t.malignant.mean() < 0.5  # sklearn's data is 37 % malignant
    assert t.groupby("malignant").mean_radius.mean()[1] > t.groupby("malignant").mean_radius.mean()[0]
    assert ((t.label_available_at - t.observed_at) >= pd.Timedelta(days=1)).all()
    pd.testing.assert_frame_equal(
        day_rows(t, START + timedelta(days=2), "observed_at"),
        generate_tumors(START + timedelta(days=2), 1, rows_per_day=150),
        check_exact=True,
    )


def test_load_source_is_idempotent_and_queryable(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.db'}"
    df = generate_transactions(START, 3, rows_per_day=300)
    res = load_source(url, "transactions", df)
    assert (res.rows_written, res.rows_deleted, res.first_day, res.last_day) == (
        len(df),
        0,
        START,
        START + timedelta(days=2),
    )
    # Reload the middle day and one new day: the middle day is replaced, not duplicated; day 1 is untouched.
    again = generate_transactions(START + timedelta(days=2), 2, rows_per_day=300)
    res2 = load_source(url, "transactions", again)
    assert res2.rows_deleted == len(day_rows(df, START + timedelta(days=2)))
    engine = sa.create_engine(url)
    with engine.connect() as c:
        n, n_ids = c.execute(sa.text("SELECT count(*), count(DISTINCT transaction_id) FROM transactions")).one()
        got = pd.read_sql(
            sa.text("SELECT * FROM transactions WHERE ts >= :start AND ts < :end ORDER BY ts"),
            c,
            params={"start": datetime(2024, 3, 5), "end": datetime(2024, 3, 6)},
            parse_dates=["ts", "label_available_at"],
        )
        indexes = sa.inspect(c).get_indexes("transactions")
    engine.dispose()
    expected = pd.concat([df[df.ts < pd.Timestamp(START + timedelta(days=2))], again], ignore_index=True)
    assert n == n_ids == len(expected)
    pd.testing.assert_frame_equal(got, day_rows(df, START + timedelta(days=1)), check_dtype=False)
    assert any(ix["column_names"] == ["ts"] for ix in indexes)
    load_source(url, "tumors", generate_tumors(START, 1, rows_per_day=20))  # observed_at detected as timestamp
    with pytest.raises(KeyError, match="timestamp"):
        load_source(url, "other", pd.DataFrame({"x": [1]}))


def test_labels_arrive_with_chargeback_delays(month):
    labels = generate_labels(month)
    assert list(labels.columns) == LABEL_COLUMNS and labels["labelled_at"].dtype == "datetime64[ns]"
    assert labels["labelled_at"].is_monotonic_increasing
    final = labels.drop_duplicates("transaction_id", keep="last").set_index("transaction_id")
    tx = month.set_index("transaction_id")
    assert len(final) == len(month) and (final["is_fraud"] == tx["is_fraud"][final.index]).all()  # every row
    delay = (final["labelled_at"] - tx["ts"][final.index]) / pd.Timedelta(days=1)
    fraud = tx["is_fraud"][final.index] == 1
    pos, neg = delay[fraud], delay[~fraud]
    assert pos.min() >= 1 and 0.8 <= (pos <= 5).mean() <= 0.95  # most chargebacks within 1-5 days
    assert pos.max() > 14 and pos.max() <= 60  # a tail of weeks
    assert neg.min() >= 7 and neg.max() <= 7 + 1.5  # legitimate once matured (7 days), within hours
    # a chargeback after the maturity period follows a "legitimate" confirmation: 0, then 1
    twice = labels[labels["transaction_id"].duplicated(keep=False)]
    assert set(pos[pos > 7 + 1.5].index) <= set(twice["transaction_id"]) <= set(pos[pos > 7].index)
    assert len(twice) and twice.groupby("transaction_id")["is_fraud"].agg(lambda s: list(s) == [0, 1]).all()


def test_labels_of_a_day_do_not_depend_on_the_other_days(month):
    day = START + timedelta(days=9)
    alone = generate_labels(day_rows(month, day), seed=7)
    within = generate_labels(month, seed=7)
    within = within[within["transaction_id"].str.startswith(f"t{day:%Y%m%d}-")].reset_index(drop=True)
    pd.testing.assert_frame_equal(alone, within, check_exact=True)
    assert not generate_labels(day_rows(month, day), seed=8)["labelled_at"].equals(alone["labelled_at"])
    empty = generate_labels(month.iloc[:0])
    assert list(empty.columns) == LABEL_COLUMNS and len(empty) == 0
    with pytest.raises(ValueError, match="chargeback_days"):
        generate_labels(month, chargeback_days=(5, 1))


def test_load_source_writes_labels_to_their_own_table_only_when_asked(tmp_path):
    url = f"sqlite:///{tmp_path / 'source.db'}"
    df = generate_transactions(START, 3, rows_per_day=300)
    plain = load_source(url, "transactions", df)
    assert plain.labels_table is None and plain.labels_written == 0
    engine = sa.create_engine(url)
    assert not sa.inspect(engine).has_table("transaction_labels")
    res = load_source(url, "transactions", df, labels_table="transaction_labels")
    labels = generate_labels(df)
    assert (res.labels_table, res.labels_written, res.labels_deleted) == ("transaction_labels", len(labels), 0)
    # Reloading the last day replaces its labels, not duplicates them; the others are untouched.
    last = day_rows(df, START + timedelta(days=2))
    again = load_source(url, "transactions", last, labels_table="transaction_labels")
    assert again.labels_deleted == again.labels_written == len(generate_labels(last))
    with engine.connect() as c:
        got = pd.read_sql(
            sa.text("SELECT * FROM transaction_labels WHERE labelled_at >= :start AND labelled_at < :end"),
            c,
            params={"start": datetime(2024, 3, 1), "end": datetime(2024, 6, 1)},
            parse_dates=["labelled_at"],
        )
        indexes = sa.inspect(c).get_indexes("transaction_labels")
    engine.dispose()
    assert len(got) == len(labels) and set(got["transaction_id"]) == set(df["transaction_id"])
    key = ["transaction_id", "labelled_at"]
    pd.testing.assert_frame_equal(
        got.sort_values(key).reset_index(drop=True), labels.sort_values(key).reset_index(drop=True)
    )
    assert any(ix["column_names"] == ["labelled_at"] for ix in indexes)


def test_the_cli_with_a_labels_table_writes_transactions_without_a_label(tmp_path, capsys):
    """`python -m ml_ops.local.sim fraud ... --labels-table transaction_labels`: the source as fraud.yaml reads it,
    the label only in its own table."""
    from ml_ops.local.sim.__main__ import main

    url = f"sqlite:///{tmp_path / 'source.db'}"
    argv = ["fraud", "--db", url, "--start", START.isoformat(), "--days", "2", "--rows-per-day", "200"]
    main([*argv, "--labels-table", "transaction_labels"])
    assert "labels into transaction_labels" in capsys.readouterr().out
    engine = sa.create_engine(url)
    tx = pd.read_sql_table("transactions", engine)
    labels = pd.read_sql_table("transaction_labels", engine)
    engine.dispose()
    expected = generate_transactions(START, 2, rows_per_day=200)
    assert len(tx) == len(expected) and not {"is_fraud", "label_available_at"} & set(tx.columns)
    final = labels.sort_values("labelled_at").drop_duplicates("transaction_id", keep="last")
    assert final.set_index("transaction_id")["is_fraud"].sort_index().tolist() == (
        expected.set_index("transaction_id")["is_fraud"].sort_index().tolist()
    )
