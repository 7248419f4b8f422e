"""Request payloads: MLflow's scoring JSON in, typed columns out, checked against the model's signature.

Accepted bodies (the formats ``mlflow models serve`` accepts; ``params`` is allowed and ignored):

    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}}
    {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}
    {"instances": [{"a": 1, "b": "x"}]}            or  {"instances": {"a": [1, 2], "b": ["x", "y"]}}
    {"inputs": ...}                                 same shapes as instances

Errors are ``RequestError``: 400 when the body cannot be read as one of these, 422 when it can but does
not fit the signature (missing column, unexpected column, wrong type: naming the column and the first
bad row; empty batch), 413 for more rows than the pipeline allows.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np

from ml_ops.serving.errors import RequestError

FORMATS = ("dataframe_split", "dataframe_records", "instances", "inputs")
_NUMERIC = {"double": "float64", "float": "float32"}
_INTEGER = {"long": "int64", "integer": "int32"}


def _short(value) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


@dataclass
class Table:
    """A request's rows, column by column (values as JSON gave them)."""

    columns: list[str]
    data: dict[str, list]
    n: int


# --------------------------------------------------------------------------- parsing


def parse_json(body: bytes) -> dict:
    try:
        payload = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        raise RequestError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"expected a JSON object with one of {list(FORMATS)}, got {type(payload).__name__}")
    return payload


def _records(rows, where: str) -> Table:
    if not isinstance(rows, list):
        raise RequestError(400, f"{where} must be a list of objects (one per row), got {type(rows).__name__}")
    columns: dict[str, None] = {}
    for i, rec in enumerate(rows):
        if not isinstance(rec, dict):
            raise RequestError(
                400, f"{where}[{i}] must be an object mapping column names to values, got {type(rec).__name__}"
            )
        if len(rec) != len(columns) or any(k not in columns for k in rec):
            columns.update(dict.fromkeys(rec))
    names = list(columns)
    data = {c: [rec.get(c) for rec in rows] for c in names}
    return Table(names, data, len(rows))


def _columnar(obj: dict, where: str) -> Table:
    lengths = set()
    for name, values in obj.items():
        if not isinstance(values, list):
            raise RequestError(400, f"{where}: column {name!r} must be a list of values, got {type(values).__name__}")
        lengths.add(len(values))
    if len(lengths) > 1:
        raise RequestError(400, f"{where}: columns have different lengths {sorted(lengths)}")
    return Table(list(obj), dict(obj), lengths.pop() if lengths else 0)


def _split(obj, where: str = "dataframe_split") -> Table:
    if not isinstance(obj, dict):
        raise RequestError(400, f"{where} must be an object with 'columns' and 'data', got {type(obj).__name__}")
    unknown = sorted(set(obj) - {"columns", "data", "index"})
    if unknown:
        raise RequestError(400, f"{where}: unknown key(s) {unknown}; expected 'columns', 'data' (and optional 'index')")
    columns, data = obj.get("columns"), obj.get("data")
    if not isinstance(columns, list) or not all(isinstance(c, str) for c in columns):
        raise RequestError(400, f"{where}.columns must be a list of column names")
    if not isinstance(data, list):
        raise RequestError(400, f"{where}.data must be a list of rows (lists of values)")
    if len(set(columns)) != len(columns):
        dupes = sorted({c for c in columns if columns.count(c) > 1})
        raise RequestError(400, f"{where}.columns names {dupes} more than once")
    width = len(columns)
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != width:
            got = f"{len(row)} values" if isinstance(row, list) else type(row).__name__
            raise RequestError(400, f"{where}.data[{i}] has {got}; expected a list of {width} (one per column)")
    cols = list(zip(*data, strict=False)) if data else [()] * width
    return Table(list(columns), {c: list(v) for c, v in zip(columns, cols, strict=False)}, len(data))


def table_from_payload(payload: dict) -> Table:
    given = [k for k in FORMATS if k in payload]
    unknown = sorted(set(payload) - set(FORMATS) - {"params"})
    if unknown:
        raise RequestError(
            400, f"unknown key(s) {unknown} in the body; expected one of {list(FORMATS)} (and optional 'params')"
        )
    if len(given) != 1:
        what = "none" if not given else f"{given}"
        raise RequestError(400, f"the body must have exactly one of {list(FORMATS)}; it has {what}")
    key = given[0]
    value = payload[key]
    if key == "dataframe_split":
        return _split(value)
    if key == "dataframe_records":
        return _records(value, key)
    if isinstance(value, dict):  # columnar instances/inputs
        return _columnar(value, key)
    if isinstance(value, list) and value and not isinstance(value[0], dict):
        raise RequestError(
            400,
            f"{key} must name the columns: a list of objects (one per row) or an object of "
            "column lists; this model's signature is column-based",
        )
    return _records(value, key)


# --------------------------------------------------------------------------- the signature


@dataclass(frozen=True)
class Column:
    name: str
    kind: str  # MLflow DataType name (double, long, string, boolean, ...) or "any"
    required: bool = True

    @property
    def dtype(self) -> str:
        """The pandas dtype the column is logged with."""
        if self.kind in _NUMERIC:
            return "float64"
        if self.kind in _INTEGER:
            return "Int64"
        if self.kind == "boolean":
            return "boolean"
        if self.kind == "datetime":
            return "datetime64[ns]"
        return "object"


@dataclass(frozen=True)
class InputSchema:
    columns: tuple[Column, ...]

    @property
    def names(self) -> list[str]:
        return [c.name for c in self.columns]

    @property
    def required(self) -> list[str]:
        return [c.name for c in self.columns if c.required]

    @property
    def dtypes(self) -> dict[str, str]:
        return {c.name: c.dtype for c in self.columns}

    @classmethod
    def from_mlflow(cls, schema) -> InputSchema | None:
        """None for a model without a column-based input signature (nothing to check against)."""
        if schema is None or not schema.has_input_names() or schema.is_tensor_spec():
            return None
        cols = []
        for spec in schema.inputs:
            kind = getattr(getattr(spec, "type", None), "name", None) or "any"
            cols.append(
                Column(spec.name, kind if isinstance(kind, str) else "any", bool(getattr(spec, "required", True)))
            )
        return cls(tuple(cols))

    @classmethod
    def from_columns(cls, numeric: Iterable[str], categorical: Iterable[str]) -> InputSchema:
        return cls(tuple([Column(c, "double") for c in numeric] + [Column(c, "string") for c in categorical]))


def check_columns(table: Table, schemas: list[InputSchema], allowed_extra: Iterable[str], label: str) -> None:
    """Missing (required by any of the models the rows may go to) and unexpected columns."""
    known = {n for s in schemas for n in s.names}
    allowed = [c for c in dict.fromkeys(allowed_extra) if c]
    missing = [n for s in schemas for n in s.required if n not in table.data]
    if missing:
        missing = list(dict.fromkeys(missing))
        raise RequestError(422, f"missing column(s) {missing}: {label} takes {schemas[0].names}")
    extra = [c for c in table.columns if c not in known and c not in allowed]
    if extra:
        also = f"; allowed besides the model's inputs: {allowed}" if allowed else ""
        raise RequestError(422, f"unexpected column(s) {extra}: not inputs of {label}{also}")


def _bad(column: Column, i: int, value) -> RequestError:
    got = "null" if value is None else f"{type(value).__name__} {_short(value)}"
    return RequestError(422, f"column {column.name!r} expects {column.kind}; row {i} has {got}")


def _convert(column: Column, values: list) -> np.ndarray:
    kind = column.kind
    if kind in _NUMERIC:
        for i, v in enumerate(values):
            t = type(v)
            if t is not float and t is not int and v is not None:
                raise _bad(column, i, v)
        return np.array(values, dtype=_NUMERIC[kind])  # None -> NaN
    if kind in _INTEGER:
        for i, v in enumerate(values):
            t = type(v)
            if t is not int and not (t is float and math.isfinite(v) and v.is_integer()):
                raise _bad(column, i, v)
        return np.array(values, dtype=_INTEGER[kind])
    if kind == "string":
        for i, v in enumerate(values):
            if type(v) is not str and v is not None:
                raise _bad(column, i, v)
        return np.array(values, dtype=object)
    if kind == "boolean":
        for i, v in enumerate(values):
            if type(v) is not bool:
                raise _bad(column, i, v)
        return np.array(values, dtype=bool)
    if kind == "datetime":
        import pandas as pd

        for i, v in enumerate(values):
            if v is not None and type(v) is not str:
                raise _bad(column, i, v)
        parsed = pd.to_datetime(pd.Series(values, dtype=object), errors="coerce", utc=True)
        bad = np.flatnonzero(parsed.isna().to_numpy() & np.array([v is not None for v in values]))
        if bad.size:
            raise _bad(column, int(bad[0]), values[bad[0]])
        return parsed.dt.tz_localize(None).to_numpy()
    return np.array(values, dtype=object)


def convert(table: Table, schema: InputSchema | None, skip: Iterable[str] = ()) -> dict[str, np.ndarray]:
    """The model's input columns as typed arrays, in signature order (optional ones may be absent).
    Without a signature: every column but ``skip``, with numpy's inferred types."""
    if schema is None:
        skip = set(skip)
        return {c: np.asarray(table.data[c]) for c in table.columns if c not in skip}
    out = {}
    for column in schema.columns:
        values = table.data.get(column.name)
        if values is None and not column.required:
            continue  # an optional input left out stays out, as with MLflow's own enforcement
        try:
            out[column.name] = _convert(column, values if values is not None else [None] * table.n)
        except (OverflowError, ValueError, TypeError) as exc:  # e.g. an integer beyond int64
            raise RequestError(422, f"column {column.name!r} expects {column.kind}: {exc}") from None
    return out
