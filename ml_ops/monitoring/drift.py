"""A calibrated drift decision, with Evidently 0.7 as the report engine.

Why not Evidently's defaults: above 1,000 reference rows they flag a numeric column whose normalised
Wasserstein distance passes 0.1 whatever the sample size, and a p-value test alone flags harmless noise
once n is large. Our rule, per column, on samples of at most ``max_sample_rows`` rows per side:

* numeric (and the model score): two-sample Kolmogorov-Smirnov p-value, effect = Wasserstein-1 distance
  divided by the reference's standard deviation (exactly Evidently's "wasserstein" score);
* categorical: chi-square test of homogeneity on the 2 x k table of counts (both samples are random,
  unlike Evidently's goodness-of-fit chi-square, which treats the reference shares as exact and so
  alarms on reference-sampling noise when the current sample is much larger), effect = total
  variation distance of the category shares. Missing values are a category; categories too rare for
  the chi-square approximation are pooled.

A column drifts when its p-value is rejected by Holm's step-down correction over all tested columns at
``false_alarm_rate`` AND its effect is at least ``min_effect``. The dataset alarms when any column
drifts, so a day without drift alarms with probability at most ``false_alarm_rate`` (the family-wise
error rate), at any row count; the effect floor keeps real-but-tiny differences at 1M rows quiet.

One source of truth: the same statistics run inside Evidently as registered stat tests, with the Holm
threshold as each column's threshold, so the HTML report shows our verdicts; ``drift_report`` checks
that Evidently's verdicts equal ours and records both.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Protocol

import numpy as np
import pandas as pd

from ml_ops.jsonable import to_jsonable as _jsonable

MISSING = "__missing__"
RARE = "__rare__"
MIN_EXPECTED = 5.0  # chi-square approximation needs about 5 expected counts per cell
NORM_FLOOR = 1e-3  # Evidently's floor on the reference std when normalising Wasserstein


class DriftSettings(Protocol):
    """What the decision needs from ``ml_ops.config.Monitoring`` (any object with these fields)."""

    false_alarm_rate: float
    min_effect: float
    max_sample_rows: int


@dataclass(frozen=True)
class Settings:
    false_alarm_rate: float = 0.05
    min_effect: float = 0.1
    max_sample_rows: int = 50_000


@dataclass
class ColumnDrift:
    name: str
    method: str  # "ks" | "chi2" | "none" (column could not be tested)
    statistic: float  # KS D or chi-square statistic
    p_value: float
    effect: float  # Wasserstein / std_ref or total variation distance
    threshold: float  # Holm p-value threshold applied to this column
    drifted: bool
    min_effect: float = 0.0
    kind: str = "numeric"
    n_reference: int = 0  # values tested (after sampling, numeric NaN dropped)
    n_current: int = 0
    evidently_drifted: bool | None = None  # Evidently's verdict for the same column
    note: str = ""


@dataclass
class DriftResult:
    alarm: bool
    columns: list[ColumnDrift]
    n_reference: int  # rows before sampling
    n_current: int
    html: str = ""
    json: dict = field(default_factory=dict)  # Evidently snapshot (metrics + tests)
    alpha: float = 0.05
    min_effect: float = 0.1
    sampled_reference: int = 0
    sampled_current: int = 0
    evidently_agrees: bool | None = None

    @property
    def drifted_columns(self) -> list[str]:
        return [c.name for c in self.columns if c.drifted]

    @property
    def share_drifted(self) -> float:
        tested = [c for c in self.columns if c.method != "none"]
        return sum(c.drifted for c in tested) / len(tested) if tested else 0.0

    def to_dict(self) -> dict:
        """The decision without the HTML (for result.json / XCom / MLflow)."""
        return {
            "alarm": self.alarm,
            "drifted_columns": self.drifted_columns,
            "share_drifted": self.share_drifted,
            "alpha": self.alpha,
            "min_effect": self.min_effect,
            "n_reference": self.n_reference,
            "n_current": self.n_current,
            "sampled_reference": self.sampled_reference,
            "sampled_current": self.sampled_current,
            "evidently_agrees": self.evidently_agrees,
            "columns": [_finite(asdict(c)) for c in self.columns],
        }


def _finite(d: dict) -> dict:
    # JSON has no NaN/inf; None says "not computed"
    return {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in d.items()}


# --------------------------------------------------------------------------- per-column statistics


def _numeric_values(s: pd.Series) -> np.ndarray:
    a = pd.to_numeric(s, errors="coerce").to_numpy(dtype="float64", na_value=np.nan)
    return a[np.isfinite(a)]


def _categorical_values(s: pd.Series) -> pd.Series:
    """Category labels as the model sees them (ml_ops.scoring.category_text: 3, 3.0 and "3" are one
    category, so an integer column with a null on one side does not "drift" from "3" to "3.0")."""
    from ml_ops.scoring import category_text

    text = pd.Series(category_text(s), index=s.index, dtype=object)
    return text.where(text.notna(), MISSING).astype(str)


def numeric_test(ref: np.ndarray, cur: np.ndarray) -> tuple[float, float, float]:
    """(KS statistic, p-value, Wasserstein / std_ref) of two finite 1-D samples.

    One sort per side gives both: D = max |F_ref - F_cur| and W1 = integral of |F_ref - F_cur| over the
    pooled values (what scipy's ks_2samp and wasserstein_distance compute, each with its own sorts).
    The p-value is scipy's two-sided asymptotic one, kstwo.sf(D, round(n*m/(n+m))); ties (integer
    columns) make it conservative, never liberal."""
    from scipy.stats import kstwo

    n, m = len(ref), len(cur)
    if n == 0 or m == 0:
        return math.nan, math.nan, math.nan
    a, b = np.sort(ref), np.sort(cur)
    pooled = np.concatenate([a, b])
    pooled.sort(kind="mergesort")
    fa = np.searchsorted(a, pooled, side="right") / n
    fb = np.searchsorted(b, pooled, side="right") / m
    gap = np.abs(fa - fb)
    d = float(gap.max())
    p = float(np.clip(kstwo.sf(d, round(n * m / (n + m))), 0.0, 1.0))
    w1 = float(np.sum(gap[:-1] * np.diff(pooled)))
    return d, p, w1 / max(float(np.std(a)), NORM_FLOOR)


def categorical_test(ref: pd.Series, cur: pd.Series) -> tuple[float, float, float]:
    """(chi-square statistic, p-value, total variation distance) of two category samples."""
    from scipy import stats

    if len(ref) == 0 or len(cur) == 0:
        return math.nan, math.nan, math.nan
    table = pd.concat([ref.value_counts(), cur.value_counts()], axis=1).fillna(0).to_numpy().T  # 2 x k
    table = _pool_rare(table)
    shares = table / table.sum(axis=1, keepdims=True)
    tvd = 0.5 * float(np.abs(shares[0] - shares[1]).sum())
    if table.shape[1] < 2:
        return 0.0, 1.0, tvd
    chi2, p, _, _ = stats.chi2_contingency(table, correction=False)
    return float(chi2), float(p), tvd


def _pool_rare(table: np.ndarray) -> np.ndarray:
    """Merge categories whose smallest expected count is below MIN_EXPECTED into one column."""
    n = table.sum()
    expected_min = table.sum(axis=0) * table.sum(axis=1).min() / n
    rare = expected_min < MIN_EXPECTED
    if rare.sum() <= 1:
        return table
    return np.column_stack([table[:, ~rare], table[:, rare].sum(axis=1)])


def holm_threshold(p_values: Sequence[float], alpha: float) -> float:
    """Raw p-value threshold equivalent to Holm's step-down procedure (Holm 1979, Scand. J. Stat. 6:65-70).

    With k hypotheses rejected, every rejected p <= alpha/(m-k+1) < alpha/(m-k) and the next p > alpha/(m-k),
    so "p <= alpha/(m-k)" reproduces Holm exactly as one threshold (alpha when all are rejected)."""
    p = sorted(x for x in p_values if not math.isnan(x))
    m = len(p)
    k = 0
    while k < m and p[k] <= alpha / (m - k):
        k += 1
    return alpha if k == m else alpha / (m - k)


# --------------------------------------------------------------------------- decision (no Evidently)


def sample_rows(df: pd.DataFrame, columns: list[str], max_rows: int, seed: int) -> pd.DataFrame:
    """Uniform sample of at most ``max_rows`` rows, copying only the requested columns of those rows."""
    if len(df) > max_rows:
        idx = np.sort(np.random.default_rng(seed).choice(len(df), max_rows, replace=False))
        df = df.iloc[idx]
    return df.loc[:, columns].reset_index(drop=True)


def _prepare(df: pd.DataFrame, numeric: list[str], categorical: list[str]) -> pd.DataFrame:
    out = {c: pd.to_numeric(df[c], errors="coerce").astype("float64") for c in numeric}
    out.update({c: _categorical_values(df[c]) for c in categorical})
    return pd.DataFrame(out)[[*numeric, *categorical]]


def check_inputs(reference: pd.DataFrame, current: pd.DataFrame, columns: list[str]) -> None:
    """Clear errors for unusable inputs, naming the side and the columns."""
    for side, df in (("reference", reference), ("current", current)):
        if df is None or len(df) == 0:
            raise ValueError(f"{side} data is empty (0 rows)")
        missing = [c for c in columns if c not in df.columns]
        if missing:
            raise ValueError(f"{side} data is missing column(s) {missing}; it has {sorted(map(str, df.columns))}")


def decide(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    *,
    numeric: list[str],
    categorical: list[str],
    alpha: float,
    min_effect: float,
) -> list[ColumnDrift]:
    """Per-column tests + Holm + effect floor on already sampled and prepared frames."""
    rows: list[ColumnDrift] = []
    for name in [*numeric, *categorical]:
        if name in categorical:
            r, c = ref[name], cur[name]
            stat, p, eff = categorical_test(r, c)
            method, kind, nr, nc = "chi2", "categorical", len(r), len(c)
        else:
            r, c = _numeric_values(ref[name]), _numeric_values(cur[name])
            stat, p, eff = numeric_test(r, c)
            method, kind, nr, nc = "ks", "numeric", len(r), len(c)
        note = "" if nr and nc else f"no values on the {'reference' if not nr else 'current'} side; not tested"
        rows.append(
            ColumnDrift(
                name,
                method if not note else "none",
                stat,
                p,
                eff,
                math.nan,
                False,
                min_effect,
                kind,
                nr,
                nc,
                note=note,
            )
        )
    t = holm_threshold([c.p_value for c in rows if c.method != "none"], alpha)
    for c in rows:
        if c.method != "none":
            c.threshold = t
            c.drifted = bool(c.p_value <= t and c.effect >= min_effect)
    return rows


def drift_decision(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str],
    categorical: Sequence[str] = (),
    settings: DriftSettings = Settings(),
    seed: int = 0,
) -> tuple[bool, list[ColumnDrift]]:
    """The decision alone (no report): for benchmarks and quick checks. Same numbers as ``drift_report``."""
    *_, rows = _sampled_decision(reference, current, list(columns), categorical, settings, seed)
    return any(c.drifted for c in rows), rows


def _sampled_decision(reference, current, cols: list[str], categorical, settings, seed: int):
    """Check, sample both sides, and decide per column; shared by the report and the bare decision."""
    check_inputs(reference, current, cols)
    cat = [c for c in cols if c in set(categorical)]
    num = [c for c in cols if c not in set(cat)]
    ref = _prepare(sample_rows(reference, cols, settings.max_sample_rows, seed), num, cat)
    cur = _prepare(sample_rows(current, cols, settings.max_sample_rows, seed + 1), num, cat)
    rows = decide(
        ref,
        cur,
        numeric=num,
        categorical=cat,
        alpha=settings.false_alarm_rate,
        min_effect=settings.min_effect,
    )
    return ref, cur, num, cat, rows


# --------------------------------------------------------------------------- Evidently


def _evidently_numeric(min_effect: float, reference_data, current_data, feature_type, threshold):
    _, p, eff = numeric_test(_numeric_values(reference_data), _numeric_values(current_data))
    return p, bool(p <= threshold and eff >= min_effect)


def _evidently_categorical(min_effect: float, reference_data, current_data, feature_type, threshold):
    _, p, eff = categorical_test(reference_data.astype(str), current_data.astype(str))
    return p, bool(p <= threshold and eff >= min_effect)


@functools.cache
def register_stattests(min_effect: float) -> tuple[str, str]:
    """Register our two tests with Evidently for this effect floor; returns their (numeric, categorical) names.

    Evidently calls a stat test with (reference, current, type, threshold) only, so the floor is bound
    into the registered function; the threshold Evidently passes is our Holm threshold."""
    from evidently.legacy.calculations.stattests.registry import StatTest, register_stattest
    from evidently.legacy.core import ColumnType

    num = StatTest(
        name=f"mlops_ks_wasserstein_{min_effect:g}",
        display_name=f"K-S p-value (Holm) and Wasserstein/std >= {min_effect:g}",
        allowed_feature_types=[ColumnType.Numerical],
    )
    cat = StatTest(
        name=f"mlops_chi2_tvd_{min_effect:g}",
        display_name=f"chi-square p-value (Holm) and TVD >= {min_effect:g}",
        allowed_feature_types=[ColumnType.Categorical],
    )
    register_stattest(num, functools.partial(_evidently_numeric, min_effect))
    register_stattest(cat, functools.partial(_evidently_categorical, min_effect))
    return num.name, cat.name


class _DriftTable:
    """DataDriftPreset without its per-column ValueDrift widgets (built lazily: evidently imports on use).

    The preset's own table (DatasetDriftMetric + DataDriftTable) already shows every column's score,
    threshold, verdict and distributions; the extra ValueDrift widgets doubled the report's cost."""

    cls = None

    @classmethod
    def make(cls, **kwargs):
        if cls.cls is None:
            from evidently.presets import DataDriftPreset

            class DriftTablePreset(DataDriftPreset):
                def generate_metrics(self, context):
                    return list(super().generate_metrics(context))[:1]  # DriftedColumnsCount only

            cls.cls = DriftTablePreset
        return cls.cls(**kwargs)


def _evidently_report(
    ref: pd.DataFrame,
    cur: pd.DataFrame,
    rows: list[ColumnDrift],
    numeric: list[str],
    categorical: list[str],
    min_effect: float,
    title: str,
    full_summary: bool,
):
    from evidently import DataDefinition, Dataset, Report
    from evidently.metrics import MissingValueCount
    from evidently.presets import DatasetStats, DataSummaryPreset

    num_test, cat_test = register_stattests(float(min_effect))
    tested = [c for c in rows if c.method != "none"]
    definition = DataDefinition(numerical_columns=numeric, categorical_columns=categorical)
    metrics: list = []
    if tested:
        metrics.append(
            _DriftTable.make(
                columns=[c.name for c in tested],
                # dataset drift = at least one drifted column (share >= 1/m), as in our decision
                drift_share=1.0 / len(tested),
                per_column_method={c.name: cat_test if c.kind == "categorical" else num_test for c in tested},
                per_column_threshold={c.name: c.threshold for c in tested},
            )
        )
    if full_summary:
        metrics.append(DataSummaryPreset(columns=[*numeric, *categorical]))
    else:
        # the dataset half of DataSummaryPreset plus missing values per column; its per-column half
        # repeats the drift table's distributions and costs ~0.3 s of plotly per column
        metrics += [DatasetStats(), *(MissingValueCount(column=c) for c in [*numeric, *categorical])]
    report = Report(metrics, include_tests=True, metadata={"title": title})
    return report.run(
        Dataset.from_pandas(cur, data_definition=definition),
        Dataset.from_pandas(ref, data_definition=definition),
    )


def _evidently_verdicts(snapshot) -> dict[str, bool]:
    """Column -> drift detected, as computed by Evidently's DataDriftTable in this snapshot.

    Read from the snapshot's legacy-metric cache (not a public API: empty if that changes, and the
    dataset-level count from DriftedColumnsCount is compared instead)."""
    verdicts: dict[str, bool] = {}
    cache = getattr(getattr(snapshot, "context", None), "_legacy_metrics", {}) or {}
    for result, _widgets in cache.values():
        for name, col in (getattr(result, "drift_by_columns", None) or {}).items():
            verdicts[name] = bool(col.drift_detected)
    return verdicts


def _evidently_drifted_count(snapshot_json: dict) -> int | None:
    for metric in snapshot_json.get("metrics", []):
        if "DriftedColumnsCount" in str((metric.get("config") or {}).get("type", "")):
            return int(metric["value"]["count"])
    return None


def drift_report(
    reference: pd.DataFrame,
    current: pd.DataFrame,
    *,
    columns: list[str],
    categorical: Sequence[str] = (),
    score_column: str | None = None,
    settings: DriftSettings = Settings(),
    seed: int = 0,
    title: str = "drift report",
    full_summary: bool = False,
) -> DriftResult:
    """Calibrated drift decision + Evidently report (drift per column incl. the score, data summary).

    ``columns`` are the inputs checked; ``score_column`` (numeric, present on both sides) is added as
    the prediction-drift column. Raises ValueError naming the side and column for unusable input."""
    cols = list(dict.fromkeys([*columns, *([score_column] if score_column else [])]))
    ref, cur, num, cat, rows = _sampled_decision(reference, current, cols, categorical, settings, seed)

    snapshot = _evidently_report(ref, cur, rows, num, cat, settings.min_effect, title, full_summary)
    snap = _jsonable(snapshot.dict())
    verdicts = _evidently_verdicts(snapshot)
    for c in rows:
        c.evidently_drifted = verdicts.get(c.name)
    tested = [c for c in rows if c.method != "none"]
    count = _evidently_drifted_count(snap)
    agrees = (count is None or count == sum(c.drifted for c in tested)) and all(
        c.evidently_drifted in (None, c.drifted) for c in tested
    )
    return DriftResult(
        alarm=any(c.drifted for c in rows),
        columns=rows,
        n_reference=len(reference),
        n_current=len(current),
        html=snapshot.get_html_str(as_iframe=False),
        json=snap,
        alpha=settings.false_alarm_rate,
        min_effect=settings.min_effect,
        sampled_reference=len(ref),
        sampled_current=len(cur),
        evidently_agrees=agrees,
    )


def alarm_text(result: DriftResult) -> str:
    """Person-readable lines for an alert: each drifted column with its numbers."""
    head = (
        f"{len(result.drifted_columns)} of {len(result.columns)} column(s) drifted "
        f"(Holm at {result.alpha:g}, effect >= {result.min_effect:g}; "
        f"{result.n_current} current vs {result.n_reference} reference rows)"
    )
    lines = [head]
    for c in result.columns:
        if c.drifted:
            what = "Wasserstein/std" if c.method == "ks" else "TVD"
            lines.append(
                f"  {c.name}: {what} {c.effect:.3f} (floor {c.min_effect:g}), "
                f"{c.method} p={c.p_value:.2e} (threshold {c.threshold:.2e})"
            )
    return "\n".join(lines)
