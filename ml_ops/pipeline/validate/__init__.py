"""Data validation stage: a Great Expectations 1.x suite plus a check of today's statistics against recent days.

Airflow-free: DataFrame + suite dict in, `ValidationResult` out.

* `gx`: load and check a suite, run it (`SuiteError` for a broken suite file, `ValidationInternalError` when GX
  fails for a reason the data does not explain);
* `stats`: today's row count, null shares, means, label rate and categorical values against recent days;
* `report`: the result model, its one-line-per-failure message, result.json and report.html.

Bad *data* never raises here: a missing column, wrong dtypes, an all-null column or an empty frame all come back
as failed checks, and `raise_for_failures` turns them into `DataValidationError` (failed without retry). A
validation that could not run raises `ValidationInternalError` (retried like any infrastructure error).
"""

from __future__ import annotations

import logging
import time
from typing import Any

import pandas as pd

from ml_ops.pipeline.validate.gx import (
    INDEX_META_KEY,
    MAX_EXAMPLES,
    RESULT_FORMAT,
    SuiteError,
    ValidationInternalError,
    check_suite,
    frame_checks,
    load_suite,
    run_suite,
)
from ml_ops.pipeline.validate.report import (
    DataValidationError,
    Failure,
    Outcome,
    ValidationResult,
    raise_for_failures,
)
from ml_ops.pipeline.validate.stats import (
    CATEGORICAL_META_KEY,
    LABEL_META_KEY,
    MAX_UNSEEN_SHARE,
    MIN_RELATIVE_SPREAD,
    ROW_COUNT_MAX_RATIO,
    ROW_COUNT_MIN_RATIO,
    STATS_COLUMNS_META_KEY,
    always_compared_columns,
    stats_checks,
)

__all__ = [
    "CATEGORICAL_META_KEY",
    "INDEX_META_KEY",
    "LABEL_META_KEY",
    "MAX_EXAMPLES",
    "MAX_UNSEEN_SHARE",
    "MIN_RELATIVE_SPREAD",
    "RESULT_FORMAT",
    "ROW_COUNT_MAX_RATIO",
    "ROW_COUNT_MIN_RATIO",
    "STATS_COLUMNS_META_KEY",
    "DataValidationError",
    "Failure",
    "Outcome",
    "SuiteError",
    "ValidationInternalError",
    "ValidationResult",
    "always_compared_columns",
    "load_suite",
    "raise_for_failures",
    "validate_frame",
]

log = logging.getLogger(__name__)


def validate_frame(
    df: pd.DataFrame,
    suite: dict[str, Any],
    *,
    history: list[pd.DataFrame] | None = None,
    stats_columns: list[str] | None = None,
    max_mean_shift_sigma: float = 6.0,
    max_null_share_increase: float = 0.2,
    max_unseen_share: float = MAX_UNSEEN_SHARE,
    label: str | None = None,
) -> ValidationResult:
    """Run the GX suite on df, then compare today's statistics with `history` (previous days' raw frames).

    stats_columns (None or empty: not narrowed) defaults to the suite's meta["ml_ops_stats_columns"], else every
    column present today and in history; the suite's label and categorical columns are compared in any case.
    See `ml_ops.pipeline.validate.stats` for the rules. Raises `ValidationInternalError` if GX itself fails.
    """
    check_suite(suite, f"suite {suite.get('name', '?') if isinstance(suite, dict) else '?'}")
    notes: list[str] = []
    t0 = time.perf_counter()
    outcomes = frame_checks(df) + run_suite(df, suite)
    t1 = time.perf_counter()
    stat_outcomes, column_stats = stats_checks(
        df,
        history or [],
        suite,
        stats_columns,
        max_mean_shift_sigma,
        max_null_share_increase,
        max_unseen_share,
        notes,
    )
    t2 = time.perf_counter()
    outcomes += stat_outcomes
    log.info("validated %d rows: suite %.2f s, statistics %.2f s", len(df), t1 - t0, t2 - t1)

    failures = [o.to_failure() for o in outcomes if not o.success]
    n_exp = sum(o.source == "expectation" for o in outcomes)
    statistics_ = {
        "row_count": len(df),
        "column_count": len(df.columns),
        "expectations_evaluated": n_exp,
        "expectations_failed": sum(o.source == "expectation" and not o.success for o in outcomes),
        "stats_checks_evaluated": len(stat_outcomes),
        "stats_checks_failed": sum(not o.success for o in stat_outcomes),
        "history_partitions": len(history or []),
        # Timings, for callers and benchmarks only: result.json and report.html leave out every "*_seconds".
        "gx_seconds": round(t1 - t0, 3),
        "stats_seconds": round(t2 - t1, 3),
        "result_format": RESULT_FORMAT["result_format"],
        "columns": column_stats,
    }
    return ValidationResult(
        success=not failures,
        failures=failures,
        statistics=statistics_,
        outcomes=outcomes,
        notes=notes,
        suite_name=suite["name"],
        label=label,
    )
