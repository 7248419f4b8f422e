"""Canary judge calibration: false rollbacks of identical models, detection of real regressions, sample sizes.

Run: .venv/bin/python bench/bench_canary_judge.py [--reps 400] [--seed 20261123] [--workers 2]
     [--confidence C --out FILE]   (what-if: another confidence than the policy default)
Writes bench/RESULTS_canary_judge.md. Not a test: nothing asserts.

Simulated serving data, i.i.d. per request (one row per request), the same on both sides unless a
scenario changes the canary:
  latency_ms  log-normal, median 5 ms, sigma 0.5 (p99 about 16 ms)
  error       Bernoulli 0.3 % per request (failed requests have no latency and no score)
  score       Beta(0.3, 8): fraud-like, median 0.009, mean 0.036
  accuracy    Bernoulli 0.90 per labelled prediction, independent of the score (each metric's test
              only sees its own array, so coupling them would change nothing but the score test)
Part 1 judges one step with n requests (and n labels) on EACH side, min_requests = min_labels = 10 so
the tests' own power shows. Part 2 runs whole rollouts with the default policy: N requests per step
length, the canary gets steps[i] % of them; a marginal / nodata step is extended by one more step length
(data accumulate, as the canary DAG reads from the step's start) up to max_extensions, then rolled back;
at 100 % the champion's sample is all its requests since the canary started.
"""

from __future__ import annotations

import argparse
import multiprocessing as mp
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from ml_ops.config import Canary
from ml_ops.rollout.judge import judge, step_samples

OVERRIDES: dict = {}  # what-if policy fields (--confidence), set before the pool forks

BASE = {"latency": 1.0, "error": 0.003, "accuracy": 0.90, "score_scale": 1.0, "load_sd": 0.0}
# name -> (canary's change, the goal it measures, label share for part 2)
SCENARIOS = {
    "identical": ({}, "false", 1.0),
    "identical, load noise": ({"load_sd": 0.05}, "false", 1.0),
    "latency +10% (at tolerance)": ({"latency": 1.10}, "info", 1.0),
    "latency +20%": ({"latency": 1.20}, "detect", 1.0),
    "accuracy 0.90->0.88 (at tolerance)": ({"accuracy": 0.88}, "info", 1.0),
    "accuracy 0.90->0.85": ({"accuracy": 0.85}, "detect", 1.0),
    "accuracy 0.90->0.85, 25% labelled": ({"accuracy": 0.85}, "detect", 0.25),
    "errors 0.3%->3%": ({"error": 0.03}, "detect", 1.0),
    "scores x3 (A = 0.62, a retrained model)": ({"score_scale": 3.0}, "info", 1.0),
    "scores x10 (A = 0.73)": ({"score_scale": 10.0}, "info", 1.0),
}
PART1 = [
    "identical",
    "latency +10% (at tolerance)",
    "latency +20%",
    "accuracy 0.90->0.88 (at tolerance)",
    "accuracy 0.90->0.85",
    "errors 0.3%->3%",
    "scores x3 (A = 0.62, a retrained model)",
    "scores x10 (A = 0.73)",
]
PART2 = [
    "identical",
    "identical, load noise",
    "latency +20%",
    "accuracy 0.90->0.85",
    "accuracy 0.90->0.85, 25% labelled",
    "errors 0.3%->3%",
]
SIZES1 = [100, 200, 500, 1000, 2000, 5000]  # requests (and labels) per side, one look
SIZES2 = [40, 100, 200, 500, 1000, 2000]  # canary requests at step 1 (= 10 % of N)


def side(rng: np.random.Generator, n: int, p: dict, label_share: float, load: float = 1.0) -> dict[str, np.ndarray]:
    err = rng.random(n) < p["error"]
    ok = int(n - err.sum())
    return {
        "error_rate": err.astype(float),
        "latency_ms": 5.0 * p["latency"] * load * rng.lognormal(0.0, 0.5, ok),
        "score": np.minimum(p["score_scale"] * rng.beta(0.3, 8.0, ok), 1.0),
        "accuracy": (rng.random(rng.binomial(ok, label_share)) < p["accuracy"]).astype(float),
    }


def cat(parts: list[dict[str, np.ndarray]]) -> dict[str, np.ndarray]:
    return {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}


def one_look(task: tuple) -> dict:
    scenario, n, reps, seed = task
    change, _, _ = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    policy = Canary(**{**OVERRIDES, "min_requests": 10, "min_labels": 10})
    can_p = {**BASE, **change}
    counts = {"fail": 0, "marginal": 0, "pass": 0, "nodata": 0}
    for _ in range(reps):
        v = judge(side(rng, n, can_p, 1.0), side(rng, n, BASE, 1.0), policy)
        counts[v.outcome] += 1
    return {"scenario": scenario, "n": n, **{k: c / reps for k, c in counts.items()}}


def rollout(rng: np.random.Generator, N: int, change: dict, label_share: float, policy: Canary) -> tuple:
    """(promoted?, step caught 1-based or None, looks, why) of one whole canary."""
    can_p = {**BASE, **change}
    champion_since_start: list[dict] = []
    looks = 0
    for i, pct in enumerate(policy.steps):
        w = pct / 100
        can, champ = [], []
        for ext in range(policy.max_extensions + 1):
            load = float(np.exp(rng.normal(0.0, change.get("load_sd", 0.0))))  # this window's load, both sides
            can.append(side(rng, round(w * N), can_p, label_share, load))
            if w < 1:
                champ.append(side(rng, round((1 - w) * N), BASE, label_share, load))
            v = judge(cat(can), cat(champ if w < 1 else champion_since_start), policy)
            looks += 1
            if v.outcome == "pass":
                break
            if v.outcome == "fail" or ext == policy.max_extensions:
                return False, i + 1, looks, v.outcome
        champion_since_start += champ
    return True, None, looks, "pass"


def whole_canary(task: tuple) -> dict:
    scenario, n1, reps, seed = task
    change, _, label_share = SCENARIOS[scenario]
    rng = np.random.default_rng(seed)
    policy = Canary(**OVERRIDES)
    N = n1 * 100 // policy.steps[0]
    rolled, caught, steps, looks, why = 0, 0, [0] * len(policy.steps), 0, {}
    for _ in range(reps):
        promoted, step, k, w = rollout(rng, N, change, label_share, policy)
        looks += k
        if not promoted:
            rolled += 1
            caught += w == "fail"  # the judge saw it (not just too little data by the deadline)
            steps[step - 1] += 1
            why[w] = why.get(w, 0) + 1
    return {
        "scenario": scenario,
        "n1": n1,
        "N": N,
        "rolled_back": rolled / reps,
        "caught": caught / reps,
        "steps": [s / reps for s in steps],
        "looks": looks / reps,
        "why": why,
    }


def time_step_samples() -> float:
    rng = np.random.default_rng(0)
    n = 100_000
    logs = pd.DataFrame(
        {
            "request_id": [f"r{i // 2}" for i in range(n)],
            "row": np.arange(n) % 2,
            "ts": pd.Timestamp("2026-11-23", tz="UTC"),
            "version": 2,
            "route": np.where(rng.random(n) < 0.5, "canary", "champion"),
            "routing_key": "k",
            "latency_ms": rng.lognormal(1.6, 0.5, n),
            "score": rng.beta(0.3, 8, n),
            "error": np.where(rng.random(n) < 0.003, "boom", None),
        }
    )
    logs["route"] = logs.groupby("request_id")["route"].transform("first")
    fb = logs[["request_id", "row", "ts"]].sample(frac=0.5, random_state=0).assign(label=1)
    t = time.perf_counter()
    step_samples(logs, fb)
    return time.perf_counter() - t


def pct(x: float) -> str:
    return f"{100 * x:.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--reps", type=int, default=400)
    ap.add_argument("--seed", type=int, default=20261123)
    ap.add_argument("--workers", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--confidence", type=float, default=None, help="what-if: override the policy's confidence")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_canary_judge.md"))
    args = ap.parse_args()
    if args.confidence is not None:
        OVERRIDES["confidence"] = args.confidence
    seeds = iter(np.random.SeedSequence(args.seed).generate_state(len(PART1) * len(SIZES1) + len(PART2) * len(SIZES2)))
    tasks1 = [(s, n, args.reps, next(seeds)) for s in PART1 for n in SIZES1]
    tasks2 = [(s, n, args.reps, next(seeds)) for s in PART2 for n in SIZES2]
    t0 = time.perf_counter()
    with mp.get_context("fork").Pool(args.workers) as pool:
        res2 = pool.map_async(whole_canary, tasks2, chunksize=1)
        res1 = pool.map(one_look, tasks1, chunksize=1)
        res2 = res2.get()
    elapsed = time.perf_counter() - t0
    ss = time_step_samples()
    policy = Canary(**OVERRIDES)
    m = policy.metrics

    lines = [
        "# Canary judge calibration",
        "",
        (
            f"Run: `python bench/bench_canary_judge.py` (as `.venv/bin/python bench/bench_canary_judge.py --reps "
            f"{args.reps} --seed {args.seed}`), 2026-11-23, {platform.platform()}, Python {platform.python_version()}, "
            f"{os.cpu_count()} cores, {args.workers} workers: {elapsed:.0f} s. {args.reps} replications per cell."
        ),
        "",
        "Policy (defaults of `ml_ops.config.Canary`" + (f", what-if {OVERRIDES}" if OVERRIDES else "") + "): "
        f"steps {policy.steps}, confidence {policy.confidence}, min_requests {policy.min_requests}, "
        f"min_labels {policy.min_labels}, max_extensions {policy.max_extensions}, pass_score {policy.pass_score:g}, "
        f"marginal_score {policy.marginal_score:g}; metrics: "
        + ", ".join(
            f"{k} ({v.direction}, tol {v.tolerance:g}{', critical' if v.critical else ''}, weight {v.weight:g})"
            for k, v in m.items()
        )
        + ".",
        "",
        (
            "Data (per request, i.i.d., same on both sides unless the scenario changes the canary): latency "
            "log-normal, median 5 ms, sigma 0.5; errors 0.3 %; scores Beta(0.3, 8) (fraud-like, median 0.009); "
            'accuracy 0.90 per labelled prediction. "load noise": every step length (window) multiplies both '
            "sides' latency by exp(N(0, 0.05)); at 100 % the champion's windows are earlier ones than the canary's."
        ),
        "",
        "## 1. One look, n requests and n labels on each side (min_requests = min_labels = 10)",
        "",
        (
            "Share of judgements whose outcome is `fail` (critical metric out) or, for the score, not `pass`. "
            "Rows marked (tolerance) sit exactly on the tolerance band: their rate is the test's size (<= 1 - "
            f"confidence = {100 * (1 - policy.confidence):.0f} % is correct)."
        ),
        "",
        "| scenario | " + " | ".join(f"n={n}" for n in SIZES1) + " |",
        "|---|" + "---:|" * len(SIZES1),
    ]
    for s in PART1:
        row = {r["n"]: r for r in res1 if r["scenario"] == s}
        key = (lambda r: 1 - r["pass"]) if s.startswith("scores") else (lambda r: r["fail"])
        lines.append(f"| {s} | " + " | ".join(pct(key(row[n])) for n in SIZES1) + " |")

    lines += [
        "",
        "## 2. Whole canary, the policy above",
        "",
        (
            "N requests per step length in total; the canary gets 10/25/50/100 % of them, so n1 = canary requests "
            "at step 1 = N/10 (step 4: N). Labels: every successful prediction is labelled by the time its step "
            "is judged, except the 25 % row. Rolled back = share of canaries that did not reach promotion "
            "(a fail at any step, or still marginal / nodata after 3 extensions)."
        ),
        "",
        "| scenario | " + " | ".join(f"n1={n} (N={n * 10})" for n in SIZES2) + " |",
        "|---|" + "---:|" * len(SIZES2),
    ]
    for s in PART2:
        row = {r["n1"]: r for r in res2 if r["scenario"] == s}
        goal = SCENARIOS[s][1]
        key = "caught" if goal == "detect" else "rolled_back"
        label = "caught (rolled back on a fail) %" if goal == "detect" else "rolled back (any reason) %"
        lines.append(f"| {s}: {label} | " + " | ".join(pct(row[n][key]) for n in SIZES2) + " |")
    lines += [
        "",
        (
            "Step at which the rollback happened (% of all canaries at step 1 / 2 / 3 / 4), and mean looks "
            "(judgements) per canary:"
        ),
        "",
        "| scenario | " + " | ".join(f"n1={n}" for n in SIZES2) + " |",
        "|---|" + "---:|" * len(SIZES2),
    ]
    for s in PART2:
        row = {r["n1"]: r for r in res2 if r["scenario"] == s}
        lines.append(
            f"| {s} | "
            + " | ".join(
                " / ".join(f"{100 * x:.0f}" for x in row[n]["steps"]) + f" ({row[n]['looks']:.1f})" for n in SIZES2
            )
            + " |"
        )
    whys = {}
    for r in res2:
        for k, c in r["why"].items():
            whys.setdefault(r["scenario"], {}).setdefault(k, 0)
            whys[r["scenario"]][k] += c
    lines += [
        "",
        "Last outcome of rolled-back canaries, all sizes together: "
        + "; ".join(f"{s}: " + ", ".join(f"{k} {c}" for k, c in sorted(w.items())) for s, w in whys.items())
        + ".",
        "",
        f"`step_samples` on 100,000 log rows (2-row requests) + 50,000 feedback rows: {ss:.2f} s.",
        "",
    ]

    def first(scenario: str, ok) -> str:
        row = {r["n1"]: r for r in res2 if r["scenario"] == scenario}
        key = "caught" if SCENARIOS[scenario][1] == "detect" else "rolled_back"
        hit = [n for i, n in enumerate(SIZES2) if all(ok(row[m][key]) for m in SIZES2[i:])]
        return f"n1 >= {hit[0]} (N >= {hit[0] * 10})" if hit else f"not met at n1 = {SIZES2[-1]}"

    def first1(scenario: str, ok) -> str:
        row = {r["n"]: r for r in res1 if r["scenario"] == scenario}
        hit = [n for i, n in enumerate(SIZES1) if all(ok(row[m]["fail"]) for m in SIZES1[i:])]
        return f"n >= {hit[0]} per side" if hit else f"not met at n = {SIZES1[-1]}"

    lines += [
        "## Goals (computed from the tables above)",
        "",
        "Smallest size of the sweep from which every larger size meets the goal.",
        "",
        "| goal | one look (part 1) | whole canary (part 2) |",
        "|---|---|---|",
        (
            f"| false rollback <= 5 %, identical models | {first1('identical', lambda x: x <= 0.05)} | "
            f"{first('identical', lambda x: x <= 0.05)} |"
        ),
        f"| same, with load noise | - | {first('identical, load noise', lambda x: x <= 0.05)} |",
        (
            f"| detect latency +20 % >= 95 % | {first1('latency +20%', lambda x: x >= 0.95)} | "
            f"{first('latency +20%', lambda x: x >= 0.95)} |"
        ),
        (
            f"| detect accuracy 0.90 -> 0.85 >= 95 % | {first1('accuracy 0.90->0.85', lambda x: x >= 0.95)} (labels) | "
            f"{first('accuracy 0.90->0.85', lambda x: x >= 0.95)}; 25 % labelled: "
            f"{first('accuracy 0.90->0.85, 25% labelled', lambda x: x >= 0.95)} |"
        ),
        (
            f"| detect errors 0.3 % -> 3 % >= 95 % | {first1('errors 0.3%->3%', lambda x: x >= 0.95)} | "
            f"{first('errors 0.3%->3%', lambda x: x >= 0.95)} |"
        ),
        "",
    ]
    text = "\n".join(lines)
    out = Path(args.out)
    notes = ""
    if out.exists() and "<!-- notes -->" in out.read_text():  # hand-written findings survive a re-run
        notes = out.read_text().split("<!-- notes -->", 1)[1]
    out.write_text(text + "\n<!-- notes -->" + (notes or "\n"))
    print(text)


if __name__ == "__main__":
    main()
