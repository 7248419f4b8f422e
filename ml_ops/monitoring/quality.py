"""Daily model quality once labels are known, and a change detector on the error stream.

Input drift (``ml_ops.monitoring.drift``) says the inputs moved; this says the model got worse, which is what a
concept change looks like (same inputs, different relation to the label). Two signals, either alarms:

* the day's ROC-AUC fell at least ``quality_drop`` below the reference AUC (the champion's holdout AUC);
* ADWIN fired on the per-row error stream (labelled rows in time order): the mean error of the recent
  part of the stream is higher than the older part's by more than chance allows.

Both alarm on deterioration only. An error rate that fell (a better model, easier traffic) is reported
in ``notes``, not alarmed: an alarm pages people and asks for a retrain.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Literal

import numpy as np

from ml_ops.scoring import SCORE_THRESHOLD  # noqa: E402 - training's cut-off


@dataclass
class AdwinResult:
    detected: bool
    index: int | None = None  # position in the stream where the change was detected
    mean_before: float | None = None
    mean_after: float | None = None


def adwin(
    stream,
    delta: float = 0.002,
    clock: int = 32,
    min_window: int = 30,
    direction: Literal["both", "increase", "decrease"] = "both",
) -> AdwinResult:
    """ADWIN change detector (Bifet & Gavaldà, "Learning from Time-Changing Data with Adaptive
    Windowing", SIAM SDM 2007), run over a finite stream of values in [0, 1] until its first detection.

    Every ``clock`` elements (as in the reference implementation) the window W = stream[0:t] is split at
    every point into W0 (older, n0) and W1 (newer, n1); a cut happens when |mean(W0) - mean(W1)| >= eps,
    eps = sqrt(2/m * var(W) * ln(2/d)) + 2/(3m) * ln(2/d), m = 1/(1/n0 + 1/n1), d = delta / n
    (the paper's Bernstein-style bound, Theorem 3.1 / Section 4). Each split point is checked exactly
    with cumulative sums instead of the paper's exponential-histogram buckets: the streams here are
    one day's labelled rows, small enough to keep whole.

    ``direction``: which changes count: ``increase`` (the newer mean is higher: for an error stream, a
    deterioration), ``decrease``, or ``both`` (the paper's two-sided test). The bound is the same, so a
    one-sided detector alarms at most as often as the two-sided one on a stationary stream.
    """
    if direction not in ("both", "increase", "decrease"):
        raise ValueError(f"adwin: direction {direction!r} is not both, increase or decrease")
    x = np.asarray(stream, dtype="float64")
    if x.size and (x.min() < 0 or x.max() > 1):
        raise ValueError("adwin: values must lie in [0, 1] (e.g. 0/1 errors or Brier scores)")
    csum = np.concatenate([[0.0], np.cumsum(x)])
    csq = np.concatenate([[0.0], np.cumsum(x * x)])
    for t in range(2 * min_window, len(x) + 1, clock):
        n0 = np.arange(min_window, t - min_window + 1)
        n1 = t - n0
        mu0 = csum[n0] / n0
        mu1 = (csum[t] - csum[n0]) / n1
        var = max(csq[t] / t - (csum[t] / t) ** 2, 0.0)
        m = 1.0 / (1.0 / n0 + 1.0 / n1)
        log_term = math.log(2.0 * t / delta)
        eps = np.sqrt(2.0 / m * var * log_term) + 2.0 / (3.0 * m) * log_term
        change = {"both": np.abs(mu1 - mu0), "increase": mu1 - mu0, "decrease": mu0 - mu1}[direction]
        cut = np.flatnonzero(change >= eps)
        if cut.size:
            k = int(n0[cut[np.argmax(change[cut])]])
            return AdwinResult(True, t - 1, float(csum[k] / k), float((csum[t] - csum[k]) / (t - k)))
    return AdwinResult(False)


@dataclass
class QualityResult:
    metrics: dict[str, float | None]  # roc_auc, precision, recall, n, positives, error_rate
    drift_detected: bool  # ADWIN found the error stream got worse
    alarm: bool
    reference_auc: float | None = None
    auc_drop: float | None = None
    reasons: list[str] = field(default_factory=list)  # why it alarmed
    detector: dict = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)  # reported, not alarmed (e.g. the error rate fell)

    def to_dict(self) -> dict:
        return asdict(self)


def quality_metrics(y_true, y_score, threshold: float = SCORE_THRESHOLD) -> dict[str, float | None]:
    """ROC-AUC (None with a single class) and precision/recall at ``threshold``."""
    from sklearn.metrics import precision_score, recall_score, roc_auc_score

    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype="float64")
    pred = (s >= threshold).astype(int)
    both = np.unique(y).size == 2
    return {
        "roc_auc": float(roc_auc_score(y, s)) if both else None,
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "error_rate": float((pred != y).mean()) if len(y) else None,
        "n": float(len(y)),
        "positives": float(y.sum()),
    }


def quality_check(
    y_true,
    y_score,
    *,
    reference_auc: float | None,
    quality_drop: float,
    threshold: float = SCORE_THRESHOLD,
    recent=None,
    delta: float = 0.002,
    min_rows: int = 100,
    min_per_class: int = 20,
) -> QualityResult:
    """Quality of labelled rows in time order.

    ``recent`` (boolean mask) selects the rows the day's metrics are computed on (default: all); the
    detector always sees the whole stream so it can compare older with newer rows. The per-row error
    is the Brier loss (score - label)^2, in [0, 1] and sensitive to confident misses, which a
    concept change produces. Only a rise of the error alarms; a fall is a note. Fewer than ``min_rows``
    labelled rows, or fewer than ``min_per_class`` of either class among them (AUC on a handful of
    positives is noise): metrics only, no alarm."""
    y = np.asarray(y_true).astype(int)
    s = np.asarray(y_score, dtype="float64")
    if y.shape != s.shape:
        raise ValueError(f"quality_check: {len(y)} labels but {len(s)} scores")
    mask = np.ones(len(y), bool) if recent is None else np.asarray(recent, bool)
    metrics = quality_metrics(y[mask], s[mask], threshold)
    positives = int(y[mask].sum())
    if mask.sum() < min_rows or min(positives, int(mask.sum()) - positives) < min_per_class:
        return QualityResult(
            metrics,
            False,
            False,
            reference_auc,
            reasons=[
                (
                    f"{int(mask.sum())} labelled rows with {positives} positive(s): too few for a verdict "
                    f"(need {min_rows} rows and {min_per_class} of each class)"
                )
            ],
        )
    errors = (s - y) ** 2
    det = adwin(errors, delta=delta, direction="increase")
    reasons, notes = [], []
    drop = None
    if reference_auc is not None and metrics["roc_auc"] is not None:
        drop = reference_auc - metrics["roc_auc"]
        if drop >= quality_drop:
            reasons.append(
                f"roc_auc {metrics['roc_auc']:.3f} is {drop:.3f} below the reference "
                f"{reference_auc:.3f} (allowed drop {quality_drop:g})"
            )
        elif drop <= -quality_drop:
            notes.append(f"roc_auc {metrics['roc_auc']:.3f} is {-drop:.3f} above the reference {reference_auc:.3f}")
    if det.detected:
        reasons.append(
            f"ADWIN: mean Brier error rose from {det.mean_before:.4f} to {det.mean_after:.4f} "
            f"(detected at labelled row {det.index} of {len(y)})"
        )
    elif (better := adwin(errors, delta=delta, direction="decrease")).detected:
        notes.append(
            f"ADWIN: mean Brier error fell from {better.mean_before:.4f} to {better.mean_after:.4f} "
            f"(detected at labelled row {better.index} of {len(y)}); an improvement is not an alarm"
        )
    return QualityResult(metrics, det.detected, bool(reasons), reference_auc, drop, reasons, asdict(det), notes)
