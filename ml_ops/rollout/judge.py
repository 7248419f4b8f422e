"""Kayenta-style canary judge: canary vs champion samples of one traffic step -> pass / marginal / fail.

Pure (numpy, pandas, scipy); ``ml_ops.rollout.canary`` feeds it the step's serving logs and the policy
(``ml_ops.config.Canary``). Calibration: ``bench/bench_canary_judge.py`` -> ``bench/RESULTS_canary_judge.md``.

Per metric, one-sided test in the bad direction, at alpha = 1 - ``policy.confidence`` (``either``: both
directions at alpha/2). A metric fails ("high"/"low") only when the change is significant beyond the
tolerance AND its point estimate (``effect``) is past the tolerance:

* ``error_rate``, ``accuracy`` (rates, mean reported): ``effect`` = p_canary - p_champion, tolerance
  absolute. Wald z-test of H0 "change <= tolerance" with the Agresti-Caffo adjustment (one success and
  one failure added per side), so zero errors on both sides still gives a sane standard error.
* ``latency_ms`` (continuous, median reported): the model call's CPU time (see ``step_samples``);
  ``effect`` = median ratio - 1, tolerance relative.
  Mann-Whitney U of canary / (1 + tol) against the champion (decrease: canary / (1 - tol)).
* ``score`` (continuous, median reported): a relative shift is meaningless for fraud scores near 0, so
  ``effect`` = A - 0.5, where A = P(canary score > champion score) (Mann-Whitney U / (n1 n2), the
  "probability of superiority"); tolerance on |A - 0.5| (0.2: A outside 0.3..0.7, about x10 on
  fraud-like scores; a retrained model commonly moves A by 0.1). z-test of A with DeLong's standard error.

Data: ``error_rate``, ``latency_ms``, ``score`` need ``policy.min_requests`` values per side, ``accuracy``
``policy.min_labels``; fewer -> that metric is "nodata". Outcome, in order: a failing critical metric ->
"fail"; a nodata metric other than accuracy (labels may not have matured) -> "nodata"; else the score
100 x weight passing / weight judged: >= pass_score "pass", >= marginal_score "marginal", else "fail".
Only metrics named in ``policy.metrics`` are judged; a name outside METRICS is a ValueError (a typo must not
silently drop a check).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from ml_ops import layout
from ml_ops.jsonable import to_jsonable as _jsonable

if TYPE_CHECKING:
    from ml_ops.config import Canary, CanaryMetric

METRICS = ("error_rate", "latency_ms", "score", "accuracy")
KINDS = {"error_rate": "rate", "latency_ms": "continuous", "score": "continuous", "accuracy": "rate"}
LABELLED = ("accuracy",)  # judged on labelled rows (min_labels); nodata there does not block the verdict
_ROUTES = layout.ROUTES


# --------------------------------------------------------------------------- samples from serving logs


def _empty() -> dict[str, np.ndarray]:
    return {m: np.empty(0, dtype=float) for m in METRICS}


def step_samples(
    logs: pd.DataFrame | None, feedback: pd.DataFrame | None, *, threshold: float = 0.5
) -> dict[str, dict[str, np.ndarray]]:
    """``{"champion": {metric: 1-D array}, "canary": {...}}`` from serving-log rows and feedback.

    error_rate: one 0/1 per request (failed = any row has an error or no score); latency_ms: one per
    successful request, the model call's CPU time (``model_cpu_ms``; logs without it: the wall time
    ``latency_ms``), because a 10 % canary's wall time is inflated by sharing the GIL with the
    champion's thread (``ml_ops.serving.runner``); score: one per successful row; accuracy: one 0/1 per labelled successful row,
    ``(score >= threshold) == label``, feedback joined on (request_id, row), the latest label winning."""
    out = {route: _empty() for route in _ROUTES}
    if logs is None or logs.empty:
        return out
    latency = logs["model_cpu_ms"] if "model_cpu_ms" in logs else logs["latency_ms"]
    df = pd.DataFrame(
        {
            "request_id": logs["request_id"].astype(str),
            "row": logs["row"].fillna(0).astype("int64"),
            "route": logs["route"].astype(str),
            "latency_ms": pd.to_numeric(latency, errors="coerce"),
            "score": pd.to_numeric(logs["score"], errors="coerce"),
        }
    )
    error = logs["error"] if "error" in logs else pd.Series(None, index=logs.index, dtype=object)
    df["failed"] = (error.notna() & (error.astype(str).str.len() > 0)).to_numpy() | df["score"].isna().to_numpy()
    if feedback is not None and not feedback.empty:
        fb = pd.DataFrame(
            {
                "request_id": feedback["request_id"].astype(str),
                "row": feedback["row"].fillna(0).astype("int64"),
                "label": pd.to_numeric(feedback["label"], errors="coerce"),
            }
        )
        if "ts" in feedback:  # a corrected label posted later replaces the first one
            fb = fb.iloc[np.argsort(pd.to_datetime(feedback["ts"], utc=True).to_numpy(), kind="stable")]
        fb = fb.dropna(subset=["label"]).drop_duplicates(["request_id", "row"], keep="last")
        df = df.merge(fb, on=["request_id", "row"], how="left")
    else:
        df["label"] = np.nan
    for route, part in df.groupby("route", sort=False):
        if route not in out:
            continue
        requests = part.groupby("request_id", sort=False).agg(failed=("failed", "any"), latency=("latency_ms", "first"))
        ok = part[~part["failed"]]
        labelled = ok[ok["label"].notna()]
        out[route] = {
            "error_rate": requests["failed"].to_numpy(dtype=float),
            "latency_ms": requests.loc[~requests["failed"], "latency"].dropna().to_numpy(dtype=float),
            "score": ok["score"].to_numpy(dtype=float),
            "accuracy": ((labelled["score"] >= threshold) == (labelled["label"] > 0.5)).to_numpy(dtype=float),
        }
    return out


# --------------------------------------------------------------------------- verdicts


@dataclass
class MetricResult:
    name: str
    kind: str  # rate | continuous
    direction: str  # increase | decrease | either: the bad change
    verdict: str  # pass | high | low | nodata
    critical: bool
    weight: float
    n_canary: int
    n_champion: int
    canary_value: float  # mean (rates) or median (continuous)
    champion_value: float
    effect: float  # compared with the tolerance; see the module docstring
    tolerance: float
    p_value: float  # of "worse than the tolerance" (either: two-sided, alpha split)
    reason: str


@dataclass
class Verdict:
    outcome: str  # pass | marginal | fail | nodata
    score: float  # 0-100
    metrics: list[MetricResult] = field(default_factory=list)
    reason: str = ""

    def to_dict(self) -> dict:
        return _jsonable(asdict(self))

    def mlflow_metrics(self) -> dict[str, float]:
        out = {"score": float(self.score)}
        for m in self.metrics:
            values = {
                "canary": m.canary_value,
                "champion": m.champion_value,
                "effect": m.effect,
                "p_value": m.p_value,
                "n_canary": m.n_canary,
                "n_champion": m.n_champion,
            }
            if m.verdict != "nodata":
                values["passed"] = float(m.verdict == "pass")
            out.update({f"{m.name}.{k}": float(v) for k, v in values.items() if math.isfinite(v)})
        return out


def _rate_test(c: np.ndarray, h: np.ndarray, tol: float, hi: bool, lo: bool) -> tuple[float, float, float]:
    """effect, p(increase > tol), p(decrease > tol): Agresti-Caffo adjusted Wald z."""
    pc, ph = (c.sum() + 1) / (c.size + 2), (h.sum() + 1) / (h.size + 2)
    se = math.sqrt(pc * (1 - pc) / (c.size + 2) + ph * (1 - ph) / (h.size + 2))
    d = pc - ph
    return float(c.mean() - h.mean()), float(stats.norm.sf((d - tol) / se)), float(stats.norm.sf((-d - tol) / se))


def _latency_test(c: np.ndarray, h: np.ndarray, tol: float, hi: bool, lo: bool) -> tuple[float, float, float]:
    """effect = median ratio - 1, p(canary > champion x (1+tol)), p(canary < champion x (1-tol))."""
    mc, mh = float(np.median(c)), float(np.median(h))
    effect = mc / mh - 1 if mh > 0 else (0.0 if mc == mh else math.inf)
    p_hi = stats.mannwhitneyu(c / (1 + tol), h, alternative="greater", method="asymptotic").pvalue if hi else 1.0
    p_lo = (
        stats.mannwhitneyu(c / (1 - tol), h, alternative="less", method="asymptotic").pvalue if lo and tol < 1 else 1.0
    )  # a drop of 100 % or more cannot happen
    return effect, float(p_hi), float(p_lo)


def _superiority_test(c: np.ndarray, h: np.ndarray, tol: float, hi: bool, lo: bool) -> tuple[float, float, float]:
    """effect = P(canary > champion) - 0.5 (ties half): Mann-Whitney U / (n1 n2), DeLong standard error."""
    cs, hs = np.sort(c), np.sort(h)
    # per canary value: share of champion values below it (ties half); per champion value: share of canary
    # above. Only their mean and variance matter, so sorted queries (fast searchsorted) are fine.
    v10 = (np.searchsorted(hs, cs, "left") + np.searchsorted(hs, cs, "right")) / (2 * h.size)
    v01 = 1 - (np.searchsorted(cs, hs, "left") + np.searchsorted(cs, hs, "right")) / (2 * c.size)
    effect = float(v10.mean() - 0.5)
    se = math.sqrt(v10.var(ddof=1) / c.size + v01.var(ddof=1) / h.size)
    if se == 0:  # constant samples: the effect is exact
        return effect, float(effect > tol), float(-effect > tol)
    return effect, float(stats.norm.sf((effect - tol) / se)), float(stats.norm.sf((-effect - tol) / se))


_TESTS = {"error_rate": _rate_test, "accuracy": _rate_test, "latency_ms": _latency_test, "score": _superiority_test}


def _fmt(name: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if name in ("error_rate", "accuracy"):
        return f"{value:.2%}"
    return f"{value:.3g} ms" if name == "latency_ms" else f"{value:.3g}"


def _fmt_effect(name: str, effect: float, tol: float) -> str:
    if name == "latency_ms":
        return f"{effect:+.1%} (tolerance {tol:.0%})"
    if name == "score":
        return f"P(canary>champion)-0.5 = {effect:+.3f} (tolerance {tol:.2f})"
    return f"{effect * 100:+.2f} pts (tolerance {tol * 100:.2f})"


def _judge_metric(name: str, cfg: CanaryMetric, c: np.ndarray, h: np.ndarray, need: int, alpha: float) -> MetricResult:
    kind = KINDS[name]
    centre = np.mean if kind == "rate" else np.median
    cv = float(centre(c)) if c.size else math.nan
    hv = float(centre(h)) if h.size else math.nan
    base = {
        "name": name,
        "kind": kind,
        "direction": cfg.direction,
        "critical": cfg.critical,
        "weight": cfg.weight,
        "n_canary": int(c.size),
        "n_champion": int(h.size),
        "canary_value": cv,
        "champion_value": hv,
        "tolerance": cfg.tolerance,
    }
    unit = "labels" if name in LABELLED else "values"
    if min(c.size, h.size) < need:
        return MetricResult(
            **base,
            verdict="nodata",
            effect=math.nan,
            p_value=math.nan,
            reason=f"{name}: too little data, {c.size} canary / {h.size} champion {unit} (need {need} per side)",
        )
    hi, lo = cfg.direction in ("increase", "either"), cfg.direction in ("decrease", "either")
    effect, p_hi, p_lo = _TESTS[name](c, h, cfg.tolerance, hi, lo)
    if cfg.direction == "either":  # alpha split over the two directions
        p_hi, p_lo = min(2 * p_hi, 1.0), min(2 * p_lo, 1.0)
    p_hi, p_lo = (p_hi if hi else 1.0), (p_lo if lo else 1.0)
    verdict = (
        "high"
        if p_hi < alpha and effect > cfg.tolerance
        else "low"
        if p_lo < alpha and -effect > cfg.tolerance
        else "pass"
    )
    p = p_hi if verdict == "high" or (verdict == "pass" and p_hi <= p_lo) else p_lo
    reason = (
        f"{name}: canary {_fmt(name, cv)} vs champion {_fmt(name, hv)}, {_fmt_effect(name, effect, cfg.tolerance)}, "
        f"p={p:.2g}, n={c.size}/{h.size}" + ("" if verdict == "pass" else f" -> {verdict}")
    )
    return MetricResult(**base, verdict=verdict, effect=effect, p_value=p, reason=reason)


def judge(canary: dict[str, np.ndarray], champion: dict[str, np.ndarray], policy: Canary) -> Verdict:
    """Judge the canary's samples against the champion's under ``policy`` (see the module docstring)."""
    unknown = sorted(set(policy.metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown canary metric(s) {unknown}; known: {list(METRICS)}")
    alpha = 1 - policy.confidence
    results = []
    for name in METRICS:
        if name not in policy.metrics:
            continue
        c, h = (np.asarray(s.get(name, ()), dtype=float).ravel() for s in (canary, champion))
        need = policy.min_labels if name in LABELLED else policy.min_requests
        results.append(_judge_metric(name, policy.metrics[name], c[np.isfinite(c)], h[np.isfinite(h)], need, alpha))

    judged = [m for m in results if m.verdict != "nodata"]
    total = sum(m.weight for m in judged)
    score = 100.0 * sum(m.weight for m in judged if m.verdict == "pass") / total if total else 0.0
    failed = [m for m in judged if m.verdict != "pass"]
    critical = [m for m in failed if m.critical]
    missing = [m for m in results if m.verdict == "nodata" and m.name not in LABELLED]
    if critical:
        outcome, shown = "fail", critical
    elif missing:
        outcome, shown = "nodata", missing
    else:
        outcome = "pass" if score >= policy.pass_score else "marginal" if score >= policy.marginal_score else "fail"
        shown = failed
    if shown:
        label = {"fail": "critical " if critical else "", "nodata": ""}.get(outcome, "")
        reason = f"{outcome} (score {score:.0f}): " + "; ".join(label + m.reason for m in shown)
    else:
        skipped = [m.name for m in results if m.verdict == "nodata"]
        reason = f"{outcome} (score {score:.0f}): {len(judged)} metric(s) within tolerance" + (
            f"; not judged yet: {', '.join(skipped)}" if skipped else ""
        )
    return Verdict(outcome=outcome, score=score, metrics=results, reason=reason)
