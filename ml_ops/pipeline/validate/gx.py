"""The Great Expectations 1.x half of validation: load and check a suite, run it on a frame, turn GX's results
into `Outcome`s.

The suite is a JSON file in GX's own suite format ({"name", "expectations": [{"type", "kwargs", "meta"}], "meta"});
`load_suite` checks every expectation up front so a typo fails at load time with the file and expectation named,
not halfway through a DAG run.

Bad data versus a broken validation: GX catches exceptions per expectation and reports them as results. Such an
error counts as bad data (a failed check) only when the data explains it: a column the expectation reads is
missing or duplicated, or the error is a TypeError/ValueError, which is what pandas and GX raise for values of
the wrong type (text in a numeric column, tz-aware against naive timestamps). Anything else - GX failing to
start, an exception escaping GX, an AttributeError/KeyError/RuntimeError inside it - raises
`ValidationInternalError`, which is not a `DataValidationError`, so Airflow retries it like any infrastructure
error and nobody is told their data is bad when it is not.
"""

from __future__ import annotations

import contextlib
import json
import logging
import re
from pathlib import Path
from typing import Any

import pandas as pd

from ml_ops.pipeline.validate.report import Outcome, jsonable, show

log = logging.getLogger(__name__)

# BASIC gives counts, percentages and up to 5 example bad values. Fraud suite on 1M rows (measured): BOOLEAN_ONLY
# 1.24 s (no examples), BASIC 1.49 s, SUMMARY 2.02 s, COMPLETE 2.14 s; the extras are value counts and index
# lists we do not show.
RESULT_FORMAT = {"result_format": "BASIC", "partial_unexpected_count": 20}  # first 20 bad values -> 5 distinct
MAX_EXAMPLES = 5
INDEX_META_KEY = "ml_ops_index"  # added to each expectation's meta at run time only
# Root exception types that mean "values of a type this expectation cannot handle" (see the module docstring).
DATA_ERROR_TYPES = frozenset(
    {"TypeError", "ValueError", "OverflowError", "OutOfBoundsDatetime", "OutOfBoundsTimedelta", "InvalidOperation"}
)
TYPE_CHECKS = ("expect_column_values_to_be_in_type_list", "expect_column_values_to_be_of_type")


class SuiteError(ValueError):
    """The suite file itself is broken (bad JSON, unknown expectation type, invalid kwargs)."""


class ValidationInternalError(RuntimeError):
    """Validation could not run: Great Expectations failed for a reason the data does not explain.

    Deliberately not a `DataValidationError`: the operator lets Airflow retry it like any infrastructure error.
    The message names the expectations (and columns) that were being run.
    """


# ----------------------------------------------------------------------------------------------------- suite


def _build_expectation(exp: Any, where: str):
    """Turn one suite entry into a GX Expectation object, or raise SuiteError naming it."""
    from great_expectations.expectations.expectation_configuration import ExpectationConfiguration

    if not isinstance(exp, dict) or not isinstance(exp.get("type"), str):
        raise SuiteError(f"{where}: each expectation must be an object with a string 'type', got {exp!r}")
    kwargs = exp.get("kwargs", {})
    name = f"{exp['type']}({kwargs.get('column', '') if isinstance(kwargs, dict) else ''})"
    if not isinstance(kwargs, dict):
        raise SuiteError(f"{where} {name}: 'kwargs' must be an object")
    try:
        config = ExpectationConfiguration(type=exp["type"], kwargs=kwargs, meta=exp.get("meta"), notes=exp.get("notes"))
        return config.to_domain_obj()
    except Exception as err:  # GX raises ExpectationNotFoundError, pydantic errors, ... - all mean "bad suite"
        raise SuiteError(f"{where} {name}: {type(err).__name__}: {err}") from err


def check_suite(suite: Any, source: str) -> None:
    if not isinstance(suite, dict):
        raise SuiteError(f"{source}: a suite must be a JSON object, got {type(suite).__name__}")
    if not isinstance(suite.get("name"), str) or not suite["name"]:
        raise SuiteError(f"{source}: suite needs a non-empty string 'name'")
    if not isinstance(suite.get("expectations"), list):
        raise SuiteError(f"{source}: suite needs an 'expectations' list")
    for i, exp in enumerate(suite["expectations"]):
        _build_expectation(exp, f"{source}: expectation #{i}")


def load_suite(path: str | Path) -> dict[str, Any]:
    """Read a GX suite JSON file and check every expectation (type exists, kwargs valid)."""
    path = Path(path)
    try:
        suite = json.loads(path.read_text())
    except json.JSONDecodeError as err:
        raise SuiteError(f"{path}: not valid JSON: {err}") from err
    check_suite(suite, str(path))
    return suite


def columns_of(kwargs: dict[str, Any]) -> list[str]:
    """Columns an expectation reads, from its kwargs."""
    if "column" in kwargs:
        return [kwargs["column"]]
    if "column_A" in kwargs:
        return [kwargs["column_A"], kwargs["column_B"]]
    return list(kwargs.get("column_list") or [])


# ----------------------------------------------------------------------------------------------------- run


def frame_checks(df: pd.DataFrame) -> list[Outcome]:
    """Structural problems GX does not report itself (it silently looks at one of two same-named columns)."""
    dupes = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if not dupes:
        return []
    return [
        Outcome(
            check="ml_ops_expect_unique_column_names",
            column=", ".join(dupes),
            success=False,
            error=f"duplicate column names: {', '.join(map(repr, dupes))}",
        )
    ]


@contextlib.contextmanager
def _no_batch_fingerprint():
    """Skip GX's md5 fingerprint of the whole frame (batch metadata we never read).

    GX hashes every frame below HASH_THRESHOLD bytes, twice per validation: ~25% of the run time on 1M rows.
    Setting the module threshold to 0 for the duration of the call turns that off; if a future GX drops the
    constant this is a no-op. Not thread-safe, which is fine for one Airflow task per process.
    """
    from great_expectations.execution_engine import pandas_execution_engine as engine

    old = getattr(engine, "HASH_THRESHOLD", None)
    if old is None:
        yield
        return
    engine.HASH_THRESHOLD = 0
    try:
        yield
    finally:
        engine.HASH_THRESHOLD = old


def run_suite(df: pd.DataFrame, suite: dict[str, Any]) -> list[Outcome]:
    """Run the suite, one GX validation per column set; outcomes in suite order.

    GX's pandas engine copies the *whole* frame for every column-map expectation (it drops the rows where the
    column is null with df[mask]). Giving each group of expectations only the columns it reads makes those
    copies one column wide: 1.6 s instead of 2.8 s for the fraud suite on 1M rows. Table-level expectations and
    anything with a row_condition still see the full frame.

    Raises `ValidationInternalError` when GX fails for a reason the data does not explain (module docstring).
    """
    import great_expectations as gx
    from great_expectations.data_context.types.base import ProgressBarsConfig

    entries = suite["expectations"]
    groups: dict[tuple[Any, ...] | None, list[int]] = {}
    for i, entry in enumerate(entries):
        kwargs = entry.get("kwargs", {})
        cols = tuple(columns_of(kwargs))
        groups.setdefault(cols if cols and not kwargs.get("row_condition") else None, []).append(i)

    try:
        # A fresh in-memory context per call (~ms): no files, no shared state between tasks.
        context = gx.get_context(mode="ephemeral")
        context.variables.progress_bars = ProgressBarsConfig(globally=False)
        batch_def = (
            context.data_sources.add_pandas("ml_ops")
            .add_dataframe_asset("frame")
            .add_batch_definition_whole_dataframe("whole")
        )
    except Exception as err:
        raise ValidationInternalError(
            f"Great Expectations could not start to run suite {suite['name']!r}: {type(err).__name__}: {err}"
        ) from err

    outcomes: list[Outcome] = []
    internal: list[str] = []
    for cols, indexes in groups.items():
        # Tag each expectation with its position: GX returns results grouped by domain, not in file order.
        tagged = [entries[i] | {"meta": (entries[i].get("meta") or {}) | {INDEX_META_KEY: i}} for i in indexes]
        try:
            frame = df if cols is None else df.loc[:, [c for c in dict.fromkeys(cols) if c in df.columns]]
            gx_suite = gx.ExpectationSuite(
                name=suite["name"], expectations=[_build_expectation(x, suite["name"]) for x in tagged]
            )
            with _no_batch_fingerprint():
                batch = batch_def.get_batch(batch_parameters={"dataframe": frame})
                result = batch.validate(gx_suite, result_format=RESULT_FORMAT)
        except Exception as err:  # escaped GX as a whole for this group
            names = ", ".join(_name(entries[i]) for i in indexes)
            bad_columns = [c for i in indexes for c in _missing_or_duplicated(entries[i].get("kwargs", {}), df)]
            if not bad_columns:
                raise ValidationInternalError(
                    f"Great Expectations crashed while running {names} of suite {suite['name']!r}: "
                    f"{type(err).__name__}: {err}"
                ) from err
            log.warning("Great Expectations raised on %s (columns %s missing or duplicated): %s", names, cols, err)
            outcomes += [
                _outcome_from_error(entries[i], df, f"not evaluated: {type(err).__name__}: {err}", i) for i in indexes
            ]
            continue
        for r in result.results:
            outcome, crash = _outcome_from_gx(r, df, entries)
            outcomes.append(outcome)
            if crash:
                internal.append(crash)
    if internal:
        raise ValidationInternalError(
            f"Great Expectations failed internally on {len(internal)} expectation(s) of suite {suite['name']!r} "
            "(not a data problem, so the task is retried): " + "; ".join(internal)
        )
    order = {id(o): i for i, o in enumerate(outcomes)}
    return sorted(outcomes, key=lambda o: (o.index if o.index is not None else len(entries), order[id(o)]))


# ------------------------------------------------------------------------------------------ results -> outcomes


def _name(entry: dict[str, Any]) -> str:
    return f"{entry['type']}({_column_label(entry.get('kwargs', {})) or ''})"


def _params(kind: str, kwargs: dict[str, Any]) -> str:
    """Readable parameters, e.g. 'min 0.01, max 50000' (column names are shown separately)."""
    names = {
        "min_value": "min",
        "max_value": "max",
        "value_set": "in",
        "type_list": "types",
        "type_": "type",
        "mostly": "mostly",
        "value": "value",
        "regex": "regex",
        "or_equal": "or_equal",
    }
    skip = {"column", "column_A", "column_B", "column_list", "batch_id", "result_format", "catch_exceptions"}
    strict = {"min_value": ("strict_min", "> "), "max_value": ("strict_max", "< ")}
    parts = []
    for k, v in kwargs.items():
        if k in skip or v is None or k in {"strict_min", "strict_max"}:
            continue
        if k in strict and kwargs.get(strict[k][0]):
            v = strict[k][1] + str(v)  # exclusive bound, shown as 'min > 0'
        if isinstance(v, (list, tuple, set)):
            items = [show(x) for x in list(v)[:8]]
            v = "{" + ", ".join(items) + (", ..." if len(v) > 8 else "") + "}"
        parts.append(f"{names.get(k, k)} {v}" if k in names else f"{k}={v}")
    return ", ".join(parts)


def _column_label(kwargs: dict[str, Any]) -> str | None:
    cols = columns_of(kwargs)
    return ", ".join(map(str, cols)) if cols else None


def _missing_columns(kwargs: dict[str, Any], df: pd.DataFrame) -> list[str]:
    return [c for c in columns_of(kwargs) if c not in df.columns]


def _missing_or_duplicated(kwargs: dict[str, Any], df: pd.DataFrame) -> list[str]:
    duplicated = set(df.columns[df.columns.duplicated()])
    return [c for c in columns_of(kwargs) if c not in df.columns or c in duplicated]


def _missing_text(missing: list[str]) -> str:
    if len(missing) == 1:
        return f"column {missing[0]!r} is missing"
    return f"columns {', '.join(map(repr, missing))} are missing"


def _outcome_from_error(entry: dict[str, Any], df: pd.DataFrame, error: str, index: int) -> Outcome:
    kwargs = entry.get("kwargs", {})
    missing = _missing_columns(kwargs, df)
    if missing:
        error = _missing_text(missing)
    return Outcome(
        check=entry["type"],
        column=_column_label(kwargs),
        success=False,
        kwargs=jsonable(kwargs),
        params=_params(entry["type"], kwargs),
        error=error,
        index=index,
    )


_EXCEPTION_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::|$)")


def _root_exception_type(traceback_text: Any) -> str | None:
    """The type of the first exception in a formatted traceback: for a chain ("The above exception was the direct
    cause ...") that is the original one, e.g. TypeError under GX's MetricResolutionError. None if unreadable."""
    if not isinstance(traceback_text, str):
        return None
    for line in traceback_text.splitlines():
        if not line or line[0].isspace() or line.startswith(("Traceback (", "The above exception", "During handling")):
            continue
        match = _EXCEPTION_LINE.match(line)
        if match:
            return match.group(1).rsplit(".", 1)[-1]
    return None


def _gx_error(exception_info: Any) -> tuple[str, str | None] | None:
    """(message, root exception type) of the first error GX recorded for an expectation, or None.

    GX puts errors either flat ({"raised_exception": True, ...}) or keyed by metric id.
    """
    if not isinstance(exception_info, dict):
        return None
    candidates = [exception_info, *(v for v in exception_info.values() if isinstance(v, dict))]
    for info in candidates:
        if info.get("raised_exception"):
            return str(info.get("exception_message")), _root_exception_type(info.get("exception_traceback"))
    return None


def _is_text(s: pd.Series) -> bool:
    return s.dtype == object or isinstance(s.dtype, pd.StringDtype)


def _numeric_kind(types: list[Any]) -> str | None:
    """'integer' or 'number' when every allowed type is one; None for anything else (str, datetime, ...)."""
    names = [str(t).lower() for t in types if t is not None]
    if not names:
        return None
    if all(n.startswith(("int", "uint")) for n in names):
        return "integer"
    if all(n.startswith(("int", "uint", "float", "double", "decimal")) for n in names):
        return "number"
    return None


def _not_numbers(s: pd.Series, kind: str) -> pd.Series:
    """The non-null values of s that cannot be read as numbers (as whole numbers if kind == 'integer')."""
    values = s.dropna()
    numbers = pd.to_numeric(values, errors="coerce")
    bad = numbers.isna()
    if kind == "integer":
        bad |= numbers.notna() & (numbers % 1 != 0)
    return values[bad]


def _distinct(values: pd.Series) -> list[Any]:
    examples: list[Any] = []
    for value in map(jsonable, values.head(10_000)):
        if value not in examples:
            examples.append(value)
            if len(examples) == MAX_EXAMPLES:
                break
    return examples


def _outcome_from_gx(r: Any, df: pd.DataFrame, entries: list[dict[str, Any]]) -> tuple[Outcome, str | None]:
    """The outcome of one GX result, and a description if GX failed internally on it (else None)."""
    cfg = r.expectation_config
    index = (cfg.meta or {}).get(INDEX_META_KEY)
    # Show the kwargs as written in the suite (GX normalises some, e.g. 0 -> 0.0, and adds batch_id).
    kwargs = entries[index].get("kwargs", {}) if isinstance(index, int) else dict(cfg.kwargs)
    res = dict(r.result or {})
    column = _column_label(kwargs)
    missing = _missing_columns(kwargs, df)
    gx_error = _gx_error(r.exception_info)
    error: str | None = None
    crash: str | None = None
    if missing and cfg.type != "expect_column_to_exist":
        # GX's own text for this ranges from clear to "'list' object has no attribute 'type'".
        error = _missing_text(missing)
    elif gx_error:
        message, root_type = gx_error
        message = message.removeprefix("Error: ")
        duplicated = _missing_or_duplicated(kwargs, df)
        if duplicated:
            error = f"not evaluated: duplicate column name {', '.join(map(repr, duplicated))}"
        elif root_type in DATA_ERROR_TYPES:
            error = _text_error(kwargs, df) or f"could not be evaluated: {message}"
        else:
            crash = f"{cfg.type}({column or ''}): {root_type or 'unknown error'}: {message}"
            error = f"not evaluated: Great Expectations failed internally: {root_type}: {message}"
    examples: list[Any] = []
    for value in map(jsonable, res.get("partial_unexpected_list") or []):
        if value not in examples and len(examples) < MAX_EXAMPLES:
            examples.append(value)  # distinct: "-5.0, -12.3" says more than "-5.0, -5.0, -5.0"
    outcome = Outcome(
        check=cfg.type,
        column=column,
        success=bool(r.success) and not error,
        kwargs=jsonable({k: v for k, v in kwargs.items() if k != "batch_id"}),
        params=_params(cfg.type, kwargs),
        observed=jsonable(res.get("observed_value")),
        element_count=res.get("element_count"),
        unexpected_count=res.get("unexpected_count"),
        unexpected_percent=jsonable(res.get("unexpected_percent")),
        examples=examples,
        error=error,
        index=index if isinstance(index, int) else None,
    )
    if cfg.type in TYPE_CHECKS and not outcome.success and not error:
        _count_text_rows(outcome, kwargs, df)
    return outcome, crash


def _count_text_rows(outcome: Outcome, kwargs: dict[str, Any], df: pd.DataFrame) -> None:
    """A numeric column that arrived as text (extract keeps a column with any text value as all-text) fails GX's
    type check on every row; count the rows that are actually not numbers instead, e.g. 31 of 3036 rather
    than 3036 of 3036, and say what the rest are."""
    col = kwargs.get("column")
    kind = _numeric_kind(list(kwargs.get("type_list") or [kwargs.get("type_")]))
    if kind is None or col not in df.columns or not _is_text(df[col]) or outcome.unexpected_count is None:
        return
    bad = _not_numbers(df[col], kind)
    what = "whole numbers" if kind == "integer" else "numbers"
    wrong_type = outcome.unexpected_count
    non_null = int(df[col].notna().sum())
    if len(bad) == 0:
        outcome.unexpected_what = f"are {what} stored as text"
        return
    outcome.unexpected_count = len(bad)
    outcome.unexpected_percent = 100.0 * len(bad) / non_null if non_null else 0.0
    outcome.unexpected_what = f"are not {what}"
    outcome.examples = _distinct(bad)
    others = wrong_type - len(bad)
    if others > 0:
        outcome.note = f"the other {others} values are {what} stored as text"


def _text_error(kwargs: dict[str, Any], df: pd.DataFrame) -> str | None:
    """For a numeric expectation GX could not evaluate because its column holds text: say so, with the count."""
    col = kwargs.get("column")
    bounds = [kwargs.get(k) for k in ("min_value", "max_value", "value") if kwargs.get(k) is not None]
    numeric_bounds = bounds and all(isinstance(b, (int, float)) and not isinstance(b, bool) for b in bounds)
    if col not in df.columns or not numeric_bounds or not _is_text(df[col]):
        return None
    bad = _not_numbers(df[col], "number")
    if len(bad) == 0:
        return f"not evaluated: {col!r} holds numbers stored as text"
    examples = ", ".join(show(v) for v in _distinct(bad))
    return f"not evaluated: {col!r} holds text: {len(bad)} of {len(df)} rows are not numbers, e.g. {examples}"
