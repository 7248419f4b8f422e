"""Today's statistics against recent days: the checks a fixed suite cannot express.

Which columns are compared, and how:

* the compared columns are ``stats_columns`` if given (the pipeline YAML narrows them), else the suite's
  ``meta.ml_ops_stats_columns``, else every column present today and in every recent partition;
* the suite's label column and categorical columns are always compared as well, whatever narrows the list:
  label = ``meta.ml_ops_label_column``, else the one column whose allowed values are exactly {0, 1};
  categorical = ``meta.ml_ops_categorical_columns`` plus every column whose allowed-value set holds text
  (``always_compared_columns`` lists both; ml_ops.config reads the same two meta keys and value sets so that
  the step loads these columns of past days);
* per column: the null share (every column); the label rate (the label); values never seen before
  (categorical columns, and text columns of few distinct values when no list narrows the columns);
  the mean (other numeric columns).

The thresholds are in the docstrings of the check functions below.
"""

from __future__ import annotations

import math
import statistics
from typing import Any

import numpy as np
import pandas as pd

from ml_ops.pipeline.validate.gx import MAX_EXAMPLES, columns_of
from ml_ops.pipeline.validate.report import Outcome, jsonable, show

# Suite-level meta keys.
STATS_COLUMNS_META_KEY = "ml_ops_stats_columns"  # columns compared with recent days (the YAML can narrow them)
LABEL_META_KEY = "ml_ops_label_column"  # the label: its positive rate is compared with recent days
CATEGORICAL_META_KEY = "ml_ops_categorical_columns"  # values never seen in recent days are counted
# Floor for the day-to-day spread of a column mean, as a share of the recent centre: 2-3 near-identical days
# must not make the check flag ordinary noise (with 6 sigma this means a shift below 30% is never flagged).
MIN_RELATIVE_SPREAD = 0.05
ROW_COUNT_MIN_RATIO = 0.1
ROW_COUNT_MAX_RATIO = 10.0
# Unseen categories: a value in neither the suite's allowed-value set nor any recent partition fails when it is on
# more than MAX_UNSEEN_SHARE of today's rows, on at least MIN_UNSEEN_ROWS of them, and on too many to be a rare
# value the recent days missed by chance (ALPHA, below). Rows are not independent (one customer's or one
# fraudster's burst share a country), so the chance alone is not enough: in 648 simulated days (ml_ops.local.sim,
# 300 to 3000 rows a day) the largest such burst of a never-seen value was 7 rows.
MAX_UNSEEN_SHARE = 0.01
MIN_UNSEEN_ROWS = 20
# Without a declaration, a text column is treated as categorical when recent days hold at most this many
# distinct values and at most half as many distinct values as rows (ids and free text are not categories).
MAX_INFERRED_CATEGORIES = 100
# Chance below which a pattern against recent days is not coincidence (one false alarm in a million days):
# * today's n labelled rows hold k positives where the quietest recent day had rate p: chance P(X <= k) for
#   X ~ Binomial(n, p), (1 - p)^n for none at all;
# * a value never seen in the N recent rows is on k of today's n rows: if it were as common before as today,
#   all k + 0 of its rows landing on today has chance (n / (N + n))^k.
ALPHA = 1e-6


# ------------------------------------------------------------------------------------------- suite columns


def suite_value_sets(suite: dict[str, Any]) -> dict[str, list[Any]]:
    """Allowed values per column, from the suite's expect_column_values_to_be_in_set expectations."""
    sets: dict[str, list[Any]] = {}
    for exp in suite.get("expectations") or []:
        kwargs = exp.get("kwargs") or {}
        if exp.get("type") == "expect_column_values_to_be_in_set" and isinstance(kwargs.get("value_set"), list):
            for col in columns_of(kwargs):
                sets.setdefault(col, []).extend(kwargs["value_set"])
    return sets


def _is_number(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def suite_label_column(suite: dict[str, Any]) -> str | None:
    """meta.ml_ops_label_column, else the single column whose allowed values are exactly {0, 1}."""
    declared = (suite.get("meta") or {}).get(LABEL_META_KEY)
    if isinstance(declared, str) and declared:
        return declared
    binary = [c for c, values in suite_value_sets(suite).items() if len(values) == 2 and set(values) == {0, 1}]
    return binary[0] if len(binary) == 1 else None


def suite_categorical_columns(suite: dict[str, Any]) -> list[str]:
    """meta.ml_ops_categorical_columns plus every column whose allowed-value set holds text (not the label)."""
    declared = (suite.get("meta") or {}).get(CATEGORICAL_META_KEY) or []
    from_sets = [c for c, values in suite_value_sets(suite).items() if any(not _is_number(v) for v in values)]
    label = suite_label_column(suite)
    return [c for c in dict.fromkeys([*declared, *from_sets]) if c != label]


def always_compared_columns(suite: dict[str, Any]) -> list[str]:
    """Columns compared with recent days whatever `stats_columns` says: the label and the categorical columns."""
    label = suite_label_column(suite)
    return list(dict.fromkeys([*([label] if label else []), *suite_categorical_columns(suite)]))


# ---------------------------------------------------------------------------------------------------- checks


def stats_checks(
    df: pd.DataFrame,
    history: list[pd.DataFrame],
    suite: dict[str, Any],
    stats_columns: list[str] | None,
    max_sigma: float,
    max_null_increase: float,
    max_unseen_share: float,
    notes: list[str],
) -> tuple[list[Outcome], dict[str, Any]]:
    """Compare today with the recent partitions in `history` (module docstring: which columns, which checks)."""
    outcomes: list[Outcome] = []
    column_stats: dict[str, Any] = {}
    history = [h for h in history if isinstance(h, pd.DataFrame)]
    if not history:
        notes.append("statistics check skipped: no history partitions given")
        return outcomes, column_stats

    n_today = len(df)
    row_check = _row_count_check(n_today, history, notes)
    if row_check:
        outcomes.append(row_check)

    explicit = list(stats_columns) if stats_columns else None
    listed = explicit or (suite.get("meta") or {}).get(STATS_COLUMNS_META_KEY) or None
    infer_categories = listed is None
    if listed is None:
        listed = [c for c in df.columns if all(c in h.columns for h in history)]
    label = suite_label_column(suite)
    categorical = set(suite_categorical_columns(suite))
    value_sets = suite_value_sets(suite)

    filled = [h for h in history if len(h)]
    duplicated = set(df.columns[df.columns.duplicated()])
    for col in dict.fromkeys([*listed, *always_compared_columns(suite)]):
        if col in duplicated or any(col in h.columns[h.columns.duplicated()] for h in filled):
            notes.append(f"statistics of {col!r} skipped: duplicate column name")
            continue
        if col not in df.columns:
            if explicit and col in explicit:
                outcomes.append(
                    Outcome(
                        check="stats_column_present",
                        column=col,
                        success=False,
                        source="stats",
                        note=f"stats column {col!r} is missing today",
                    )
                )
            continue  # otherwise the suite's expect_column_to_exist reports it
        hist = [h[col] for h in filled if col in h.columns]
        if not hist:
            notes.append(f"statistics of {col!r} skipped: column not in any non-empty recent partition")
            continue
        col_stats: dict[str, Any] = {}
        column_stats[col] = col_stats
        if not n_today:
            notes.append(f"statistics of {col!r} skipped: no rows today")
            continue
        counts = None  # categorical columns: value counts, one hashing pass per series, give nulls and values
        if col != label and (col in categorical or (infer_categories and _is_text(hist))):
            try:
                counts = _categorical_counts(df[col], hist, declared=col in categorical)
            except TypeError:  # unhashable values (lists, dicts): not a categorical column
                notes.append(f"values of {col!r} not compared with recent days: they cannot be counted")
        if counts:
            today_share = counts[0][1] / n_today
            recent_shares = [nulls / len(s) for (_, nulls), s in zip(counts[1:], hist, strict=True)]
        else:
            today_share, recent_shares = float(df[col].isna().mean()), [float(s.isna().mean()) for s in hist]
        outcomes.append(_null_share_check(col, today_share, recent_shares, max_null_increase, col_stats))
        check: Outcome | None = None
        if col == label:
            check = _label_rate_check(col, df[col], hist, col_stats, notes)
        elif counts:
            check = _unseen_values_check(col, counts, value_sets.get(col, []), max_unseen_share, col_stats)
        elif all(pd.api.types.is_numeric_dtype(s) for s in hist):
            check = _mean_check(col, df[col], hist, max_sigma, col_stats, notes)
        if check:
            outcomes.append(check)
    return outcomes, column_stats


def _row_count_check(n_today: int, history: list[pd.DataFrame], notes: list[str]) -> Outcome | None:
    """Fail below 10% or above 10x the median recent row count."""
    recent_rows = float(statistics.median(len(h) for h in history))
    if recent_rows <= 0:
        notes.append("row count check skipped: recent partitions are all empty")
        return None
    lo, hi = ROW_COUNT_MIN_RATIO * recent_rows, ROW_COUNT_MAX_RATIO * recent_rows
    ok = lo <= n_today <= hi
    return Outcome(
        check="stats_row_count_vs_recent",
        column=None,
        success=ok,
        source="stats",
        params=f"between {lo:g} and {hi:g} (10% .. 10x of median {recent_rows:g} over {len(history)} days)",
        observed=n_today,
        note=f"{n_today} rows vs recent median {recent_rows:g}" + ("" if ok else " (outside 10% .. 10x)"),
    )


def _null_share_check(
    col: str, share: float, recent_shares: list[float], max_increase: float, col_stats: dict[str, Any]
) -> Outcome:
    """Fail if today's null share exceeds the recent median by more than max_increase (absolute: 0.2 = 20 points)."""
    recent = float(statistics.median(recent_shares))
    col_stats.update(null_share=share, recent_null_share=recent)
    ok = share - recent <= max_increase
    return Outcome(
        check="stats_null_share_vs_recent",
        column=col,
        success=ok,
        source="stats",
        params=f"at most +{max_increase:.0%} over recent median {recent:.1%}",
        observed=round(share, 6),
        note=f"null share {share:.1%} vs recent median {recent:.1%}"
        + ("" if ok else f" (increase above {max_increase:.0%})"),
    )


def _as_numbers(s: pd.Series) -> pd.Series:
    if pd.api.types.is_bool_dtype(s):
        return s.astype(float)
    if pd.api.types.is_numeric_dtype(s):
        return s
    return pd.to_numeric(s, errors="coerce")  # strings in a numeric column: ignore them for the mean


def _shift(values: pd.Series, day_values: list[pd.Series]) -> tuple[float, float, float, float]:
    """(today's mean, recent centre, spread, signed shift in spreads).

    centre = median of recent daily means; spread = the largest of the standard deviation of those daily means,
    today's standard error (typical within-day std / sqrt(n today)) and 5% of |centre|. The floors stop 2-3
    near-identical days from making the check flag ordinary noise.
    """
    means = [float(v.mean()) for v in day_values]
    centre = float(statistics.median(means))
    day_spread = float(np.std(means, ddof=1)) if len(means) > 1 else 0.0
    within_std = float(statistics.median(float(v.std(ddof=0)) for v in day_values))
    std_error = within_std / math.sqrt(len(values))
    spread = max(day_spread, std_error, MIN_RELATIVE_SPREAD * abs(centre), 1e-12)
    mean = float(values.mean())
    return mean, centre, spread, (mean - centre) / spread


def _mean_check(
    col: str, today: pd.Series, hist: list[pd.Series], max_sigma: float, col_stats: dict[str, Any], notes: list[str]
) -> Outcome | None:
    """Fail if |today's mean - recent centre| > max_sigma * spread (see `_shift`). Non-numeric values today are
    ignored for the mean (they show up as a higher null share and in the GX type expectations)."""
    values = _as_numbers(today).dropna()
    day_values = [v for v in (_as_numbers(s).dropna() for s in hist) if len(v)]
    if not len(values) or not day_values:
        notes.append(
            f"mean of {col!r} not compared: no numeric values "
            + ("today" if not len(values) else "in recent partitions")
        )
        return None
    mean, centre, spread, shift = _shift(values, day_values)
    col_stats.update(mean=mean, recent_mean=centre, spread=spread, shift_sigma=round(abs(shift), 3))
    ok = abs(shift) <= max_sigma
    return Outcome(
        check="stats_mean_vs_recent",
        column=col,
        success=ok,
        source="stats",
        params=f"within {max_sigma:g} sigma of recent median {centre:.4g} (sigma {spread:.4g})",
        observed=round(mean, 6),
        note=f"mean {mean:.4g} vs recent {centre:.4g}: {abs(shift):.1f} sigma"
        + ("" if ok else f" (more than {max_sigma:g})"),
    )


def _log_chance_at_most(k: int, n: int, p: float) -> float:
    """log P(X <= k) for X ~ Binomial(n, p), bounded from above (Chernoff: -n KL(k/n || p)); exact for k = 0.
    An upper bound, so a test against it errs towards passing. 0.0 when k/n >= p."""
    a = k / n
    if a >= p:
        return 0.0
    kl = (a * math.log(a / p) if a > 0 else 0.0) + (1 - a) * math.log((1 - a) / (1 - p))
    return -n * kl


def _label_rate_check(
    col: str, today: pd.Series, hist: list[pd.Series], col_stats: dict[str, Any], notes: list[str]
) -> Outcome | None:
    """The label's positive rate against recent days: labels lost on the way in. Fail when today has fewer
    positives than the quietest recent day makes plausible: P(X <= today's count) < ALPHA for
    X ~ Binomial(today's labelled rows, that day's rate). No positive at all on a day of n rows at a recent
    rate p has chance (1 - p)^n: 3000 rows at 2% fail, 300 rows at 2% (0.2%) do not. Also fail when every
    row is positive and the most positive recent day makes that implausible.

    The quietest day, not the average, because positives come in bursts (a fraud wave): a quiet day after a
    wave is not a defect. For the same reason a rate above recent days passes (drift monitoring reports it).
    Positive = 1 for a 0/1 (or boolean) label, else the rarer of two values.
    """
    recent = pd.concat([s.dropna() for s in hist], ignore_index=True)
    classes = pd.unique(recent)
    if len(classes) == 0 or len(classes) > 2:
        notes.append(f"label rate of {col!r} not compared: recent days hold {len(classes)} label values, not 2")
        return None
    plain = {jsonable(v) for v in classes}
    if all(isinstance(v, (int, float)) for v in plain) and plain <= {0, 1}:  # bool is an int
        positive: Any = 1

        def indicator(s: pd.Series) -> pd.Series:
            return (_as_numbers(s).dropna() == 1).astype(float)
    else:
        counts = recent.value_counts()
        positive = min(counts.index, key=lambda v: (counts[v], str(v)))

        def indicator(s: pd.Series) -> pd.Series:
            return (s.dropna() == positive).astype(float)

    values = indicator(today)
    days_values = [v for v in map(indicator, hist) if len(v)]
    if not len(values) or not days_values:
        notes.append(f"label rate of {col!r} not compared: no labels " + ("today" if not len(values) else "recently"))
        return None
    n, positives = len(values), int(values.sum())
    day_rates = [float(v.mean()) for v in days_values]
    rate, centre = positives / n, float(statistics.median(day_rates))
    # The quietest day for positives, the most positive one for negatives; never exactly 0 or 1, since recent
    # days that showed no positive (or no negative) do not prove that it cannot happen (one pseudo-row).
    pseudo = 1 / (sum(len(v) for v in days_values) + 1)
    low, high = min(min(day_rates), 1 - pseudo), max(max(day_rates), pseudo)
    col_stats.update(
        label_rate=rate, recent_label_rate=centre, recent_label_rate_range=[min(day_rates), max(day_rates)]
    )
    what = f"{col} = {show(positive)}"
    days = "the last day" if len(day_rates) == 1 else f"the quietest of the last {len(day_rates)} days"
    problem = None
    if _log_chance_at_most(positives, n, low) < math.log(ALPHA):
        problem = (
            f"{positives} of {n} labelled rows have {what} ({rate:.2%}); {days} had {min(day_rates):.2%} "
            f"(~{n * low:.0f} expected): labels lost on the way in?"
        )
    elif positives == n and n * math.log(high) < math.log(ALPHA):
        problem = f"every one of {n} labelled rows has {what}; recent days had at most {max(day_rates):.2%}"
    note = problem or (
        f"rate of {what} {rate:.2%} vs recent {centre:.2%} (range {min(day_rates):.2%} .. {max(day_rates):.2%})"
    )
    return Outcome(
        check="stats_label_rate_vs_recent",
        column=col,
        success=problem is None,
        source="stats",
        params=f"rate of {what} not implausibly below {low:.4g}, the quietest recent day (P >= {ALPHA:g})",
        observed=round(rate, 6),
        element_count=n,
        note=note,
    )


def _is_text(hist: list[pd.Series]) -> bool:
    return all(s.dtype == object or isinstance(s.dtype, (pd.StringDtype, pd.CategoricalDtype)) for s in hist)


def _counts(s: pd.Series) -> tuple[pd.Series, int]:
    """(counts of the non-null values, number of nulls), in one hashing pass."""
    counts = s.value_counts(dropna=False, sort=False)
    null = counts.index.isna()
    return counts[~null], int(counts[null].sum())


def _categorical_counts(
    today: pd.Series, hist: list[pd.Series], *, declared: bool
) -> list[tuple[pd.Series, int]] | None:
    """Value counts of today and each recent day, or None if an undeclared column does not look categorical:
    a text column with at most MAX_INFERRED_CATEGORIES distinct recent values and at most half as many distinct
    values as rows (ids and free text are not categories)."""
    recent: list[tuple[pd.Series, int]] = []
    distinct: set[Any] = set()
    rows = 0
    for s in hist:
        counts, nulls = _counts(s)
        recent.append((counts, nulls))
        distinct.update(counts.index)
        rows += len(s) - nulls
        if not declared and len(distinct) > MAX_INFERRED_CATEGORIES:
            return None
    if not declared and not 0 < len(distinct) <= rows / 2:
        return None
    return [_counts(today), *recent]


def _unseen_values_check(
    col: str,
    counts: list[tuple[pd.Series, int]],
    value_set: list[Any],
    max_share: float,
    col_stats: dict[str, Any],
) -> Outcome:
    """Values in neither the suite's allowed-value set nor any recent partition. Fail when one such value is on
    more than max_share of today's rows, on at least MIN_UNSEEN_ROWS, and on too many to be chance (ALPHA): a new
    code on a sizeable share of the day, not the long tail of rare values a few recent days happen not to show.

    counts: (value counts, nulls) of today, then of each recent day (`_categorical_counts`).
    """
    (today, nulls), recent = counts[0], counts[1:]
    known: set[Any] = set(value_set)
    for day, _ in recent:
        known.update(day.index)
    unseen = today[~today.index.isin(list(known))]
    n_rows, k = int(today.sum()) + nulls, int(unseen.sum())
    n_values, n_recent = int(today.sum()), sum(int(day.sum()) for day, _ in recent)
    log_q = math.log(n_values / (n_values + n_recent)) if n_values else 0.0
    # Most frequent first; ties by text, so that the same data always shows the same examples.
    ordered = sorted(unseen.index, key=lambda v: (-unseen[v], str(v)))
    flagged = [
        v
        for v in ordered
        if unseen[v] > max_share * n_rows and unseen[v] >= MIN_UNSEEN_ROWS and unseen[v] * log_q < math.log(ALPHA)
    ]
    share = k / n_rows if n_rows else 0.0
    col_stats.update(unseen_share=share, known_values=len(known))
    examples = [jsonable(v) for v in ordered[:MAX_EXAMPLES]]
    days = "the last day" if len(recent) == 1 else f"the last {len(recent)} days"
    source = f"the suite's value set or {days}" if value_set else days
    if flagged:
        note = (
            "; ".join(f"{show(v)} on {unseen[v]} of {n_rows} rows ({unseen[v] / n_rows:.1%})" for v in flagged[:5])
            + f": never seen in {source} ({n_recent} values; more than {max_share:.0%} of the day, not chance). "
            f"If expected, add to an expect_column_values_to_be_in_set value set for {col!r} in the suite"
        )
    elif k:
        note = (
            f"{k} of {n_rows} rows ({share:.1%}) hold {len(unseen)} value(s) never seen in {source}, e.g. "
            + ", ".join(show(v) for v in examples)
            + f" (none on more than {max_share:.0%} of the day beyond chance)"
        )
    else:
        note = f"no values outside the {len(known)} of {source}"
    return Outcome(
        check="stats_unseen_values_vs_recent",
        column=col,
        success=not flagged,
        source="stats",
        params=f"no unseen value on more than {max_share:.0%} and {MIN_UNSEEN_ROWS} rows beyond chance "
        f"(P < {ALPHA:g}); {len(known)} known values ({source})",
        observed=round(share, 6),
        element_count=n_rows,
        unexpected_count=k,
        unexpected_percent=round(100 * share, 6),
        examples=[jsonable(v) for v in flagged[:MAX_EXAMPLES]] or examples,
        note=note,
    )
