"""Extract reads one interval with bound parameters from a real SQLite source."""

from datetime import date, datetime, timezone

import sqlalchemy as sa

from ml_ops.local.sim import generate_transactions, load_source
from ml_ops.pipeline.extract import read_interval

SQL = "SELECT * FROM transactions WHERE ts >= :start AND ts < :end ORDER BY ts"


def test_reads_exactly_the_interval(tmp_path):
    url = f"sqlite:///{tmp_path}/src.db"
    df = generate_transactions(date(2026, 1, 1), 3, rows_per_day=200)
    load_source(url, "transactions", df)
    out = read_interval(
        sa.create_engine(url),
        SQL,
        datetime(2026, 1, 2, tzinfo=timezone.utc),
        datetime(2026, 1, 3, tzinfo=timezone.utc),
        ["ts", "label_available_at"],
    )
    expected = df[df.ts.dt.date == date(2026, 1, 2)]
    assert len(out) == len(expected) > 0
    assert set(out.transaction_id) == set(expected.transaction_id)
    assert str(out.ts.dtype).startswith("datetime64")


def test_mixed_text_and_numbers_are_kept_as_text_for_validation(tmp_path):
    url = f"sqlite:///{tmp_path}/src.db"
    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE t (id TEXT, ts TEXT, amount REAL)"))
        conn.execute(
            sa.text("INSERT INTO t VALUES ('a', '2026-01-01 10:00:00', 1.5), ('b', '2026-01-01 11:00:00', 'n/a')")
        )
    out = read_interval(
        engine, "SELECT * FROM t WHERE ts >= :start AND ts < :end", datetime(2026, 1, 1), datetime(2026, 1, 2), ["ts"]
    )
    assert list(out.amount) == ["1.5", "n/a"]


def test_empty_interval_keeps_columns(tmp_path):
    url = f"sqlite:///{tmp_path}/src.db"
    load_source(url, "transactions", generate_transactions(date(2026, 1, 1), 1, rows_per_day=50))
    out = read_interval(sa.create_engine(url), SQL, datetime(2026, 2, 1), datetime(2026, 2, 2), ["ts"])
    assert len(out) == 0 and "amount" in out.columns
