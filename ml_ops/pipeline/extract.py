"""Extract: the data interval's rows from the source database into one parquet partition."""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING

from ml_ops.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd


@dataclass(frozen=True)
class ExtractResult:
    uri: str
    rows: int
    columns: list[str]

    def to_xcom(self) -> dict:
        return {"uri": self.uri, "rows": self.rows}


def read_interval(engine, sql: str, start: datetime, end: datetime, parse_dates: list[str]) -> pd.DataFrame:
    """Run the pipeline's SQL with the interval as bound parameters (never string formatting).

    Timestamps are passed as naive UTC, which is how the source stores them.
    """
    import pandas as pd
    from sqlalchemy import text

    from ml_ops.pipeline.sql import prepare

    params = {"start": _naive_utc(start), "end": _naive_utc(end)}
    with _named_source_errors(), engine.connect() as conn:
        df = pd.read_sql(text(prepare(sql)), conn, params=params)
    _stringify_mixed(df)
    for column in parse_dates:
        # Coerce rather than fail here: a malformed timestamp is validation's job to report.
        if column in df.columns and not pd.api.types.is_datetime64_any_dtype(df[column]):
            df[column] = pd.to_datetime(df[column], errors="coerce", format="ISO8601")
    return df


def count_interval(engine, sql: str, start: datetime, end: datetime) -> int:
    """How many rows the pipeline's query returns for the interval now (late rows show up here)."""
    from sqlalchemy import text

    from ml_ops.pipeline.sql import prepare

    params = {"start": _naive_utc(start), "end": _naive_utc(end)}
    with _named_source_errors(), engine.connect() as conn:
        return int(conn.execute(text(f"SELECT COUNT(*) FROM ({prepare(sql)}) AS interval_rows"), params).scalar())


class SourceQueryError(ValueError):
    """The query cannot run on this source as written (a missing column or table, bad syntax or bindings).
    Deterministic: retrying cannot help, so the day fails at once with a validation report."""


# What a database says when the query itself is wrong; connection failures and timeouts are not here.
_QUERY_ERRORS = ("no such column", "no such table", "syntax error", "does not exist", "unknown column", "bindings")


@contextmanager
def _named_source_errors():
    from sqlalchemy import exc as sa_exc

    try:
        yield
    except (sa_exc.ProgrammingError, sa_exc.OperationalError, sa_exc.ArgumentError) as exc:
        reason = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        if isinstance(exc, sa_exc.OperationalError) and not any(m in reason.lower() for m in _QUERY_ERRORS):
            raise  # infrastructure (connection refused, locked database, ...): retried by Airflow
        raise SourceQueryError(f"the source query failed: {type(exc.__cause__ or exc).__name__}: {reason}") from exc


def _stringify_mixed(df: pd.DataFrame) -> None:
    """A column holding numbers and text (SQLite allows it) cannot be written to parquet as is.
    Keep every value as text instead of failing here, so validation can name the bad values."""
    import pandas as pd

    for column in df.columns[df.dtypes.eq(object)]:
        kind = pd.api.types.infer_dtype(df[column], skipna=True)
        if kind.startswith("mixed"):
            df[column] = df[column].map(lambda v: None if pd.isna(v) else str(v))


def extract_interval(
    engine, sql: str, start: datetime, end: datetime, store: ObjectStore, uri: str, parse_dates: list[str]
) -> ExtractResult:
    df = read_interval(engine, sql, start, end, parse_dates)
    store.write_parquet(df, uri)
    return ExtractResult(uri=uri, rows=len(df), columns=list(df.columns))


def _naive_utc(value: datetime) -> datetime:
    if value.tzinfo is None:
        return value
    from datetime import timezone

    return value.astimezone(timezone.utc).replace(tzinfo=None)
