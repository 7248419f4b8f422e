"""Time one day of the fraud pipeline's ingest (extract -> validate -> features) against the floor of just
reading the source and writing parquet; goals: each stage within 3x the floor, peak RSS <= 3 GB.

Run: .venv/bin/python bench/bench_ingest.py [--rows 1000000] [--history-days 7] [--history-rows N] [--repeats 1]
Writes bench/RESULTS_ingest.md.

Setup (not timed as a stage): a temp dir with a real S3 endpoint (``ml_ops.local.stack.Stack``, s3 only), a SQLite
source holding day D, and raw partitions of the ``--history-days`` days before D written straight to S3 at the
raw URIs, so validate's stats check and the per-customer history features have data.

Every measured thing runs in its own fresh subprocess (this file with ``--role``), so its peak RSS
(``ru_maxrss``) is its own. Imports are done first and timed separately; the clock around the stage covers the
step function call only. The store handed to the steps is an ``ObjectStore`` that also adds up the time
spent in its parquet/bytes calls, to split S3 + parquet I/O from compute.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import date, timedelta
from importlib.metadata import version
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

DAY = date(2026, 3, 10)
N_CUSTOMERS = 200_000
RATIO_GOAL, RSS_GOAL_MB = 3.0, 3 * 1024
STAGES = ["floor_local", "floor_s3", "extract", "validate", "features"]
# What-ifs, not product code: the same steps reading only the history columns they use (see what_if_*).
WHAT_IFS = ["validate_pruned", "features_pruned"]
# What each role needs loaded before its clock starts (the step functions import these lazily).
IMPORTS = {
    # pyarrow imports pandas lazily on its first pa.array() call (~1 s here): an import, so before the clock
    "floor_local": ["sqlite3", "pandas", "pyarrow", "pyarrow.parquet"],
    "floor_s3": ["sqlite3", "pandas", "pyarrow", "pyarrow.parquet", "boto3", "ml_ops.local.stack", "ml_ops.storage"],
    "extract": [
        "pandas",
        "pyarrow.parquet",
        "sqlalchemy",
        "boto3",
        "ml_ops.local.stack",
        "ml_ops.pipeline.steps",
        "ml_ops.pipeline.extract",
    ],
    "validate": [
        "pandas",
        "pyarrow.parquet",
        "boto3",
        "ml_ops.local.stack",
        "ml_ops.pipeline.steps",
        "ml_ops.pipeline.validate",
        "great_expectations",
    ],
    "features": [
        "pandas",
        "pyarrow.parquet",
        "boto3",
        "ml_ops.local.stack",
        "ml_ops.pipeline.steps",
        "ml_ops.pipeline.features",
    ],
}
IMPORTS["validate_pruned"], IMPORTS["features_pruned"] = IMPORTS["validate"], IMPORTS["features"]


def what_if_validate_pruned(cfg, store, interval) -> dict:
    """ml_ops.pipeline.steps.validate_step, except history partitions are read with only the stats columns."""
    from ml_ops.pipeline.steps import existing_partitions, uri
    from ml_ops.pipeline.validate import load_suite, validate_frame

    df = store.read_parquet(uri(cfg, "raw", interval.ds))
    history_uris = existing_partitions(store, cfg, "raw", interval.previous_days(cfg.validation.history_days))
    cols = list(cfg.validation.stats_columns) or None
    result = validate_frame(
        df,
        load_suite(cfg.suite_path()),
        history=[store.read_parquet(u, cols) for u in history_uris],
        stats_columns=cfg.validation.stats_columns,
        max_mean_shift_sigma=cfg.validation.max_mean_shift_sigma,
    )
    store.write_json(result.to_json(), uri(cfg, "validation", interval.ds, "whatif_result.json"))
    store.write_text(result.to_html(label="what-if"), uri(cfg, "validation", interval.ds, "whatif_report.html"))
    return {
        "success": result.success,
        "rows": len(df),
        "gx_seconds": result.statistics["gx_seconds"],
        "stats_seconds": result.statistics["stats_seconds"],
    }


def what_if_features_pruned(cfg, store, interval) -> dict:
    """ml_ops.pipeline.steps.features_step, except history partitions are read with only entity, timestamp and amount."""
    import pandas as pd

    from ml_ops.pipeline.features import build_features
    from ml_ops.pipeline.steps import existing_partitions, uri

    today = store.read_parquet(uri(cfg, "raw", interval.ds))
    f = cfg.features
    cols = [c for c in (f.entity_column, cfg.source.timestamp_column, f.amount_column) if c]
    uris = existing_partitions(store, cfg, "raw", interval.previous_days(f.lookback_days))
    history = pd.concat([store.read_parquet(u, cols) for u in uris], ignore_index=True) if uris else None
    keep = (
        cfg.source.id_column,
        cfg.source.timestamp_column,
        *cfg.feature_columns,
        cfg.target.column,
        cfg.target.label_available_column,
    )
    features = build_features(
        today,
        history,
        entity=f.entity_column,
        timestamp=cfg.source.timestamp_column,
        amount=f.amount_column,
        passthrough=list(dict.fromkeys(c for c in keep if c)),
    )
    return {"uri": store.write_parquet(features, uri(cfg, "features", "whatif-" + interval.ds)), "rows": len(features)}


def maxrss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed_store_class():
    from ml_ops.storage import ObjectStore

    class TimedStore(ObjectStore):
        """The real store, plus the seconds spent in each I/O method (outermost call only)."""

        io: dict

        def _timed(self, name, fn, *a, **kw):
            if getattr(self, "_depth", 0):
                return fn(*a, **kw)
            self._depth = 1
            t = time.perf_counter()
            try:
                return fn(*a, **kw)
            finally:
                self._depth = 0
                self.io[name] = self.io.get(name, 0.0) + time.perf_counter() - t

        def read_parquet(self, uri, columns=None):
            return self._timed("read_parquet", super().read_parquet, uri, columns)

        def write_parquet(self, df, uri):
            return self._timed("write_parquet", super().write_parquet, df, uri)

        def put_bytes(self, uri, data, content_type="application/octet-stream"):
            return self._timed("put_bytes", super().put_bytes, uri, data, content_type)

        def list(self, prefix_uri):
            return self._timed("list", super().list, prefix_uri)

    return TimedStore


# ---- child roles ------------------------------------------------------------------------------------------
def child(args) -> None:
    import importlib
    import logging

    logging.disable(logging.WARNING)  # GX is chatty; the numbers go to stdout as JSON
    t = time.perf_counter()
    for mod in IMPORTS[args.role]:
        importlib.import_module(mod)
    from ml_ops.config import load_pipeline_by_name
    from ml_ops.interval import DayInterval
    from ml_ops.local.stack import Stack

    cfg = load_pipeline_by_name("fraud")
    interval = DayInterval.for_day(DAY)
    import_s = time.perf_counter() - t
    rss_after_imports = maxrss_mb()

    stack = Stack(home=args.home, s3_port=args.s3_port)
    store = timed_store_class()(stack.s3_client())
    store.io = {}
    store.list(cfg.prefix() + "/")  # open the connection pool before the clock (not part of any stage)
    store.io = {}
    out: dict = {"role": args.role, "import_s": import_s, "rss_after_imports_mb": rss_after_imports}

    if args.role.startswith("floor"):
        import sqlite3

        import pyarrow as pa
        import pyarrow.parquet as pq

        fmt = "%Y-%m-%d %H:%M:%S"  # how SQLAlchemy/pandas stored the naive UTC timestamps (text)
        params = {"start": interval.start.strftime(fmt), "end": interval.end.strftime(fmt)}
        path = os.path.join(args.work, f"{args.role}.parquet")
        t = time.perf_counter()
        con = sqlite3.connect(args.db)
        cur = con.execute(cfg.sql_text(), params)
        names = [d[0] for d in cur.description]
        rows = cur.fetchall()
        out["query_fetch_s"] = time.perf_counter() - t
        table = (
            pa.table({n: pa.array(col) for n, col in zip(names, zip(*rows, strict=False), strict=False)})
            if rows
            else pa.table({})
        )
        del rows
        out["to_arrow_s"] = time.perf_counter() - t - out["query_fetch_s"]
        pq.write_table(table, path, compression="snappy")
        out["read_write_s"] = time.perf_counter() - t
        if args.role == "floor_s3":
            t2 = time.perf_counter()
            store.upload_file(path, f"s3://{stack.bucket}/bench/floor/data.parquet")
            out["upload_s"] = time.perf_counter() - t2
        out["stage_s"] = time.perf_counter() - t
        out["result"] = {"rows": table.num_rows, "bytes": os.path.getsize(path)}
    else:
        from ml_ops.pipeline import steps

        if args.role == "extract":
            import sqlalchemy as sa

            engine = sa.create_engine(f"sqlite:///{args.db}")

            def call():
                return steps.extract_step(cfg, store, interval, engine)
        elif args.role == "validate":

            def call():
                return steps.validate_step(cfg, store, interval)
        elif args.role == "features":

            def call():
                return steps.features_step(cfg, store, interval)
        else:
            fn = globals()["what_if_" + args.role]

            def call():
                return fn(cfg, store, interval)

        prof = None
        if args.profile:
            import cProfile

            prof = cProfile.Profile()
            prof.enable()
        t = time.perf_counter()
        try:
            out["result"] = call()
        except Exception as exc:  # noqa: BLE001 - a failed validation is still a timed run; say so
            out["result"] = {"error": f"{type(exc).__name__}: {str(exc)[:500]}"}
        out["stage_s"] = time.perf_counter() - t
        if prof is not None:
            import io as _io
            import pstats

            prof.disable()
            buf = _io.StringIO()
            pstats.Stats(prof, stream=buf).sort_stats("cumulative").print_stats(25)
            out["profile"] = buf.getvalue()
        if args.role == "validate" and "uri" in out["result"]:  # the outcome, from validate's own record
            out["result"]["success"] = store.read_json(out["result"]["uri"]).get("success")
    out["io"] = store.io
    out["peak_rss_mb"] = maxrss_mb()
    print("RESULT " + json.dumps(out, default=str), flush=True)


def setup_child(args) -> None:
    """Source DB with day D, and raw history partitions straight to S3."""
    import pandas as pd

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.sim import generate_transactions, load_source
    from ml_ops.local.stack import Stack
    from ml_ops.pipeline.steps import uri
    from ml_ops.storage import ObjectStore

    cfg = load_pipeline_by_name("fraud")
    store = ObjectStore(Stack(home=args.home, s3_port=args.s3_port).s3_client())
    info = {}
    t = time.perf_counter()
    day = generate_transactions(DAY, 1, rows_per_day=args.rows, n_customers=N_CUSTOMERS, label_delay_days=2)
    info["day_rows"] = len(day)
    load_source(f"sqlite:///{args.db}", "transactions", day)
    del day
    info["source_s"] = time.perf_counter() - t
    t = time.perf_counter()
    hist_rows = []
    for i in range(1, args.history_days + 1):
        d = DAY - timedelta(days=i)
        part = generate_transactions(d, 1, rows_per_day=args.history_rows, n_customers=N_CUSTOMERS, label_delay_days=2)
        assert isinstance(part, pd.DataFrame)
        store.write_parquet(part, uri(cfg, "raw", d.isoformat()))
        hist_rows.append(len(part))
    info["history_rows"] = hist_rows
    info["history_s"] = time.perf_counter() - t
    print("RESULT " + json.dumps(info), flush=True)


# ---- parent -----------------------------------------------------------------------------------------------
def spawn(role: str, args, common: list[str]) -> dict:
    proc = subprocess.run(
        [sys.executable, __file__, "--role", role, *common], check=False, cwd=ROOT, capture_output=True, text=True
    )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        tail = "\n".join(line for line in proc.stderr.splitlines() if "_docs_decorators" not in line)[-3000:]
        raise SystemExit(f"{role} failed ({proc.returncode}):\n{tail}")
    return json.loads(lines[-1][len("RESULT ") :])


def machine_facts() -> list[str]:
    free = subprocess.run(["free", "-g"], check=False, capture_output=True, text=True).stdout.strip()
    load = os.getloadavg()
    pkgs = ", ".join(
        f"{p} {version(p)}" for p in ("pandas", "numpy", "pyarrow", "SQLAlchemy", "boto3", "great-expectations")
    )
    return [
        (
            f"Machine: {os.cpu_count()} cores (`nproc`), {platform.platform()}, Python {platform.python_version()}; "
            f"{pkgs}. S3: `rclone serve s3` on localhost (ml_ops.local.stack), disk-backed. "
            f"Load average at end of run: {load[0]:.1f} / {load[1]:.1f} / {load[2]:.1f} "
            "(other jobs shared the machine; numbers include that)."
        ),
        "",
        "```",
        "$ free -g",
        free,
        "```",
    ]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rows", type=int, default=1_000_000, help="rows_per_day of day D (the measured day)")
    ap.add_argument("--history-days", type=int, default=7, help="raw partitions before D (fraud lookback is 7)")
    ap.add_argument("--history-rows", type=int, default=None, help="rows_per_day of the history (default --rows)")
    ap.add_argument("--repeats", type=int, default=1, help="fresh subprocesses per stage; the median is reported")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_ingest.md"))
    ap.add_argument(
        "--no-what-if",
        dest="what_if",
        action="store_false",
        help="skip the what-if rows (validate/features reading only the history columns they use)",
    )
    ap.add_argument(
        "--profile",
        action="store_true",
        help="after the timed runs, one cProfile'd run of validate and features (top functions in the file)",
    )
    ap.add_argument("--role", choices=["setup", *STAGES, *WHAT_IFS], help=argparse.SUPPRESS)
    ap.add_argument("--home", help=argparse.SUPPRESS)
    ap.add_argument("--s3-port", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--db", help=argparse.SUPPRESS)
    ap.add_argument("--work", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.history_rows is None:
        args.history_rows = args.rows
    if args.role == "setup":
        return setup_child(args)
    if args.role:
        return child(args)

    from ml_ops.local.stack import Stack

    tmp = Path(tempfile.mkdtemp(prefix="bench_ingest_"))
    home, work = tmp / "stack", tmp / "work"
    work.mkdir(parents=True)
    db = tmp / "source.db"
    st = Stack(home=home, s3_port=free_port(), mlflow_port=free_port(), airflow_port=free_port())
    common = [
        "--home",
        str(home),
        "--s3-port",
        str(st.s3_port),
        "--db",
        str(db),
        "--work",
        str(work),
        "--rows",
        str(args.rows),
        "--history-days",
        str(args.history_days),
        "--history-rows",
        str(args.history_rows),
    ]
    results: dict[str, list[dict]] = {}
    profiles: dict[str, dict] = {}
    try:
        st.up(["s3"])
        print(
            f"s3 up at {st.s3_url}; setting up {args.rows} rows for {DAY} + {args.history_days} history days "
            f"of {args.history_rows} rows",
            flush=True,
        )
        setup = spawn("setup", args, common)
        print(f"setup: {setup}", flush=True)
        roles = STAGES + (WHAT_IFS if args.what_if else [])
        for _ in range(args.repeats):
            for role in roles:  # extract writes the raw partition that validate and features read
                r = spawn(role, args, common)
                results.setdefault(role, []).append(r)
                print(
                    f"{role:12s} stage {r['stage_s']:7.2f}s  imports {r['import_s']:5.2f}s  "
                    f"peak RSS {r['peak_rss_mb']:7.0f} MB  io { ({k: round(v, 2) for k, v in r['io'].items()}) }  "
                    f"{r.get('result')}",
                    flush=True,
                )
        if args.profile:
            for role in ("validate", "features"):
                profiles[role] = spawn(role, args, [*common, "--profile"])
                print(f"profiled {role}: {profiles[role]['stage_s']:.2f}s under cProfile", flush=True)
    finally:
        st.down()
        shutil.rmtree(tmp, ignore_errors=True)

    med = {role: statistics.median(r["stage_s"] for r in rs) for role, rs in results.items()}
    best = {role: min(r["stage_s"] for r in rs) for role, rs in results.items()}
    peak = {role: max(r["peak_rss_mb"] for r in rs) for role, rs in results.items()}
    floor_s, floor_s3 = med["floor_local"], med["floor_s3"]
    cmd = (
        f"cd {ROOT} && .venv/bin/python bench/bench_ingest.py --rows {args.rows} --history-days "
        f"{args.history_days} --history-rows {args.history_rows} --repeats {args.repeats}"
        + (" --profile" if args.profile else "")
        + ("" if args.what_if else " --no-what-if")
    )
    lines = [
        "# Ingest benchmark: extract -> validate -> features, one day",
        "",
        f"Generated by `bench/bench_ingest.py` on {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
        f"Reproduce: `{cmd}`",
        "",
        *machine_facts(),
        "",
        (
            f"Data: fraud pipeline (`include/pipelines/fraud.yaml`), day D = {DAY}: "
            f"{setup['day_rows']:,} source rows (generate_transactions rows_per_day={args.rows:,}, "
            f"n_customers={N_CUSTOMERS:,}) in SQLite; {args.history_days} raw history partitions before D on S3 "
            f"({', '.join(f'{n:,}' for n in setup['history_rows'])} rows). Setup took {setup['source_s']:.0f} s "
            f"(source) + {setup['history_s']:.0f} s (history), not counted below."
        ),
        (
            f"Each row is one fresh subprocess; N={args.repeats} run(s) per stage, interleaved; median and best wall, max peak "
            "RSS shown (best is the least disturbed by other jobs on the machine). "
            "Stage time covers the step call only; imports are timed before it."
        ),
        "",
        (
            "Floor = `sqlite3` cursor over the same SQL -> `fetchall` -> pyarrow table -> `pq.write_table` (snappy) "
            "to a local file. It leaves timestamps as text (the stages parse them) and does no S3 I/O; "
            "floor + S3 adds the boto3 upload of that file. The `*_pruned` rows are what-ifs, not product code: the "
            "same step reading only the history columns it uses (see `what_if_*` in the script)."
        ),
        "",
        (
            "| stage | wall, median (s) | wall, best (s) | ratio to floor (median/median; best/best) "
            "| ratio to floor + S3 | peak RSS (MB) | imports, last run (s) | RSS after imports (MB) "
            "| S3/parquet I/O inside stage, last run (s) | goal: <= 3x floor | goal: RSS <= 3 GB |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for role in results:
        r = results[role][-1]
        io = sum(r["io"].values())
        ratio, ratio3 = med[role] / floor_s, med[role] / floor_s3
        ratio_best = best[role] / best["floor_local"]
        is_stage = not role.startswith("floor")
        verdict = {(True, True): "yes", (False, False): "NO"}.get(
            (ratio <= RATIO_GOAL, ratio_best <= RATIO_GOAL),
            "median NO, best yes" if ratio_best <= RATIO_GOAL else "median yes, best NO",
        )
        lines.append(
            f"| {role} | {med[role]:.2f} | {best[role]:.2f} | {ratio:.2f}; {ratio_best:.2f} | {ratio3:.2f} | "
            f"{peak[role]:.0f} | {r['import_s']:.2f} | {r['rss_after_imports_mb']:.0f} | {io:.2f} | "
            f"{verdict if is_stage else '-'} | "
            f"{'yes' if peak[role] <= RSS_GOAL_MB else 'NO'} |"
        )
    lines += ["", "Per-stage detail (last run):", ""]
    for role, runs in results.items():
        r = runs[-1]
        extra = {k: round(r[k], 3) for k in ("query_fetch_s", "to_arrow_s", "read_write_s", "upload_s") if k in r}
        lines.append(
            f"* **{role}**: runs {', '.join(format(x['stage_s'], '.2f') for x in runs)} s; "
            f"I/O { ({k: round(v, 2) for k, v in r['io'].items()}) }; {extra or ''} result `{r['result']}`"
        )
    for role, r in profiles.items():
        lines += [
            "",
            (
                f"### cProfile of {role} (one extra run, {r['stage_s']:.2f} s under the profiler; "
                "top 25 by cumulative time)"
            ),
            "",
            "```",
            r["profile"].strip(),
            "```",
        ]
    Path(args.out).write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
