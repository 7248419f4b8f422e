"""Extract: the data interval's rows from the source database into one parquet partition."""

from __future__ import annotations

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
    with engine.connect() as conn:
        df = pd.read_sql(text(prepare(sql)), conn, params=params)
    _stringify_mixed(df)
    for column in parse_dates:
        # Coerce rather than fail here: a malformed timestamp is validation's job to report.
        if column in df.columns and not pd.api.types.is_datetime64_any_dtype(df[column]):
            df[column] = pd.to_datetime(df[column], errors="coerce", format="ISO8601")
    return df


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
