"""Simulated sources for the example pipelines (card transactions for fraud, tumour measurements) and a loader
that writes them into any SQLAlchemy database."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timedelta

import pandas as pd
import sqlalchemy as sa

from ml_ops.local.sim.transactions import (
    ConceptChange,
    CovariateShift,
    Event,
    generate_labels,
    generate_transactions,
)
from ml_ops.local.sim.tumors import generate_tumors

__all__ = [
    "ConceptChange",
    "CovariateShift",
    "Event",
    "LoadResult",
    "generate_labels",
    "generate_transactions",
    "generate_tumors",
    "load_labels",
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
    labels_table: str | None = None  # with load_source(..., labels_table=...): the labels' table
    labels_written: int = 0
    labels_deleted: int = 0


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
    labels_table: str | None = None,
    labels: pd.DataFrame | None = None,
    labels_seed: int = 7,
) -> LoadResult:
    """Append `df` to `table` at the SQLAlchemy `url`, replacing the days it covers (when `replace_days`).

    Timestamps are written as naive UTC DATETIME/TIMESTAMP columns, so `WHERE ts >= :start AND ts < :end` with
    Python datetimes works on SQLite (ISO text that sorts correctly) and Postgres alike. The delete and the insert
    run in one transaction, and an index on the timestamp column is created if missing.

    With `labels_table` (opt-in), the labels of `df`'s rows also go to their own table: `labels`, or by default
    `generate_labels(df, labels_seed)` (transaction_id, is_fraud, labelled_at with chargeback delays). Its first
    column is the id: the labels of `df`'s ids are replaced (with `replace_days`), in the same transaction, and
    the label-time column (`labelled_at`) is indexed. `df` itself is written as without labels_table.
    """
    ts_col = timestamp_column or next((c for c in _TIMESTAMP_CANDIDATES if c in df.columns), None)
    if ts_col is None or ts_col not in df.columns:
        raise KeyError(
            f"no timestamp column in frame for table {table!r} (looked for {timestamp_column or _TIMESTAMP_CANDIDATES})"
        )
    ts = pd.to_datetime(df[ts_col])
    days = sorted({d.date() for d in ts.dt.normalize().unique()}) if len(df) else []
    if labels_table is not None and labels is None:
        labels = generate_labels(df, labels_seed)
    if labels_table is not None and labels.columns[0] not in df.columns:
        raise KeyError(f"labels' id column {labels.columns[0]!r} is not a column of the frame for table {table!r}")
    engine = sa.create_engine(url)
    deleted = labels_deleted = 0
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
            if labels_table is not None:
                labels_deleted = _write_labels(conn, labels_table, labels, df, replace_days, chunksize)
    finally:
        engine.dispose()
    first, last = (days[0], days[-1]) if days else (None, None)
    if labels_table is None:
        return LoadResult(table, len(df), deleted, first, last)
    return LoadResult(table, len(df), deleted, first, last, labels_table, len(labels), labels_deleted)


def load_labels(url: str, table: str, labels: pd.DataFrame, *, chunksize: int = 20_000) -> int:
    """Write ``labels`` (id first, e.g. ``generate_labels``'s frame) to ``table`` at ``url``, replacing the labels
    of the same ids, in one transaction; the label time is indexed. Returns the rows replaced. The traffic
    generator writes the labels of the fresh events it sends this way."""
    engine = sa.create_engine(url)
    try:
        with engine.begin() as conn:
            return _write_labels(conn, table, labels, labels, True, chunksize)
    finally:
        engine.dispose()


def _write_labels(conn, table: str, labels: pd.DataFrame, df: pd.DataFrame, replace: bool, chunksize: int) -> int:
    """Replace the labels of ``df``'s ids in ``table`` by ``labels``; index the label time. Rows deleted."""
    id_col = labels.columns[0]
    deleted = 0
    if replace and sa.inspect(conn).has_table(table):
        tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
        ids = df[id_col].drop_duplicates().tolist()
        for i in range(0, len(ids), 500):  # bounded IN lists (SQLite's variable limit)
            deleted += conn.execute(tbl.delete().where(tbl.c[id_col].in_(ids[i : i + 500]))).rowcount or 0
    labels.to_sql(table, conn, if_exists="append", index=False, chunksize=chunksize)
    tbl = sa.Table(table, sa.MetaData(), autoload_with=conn)
    at = "labelled_at" if "labelled_at" in labels.columns else labels.columns[-1]
    sa.Index(f"ix_{table}_{at}", tbl.c[at]).create(conn, checkfirst=True)
    return deleted
