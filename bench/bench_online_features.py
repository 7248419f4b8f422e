"""Raw events with online features (Redis) vs model inputs vs `mlflow models serve`: same model, one run.

Run: .venv/bin/python bench/bench_online_features.py [--rates 100,400] [--duration 20] [--clients 4,16]
                                                     [--closed-duration 15] [--rounds 2] [--quick]
Writes bench/RESULTS_online_features.md.

Starts its own stack (rclone S3 + MLflow, ml_ops.local.stack.Stack on free ports in a temp home), trains the fraud
model on simulated days (v1, champion; the world of bench_gateway.py), starts the gateway with its online store on
the Redis at 127.0.0.1:6379 (MLOPS_ONLINE_STORE; a namespace of the run's own, deleted at the end; the gateway
materialises it from the world's raw days at start), and measures with bench_gateway.py's load generator:

  * gateway, raw events   X-Input: raw, one raw transaction per request (the extract's columns, no label): the
                          gateway checks it, records it in Redis (one Lua script: idempotent by transaction id)
                          and computes the 5 per-customer features and hour_of_day, then validates, scores, logs
  * gateway, model inputs the same gateway process, the model's 14 inputs precomputed by the client
  * mlflow models serve   mlflow models serve -m models:/fraud/1 --env-manager local (and OMP_NUM_THREADS=1)

The raw events are fresh simulated days after the world's last, in time order, each with its own transaction id;
a cell longer than the list starts it over, so its later requests are retries (recorded once, computed the same).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(Path(__file__).resolve().parent))
import bench_gateway as bg  # noqa: E402 - the load generator, servers and results helpers

REDIS_URL = os.environ.get("MLOPS_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")


def raw_spec(world, n_days: int) -> dict:
    """One raw event per request: fresh days after the world's, in time order."""
    import pandas as pd

    from ml_ops.local.sim import generate_transactions
    from tests.serving.helpers import START

    days = len(world.days)
    raw = generate_transactions(START, days + n_days, rows_per_day=1500, n_customers=400, seed=11)
    raw = raw[raw["ts"] >= pd.Timestamp(START + timedelta(days=days))].drop(
        columns=["is_fraud", "label_available_at"], errors="ignore"
    )
    bodies = []
    for rec in raw.sort_values("ts", kind="stable").to_dict("records"):
        rec["ts"] = rec["ts"].isoformat()
        rec = {k: (v.item() if hasattr(v, "item") else v) for k, v in rec.items()}
        bodies.append(json.dumps({"dataframe_records": [rec]}))
    return {"bodies": bodies, "headers": [{"X-Input": "raw"}]}


def measure(targets: list[tuple[bg.Target, Path]], key: str, args, **load) -> None:
    duration = load.pop("duration") / args.rounds
    slices: dict[str, list[dict]] = {t.name: [] for t, _ in targets}
    for _ in range(args.rounds):
        for t, spec in targets:
            bg.wait_quiet(args.wait_quiet, 60)
            slices[t.name].append(bg.run_load(t, spec, duration=duration, **load))
    for t, _ in targets:
        t.results[key] = r = bg.merge(slices[t.name])
        print(
            f"{t.name:<45} {key:>9}: {r['throughput']:.1f} rps, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"errors {r['errors']}, cpu {r['server_cpu_ms_per_req']:.2f} ms/req",
            flush=True,
        )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="100,400")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--clients", default="4,16", help="closed-loop client counts, one cell each")
    ap.add_argument("--closed-duration", type=float, default=15)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--wait-quiet", type=float, default=0.0, metavar="LOAD")
    ap.add_argument("--quick", action="store_true", help="smoke run: 5 s cells, one round")
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_online_features.md"))
    args = ap.parse_args()
    if args.quick:
        args.duration, args.closed_duration, args.rounds = 5, 5, 1
    rates = [int(r) for r in args.rates.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))

    home = Path(tempfile.mkdtemp(prefix="bench-online-"))
    namespace = f"mlops-bench-{uuid.uuid4().hex[:10]}"
    env = {
        "MLOPS_HOME": str(home),
        "MLOPS_S3_PORT": str(bg.free_port()),
        "MLOPS_MLFLOW_PORT": str(bg.free_port()),
        "MLOPS_GATEWAY_PORT": str(bg.free_port()),
        "MLOPS_AIRFLOW_PORT": str(bg.free_port()),
        "MLOPS_GATEWAY_TOKEN": bg.TOKEN,
        "MLOPS_GATEWAY_DEFAULT_PIPELINE": "fraud",
        "MLOPS_ONLINE_STORE": REDIS_URL,
        "MLOPS_ONLINE_NAMESPACE": namespace,
    }
    os.environ.update(env)
    from ml_ops.local.stack import Stack

    stack = Stack.from_env()
    procs: list[subprocess.Popen] = []
    started = datetime.now(timezone.utc)
    load_before = os.getloadavg()[0]
    try:
        print("starting S3 + MLflow ...", flush=True)
        stack.up(["s3", "mlflow"])
        import time

        import httpx
        import pandas as pd

        from ml_ops.storage import ObjectStore
        from tests.serving.helpers import build_world

        store = ObjectStore(stack.s3_client())
        print("training v1 ...", flush=True)
        world = build_world(store, stack.mlflow_url, days=5, rows_per_day=1500, max_iter=100)
        raw_file, model_file = home / "raw.json", home / "model.json"
        raw = raw_spec(world, n_days=12)
        raw_file.write_text(json.dumps(raw))
        model_file.write_text(json.dumps(bg.request_spec(world)))

        stack.up(["gateway"])
        bg.wait_http(f"{stack.gateway_url}/ready")
        deadline = time.monotonic() + 120
        while True:  # materialised from the world's raw days at start
            online = httpx.get(f"{stack.gateway_url}/pipelines").json()["pipelines"]["fraud"]["online"]
            if (online.get("materialized") or {}).get("through") or time.monotonic() > deadline:
                break
            time.sleep(0.5)
        pid = stack.status()["gateway"]["pid"]
        url = f"{stack.gateway_url}/pipelines/fraud/invocations"
        targets = [
            (bg.Target("gateway, raw events (online features on Redis)", url, pid), raw_file),
            (bg.Target("gateway, model inputs (precomputed)", url, pid), model_file),
        ]
        for name, extra in (
            ("mlflow models serve", {}),
            ("mlflow models serve, OMP_NUM_THREADS=1", {"OMP_NUM_THREADS": "1"}),
        ):
            port = bg.free_port()
            m_env = {
                **os.environ,
                "MLFLOW_TRACKING_URI": stack.mlflow_url,
                "PATH": f"{bg.VENV_BIN}:{os.environ['PATH']}",
                **extra,
            }
            argv = [str(bg.VENV_BIN / "mlflow"), "models", "serve", "-m", "models:/fraud/1", "--env-manager", "local"]
            p = bg.spawn([*argv, "-p", str(port), "-h", "127.0.0.1"], m_env, home / f"mlflow-{port}.log")
            procs.append(p)
            bg.wait_http(f"http://127.0.0.1:{port}/ping")
            targets.append((bg.Target(name, f"http://127.0.0.1:{port}/invocations", p.pid), model_file))

        print("warm-up ...", flush=True)
        for t, spec in targets:
            bg.run_load(t, spec, rate=50, duration=3)
        bench_start = datetime.now(timezone.utc)
        # Closed loop first: the open-loop cells above mlflow serve's capacity queue thousands of requests on it,
        # and its throughput should not be measured in their wake.
        for clients in client_counts(args):
            measure(targets, f"closed-{clients}", args, clients=clients, duration=args.closed_duration)
        for rate in rates:
            measure(targets, f"open-{rate}", args, rate=rate, duration=args.duration)

        httpx.post(f"{stack.gateway_url}/admin/flush", headers={"Authorization": f"Bearer {bg.TOKEN}"}, timeout=60)
        parts = [u for u in store.list(f"{world.cfg.prefix()}/serving_logs/") if u.endswith(".parquet")]
        logs = pd.concat([store.read_parquet(u, columns=["ts", "input_mode", "error"]) for u in parts])
        logs = logs[pd.to_datetime(logs["ts"], utc=True) >= pd.Timestamp(bench_start)]
        raw_rows = int((logs["input_mode"] == "raw").sum())
        from ml_ops.features.store import open_store

        redis_store = open_store(REDIS_URL, namespace=namespace)
        n_keys = sum(1 for _ in redis_store.client.scan_iter(match=f"{namespace}:*", count=1000))
        redis_store.close()
        logging_note = (
            f"Rows logged to S3 during the measured runs: {len(logs)}, of which raw events {raw_rows}; rows with an "
            f"error: {int(logs['error'].notna().sum())}. Raw events available: {len(raw['bodies'])} (fresh days "
            f"after the world's 5, in time order); Redis keys under the run's namespace at the end: {n_keys}."
        )
        ended = datetime.now(timezone.utc)
        by = {t.name: t for t, _ in targets}
        write_results(
            Path(args.out),
            [t for t, _ in targets],
            rates,
            args,
            {
                "started": started,
                "ended": ended,
                "load_before": load_before,
                "load_after": os.getloadavg()[0],
                "logging": logging_note,
                "by": by,
            },
        )
        print(Path(args.out).read_text())
    finally:
        for p in procs:
            bg.kill_group(p)
        stack.down()
        try:
            import redis

            client = redis.Redis.from_url(REDIS_URL)
            keys = list(client.scan_iter(match=f"{namespace}:*", count=1000))
            if keys:
                client.unlink(*keys)
        except Exception as exc:  # noqa: BLE001
            print(f"could not delete the bench's Redis keys ({namespace}:*): {exc}")
        shutil.rmtree(home, ignore_errors=True)


def client_counts(args) -> list[int]:
    return [int(c) for c in str(args.clients).split(",")]


def peak(t) -> tuple[float, int]:
    """A server's closed-loop throughput: its best over the client counts measured, and that count."""
    cells = [(r["throughput"], int(k.split("-")[1])) for k, r in t.results.items() if k.startswith("closed-")]
    return max(cells, default=(float("nan"), 0))


def write_results(path: Path, targets, rates, args, meta) -> None:
    import platform

    fmt = bg.fmt
    lines = [
        "# Online features benchmark: raw events at the gateway (Redis) vs model inputs vs mlflow models serve",
        "",
        f"Generated by `bench/bench_online_features.py` on {meta['started']:%Y-%m-%d} "
        f"({meta['started']:%H:%M} - {meta['ended']:%H:%M} UTC).",
        f"Machine: {os.cpu_count()} cores, {platform.platform()}, Python {platform.python_version()}. Load average "
        f"(1 min) before: {meta['load_before']:.2f}, after: {meta['load_after']:.2f} - a shared machine.",
        "",
        f"Command: `.venv/bin/python bench/bench_online_features.py {' '.join(sys.argv[1:])}`",
        "",
        "Model: the fraud HistGradientBoosting pipeline (100 trees) trained on 5 simulated days, v1 champion, no "
        "canary. Raw events: one transaction per request with `X-Input: raw` (10 source columns); the gateway "
        "records it in Redis and computes the 5 per-customer history features and hour_of_day online. Model "
        "inputs: the 14 inputs per request, `dataframe_split`. Both go to the same gateway process (its log on "
        "the rclone S3 endpoint); mlflow models serve gets the model-input bodies.",
        "",
        f"## Open loop: fixed request rate, {args.duration:g} s per cell ({args.rounds} interleaved slices)",
        "",
        "Latency from the scheduled send time to the full response, in ms; CPU = the server's CPU time per answered "
        "request (for the gateway rows: its process; Redis's own CPU is not counted).",
        "",
        "| server | target rps | achieved rps | p50 | p90 | p99 | max | errors | CPU ms/req | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        for t in targets:
            r = t.results.get(f"open-{rate}")
            if r:
                errors = r["errors"] if not r["errors"] else f"{r['errors']} {r['statuses']}"
                lines.append(
                    f"| {t.name} | {rate} | {fmt(r['throughput'])} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | "
                    f"{fmt(r['p99_ms'])} | {fmt(r['max_ms'])} | {errors} | {fmt(r['server_cpu_ms_per_req'], 2)} | "
                    f"{fmt(r['load1'])} |"
                )
    counts = client_counts(args)
    lines += [
        "",
        f"## Closed loop: {' and '.join(map(str, counts))} clients back to back, {args.closed_duration:g} s per cell "
        f"({args.rounds} slices)",
        "",
        "Each client sends its next request as soon as the previous one is answered. A server's throughput is its "
        "best over the client counts: a pipelined server (the gateway batches the requests that wait together) "
        "needs more requests in flight than a one-at-a-time server to be saturated.",
        "",
        "| server | clients | throughput rps | p50 ms | p99 ms | errors | CPU ms/req | load |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for clients in counts:
        for t in targets:
            r = t.results.get(f"closed-{clients}")
            if r:
                lines.append(
                    f"| {t.name} | {clients} | {fmt(r['throughput'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                    f"{r['errors']} | {fmt(r['server_cpu_ms_per_req'], 2)} | {fmt(r['load1'])} |"
                )
    by = meta["by"]
    raw_target = by["gateway, raw events (online features on Redis)"]
    raw = raw_target.results
    mlflows = [t for n, t in by.items() if n.startswith("mlflow")]
    best_mlflow, best_mlflow_at = max((peak(t) for t in mlflows), default=(float("nan"), 0))
    lines += ["", "## Logging check", "", meta["logging"], "", "## Goals", ""]
    if "open-100" in raw:
        p99 = raw["open-100"]["p99_ms"]
        lines.append(
            f"* p99 <= 20 ms at 100 rps with online features: {fmt(p99)} ms -> **{'met' if p99 <= 20 else 'missed'}**."
        )
    a, at = peak(raw_target)
    if a == a:  # measured
        ok = a >= 10 * best_mlflow
        lines.append(
            f"* throughput >= 10x mlflow models serve (its faster variant, best of its client counts): {a:.0f} rps "
            f"({at} clients) vs {best_mlflow:.0f} rps ({best_mlflow_at} clients) = {a / best_mlflow:.1f}x -> "
            f"**{'met' if ok else 'missed'}**."
        )
        for clients in counts:
            mine = raw.get(f"closed-{clients}", {}).get("throughput", float("nan"))
            theirs = max((t.results.get(f"closed-{clients}", {}).get("throughput", 0) for t in mlflows), default=0)
            if theirs:
                lines.append(f"  * at {clients} clients alike: {mine:.0f} vs {theirs:.0f} rps = {mine / theirs:.1f}x")
    path.write_text("\n".join(lines) + "\n")


if __name__ == "__main__":
    main()
