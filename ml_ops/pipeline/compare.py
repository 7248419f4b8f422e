"""Champion/challenger comparison: score both models on the same holdout, paired bootstrap, policy.

`decide` is a pure function; `compare_and_record` does the MLflow I/O around it and never moves the
champion alias (promotion is `ml_ops.pipeline.registry.promote`, a separate, explicit step).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from typing import Any

import numpy as np
import pandas as pd

from ml_ops import layout
from ml_ops.jsonable import to_jsonable as _jsonable
from ml_ops.pipeline.train import GREATER_IS_BETTER, METRIC_NAMES, classification_metrics
from ml_ops.scoring import SCORE_THRESHOLD, model_input, score  # noqa: F401 - model_input: public here before

CHAMPION_ALIAS = layout.CHAMPION
DECISION_ARTIFACT = "decision.json"


# --------------------------------------------------------------------------- scoring


def score_model(
    tracking_uri: str, model_name: str, version: int, df: pd.DataFrame, target: str
) -> tuple[dict[str, float], np.ndarray]:
    """Load a registered version, score `df` (target column dropped) and compute the holdout metrics."""
    from ml_ops.pipeline.train import load_model_version

    if target not in df.columns:
        raise ValueError(f"score_model: target column {target!r} not in holdout")
    model = load_model_version(tracking_uri, model_name, version)
    y_score = score(model, df.drop(columns=[target]))
    return classification_metrics(df[target].to_numpy(), y_score), y_score


# --------------------------------------------------------------------------- paired bootstrap


@dataclass
class BootstrapResult:
    diff: float  # metric(challenger) - metric(champion) on the full holdout
    ci_low: float
    ci_high: float
    n: int  # resamples used (resamples with a single class are dropped)
    metric: str = "roc_auc"
    confidence: float = 0.95


def _batch_metric(metric: str, w: np.ndarray, y: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Metric for each row of the weight matrix w (B, n): weights = bootstrap multiplicities.

    A resample is the original rows with integer weights, so rank metrics are computed once on the
    sorted scores with tied scores grouped (same results as sklearn on the expanded resample).
    """
    yb = y.astype(bool)
    wp, wn = w * yb, w * ~yb  # positive / negative weight per row
    P, N = wp.sum(1), wn.sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        if metric in ("roc_auc", "pr_auc"):
            order = np.argsort(s, kind="mergesort")
            if metric == "pr_auc":
                order = order[::-1]  # descending score for precision/recall sweeps
            ss = s[order]
            starts = np.flatnonzero(np.r_[True, ss[1:] != ss[:-1]])  # tie groups
            gp = np.add.reduceat(wp[:, order], starts, axis=1)
            gn = np.add.reduceat(wn[:, order], starts, axis=1)
            if metric == "roc_auc":
                below = np.cumsum(gn, axis=1) - gn  # negatives strictly below each group
                return (gp * (below + 0.5 * gn)).sum(1) / (P * N)
            tp, fp = np.cumsum(gp, axis=1), np.cumsum(gn, axis=1)
            precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
            return (gp * precision).sum(1) / P  # sum_k (R_k - R_{k-1}) * P_k
        if metric == "log_loss":
            p = np.clip(s, 1e-15, 1 - 1e-15)
            ll = -(yb * np.log(p) + ~yb * np.log1p(-p))
            return (w @ ll) / w.sum(1)
        pred = s >= SCORE_THRESHOLD
        tp, fp = wp @ pred, wn @ pred
        fn = P - tp
        if metric == "precision":
            return np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        if metric == "recall":
            return tp / P
        if metric == "f1":
            return np.where(tp > 0, 2 * tp / np.maximum(2 * tp + fp + fn, 1e-300), 0.0)
    raise ValueError(f"paired_bootstrap: unknown metric {metric!r}; expected one of {METRIC_NAMES}")


def paired_bootstrap(
    y,
    score_challenger,
    score_champion,
    metric: str = "roc_auc",
    n: int = 1000,
    confidence: float = 0.95,
    seed: int = 0,
    chunk: int = 100,
) -> BootstrapResult:
    """Percentile CI of metric(challenger) - metric(champion), resampling the same rows for both."""
    y = np.asarray(y).astype(int)
    a = np.asarray(score_challenger, dtype="float64")
    b = np.asarray(score_champion, dtype="float64")
    if not (len(y) == len(a) == len(b)):
        raise ValueError(f"paired_bootstrap: length mismatch y={len(y)} challenger={len(a)} champion={len(b)}")
    if metric not in METRIC_NAMES:
        raise ValueError(f"paired_bootstrap: unknown metric {metric!r}; expected one of {METRIC_NAMES}")
    full = np.ones((1, len(y)))
    point = float(_batch_metric(metric, full, y, a)[0] - _batch_metric(metric, full, y, b)[0])
    rng = np.random.default_rng(seed)
    rows = len(y)
    diffs = []
    for start in range(0, n, chunk):  # chunks bound memory to chunk x rows weights
        k = min(chunk, n - start)
        idx = rng.integers(0, rows, size=(k, rows)) + (np.arange(k) * rows)[:, None]
        w = np.bincount(idx.ravel(), minlength=k * rows).reshape(k, rows).astype("float64")
        diffs.append(_batch_metric(metric, w, y, a) - _batch_metric(metric, w, y, b))
    d = np.concatenate(diffs) if diffs else np.array([])
    d = d[np.isfinite(d)]  # single-class resamples give NaN for rank metrics
    if d.size == 0:
        return BootstrapResult(point, math.nan, math.nan, 0, metric, confidence)
    alpha = (1 - confidence) / 2
    lo, hi = np.quantile(d, [alpha, 1 - alpha])
    return BootstrapResult(point, float(lo), float(hi), int(d.size), metric, confidence)


# --------------------------------------------------------------------------- policy + decision


@dataclass
class Policy:
    """Promotion policy. Thresholds follow MLflow MetricThreshold semantics:
    floors ~ `threshold` (value >= floor, or <= for lower-is-better metrics such as log_loss);
    min_improvement ~ `min_absolute_change` (challenger >= champion + delta, or <= champion - delta).
    """

    primary_metric: str = "roc_auc"
    floors: dict[str, float] = field(default_factory=dict)
    min_improvement: dict[str, float] = field(default_factory=dict)
    require_significant: bool = True
    bootstrap_samples: int = 1000
    confidence: float = 0.95

    def __post_init__(self):
        unknown = [m for m in [self.primary_metric, *self.floors, *self.min_improvement] if m not in GREATER_IS_BETTER]
        if unknown:
            raise ValueError(f"Policy: unknown metric(s) {unknown}; expected {list(METRIC_NAMES)}")


@dataclass
class Decision:
    promote: bool
    reason: str
    checks: list[dict[str, Any]]
    challenger_metrics: dict[str, float]
    champion_metrics: dict[str, float] | None
    bootstrap: BootstrapResult | None = None
    model_name: str | None = None
    challenger_version: int | None = None
    champion_version: int | None = None
    comparison_run_id: str | None = None
    timestamp: str = field(default_factory=lambda: datetime.now(timezone.utc).isoformat())

    def to_dict(self) -> dict[str, Any]:
        return _jsonable(asdict(self))

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Decision:
        d = dict(d)
        if d.get("bootstrap"):
            d["bootstrap"] = BootstrapResult(**{k: (math.nan if v is None else v) for k, v in d["bootstrap"].items()})
        return cls(**d)


def _passes(metric: str, value: float, threshold: float) -> bool:
    if value is None or not math.isfinite(value):
        return False
    return value >= threshold if GREATER_IS_BETTER[metric] else value <= threshold


def decide(
    challenger_metrics: dict[str, float],
    champion_metrics: dict[str, float] | None,
    bootstrap: BootstrapResult | None,
    policy: Policy,
) -> Decision:
    """Pure policy evaluation. No champion: floors only. Otherwise floors + min improvement
    (+ the bootstrap CI excluding 0 in the better direction when `require_significant`)."""
    checks: list[dict[str, Any]] = []
    for metric, floor in policy.floors.items():
        value = challenger_metrics.get(metric)
        checks.append(
            {
                "name": f"floor:{metric}",
                "metric": metric,
                "value": value,
                "threshold": floor,
                "passed": _passes(metric, value, floor),
            }
        )
    if champion_metrics is not None:
        for metric, delta in policy.min_improvement.items():
            value, base = challenger_metrics.get(metric), champion_metrics.get(metric)
            if base is None or not math.isfinite(base):
                threshold = math.nan
                passed = False
            else:
                threshold = base + delta if GREATER_IS_BETTER[metric] else base - delta
                passed = _passes(metric, value, threshold)
            checks.append(
                {
                    "name": f"min_improvement:{metric}",
                    "metric": metric,
                    "value": value,
                    "threshold": threshold,
                    "passed": passed,
                }
            )
        if policy.require_significant:
            m = policy.primary_metric
            if bootstrap is None or bootstrap.n == 0:
                checks.append(
                    {"name": f"significant:{m}", "metric": m, "value": None, "threshold": 0.0, "passed": False}
                )
            elif GREATER_IS_BETTER[m]:  # CI of the difference must sit entirely above 0
                checks.append(
                    {
                        "name": f"significant:{m}",
                        "metric": m,
                        "value": bootstrap.ci_low,
                        "threshold": 0.0,
                        "passed": bool(bootstrap.ci_low > 0),
                    }
                )
            else:  # lower is better: CI must sit entirely below 0
                checks.append(
                    {
                        "name": f"significant:{m}",
                        "metric": m,
                        "value": bootstrap.ci_high,
                        "threshold": 0.0,
                        "passed": bool(bootstrap.ci_high < 0),
                    }
                )
    failed = [c for c in checks if not c["passed"]]
    if failed:
        reason = "reject: " + "; ".join(f"{c['name']} {_fmt(c['value'])} vs {_fmt(c['threshold'])}" for c in failed)
    elif champion_metrics is None:
        reason = f"promote: first model, {len(checks)} floor check(s) passed"
    else:
        reason = f"promote: all {len(checks)} checks passed"
    return Decision(
        not failed,
        reason,
        checks,
        dict(challenger_metrics),
        dict(champion_metrics) if champion_metrics is not None else None,
        bootstrap,
    )


def _fmt(v) -> str:
    return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.4f}"


# --------------------------------------------------------------------------- MLflow I/O


def _find_recorded_decision(client, experiment_id: str, idempotency_key: str) -> Decision | None:
    import tempfile

    runs = client.search_runs(
        [experiment_id],
        filter_string=f"tags.idempotency_key = '{idempotency_key.replace(chr(39), chr(92) + chr(39))}' "
        "and attributes.status = 'FINISHED'",
        order_by=["attributes.start_time DESC"],
        max_results=1,
    )
    if not runs:
        return None
    try:
        # the client's download, not mlflow.artifacts.load_dict("runs:/..."): that one uses the global tracking URI
        with tempfile.TemporaryDirectory() as tmp:
            with open(client.download_artifacts(runs[0].info.run_id, DECISION_ARTIFACT, tmp)) as f:
                return Decision.from_dict(json.load(f))
    except Exception:  # noqa: BLE001 - a damaged record means we recompute
        return None


def compare_and_record(
    *,
    tracking_uri: str,
    model_name: str,
    challenger_version: int | str,
    holdout_df: pd.DataFrame,
    target: str,
    policy: Policy,
    experiment: str,
    idempotency_key: str | None = None,
    artifact_location: str | None = None,
    seed: int = 0,
) -> Decision:
    """Score challenger and current champion on the same holdout, decide, record; no alias moves.

    With `idempotency_key`, a finished comparison run carrying that key is reused (its recorded
    decision is returned) so a retried task gives the same answer.
    """
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param
    from mlflow.tracking.context import registry as run_context

    from ml_ops.pipeline.train import _ensure_experiment

    # Explicit client calls (and models loaded by load_model_version): the fluent API works on the process-global
    # tracking URI and active run.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp_id = _ensure_experiment(client, experiment, artifact_location)
    if idempotency_key and (recorded := _find_recorded_decision(client, exp_id, idempotency_key)):
        return recorded

    challenger_version = int(challenger_version)
    client.get_model_version(model_name, str(challenger_version))  # fail early, naming the version
    from ml_ops.pipeline.registry import current_version

    champion_version = current_version(client, model_name, CHAMPION_ALIAS)  # raises if MLflow cannot answer

    y = holdout_df[target].to_numpy().astype(int)
    ch_metrics, ch_score = score_model(tracking_uri, model_name, challenger_version, holdout_df, target)
    if champion_version == challenger_version:
        decision = Decision(
            False,
            f"reject: version {challenger_version} already holds alias {CHAMPION_ALIAS!r}",
            [],
            ch_metrics,
            dict(ch_metrics),
            None,
        )
    elif champion_version is None:
        decision = decide(ch_metrics, None, None, policy)
    else:
        cp_metrics, cp_score = score_model(tracking_uri, model_name, champion_version, holdout_df, target)
        boot = paired_bootstrap(
            y,
            ch_score,
            cp_score,
            metric=policy.primary_metric,
            n=policy.bootstrap_samples,
            confidence=policy.confidence,
            seed=seed,
        )
        decision = decide(ch_metrics, cp_metrics, boot, policy)
    decision = replace(
        decision, model_name=model_name, challenger_version=challenger_version, champion_version=champion_version
    )

    verdict = "promote" if decision.promote else "reject"
    run_tags = {"decision": verdict, "model_name": model_name}
    if idempotency_key:
        run_tags["idempotency_key"] = idempotency_key
    run_id = client.create_run(
        exp_id, run_name=f"compare-v{challenger_version}", tags=run_context.resolve_tags(run_tags)
    ).info.run_id
    try:
        params = {
            "challenger_version": challenger_version,
            "champion_version": champion_version if champion_version is not None else "none",
            "primary_metric": policy.primary_metric,
            "bootstrap_samples": policy.bootstrap_samples,
            "confidence": policy.confidence,
            "require_significant": policy.require_significant,
            "floors": json.dumps(policy.floors),
            "min_improvement": json.dumps(policy.min_improvement),
            "holdout_rows": len(holdout_df),
        }
        metrics = {f"challenger.{k}": v for k, v in decision.challenger_metrics.items()}
        if decision.champion_metrics is not None and champion_version != challenger_version:
            metrics.update({f"champion.{k}": v for k, v in decision.champion_metrics.items()})
            metrics.update(
                {
                    f"diff.{k}": decision.challenger_metrics[k] - decision.champion_metrics[k]
                    for k in decision.challenger_metrics
                    if k in decision.champion_metrics
                }
            )
        if decision.bootstrap is not None:
            b = decision.bootstrap
            metrics.update(
                {
                    "bootstrap.diff": b.diff,
                    "bootstrap.ci_low": b.ci_low,
                    "bootstrap.ci_high": b.ci_high,
                    "bootstrap.n": b.n,
                }
            )
        now = int(time.time() * 1000)
        client.log_batch(
            run_id,
            metrics=[
                Metric(k, float(v), now, 0) for k, v in metrics.items() if v is not None and math.isfinite(float(v))
            ],
            params=[Param(k, str(v)) for k, v in params.items()],
        )
        client.set_tag(run_id, "decision_reason", decision.reason[:5000])
        decision = replace(decision, comparison_run_id=run_id)
        client.log_dict(run_id, decision.to_dict(), DECISION_ARTIFACT)
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)

    if champion_version != challenger_version:
        vtags = {
            "decision": verdict,
            "decision_reason": decision.reason[:5000],
            "compared_to": str(champion_version) if champion_version is not None else "none",
            "compared_at": decision.timestamp,
            "comparison_run_id": decision.comparison_run_id,
        }
        if decision.bootstrap is not None:
            b, m = decision.bootstrap, policy.primary_metric
            vtags.update(
                {f"{m}_diff": f"{b.diff:.6f}", f"{m}_ci_low": f"{b.ci_low:.6f}", f"{m}_ci_high": f"{b.ci_high:.6f}"}
            )
        for k, v in vtags.items():
            client.set_model_version_tag(model_name, str(challenger_version), k, v)
    return decision
