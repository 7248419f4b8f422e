"""Raw events at the gateway: the source's columns in, checked and named; the model's inputs are computed online.

Which a request sends is chosen explicitly, never guessed from its columns: the header ``X-Input: raw`` (the
source's columns, as the pipeline's extract SQL returns them, without the label) or ``X-Input: model`` (the
model's inputs, computed by the client); without the header, the pipeline's ``serving.input`` (default
``model``, so clients that send model inputs keep working). Both modes take the same MLflow scoring JSON.

A raw event has, by the pipeline's YAML:

* ``source.id_column``: the event's id (text or integer; required). A retried request with the same id is not
  counted twice in its entity's history;
* ``source.timestamp_column``: when the event happened, ISO 8601 text (``2026-03-02T10:15:00Z``; without an
  offset it is UTC; required);
* ``features.entity_column``: whose event it is (text or integer; required when the pipeline has history
  features), and ``features.amount_column`` (a number or null);
* the model's own inputs, ``features.numeric`` and ``features.categorical`` (checked against the signature as in
  model mode), and the routing-key column if it is another one.

A column missing, a null or badly typed id or entity, or a timestamp that does not parse gets 422 naming the
column (with its YAML field) and the first bad row; a column the raw event does not have (the label, or a
derived feature, which the gateway computes) gets 422 naming it. Nothing reaches the online store before the
whole request passed these checks and the signature's.

The prediction log keeps both: the model's inputs as computed (like model-mode rows), the raw columns that are
not model inputs (a name the log already uses, e.g. the timestamp ``ts``, gets the prefix ``event_``:
``ml_ops.rollout.deployment.raw_log_name``), and ``input_mode`` (``raw`` or ``model``) on every row.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from datetime import datetime, timezone
from typing import TYPE_CHECKING

import numpy as np

from ml_ops.rollout.deployment import raw_log_name
from ml_ops.serving.errors import RequestError
from ml_ops.serving.schema import Table, _short

if TYPE_CHECKING:
    from ml_ops.config import Pipeline

RAW, MODEL = "raw", "model"
INPUT_MODES = (MODEL, RAW)
INPUT_HEADER = "X-Input"


def input_mode(header: str | None, default: str) -> str:
    """The request's mode: the X-Input header when sent, else the pipeline's ``serving.input``."""
    if header is None:
        return default
    mode = header.strip().lower()
    if mode not in INPUT_MODES:
        raise RequestError(400, f"{INPUT_HEADER} must be one of {list(INPUT_MODES)}; got {_short(header)}")
    return mode


@dataclass(frozen=True)
class RawColumns:
    """What a raw event of a pipeline has: column -> the YAML field naming it."""

    required: dict[str, str]
    optional: dict[str, str]
    derived: list[str] = field(default_factory=list)  # computed by the gateway: never sent in raw mode

    @classmethod
    def of(cls, cfg: Pipeline) -> RawColumns:
        f, src = cfg.features, cfg.source
        required = {src.id_column: "source.id_column", src.timestamp_column: "source.timestamp_column"}
        if f.entity_column:
            required.setdefault(f.entity_column, "features.entity_column")
        for c in f.numeric:
            required.setdefault(c, "features.numeric")
        for c in f.categorical:
            required.setdefault(c, "features.categorical")
        optional = {}
        if f.amount_column:
            optional.setdefault(f.amount_column, "features.amount_column")
        if cfg.routing_key:
            optional.setdefault(cfg.routing_key, "serving.routing_key")
        optional = {c: w for c, w in optional.items() if c not in required}
        return cls(required, optional, list(cfg.generated_features))

    def named(self, column: str) -> str:
        return f"{column!r} ({self.required.get(column) or self.optional.get(column)})"


@dataclass
class RawEvents:
    """A raw request, checked: the model-input table (derived columns still to be computed) and the events."""

    table: Table  # the model's configured inputs and the extra columns, as sent
    ids: list[str]
    entities: list | None
    ts: np.ndarray  # int64 ns since the epoch, UTC
    amounts: np.ndarray | None
    logged: dict[str, object]  # raw columns that are not model inputs, under their log names
    logged_dtypes: dict[str, str]


def _bad(columns: RawColumns, column: str, i: int, value, expects: str) -> RequestError:
    got = "null" if value is None else f"{type(value).__name__} {_short(value)}"
    return RequestError(422, f"column {columns.named(column)} expects {expects}; row {i} has {got}")


def _ids(columns: RawColumns, column: str, values: list) -> list[str]:
    for i, v in enumerate(values):
        t = type(v)
        if t is not str and t is not int:
            raise _bad(columns, column, i, v, "text or an integer (and is required in raw events)")
        if t is str and not v:
            raise _bad(columns, column, i, v, "non-empty text or an integer")
    return [v if type(v) is str else str(v) for v in values]


# What the fast path parses (datetime.fromisoformat, microseconds at most); anything else goes to pandas.
_ISO = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}(:\d{2}(\.\d{1,6})?)?(Z|[+-]\d{2}:\d{2})?")
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


def _fast_ns(value: str) -> int | None:
    """ns since the epoch of a plain ISO 8601 timestamp (naive = UTC), or None to let pandas decide."""
    if not _ISO.fullmatch(value):
        return None
    try:
        dt = datetime.fromisoformat(value[:-1] + "+00:00" if value.endswith("Z") else value)
    except ValueError:
        return None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _timestamps(columns: RawColumns, column: str, values: list) -> np.ndarray:
    for i, v in enumerate(values):
        if type(v) is not str:
            raise _bad(columns, column, i, v, "an ISO 8601 timestamp as text, e.g. '2026-03-02T10:15:00Z'")
    fast = [_fast_ns(v) for v in values]
    if None not in fast:
        return np.array(fast, dtype=np.int64)
    import pandas as pd

    parsed = pd.to_datetime(pd.Series(values, dtype=object), utc=True, errors="coerce", format="ISO8601")
    bad = np.flatnonzero(parsed.isna().to_numpy())
    if bad.size:
        i = int(bad[0])
        raise _bad(columns, column, i, values[i], "an ISO 8601 timestamp, e.g. '2026-03-02T10:15:00Z'")
    return parsed.dt.tz_localize(None).to_numpy("datetime64[ns]").view(np.int64)


def _amounts(columns: RawColumns, column: str, values: list) -> np.ndarray:
    for i, v in enumerate(values):
        t = type(v)
        if v is not None and (t not in (int, float) or (t is float and not math.isfinite(v))):
            raise _bad(columns, column, i, v, "a finite number or null")
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def parse_raw(table: Table, cfg: Pipeline, columns: RawColumns, model_inputs: list[str]) -> RawEvents:
    """The raw request's events, or a 422 naming the column (see the module docstring)."""
    allowed = {**columns.required, **columns.optional}
    derived = [c for c in table.columns if c in columns.derived]
    if derived:
        raise RequestError(
            422,
            f"column(s) {derived} are derived by the gateway from raw events; send the raw event only, or the "
            f"model's inputs with header {INPUT_HEADER}: {MODEL}",
        )
    unexpected = [c for c in table.columns if c not in allowed]
    if unexpected:
        what = " (the label is not sent)" if cfg.target.column in unexpected else ""
        raise RequestError(
            422,
            f"unexpected column(s) {unexpected} in a raw event of {cfg.name!r}{what}; a raw event has {list(allowed)}",
        )
    missing = [c for c in columns.required if c not in table.data]
    if missing:
        raise RequestError(
            422,
            f"missing column(s) {[columns.named(c) for c in missing]}: a raw event of {cfg.name!r} has {list(allowed)}",
        )
    src, f = cfg.source, cfg.features
    ids = _ids(columns, src.id_column, table.data[src.id_column])
    ts = _timestamps(columns, src.timestamp_column, table.data[src.timestamp_column])
    entities = None
    if f.entity_column:
        entities = table.data[f.entity_column]
        _ids(columns, f.entity_column, entities)
    amounts = None
    if f.amount_column:
        amounts = _amounts(columns, f.amount_column, table.data.get(f.amount_column) or [None] * table.n)
    keep = [c for c in table.columns if c in model_inputs or c in (src.id_column, cfg.routing_key)]
    logged: dict[str, object] = {}
    dtypes: dict[str, str] = {}
    for c in table.columns:
        if c in keep:
            continue
        name = raw_log_name(c)
        if c == src.timestamp_column:
            logged[name], dtypes[name] = ts.tolist(), "datetime64[ns, UTC]"
        elif c == f.amount_column:
            logged[name], dtypes[name] = amounts, "float64"
        else:
            values = table.data[c]
            logged[name] = [None if v is None else v if isinstance(v, str) else str(v) for v in values]
            dtypes[name] = "object"
    model_table = Table(keep, {c: table.data[c] for c in keep}, table.n)
    return RawEvents(model_table, ids, entities, ts, amounts, logged, dtypes)
