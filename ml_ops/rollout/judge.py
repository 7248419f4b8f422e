"""Kayenta-style canary judge: canary vs champion samples of one traffic step -> pass / marginal / fail.

Pure (numpy, pandas, scipy); ``ml_ops.rollout.canary`` feeds it the serving logs joined to the gateway's
feedback labels, and the policy (``ml_ops.config.Canary``). Calibration: ``bench/bench_canary_judge.py`` ->
``bench/RESULTS_canary_judge.md``.

Per metric, one-sided test in the bad direction, at alpha = 1 - ``policy.confidence`` (``either``: both
directions at alpha/2). A metric fails ("high"/"low") only when the change is significant beyond the
tolerance AND its point estimate (``effect``) is past the tolerance.

Traffic metrics (every request):

* ``error_rate`` (rate, mean reported): ``effect`` = p_canary - p_champion, tolerance absolute. Wald z-test
  of H0 "change <= tolerance" with the Agresti-Caffo adjustment (one success and one failure added per
  side), so zero errors on both sides still gives a sane standard error.
* ``latency_ms`` (continuous, median reported): the model call's CPU time (see ``step_samples``);
  ``effect`` = median ratio - 1, tolerance relative.
  Mann-Whitney U of canary / (1 + tol) against the champion (decrease: canary / (1 - tol)).
* ``score`` (continuous, median reported): a relative shift is meaningless for fraud scores near 0, so
  ``effect`` = A - 0.5, where A = P(canary score > champion score) (Mann-Whitney U / (n1 n2), the
  "probability of superiority"); tolerance on |A - 0.5| (0.2: A outside 0.3..0.7, about x10 on
  fraud-like scores; a retrained model commonly moves A by 0.1). z-test of A with DeLong's standard error.

Quality metrics (labelled predictions: feedback rows joined to the serving logs; two independent samples,
one per route, so every test is unpaired). Accuracy at a threshold is ~98 % for any model at a 2 % base
rate, so the defaults are a proper scoring rule and a ranking metric:

* ``log_loss`` (mean per-row log loss reported): ``effect`` = LL_canary / LL_champion - 1, tolerance
  relative. Welch z-test of LL_canary - (1 + tol) LL_champion > 0 on the per-row losses, post-stratified by
  label: each route's LL is (1 - pi) x mean loss of its negatives + pi x mean loss of its positives, pi the
  base rate of both routes pooled. Routing does not depend on the label, so both routes face the same
  base rate; without stratifying, the chance difference in the routes' fraud counts (4 vs 7 positives)
  would dominate a mean that the positives make. Welch rather than Mann-Whitney because the proper scoring
  rule is the mean loss: a rank test of per-row losses is ruled by the 98 % negatives (a test of the score
  level, which ``score`` already does) and blind to the positives. Not a bootstrap: the z-test is exact in
  its variance (a linear combination of stratum means) and costs microseconds per look; the bench shows
  its size holds from ``min_per_class`` positives.
* ``roc_auc``: ``effect`` = AUC_canary - AUC_champion, tolerance absolute; each AUC's variance by DeLong
  (placement values; unpaired, so Var = Var_canary + Var_champion).
* ``pr_auc`` (average precision, as sklearn): ``effect`` = AP difference, tolerance absolute; each AP's
  variance from 200 Poisson-bootstrap resamples of its route (no closed form). Depends on the base rate.
* ``accuracy`` (only where configured): share of labelled rows with ``(score >= SCORE_THRESHOLD) == label``,
  the rate test above.

Data: traffic metrics need ``policy.min_requests`` values per side; quality metrics ``policy.min_labels``
labelled rows per side, and log_loss / roc_auc / pr_auc also ``policy.min_per_class`` positives and
negatives per side; fewer -> that metric is "nodata". Outcome, in order: a failing critical metric ->
"fail"; a nodata traffic metric (quality ones wait for labels, which may not have matured) -> "nodata";
else the score 100 x weight passing / weight judged: >= pass_score "pass", >= marginal_score "marginal",
else "fail". Only metrics named in ``policy.metrics`` are judged; a name outside METRICS is a ValueError
(a typo must not silently drop a check).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
from scipy import stats

from ml_ops import layout
from ml_ops.jsonable import to_jsonable as _jsonable
from ml_ops.scoring import SCORE_THRESHOLD

if TYPE_CHECKING:
    from ml_ops.config import Canary, CanaryMetric

METRICS = ("error_rate", "latency_ms", "score", "log_loss", "roc_auc", "pr_auc", "accuracy")
KINDS = {
    "error_rate": "rate",
    "latency_ms": "continuous",
    "score": "continuous",
    "log_loss": "loss",
    "roc_auc": "ranking",
    "pr_auc": "ranking",
    "accuracy": "rate",
}
LABELLED = ("log_loss", "roc_auc", "pr_auc", "accuracy")  # judged on labelled rows; nodata does not block
BY_CLASS = ("log_loss", "roc_auc", "pr_auc")  # also need min_per_class positives and negatives per side
SAMPLE_KEYS = ("error_rate", "latency_ms", "score", "label", "label_score")
_ROUTES = layout.ROUTES
_EPS = 1e-15  # scores are clipped to [eps, 1 - eps] for the log loss (as sklearn)
PR_AUC_RESAMPLES = 200


# --------------------------------------------------------------------------- samples from serving logs


def _empty() -> dict[str, np.ndarray]:
    return {k: np.empty(0, dtype=float) for k in SAMPLE_KEYS}


def step_samples(logs: pd.DataFrame | None, feedback: pd.DataFrame | None) -> dict[str, dict[str, np.ndarray]]:
    """``{"champion": {key: 1-D array}, "canary": {...}}`` from serving-log rows and feedback.

    error_rate: one 0/1 per request (failed = any row has an error or no score); latency_ms: one per
    successful request, the model call's CPU time (``model_cpu_ms``; logs without it: the wall time
    ``latency_ms``), because a 10 % canary's wall time is inflated by sharing the GIL with the
    champion's thread (``ml_ops.serving.runner``); score: one per successful row; label and label_score:
    one pair per labelled successful row (0/1 label, the score it got), feedback joined on
    (request_id, row), the latest label winning."""
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
            "label": (labelled["label"] > 0.5).to_numpy(dtype=float),
            "label_score": labelled["score"].to_numpy(dtype=float),
        }
    return out


# --------------------------------------------------------------------------- verdicts


@dataclass
class MetricResult:
    name: str
    kind: str  # rate | continuous | loss | ranking
    direction: str  # increase | decrease | either: the bad change
    verdict: str  # pass | high | low | nodata
    critical: bool
    weight: float
    n_canary: int  # values (labelled rows for quality metrics)
    n_champion: int
    canary_value: float  # mean (rates, log loss), median (continuous) or the area (ranking)
    champion_value: float
    effect: float  # compared with the tolerance; see the module docstring
    tolerance: float
    p_value: float  # of "worse than the tolerance" (either: two-sided, alpha split)
    reason: str
    positives_canary: int | None = None  # labelled positives (quality metrics)
    positives_champion: int | None = None


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
            if m.positives_canary is not None:
                values.update(positives_canary=m.positives_canary, positives_champion=m.positives_champion)
            if m.verdict != "nodata":
                values["passed"] = float(m.verdict == "pass")
            out.update({f"{m.name}.{k}": float(v) for k, v in values.items() if v is not None and math.isfinite(v)})
        return out


# --------------------------------------------------------------------------- tests
# Each takes (canary, champion, tolerance, judge upwards?, judge downwards?) and returns (effect,
# p of "beyond the tolerance upwards", p of "... downwards", canary value, champion value).

Stat = tuple[float, float, float, float, float]
Labelled = tuple[np.ndarray, np.ndarray]  # (scores, 0/1 labels)


def _z(diff: float, se: float) -> float:
    """One-sided p-value of "diff > 0": P(Z > diff / se); with a zero standard error the (exact) difference
    decides (0 when it is beyond, 1 when not)."""
    if se > 0:
        return float(stats.norm.sf(diff / se))
    return float(diff <= 0)


def _rate_test(c: np.ndarray, h: np.ndarray, tol: float, hi: bool, lo: bool) -> Stat:
    """Agresti-Caffo adjusted Wald z of p_canary - p_champion beyond the absolute tolerance."""
    pc, ph = (c.sum() + 1) / (c.size + 2), (h.sum() + 1) / (h.size + 2)
    se = math.sqrt(pc * (1 - pc) / (c.size + 2) + ph * (1 - ph) / (h.size + 2))
    d = pc - ph
    return float(c.mean() - h.mean()), _z(d - tol, se), _z(-d - tol, se), float(c.mean()), float(h.mean())


def _latency_test(c: np.ndarray, h: np.ndarray, tol: float, hi: bool, lo: bool) -> Stat:
    """effect = median ratio - 1, p(canary > champion x (1+tol)), p(canary < champion x (1-tol))."""
    mc, mh = float(np.median(c)), float(np.median(h))
    effect = mc / mh - 1 if mh > 0 else (0.0 if mc == mh else math.inf)
    p_hi = stats.mannwhitneyu(c / (1 + tol), h, alternative="greater", method="asymptotic").pvalue if hi else 1.0
    p_lo = (
        stats.mannwhitneyu(c / (1 - tol), h, alternative="less", method="asymptotic").pvalue if lo and tol < 1 else 1.0
    )  # a drop of 100 % or more cannot happen
    return effect, float(p_hi), float(p_lo), mc, mh


def _placements(a: np.ndarray, b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """DeLong's placement values: per value of ``a`` the share of ``b`` below it, per value of ``b`` the
    share of ``a`` above it (ties count half). Their means are P(a > b); only means and variances are used,
    so both come out sorted (searchsorted on sorted queries: O(n log n), Sun & Xu 2014)."""
    sa, sb = np.sort(a), np.sort(b)
    va = (np.searchsorted(sb, sa, "left") + np.searchsorted(sb, sa, "right")) / (2 * b.size)
    vb = 1 - (np.searchsorted(sa, sb, "left") + np.searchsorted(sa, sb, "right")) / (2 * a.size)
    return va, vb


def _delong(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """P(a > b) (ties half) and its variance: DeLong, DeLong & Clarke-Pearson (1988), "Comparing the areas
    under two or more correlated ROC curves", Biometrics 44:837-845, eq. for one curve; fast placements:
    Sun & Xu (2014), IEEE Signal Processing Letters 21(11):1389-1393. With a = scores of positives and
    b = scores of negatives it is the ROC-AUC."""
    va, vb = _placements(a, b)
    var = (va.var(ddof=1) / a.size if a.size > 1 else 0.0) + (vb.var(ddof=1) / b.size if b.size > 1 else 0.0)
    return float(va.mean()), float(var)


def _superiority_test(c: np.ndarray, h: np.ndarray, tol: float, hi: bool, lo: bool) -> Stat:
    """effect = P(canary > champion) - 0.5 (ties half): Mann-Whitney U / (n1 n2), DeLong standard error."""
    a, var = _delong(c, h)
    effect, se = a - 0.5, math.sqrt(var)
    return effect, _z(effect - tol, se), _z(-effect - tol, se), float(np.median(c)), float(np.median(h))


def row_log_loss(scores: np.ndarray, labels: np.ndarray) -> np.ndarray:
    p = np.clip(scores, _EPS, 1 - _EPS)
    return np.where(labels > 0.5, -np.log(p), -np.log1p(-p))


def _strata(loss: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(mean, variance of the mean) of the losses of negatives and positives."""
    parts = (loss[y < 0.5], loss[y > 0.5])
    means = np.array([p.mean() for p in parts])
    var = np.array([p.var(ddof=1) / p.size if p.size > 1 else 0.0 for p in parts])
    return means, var


def _log_loss_test(c: Labelled, h: Labelled, tol: float, hi: bool, lo: bool) -> Stat:
    """Post-stratified mean log loss per route at the pooled base rate; Welch z of the relative change."""
    (sc, yc), (sh, yh) = c, h
    pi = (yc.sum() + yh.sum()) / (yc.size + yh.size)
    w = np.array([1 - pi, pi])
    mc, vc = _strata(row_log_loss(sc, yc), yc)
    mh, vh = _strata(row_log_loss(sh, yh), yh)
    llc, llh = float(w @ mc), float(w @ mh)
    effect = llc / llh - 1 if llh > 0 else (0.0 if llc == llh else math.inf)

    def p_beyond(m: float, sign: int) -> float:  # p of LL_canary > m LL_champion (sign -1: of "<")
        se = math.sqrt(float(w**2 @ (vc + m * m * vh)))
        return _z(sign * (llc - m * llh), se)

    return effect, p_beyond(1 + tol, 1), (p_beyond(1 - tol, -1) if tol < 1 else 1.0), llc, llh


def _auc_test(c: Labelled, h: Labelled, tol: float, hi: bool, lo: bool) -> Stat:
    """ROC-AUC difference of two independent samples; each variance by DeLong."""
    (sc, yc), (sh, yh) = c, h
    ac, vc = _delong(sc[yc > 0.5], sc[yc < 0.5])
    ah, vh = _delong(sh[yh > 0.5], sh[yh < 0.5])
    effect, se = ac - ah, math.sqrt(vc + vh)
    return effect, _z(effect - tol, se), _z(-effect - tol, se), ac, ah


def average_precision(scores: np.ndarray, labels: np.ndarray, weights: np.ndarray | None = None) -> np.ndarray:
    """Average precision (sklearn's definition, tied scores one threshold) of each row of ``weights``
    (k, n) (bootstrap multiplicities; None: the sample itself, k = 1)."""
    order = np.argsort(-scores, kind="mergesort")
    s, y = scores[order], labels[order] > 0.5
    w = np.ones((1, s.size)) if weights is None else weights[:, order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    gp = np.add.reduceat(w * y, starts, axis=1)
    gn = np.add.reduceat(w * ~y, starts, axis=1)
    tp, fp = np.cumsum(gp, axis=1), np.cumsum(gn, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(tp + fp > 0, tp / np.maximum(tp + fp, 1e-300), 0.0)
        return (gp * precision).sum(1) / gp.sum(1)


def _ap_variance(scores: np.ndarray, labels: np.ndarray, resamples: int = PR_AUC_RESAMPLES) -> float:
    rng = np.random.default_rng(scores.size)  # deterministic: the same data gives the same verdict
    chunk = max(1, 2_000_000 // max(scores.size, 1))
    values = []
    for start in range(0, resamples, chunk):
        w = rng.poisson(1.0, size=(min(chunk, resamples - start), scores.size)).astype(float)
        values.append(average_precision(scores, labels, w))
    v = np.concatenate(values)
    v = v[np.isfinite(v)]
    return float(v.var(ddof=1)) if v.size > 1 else math.inf


def _pr_auc_test(c: Labelled, h: Labelled, tol: float, hi: bool, lo: bool) -> Stat:
    (sc, yc), (sh, yh) = c, h
    ac, ah = float(average_precision(sc, yc)[0]), float(average_precision(sh, yh)[0])
    effect, se = ac - ah, math.sqrt(_ap_variance(sc, yc) + _ap_variance(sh, yh))
    return effect, _z(effect - tol, se), _z(-effect - tol, se), ac, ah


_TESTS: dict[str, Callable[..., Stat]] = {
    "error_rate": _rate_test,
    "accuracy": _rate_test,
    "latency_ms": _latency_test,
    "score": _superiority_test,
    "log_loss": _log_loss_test,
    "roc_auc": _auc_test,
    "pr_auc": _pr_auc_test,
}


# --------------------------------------------------------------------------- one metric


def _data(name: str, sample: dict) -> np.ndarray | Labelled:
    """The metric's data of one side: finite values, or (scores, labels) of the labelled rows."""
    if name not in LABELLED:
        x = np.asarray(sample.get(name, ()), dtype=float).ravel()
        return x[np.isfinite(x)]
    s = np.asarray(sample.get("label_score", ()), dtype=float).ravel()
    y = np.asarray(sample.get("label", ()), dtype=float).ravel()
    if s.size != y.size:
        raise ValueError(f"label_score ({s.size}) and label ({y.size}) must pair up")
    ok = np.isfinite(s) & np.isfinite(y)
    s, y = s[ok], (y[ok] > 0.5).astype(float)
    if name == "accuracy":
        return ((s >= SCORE_THRESHOLD) == (y > 0.5)).astype(float)
    return s, y


def _fmt(name: str, value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    if KINDS[name] == "rate":
        return f"{value:.2%}"
    if name == "latency_ms":
        return f"{value:.3g} ms"
    return f"{value:.4f}" if name in ("log_loss", "roc_auc", "pr_auc") else f"{value:.3g}"


def _fmt_effect(name: str, effect: float, tol: float) -> str:
    if name in ("latency_ms", "log_loss"):
        return f"{effect:+.1%} (tolerance {tol:.0%})"
    if name == "score":
        return f"P(canary>champion)-0.5 = {effect:+.3f} (tolerance {tol:.2f})"
    if KINDS[name] == "ranking":
        return f"{effect:+.4f} (tolerance {tol:.3f})"
    return f"{effect * 100:+.2f} pts (tolerance {tol * 100:.2f})"


def _judge_metric(name: str, cfg: CanaryMetric, c, h, policy: Canary, alpha: float) -> MetricResult:
    labelled = name in BY_CLASS
    nc, nh = (x[1].size if labelled else x.size for x in (c, h))
    pc, ph = (int(x[1].sum()) if labelled else None for x in (c, h))
    base = {
        "name": name,
        "kind": KINDS[name],
        "direction": cfg.direction,
        "critical": cfg.critical,
        "weight": cfg.weight,
        "n_canary": int(nc),
        "n_champion": int(nh),
        "tolerance": cfg.tolerance,
        "positives_canary": pc,
        "positives_champion": ph,
    }
    need = policy.min_labels if name in LABELLED else policy.min_requests
    short = min(nc, nh) < need
    if labelled:
        short = short or min(pc, nc - pc, ph, nh - ph) < policy.min_per_class
    if short:
        if labelled:
            have = f"{nc} canary / {nh} champion labels, {pc} / {ph} positives"
            want = f"{need} labels and {policy.min_per_class} of each class per side"
        else:
            have = f"{nc} canary / {nh} champion {'labels' if name in LABELLED else 'values'}"
            want = f"{need} per side"
        return MetricResult(
            **base,
            verdict="nodata",
            canary_value=math.nan,
            champion_value=math.nan,
            effect=math.nan,
            p_value=math.nan,
            reason=f"{name}: too little data, {have} (need {want})",
        )
    hi, lo = cfg.direction in ("increase", "either"), cfg.direction in ("decrease", "either")
    effect, p_hi, p_lo, cv, hv = _TESTS[name](c, h, cfg.tolerance, hi, lo)
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
    n = f"n={nc}/{nh}" + (f" ({pc}/{ph} positive)" if labelled else "")
    reason = (
        f"{name}: canary {_fmt(name, cv)} vs champion {_fmt(name, hv)}, {_fmt_effect(name, effect, cfg.tolerance)}, "
        f"p={p:.2g}, {n}" + ("" if verdict == "pass" else f" -> {verdict}")
    )
    return MetricResult(
        **base, verdict=verdict, canary_value=cv, champion_value=hv, effect=effect, p_value=p, reason=reason
    )


# --------------------------------------------------------------------------- the verdict


def judge(canary: dict[str, np.ndarray], champion: dict[str, np.ndarray], policy: Canary) -> Verdict:
    """Judge the canary's samples against the champion's under ``policy`` (see the module docstring).

    A side is ``{error_rate, latency_ms, score, label, label_score}`` (``step_samples``); missing keys are
    empty."""
    unknown = sorted(set(policy.metrics) - set(METRICS))
    if unknown:
        raise ValueError(f"unknown canary metric(s) {unknown}; known: {list(METRICS)}")
    alpha = 1 - policy.confidence
    results = [
        _judge_metric(name, policy.metrics[name], _data(name, canary), _data(name, champion), policy, alpha)
        for name in METRICS
        if name in policy.metrics
    ]

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
