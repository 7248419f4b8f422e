"""The validation result model and its renderings: one line per failure for alerts, result.json, report.html.

Both stored renderings are functions of the data only: re-validating the same partition writes byte-identical
objects (timings stay in `ValidationResult.statistics` for callers, never in a file).
"""

from __future__ import annotations

import datetime as _dt
import html
import math
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import pandas as pd


class DataValidationError(Exception):
    """The data failed validation (raised by `raise_for_failures`); carries the full `ValidationResult`.

    Bad data: the operator fails the task without retry. A validation that could not run at all raises
    `ValidationInternalError` instead, which is retried like any infrastructure error.
    """

    def __init__(self, result: ValidationResult, label: str | None = None):
        self.result = result
        super().__init__(result.message(label))


@dataclass
class Failure:
    """One failed expectation or statistics check, in the words a person needs to act on it."""

    expectation_type: str
    column: str | None
    summary: str
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    params: str = ""

    def line(self) -> str:
        args = ", ".join(a for a in (self.column or "", self.params) if a)
        return f"{self.expectation_type}({args}): {self.summary}"


@dataclass
class Outcome:
    """Outcome of one check, passed or failed. source is "expectation" (GX) or "stats" (recent-days check)."""

    check: str
    column: str | None
    success: bool
    source: str = "expectation"
    params: str = ""
    kwargs: dict[str, Any] = field(default_factory=dict)
    observed: Any = None
    element_count: int | None = None
    unexpected_count: int | None = None
    unexpected_percent: float | None = None
    examples: list[Any] = field(default_factory=list)
    error: str | None = None
    note: str | None = None
    index: int | None = None  # position in the suite file, for expectations
    unexpected_what: str | None = None  # what the unexpected rows are, e.g. "are not numbers"

    def summary(self) -> str:
        if self.error:
            return self.error
        if self.note and self.source == "stats":
            return self.note
        if self.unexpected_count is not None and self.element_count is not None:
            pct = 100.0 * self.unexpected_count / self.element_count if self.element_count else 0.0
            text = f"{self.unexpected_count} of {self.element_count} rows ({pct:.1f}%)"
            if self.check == "expect_column_values_to_not_be_null":
                return text + " are null"
            if self.unexpected_what:
                text += " " + self.unexpected_what
            if self.examples:
                text += ", e.g. " + ", ".join(show(v) for v in self.examples)
            return text + (f"; {self.note}" if self.note else "")
        if self.check == "expect_column_to_exist" and not self.success:
            return f"column {self.column!r} is missing"
        if self.observed is not None:
            return f"observed {show(self.observed)}"
        return "passed" if self.success else "failed"

    def to_failure(self) -> Failure:
        return Failure(
            self.check,
            self.column,
            self.summary(),
            self.unexpected_count,
            self.unexpected_percent,
            list(self.examples),
            self.params,
        )


@dataclass
class ValidationResult:
    success: bool
    failures: list[Failure]
    statistics: dict[str, Any]
    outcomes: list[Outcome] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    suite_name: str = ""
    label: str | None = None

    def _counts(self, source: str) -> tuple[int, int]:
        mine = [o for o in self.outcomes if o.source == source]
        return sum(not o.success for o in mine), len(mine)

    def stored_statistics(self) -> dict[str, Any]:
        """`statistics` without the timings (`*_seconds`): what result.json and report.html show."""
        return {k: v for k, v in self.statistics.items() if not k.endswith("_seconds")}

    def message(self, label: str | None = None) -> str:
        """One line per failed check, e.g. ' - expect_column_values_to_be_between(amount, ...): 37 of 3000 rows'."""
        label = label or self.label or self.suite_name
        bad_e, n_e = self._counts("expectation")
        bad_s, n_s = self._counts("stats")
        counts = f"{bad_e} of {n_e} expectations"
        if n_s:
            counts += f" and {bad_s} of {n_s} statistics checks"
        if self.success:
            head = f"Validation passed for {label}: {n_e} expectations"
            head += f" and {n_s} statistics checks passed" if n_s else " passed"
            return "\n".join([head, *(f" (note: {n})" for n in self.notes)])
        return "\n".join(
            [f"Validation failed for {label}: {counts} failed", *(f" - {f.line()}" for f in self.failures)]
        )

    def to_json(self) -> dict[str, Any]:
        return jsonable(
            {
                "success": self.success,
                "suite": self.suite_name,
                "label": self.label,
                # Timings stay out: re-validating the same data must write the same object.
                "statistics": self.stored_statistics(),
                "notes": self.notes,
                "failures": [asdict(f) | {"line": f.line()} for f in self.failures],
                "outcomes": [asdict(o) | {"summary": o.summary()} for o in self.outcomes],
            }
        )

    def to_html(self, label: str | None = None) -> str:
        """A self-contained page (inline CSS, no scripts) to open in a browser or attach to an alert.

        Deterministic: the same result renders to the same bytes (no timings, no clock).
        """
        label = label or self.label or self.suite_name
        e = html.escape
        status = "PASSED" if self.success else "FAILED"
        rows = []
        for o in self.outcomes:
            cls = "ok" if o.success else "bad"
            observed = (
                o.observed
                if o.observed is not None
                else (f"{o.unexpected_count} unexpected of {o.element_count}" if o.unexpected_count is not None else "")
            )
            rows.append(
                f'<tr class="{cls}"><td>{"pass" if o.success else "FAIL"}</td><td>{e(o.source)}</td>'
                f"<td><code>{e(o.check)}</code></td><td>{e(str(o.column or ''))}</td><td>{e(o.params)}</td>"
                f"<td>{e(observed if isinstance(observed, str) else show(observed))}</td>"
                f"<td>{e(', '.join(show(v) for v in o.examples))}</td><td>{e(o.summary())}</td></tr>"
            )
        stats = "".join(
            f"<tr><th>{e(str(k))}</th><td>{e(show(v))}</td></tr>"
            for k, v in self.stored_statistics().items()
            if not isinstance(v, dict)
        )
        notes = "".join(f"<li>{e(n)}</li>" for n in self.notes)
        failures = "".join(f"<li><code>{e(f.line())}</code></li>" for f in self.failures)
        title = e(f"Data validation: {label}")
        return f"""<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>{title}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: left; vertical-align: top; font-size: 14px; }}
tr.bad td {{ background: #fde2e2; }}
tr.ok td {{ background: #fff; }}
.status-PASSED {{ color: #11702c; }} .status-FAILED {{ color: #b00020; }}
code {{ font-size: 13px; }}
</style></head>
<body>
<h1>{title}</h1>
<h2 class="status-{status}">{status}</h2>
<p>Suite <code>{e(self.suite_name)}</code>: {e(self.message(label).splitlines()[0])}</p>
{f"<h3>Failures</h3><ul>{failures}</ul>" if failures else ""}
{f"<h3>Notes</h3><ul>{notes}</ul>" if notes else ""}
<h3>Statistics</h3>
<table>{stats}</table>
<h3>All checks</h3>
<table>
<tr><th>Result</th><th>Source</th><th>Check</th><th>Column</th><th>Parameters</th><th>Observed</th>
<th>Example bad values</th><th>Summary</th></tr>
{"".join(rows)}
</table>
</body>
</html>
"""


def raise_for_failures(result: ValidationResult, label: str | None = None) -> None:
    if not result.success:
        raise DataValidationError(result, label)


def jsonable(v: Any) -> Any:
    """Plain JSON types: numpy scalars, timestamps, NaN/NaT (-> None), tuples from pair expectations."""
    if isinstance(v, dict):
        return {str(k): jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple, set)):
        return [jsonable(x) for x in v]
    if v is None or isinstance(v, (bool, str)):
        return v
    if isinstance(v, (np.bool_,)):
        return bool(v)
    if isinstance(v, (int, np.integer)):
        return int(v)
    if isinstance(v, (float, np.floating)):
        return None if math.isnan(v) or math.isinf(v) else float(v)
    if isinstance(v, (pd.Timestamp, _dt.datetime, _dt.date, np.datetime64)):
        ts = pd.Timestamp(v)
        return None if pd.isna(ts) else ts.isoformat()
    if isinstance(v, (pd.Timedelta, np.timedelta64)):
        return None if pd.isna(v) else str(pd.Timedelta(v))
    try:
        if pd.isna(v):
            return None
    except (TypeError, ValueError):
        pass
    return str(v)


def show(v: Any) -> str:
    """Compact text for an example value: strings quoted, numbers as-is, missing as None."""
    v = jsonable(v)
    if isinstance(v, str):
        return repr(v)
    if isinstance(v, float):
        return str(round(v, 6))  # -5.0, 12.34; not 15 digits of float noise
    if isinstance(v, list):
        return "(" + ", ".join(show(x) for x in v) + ")"
    return str(v)
