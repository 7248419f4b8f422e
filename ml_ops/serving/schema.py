"""Request payloads: MLflow's scoring JSON in, typed columns out, checked against the model's signature.

Accepted bodies (the formats ``mlflow models serve`` accepts; ``params`` is allowed and ignored):

    {"dataframe_split": {"columns": ["a", "b"], "data": [[1, "x"], [2, "y"]]}}
    {"dataframe_records": [{"a": 1, "b": "x"}, {"a": 2, "b": "y"}]}
    {"instances": [{"a": 1, "b": "x"}]}            or  {"instances": {"a": [1, 2], "b": ["x", "y"]}}
    {"inputs": ...}                                 same shapes as instances

Errors are ``RequestError``: 400 when the body cannot be read as one of these, 422 when it can but does
not fit the signature (missing column, unexpected column, wrong type: naming the column and the first
bad row; empty batch), 413 for more rows than the pipeline allows.

``parse_json`` is the boundary every JSON body of the gateway (predictions and feedback) goes through. It
accepts RFC 8259 JSON only, so that nothing a client sends can make a logged row unwritable later:

* strict UTF-8 (no other encoding, no encoded surrogates), else 400;
* nesting at most ``max_depth`` levels (checked on the bytes before parsing: Python's parser would raise
  RecursionError), else 400;
* no duplicate key in an object (``{"a": 1, "a": 2}`` is ambiguous), else 400;
* no string holding a lone UTF-16 surrogate (``"\\ud800"``: valid JSON text, but no UTF-8 encoding exists,
  so parquet cannot store it), and no integer outside int64, else 422 naming the field by its JSON path
  (``$.dataframe_records[0].channel``).

``NaN``, ``Infinity`` and numbers beyond float range (``1e309``) parse, and are refused where they would be
used: a numeric column of the signature rejects non-finite values (422 naming the column and row); a column
the signature leaves untyped (``any``) passes them to the model unchanged.

A string column of the signature is a categorical input: it takes text, numbers and booleans, cast to text
exactly as training cast them (``ml_ops.scoring.category_text``: 3, 3.0 and "3" are the category "3"); a
non-finite number, a list or an object is refused (422).
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Collection, Iterable
from dataclasses import dataclass

import numpy as np

from ml_ops.scoring import category_text
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


MAX_JSON_DEPTH = 32  # MLflow's formats need 4 or 5 levels (tensor columns a few more)
INT64_MIN, INT64_MAX = -(1 << 63), (1 << 63) - 1
# The byte-level checks below run on every body, so they are C-speed passes (bytes.translate, bytes.find,
# a numpy scan of the few structural characters); the exact (Python) walk runs only when they flag a body.
_NOT_STRUCTURE = bytes(sorted(set(range(256)) - set(b'"[]{}')))
_DIGIT_MASK = bytes(0x31 if 0x30 <= i <= 0x39 else 0x30 for i in range(256))  # digit -> "1", else "0"
_INT64_DIGITS = b"1" * 19  # an integer beyond int64 has at least 19 digits
_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")  # text that may decode to a surrogate
_LONE_SURROGATE = re.compile("[\ud800-\udfff]")  # after decoding, a pair is one code point: any left is lone


class _DuplicateKey(ValueError):
    pass


def _object(pairs: list[tuple[str, object]]) -> dict:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        seen: set[str] = set()
        raise _DuplicateKey(next(k for k, _ in pairs if k in seen or seen.add(k)))
    return obj


def json_depth(body: bytes, at_most: int = 0) -> int:
    """Deepest nesting of arrays/objects in ``body`` (brackets inside strings do not count); when the body
    has at most ``at_most`` opening brackets in all, that count (an upper bound, found without a scan)."""
    if b"\\" in body:  # drop escaped backslashes, then escaped quotes: every quote left opens or closes a string
        body = body.replace(b"\\\\", b"").replace(b'\\"', b"")
    kept = body.translate(None, _NOT_STRUCTURE)
    opening = kept.count(b"[") + kept.count(b"{")
    if opening <= max(at_most, 1):
        return opening
    codes = np.frombuffer(kept, dtype=np.uint8)
    outside = (np.cumsum(codes == ord('"')) & 1) == 0  # a closing quote counts as outside: it is no bracket
    steps = np.zeros(len(codes), dtype=np.int64)
    steps[outside & ((codes == ord("[")) | (codes == ord("{")))] = 1
    steps[outside & ((codes == ord("]")) | (codes == ord("}")))] = -1
    return int(np.cumsum(steps).max())


def json_path(path: tuple) -> str:
    out = "$"
    for p in path:
        if isinstance(p, int):
            out += f"[{p}]"
        elif p.isidentifier() and p.isascii():
            out += f".{p}"
        else:
            out += f"[{ascii(p)}]"
    return out


def unrepresentable(value, *, strings: bool = True, integers: bool = True) -> tuple[tuple, str] | None:
    """The first value (JSON path, why) that cannot be stored as UTF-8 text or int64; None when all can."""
    stack: list[tuple[tuple, object]] = [((), value)]
    while stack:
        path, v = stack.pop()
        t = type(v)
        if t is str:
            if strings and _LONE_SURROGATE.search(v):
                return path, f"holds a lone UTF-16 surrogate ({_short(v)}), which has no UTF-8 encoding"
        elif t is int:
            if integers and not INT64_MIN <= v <= INT64_MAX:
                return path, f"is the integer {_short(v)}, outside the int64 range"
        elif t is dict:
            for k, item in reversed(v.items()):
                if strings and _LONE_SURROGATE.search(k):
                    return (*path, k), "is a key holding a lone UTF-16 surrogate, which has no UTF-8 encoding"
                stack.append(((*path, k), item))
        elif t is list:
            stack.extend(((*path, i), item) for i, item in reversed(list(enumerate(v))))
    return None


def parse_json(body: bytes, max_depth: int = MAX_JSON_DEPTH) -> dict:
    """The body as a JSON object, or a ``RequestError`` naming why not (see the module docstring)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError(400, f"malformed JSON body: not UTF-8 (byte {exc.start}: {exc.reason})") from None
    depth = json_depth(body, at_most=max_depth)
    if depth > max_depth:
        raise RequestError(400, f"JSON nested {depth} levels deep; at most {max_depth} (MLOPS_GATEWAY_MAX_JSON_DEPTH)")
    try:
        payload = json.loads(text, object_pairs_hook=_object)
    except _DuplicateKey as exc:
        raise RequestError(400, f"malformed JSON body: duplicate key {_short(exc.args[0])} in an object") from None
    except (ValueError, RecursionError) as exc:
        raise RequestError(400, f"malformed JSON body: {exc}") from None
    if not isinstance(payload, dict):
        raise RequestError(400, f"expected a JSON object with one of {list(FORMATS)}, got {type(payload).__name__}")
    strings = b"\\u" in body and _SURROGATE_ESCAPE.search(text) is not None
    integers = _INT64_DIGITS in body.translate(_DIGIT_MASK)
    if strings or integers:  # only then can a value be unrepresentable: walk the parsed body to name it
        found = unrepresentable(payload, strings=strings, integers=integers)
        if found:
            path, why = found
            raise RequestError(422, f"{json_path(path)} {why}")
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
        with np.errstate(over="ignore"):
            out = np.array(values, dtype=_NUMERIC[kind])  # None -> NaN
        finite = np.isfinite(out)
        if not finite.all():  # NaN from null is missing; NaN/Infinity sent as numbers, or overflow, are not
            for i in np.flatnonzero(~finite).tolist():
                if values[i] is not None:
                    why = "a non-finite number" if not math.isfinite(values[i]) else f"a number beyond {kind} range"
                    raise RequestError(
                        422, f"column {column.name!r} expects a finite {kind}; row {i} has {why} ({values[i]!r})"
                    )
        return out
    if kind in _INTEGER:
        for i, v in enumerate(values):
            t = type(v)
            if t is not int and not (t is float and math.isfinite(v) and v.is_integer()):
                raise _bad(column, i, v)
        return np.array(values, dtype=_INTEGER[kind])
    if kind == "string":  # a categorical input: numbers and booleans are labels, cast as training cast them
        for i, v in enumerate(values):
            t = type(v)
            if t is str or v is None or t is int or t is bool:
                continue
            if t is not float or not math.isfinite(v):
                raise _bad(column, i, v)
        return category_text(values)
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


def convert(
    table: Table, schema: InputSchema | None, skip: Iterable[str] = (), only: Collection[str] | None = None
) -> dict[str, np.ndarray]:
    """The model's input columns as typed arrays, in signature order (optional ones may be absent).
    Without a signature: every column but ``skip``, with numpy's inferred types. ``only``: just these of the
    signature's columns (the gateway's derived features, added to a raw request's checked columns)."""
    if schema is None:
        skip = set(skip)
        out = {}
        for c in table.columns:
            if c in skip:
                continue
            try:
                out[c] = np.asarray(table.data[c])
            except (OverflowError, ValueError, TypeError) as exc:  # e.g. rows of different shapes
                raise RequestError(422, f"column {c!r}: {exc}") from None
        return out
    out = {}
    for column in schema.columns:
        if only is not None and column.name not in only:
            continue
        values = table.data.get(column.name)
        if values is None and not column.required:
            continue  # an optional input left out stays out, as with MLflow's own enforcement
        try:
            out[column.name] = _convert(column, values if values is not None else [None] * table.n)
        except (OverflowError, ValueError, TypeError) as exc:  # e.g. an integer beyond int64
            raise RequestError(422, f"column {column.name!r} expects {column.kind}: {exc}") from None
    return out
