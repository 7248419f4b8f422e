"""Simulated sources for the example pipelines (card transactions for fraud, tumour measurements) and a loader
that writes them into any SQLAlchemy database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from ml_ops.local.sim.transactions import ConceptChange, CovariateShift, Event, generate_transactions
from ml_ops.local.sim.tumors import generate_tumors

__all__ = [
    "ConceptChange",
    "CovariateShift",
    "Event",
    "LoadResult",
    "generate_transactions",
    "generate_tumors",
    "load_source",
]

_TIMESTAMP_CANDIDATES = ("ts", "observed_at")


@dataclass
class LoadResult:
    table: str
    rows_written: int
    rows_deleted: int
    first_day: date | None
    last_day: date | None


def _day_runs(days: list[date]) -> list[tuple[date, date]]:
    """Contiguous runs of days as half-open [first, last + 1) ranges, so a reload deletes only those days."""
    runs: list[tuple[date, date]] = []
    for d in days:
        if runs and runs[-1][1] == d:
            runs[-1] = (runs[-1][0], d + timedelta(days=1))
        else:
            runs.append((d, d + timedelta(days=1)))
    return runs


def load_source(
    url: str,
    table: str,
    df: pd.DataFrame,
    *,
    replace_days: bool = True,
    timestamp_column: str | None = None,
    chunksize: int = 20_000,
) -> LoadResult:
    """Append `df` to `table` at the SQLAlchemy `url`, replacing the days it covers (when `replace_days`).

    Timestamps are written as naive UTC DATETIME/TIMESTAMP columns, so `WHERE ts >= :start AND ts < :end` with
    Python datetimes works on SQLite (ISO text that sorts correctly) and Postgres alike. The delete and the insert
    run in one transaction, and an index on the timestamp column is created if missing.
    """
    ts_col = timestamp_column or next((c for c in _TIMESTAMP_CANDIDATES if c in df.columns), None)
    if ts_col is None or ts_col not in df.columns:
        raise KeyError(
            f"no timestamp column in frame for table {table!r} (looked for {timestamp_column or _TIMESTAMP_CANDIDATES})"
        )
    ts = pd.to_datetime(df[ts_col])
    days = sorted({d.date() for d in ts.dt.normalize().unique()}) if len(df) else []
    engine = sa.create_engine(url)
    deleted = 0
    try:
        with engine.begin() as conn:
            if replace_days and days and sa.inspect(conn).has_table(table):
                tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
                for lo, hi in _day_runs(days):
                    res = conn.execute(
                        tbl.delete().where(
                            tbl.c[ts_col] >= datetime.combine(lo, datetime.min.time()),
                            tbl.c[ts_col] < datetime.combine(hi, datetime.min.time()),
                        )
                    )
                    deleted += res.rowcount or 0
            df.to_sql(table, conn, if_exists="append", index=False, chunksize=chunksize)
            tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
            sa.Index(f"ix_{table}_{ts_col}", tbl.c[ts_col]).create(conn, checkfirst=True)
    finally:
        engine.dispose()
    return LoadResult(table, len(df), deleted, days[0] if days else None, days[-1] if days else None)
