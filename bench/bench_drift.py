"""Drift decision benchmark: calibration, power, and speed/memory against Evidently's defaults.

Run: .venv/bin/python bench/bench_drift.py [--days 200] [--days-1m 100] [--trials 200]
Writes bench/RESULTS_drift.md (numbers only; the discussion is in that file's header, kept on rewrite).

Data: 20 numeric columns (normal, log-normal, Poisson counts with ties, uniform, skewed), two
categorical columns (5 and 25 categories) and a model score (beta), i.i.d. per row. The reference is
5,000 rows, the size of the reference sample training logs (train.py reference_sample_rows). A
"no-drift" day draws reference and current afresh from the same distribution; the "jittered" variant
also moves every numeric column's mean by N(0, 0.02 sd) per day, the harmless day-to-day noise
that makes a bare p-value test alarm at large n. Calibration and power call ``drift_decision``, the
same statistics, correction and floor ``drift_report`` uses (its Evidently report is only rendered).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

N_NUM = 20
REF_ROWS = 5000
CATS5 = np.array(["a", "b", "c", "d", "e"], dtype=object)
P5 = np.array([0.4, 0.25, 0.15, 0.12, 0.08])
CATS25 = np.array([f"k{i:02d}" for i in range(25)], dtype=object)
P25 = np.r_[np.full(5, 0.12), np.full(20, 0.02)]
NUMERIC = [f"x{i:02d}" for i in range(N_NUM)]
COLUMNS = [*NUMERIC, "cat5", "cat25"]


def make(
    n: int, rng: np.random.Generator, *, jitter: float = 0.0, shift: float = 0.0, cat_shift: float = 0.0
) -> pd.DataFrame:
    """``shift``: mean shift of x00 in its own sd units; ``cat_shift``: share of mass moved from
    category a to e in cat5 (= total variation distance)."""
    cols = {}
    for i, name in enumerate(NUMERIC):
        kind = i % 5
        offset = (shift if i == 0 else 0.0) + (rng.normal(0, jitter) if jitter else 0.0)
        if kind == 2:  # counts stay integers: the rate moves instead (mean shift of offset sd)
            cols[name] = rng.poisson(max(3.0 + offset * np.sqrt(3.0), 0.01), n).astype("float64")
            continue
        if kind == 0:
            x, sd = rng.standard_normal(n), 1.0
        elif kind == 1:
            x, sd = rng.lognormal(0, 0.5, n), float(np.sqrt((np.exp(0.25) - 1) * np.exp(0.25)))
        elif kind == 3:
            x, sd = rng.random(n), float(np.sqrt(1 / 12))
        else:
            x, sd = rng.gamma(2.0, 1.0, n), float(np.sqrt(2.0))
        cols[name] = x + offset * sd
    p5 = P5.copy()
    if cat_shift:
        p5[0] -= cat_shift
        p5[4] += cat_shift
    cols["cat5"] = CATS5[np.searchsorted(np.cumsum(p5), rng.random(n) * p5.sum(), side="right").clip(0, 4)]
    cols["cat25"] = CATS25[np.searchsorted(np.cumsum(P25), rng.random(n), side="right").clip(0, 24)]
    cols["score"] = rng.beta(1, 20, n)
    return pd.DataFrame(cols)


def decision(ref: pd.DataFrame, cur: pd.DataFrame, settings) -> tuple[bool, bool]:
    """(our alarm, alarm of the same tests without the effect floor)."""
    from ml_ops.monitoring.drift import drift_decision

    alarm, rows = drift_decision(
        ref, cur, columns=[*COLUMNS, "score"], categorical=["cat5", "cat25"], settings=settings
    )
    return alarm, any(c.p_value <= c.threshold for c in rows if c.method != "none")


def calibration(sizes: list[int], days: int, days_1m: int, jitter: float, seed: int) -> list[dict]:
    from ml_ops.monitoring.drift import Settings

    out = []
    for n in sizes:
        n_days = days_1m if n >= 1_000_000 else days
        rng = np.random.default_rng([seed, n, int(jitter * 1000)])
        alarms = no_floor = 0
        t0 = time.perf_counter()
        for _ in range(n_days):
            a, b = decision(make(REF_ROWS, rng), make(n, rng, jitter=jitter), Settings())
            alarms += a
            no_floor += b
        out.append(
            {
                "rows": n,
                "days": n_days,
                "jitter": jitter,
                "alarm_rate": alarms / n_days,
                "alarm_rate_without_floor": no_floor / n_days,
                "seconds": time.perf_counter() - t0,
            }
        )
        print(json.dumps(out[-1]), flush=True)
    return out


def power(trials: int, seed: int) -> list[dict]:
    from ml_ops.monitoring.drift import Settings

    out = []
    cases = [("mean shift of x00 (sd)", s, 0.0) for s in (0.1, 0.25, 0.5, 1.0)]
    cases += [("cat5 share moved a->e (TVD)", 0.0, c) for c in (0.05, 0.1, 0.2, 0.3)]
    for n in (1000, 10_000):
        for label, shift, cat in cases:
            rng = np.random.default_rng([seed, n, int(shift * 100), int(cat * 100)])
            hits = 0
            for _ in range(trials):
                hits += decision(make(REF_ROWS, rng), make(n, rng, shift=shift, cat_shift=cat), Settings())[0]
            out.append({"rows": n, "case": label, "size": shift or cat, "trials": trials, "power": hits / trials})
            print(json.dumps(out[-1]), flush=True)
    return out


# --------------------------------------------------------------------------- speed / memory (subprocesses)

CHILD = r"""
import json, sys, threading, time, os
sys.path.insert(0, {root!r})
import pandas as pd, pyarrow.parquet as pq
which, ref_path, cur_path = sys.argv[1], sys.argv[2], sys.argv[3]
import evidently.presets, evidently.metrics  # imports are not part of the job
from ml_ops.monitoring.drift import drift_report, Settings
ref = pq.read_table(ref_path).to_pandas(); cur = pq.read_table(cur_path).to_pandas()
def rss():
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
base = rss(); peak = [base]; done = [False]
def watch():
    while not done[0]:
        peak[0] = max(peak[0], rss()); time.sleep(0.005)
th = threading.Thread(target=watch, daemon=True); th.start()
t0 = time.perf_counter()
if which == "ours":
    res = drift_report(ref, cur, columns=[c for c in cur.columns if c != "score"], score_column=None,
                       settings=Settings())
    html = res.html
    alarm = res.alarm
else:
    from evidently import DataDefinition, Dataset, Report
    from evidently.presets import DataDriftPreset
    dd = DataDefinition(numerical_columns=list(cur.columns))
    snap = Report([DataDriftPreset()]).run(Dataset.from_pandas(cur, data_definition=dd),
                                           Dataset.from_pandas(ref, data_definition=dd))
    html = snap.get_html_str(as_iframe=False)
    alarm = None
secs = time.perf_counter() - t0
done[0] = True; th.join()
peak[0] = max(peak[0], rss())
inp = int(ref.memory_usage(deep=True).sum() + cur.memory_usage(deep=True).sum())
print(json.dumps({{"which": which, "seconds": secs, "base_rss": base, "peak_rss": peak[0], "input_bytes": inp,
                  "html_bytes": len(html), "alarm": alarm}}))
"""


def speed(rows: list[int], seed: int) -> list[dict]:
    out = []
    tmp = Path(tempfile.mkdtemp(prefix="bench_drift_"))
    child = tmp / "child.py"
    child.write_text(CHILD.format(root=str(ROOT)))
    for n in rows:
        rng = np.random.default_rng([seed, n])
        paths = {}
        for side in ("ref", "cur"):
            df = pd.DataFrame({f"x{i:02d}": rng.standard_normal(n) for i in range(N_NUM)})
            paths[side] = tmp / f"{side}_{n}.parquet"
            df.to_parquet(paths[side], index=False)
            del df
        for which in ("ours", "evidently_default"):
            res = subprocess.run(
                [sys.executable, str(child), which, str(paths["ref"]), str(paths["cur"])],
                check=False,
                capture_output=True,
                text=True,
                cwd=tmp,
            )
            line = [x for x in res.stdout.splitlines() if x.startswith("{")]
            if res.returncode or not line:
                raise RuntimeError(f"{which} {n}: {res.stderr[-3000:]}")
            rec = {"rows": n, **json.loads(line[-1])}
            out.append(rec)
            print(json.dumps(rec), flush=True)
    return out


def write_results(path: Path, calib: list[dict], pw: list[dict], sp: list[dict], args) -> None:
    header, marker = "", "<!-- numbers below are generated by bench/bench_drift.py -->"
    if path.exists() and marker in path.read_text():
        header = path.read_text().split(marker)[0]
    mb = 1024 * 1024
    lines = [
        marker,
        "",
        (
            f"Generated on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}. Machine: {os.cpu_count()} cores, "
            f"{platform.platform()}, Python {platform.python_version()}. Load average at end: "
            f"{' / '.join(f'{x:.1f}' for x in os.getloadavg())} (shared machine; timings include that)."
        ),
        (
            f"Settings: false_alarm_rate=0.05, min_effect=0.1, max_sample_rows=50,000; reference {REF_ROWS} rows; "
            f"{N_NUM} numeric + 2 categorical + score = 23 tested columns; seed {args.seed}."
        ),
        "",
        "### Calibration: share of no-drift days that alarm (goal <= 0.05)",
        "",
        "| current rows | days | daily mean jitter (sd) | alarm rate | without effect floor | s/day |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for r in calib:
        lines.append(
            f"| {r['rows']:,} | {r['days']} | {r['jitter']} | {r['alarm_rate']:.3f} | "
            f"{r['alarm_rate_without_floor']:.3f} | {r['seconds'] / r['days']:.2f} |"
        )
    lines += [
        "",
        "### Power: share of drifted days that alarm (goal: 0.5 sd >= 0.80 at 1k, >= 0.95 at 10k)",
        "",
        "| current rows | shift | size | trials | power |",
        "|---:|---|---:|---:|---:|",
    ]
    for r in pw:
        lines.append(f"| {r['rows']:,} | {r['case']} | {r['size']} | {r['trials']} | {r['power']:.3f} |")
    lines += [
        "",
        "### Speed and memory: 1 day, 20 numeric columns, reference and current of the same size",
        "",
        (
            "| rows per side | job | seconds | input (MB) | RSS before (MB) | peak RSS (MB) | "
            "peak - before (MB) | (peak - before) / input | HTML (MB) |"
        ),
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in sp:
        inc = r["peak_rss"] - r["base_rss"]
        lines.append(
            f"| {r['rows']:,} | {r['which']} | {r['seconds']:.1f} | {r['input_bytes'] / mb:.0f} | "
            f"{r['base_rss'] / mb:.0f} | {r['peak_rss'] / mb:.0f} | {inc / mb:.0f} | "
            f"{inc / r['input_bytes']:.2f} | {r['html_bytes'] / mb:.1f} |"
        )
    by = {(r["rows"], r["which"]): r for r in sp}
    for n in sorted({r["rows"] for r in sp}):
        if (n, "ours") in by and (n, "evidently_default") in by:
            lines.append(
                f"\nSpeed-up at {n:,} rows: {by[(n, 'evidently_default')]['seconds'] / by[(n, 'ours')]['seconds']:.1f}x"
            )
    path.write_text(header + "\n".join(lines) + "\n")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--days", type=int, default=200)
    ap.add_argument("--days-1m", type=int, default=100)
    ap.add_argument("--trials", type=int, default=200)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--skip", default="", help="comma list of calibration,power,speed")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_drift.md"))
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    calib = pw = sp = []
    if "calibration" not in skip:
        sizes = [1000, 10_000, 100_000, 1_000_000]
        calib = calibration(sizes, args.days, args.days_1m, 0.0, args.seed)
        calib += calibration(sizes, args.days, args.days_1m, 0.02, args.seed)
    if "power" not in skip:
        pw = power(args.trials, args.seed)
    if "speed" not in skip:
        sp = speed([100_000, 1_000_000], args.seed)
    write_results(Path(args.out), calib, pw, sp, args)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
