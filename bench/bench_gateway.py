"""Serving gateway vs `mlflow models serve`: same model, same machine, same one-row requests.

Run: .venv/bin/python bench/bench_gateway.py [--rates 50,100,200,400] [--duration 20] [--clients 4]
                                             [--closed-duration 15] [--quick]
Writes bench/RESULTS_gateway.md.

Starts its own stack (rclone S3 + MLflow server, ml_ops.local.stack.Stack on free ports in a temp home), trains a
fraud model on simulated days (v1, champion) and a second one (v2), puts v2 on a 25 % canary (alias +
deployment state, as the canary DAG does), then serves v1 with:

  * gateway            python -m ml_ops.serving (Stack's gateway): routing 75/25 by X-Routing-Key, input
                       validation, every prediction logged and flushed to S3 (5000 rows / 10 s), metrics
  * gateway pipeline   the same with MLOPS_GATEWAY_FAST_PATH=0 (the model's own predict, not the numpy scorer)
  * mlflow serve       mlflow models serve -m models:/fraud/1 --env-manager local (1 uvicorn worker)
  * mlflow serve omp1  the same with OMP_NUM_THREADS=1 (the thread setting the gateway uses by default)

Load comes from a separate process (`bench_gateway.py loadgen`: keep-alive HTTP/1.1 on asyncio): open loop at fixed
rates (latency counted from each request's scheduled send time, so queueing shows), targets interleaved
per rate so background load hits them alike; then closed loop with N clients for the max throughput. The
server's CPU time (its process tree, from /proc) per answered request is reported too: it is less
sensitive than latency to other jobs on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import platform
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import deque
from datetime import datetime, timezone
from pathlib import Path
from urllib.parse import urlsplit

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
VENV_BIN = Path(sys.executable).parent
TOKEN = "bench-token"


# --------------------------------------------------------------------------- the load generator
# A hand-rolled keep-alive HTTP/1.1 client on asyncio (uvloop when installed), not httpx/aiohttp: on a
# 2-core machine the generator shares the CPU with the server under test, so it must cost as little as
# possible per request (~40 us here vs ~400 us for httpx). It runs in its own process
# (`bench_gateway.py loadgen --url URL --requests FILE (--rate R | --clients N) --duration S`).


class Pool:
    """Keep-alive connections, at most ``limit`` open; a request waits for a free one beyond that."""

    def __init__(self, host: str, port: int, limit: int):
        self.host, self.port, self.limit = host, port, limit
        self.idle: list = []
        self.open = 0
        self.waiting: deque = deque()

    async def acquire(self):
        while True:
            while self.idle:
                conn = self.idle.pop()
                if time.monotonic() - conn[2] < 3.0:  # servers close idle keep-alive connections (uvicorn: 5 s)
                    return conn
                self.open -= 1
                conn[1].close()
            if self.open < self.limit:
                self.open += 1
                try:
                    reader, writer = await asyncio.open_connection(self.host, self.port)
                except Exception:
                    self.open -= 1
                    raise
                return [reader, writer, time.monotonic()]
            waiter = asyncio.get_running_loop().create_future()
            self.waiting.append(waiter)
            conn = await waiter
            if conn is not None:
                return conn

    def release(self, conn, ok: bool) -> None:
        if not ok:
            self.open -= 1
            conn[1].close()
            conn = None  # a waiter, if any, opens a new one
        else:
            conn[2] = time.monotonic()
        while self.waiting:
            waiter = self.waiting.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            self.idle.append(conn)


async def call(pool: Pool, data: bytes, timeout: float) -> int:
    conn = await pool.acquire()
    reader, writer = conn[0], conn[1]
    ok = False
    try:
        writer.write(data)
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n"):
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        if length:
            await asyncio.wait_for(reader.readexactly(length), timeout)
        ok = b"connection: close" not in head.lower()
        return status
    finally:
        pool.release(conn, ok)


def build(url: str, bodies: list[str], headers: list[dict]) -> list[bytes]:
    parts = urlsplit(url)
    path = parts.path + (f"?{parts.query}" if parts.query else "")
    out = []
    for i, body in enumerate(bodies):
        raw = body.encode()
        extra = "".join(f"{k}: {v}\r\n" for k, v in (headers[i % len(headers)] if headers else {}).items())
        out.append(
            (
                f"POST {path} HTTP/1.1\r\nHost: {parts.hostname}:{parts.port}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(raw)}\r\n{extra}\r\n"
            ).encode()
            + raw
        )
    return out


def summarize(latencies: list[float], statuses: dict, elapsed: float, sent: int) -> dict:
    lat = sorted(latencies)

    def pct(q):
        return lat[min(len(lat) - 1, max(0, math.ceil(q / 100 * len(lat)) - 1))] * 1000 if lat else float("nan")

    ok = statuses.get("200", 0)
    return {
        "sent": sent,
        "ok": ok,
        "errors": sent - ok,
        "statuses": statuses,
        "elapsed": elapsed,
        "throughput": ok / elapsed if elapsed else 0.0,
        "p50_ms": pct(50),
        "p90_ms": pct(90),
        "p99_ms": pct(99),
        "max_ms": lat[-1] * 1000 if lat else float("nan"),
        "latencies_ms": [round(x * 1000, 3) for x in lat],
    }


def merge(results: list[dict]) -> dict:
    """One cell from its interleaved slices: counts and times add up, percentiles over all latencies."""
    statuses: dict = {}
    for r in results:
        for k, v in r["statuses"].items():
            statuses[k] = statuses.get(k, 0) + v
    latencies = sorted(x / 1000 for r in results for x in r["latencies_ms"])
    out = summarize(latencies, statuses, sum(r["elapsed"] for r in results), sum(r["sent"] for r in results))
    cpu = sum(r["server_cpu_s"] for r in results)
    out["server_cpu_ms_per_req"] = 1000 * cpu / out["ok"] if out["ok"] else float("nan")
    out["load1"] = max(r["load1"] for r in results)
    return out


async def open_loop(url, requests, rate, duration, timeout, limit) -> dict:
    parts = urlsplit(url)
    pool = Pool(parts.hostname, parts.port, limit)
    latencies, statuses, tasks = [], {}, set()

    async def one(data, scheduled):
        try:
            status = str(await call(pool, data, timeout))
        except Exception as exc:  # noqa: BLE001
            status = type(exc).__name__
        latencies.append(time.perf_counter() - scheduled)
        statuses[status] = statuses.get(status, 0) + 1

    start = time.perf_counter()
    n = int(rate * duration)
    for i in range(n):
        scheduled = start + i / rate
        delay = scheduled - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        task = asyncio.create_task(one(requests[i % len(requests)], scheduled))
        tasks.add(task)
        task.add_done_callback(tasks.discard)
    if tasks:
        await asyncio.gather(*tasks)
    return summarize(latencies, statuses, time.perf_counter() - start, n)


async def closed_loop(url, requests, clients, duration, timeout) -> dict:
    parts = urlsplit(url)
    pool = Pool(parts.hostname, parts.port, clients)
    latencies, statuses = [], {}
    sent = 0
    start = time.perf_counter()
    end = start + duration

    async def client(k):
        nonlocal sent
        i = k
        while time.perf_counter() < end:
            t0 = time.perf_counter()
            try:
                status = str(await call(pool, requests[i % len(requests)], timeout))
            except Exception as exc:  # noqa: BLE001
                status = type(exc).__name__
            latencies.append(time.perf_counter() - t0)
            statuses[status] = statuses.get(status, 0) + 1
            sent += 1
            i += clients

    await asyncio.gather(*(client(k) for k in range(clients)))
    return summarize(latencies, statuses, time.perf_counter() - start, sent)


def loadgen_main(argv: list[str]) -> None:
    """`bench_gateway.py loadgen ...`: one measurement, one JSON line on stdout."""
    ap = argparse.ArgumentParser(prog="bench_gateway.py loadgen")
    ap.add_argument("--url", required=True)
    ap.add_argument("--requests", required=True)
    ap.add_argument("--rate", type=float)
    ap.add_argument("--clients", type=int)
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--timeout", type=float, default=10)
    ap.add_argument("--max-connections", type=int, default=256)
    args = ap.parse_args(argv)
    with open(args.requests) as fh:
        spec = json.load(fh)
    requests = build(args.url, spec["bodies"], spec.get("headers") or [])
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    if args.clients:
        result = asyncio.run(closed_loop(args.url, requests, args.clients, args.duration, args.timeout))
    else:
        result = asyncio.run(
            open_loop(args.url, requests, args.rate, args.duration, args.timeout, args.max_connections)
        )
    print(json.dumps(result))


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def tree_cpu_seconds(pgid: int) -> float:
    """user+system CPU of every live process in the process group (the server and its workers)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            raw = (entry / "stat").read_text()
        except OSError:
            continue
        fields = raw[raw.rindex(")") + 2 :].split()
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / tick


def wait_http(url: str, timeout: float = 180) -> None:
    import httpx

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=3).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} not ready after {timeout}s")


class Target:
    def __init__(self, name: str, url: str, pgid: int, stop=None):
        self.name, self.url, self.pgid, self._stop = name, url, pgid, stop
        self.results: dict = {}

    def stop(self) -> None:
        if self._stop:
            self._stop()


def spawn(argv: list[str], env: dict, log: Path) -> subprocess.Popen:
    with open(log, "ab") as fh:
        return subprocess.Popen(
            argv, env=env, stdout=fh, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True
        )


def kill_group(proc: subprocess.Popen) -> None:
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
    except (ProcessLookupError, subprocess.TimeoutExpired):
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def run_load(
    target: Target, requests_file: Path, *, rate: float | None = None, clients: int | None = None, duration: float
) -> dict:
    argv = [
        sys.executable,
        str(Path(__file__).resolve()),
        "loadgen",
        "--url",
        target.url,
        "--requests",
        str(requests_file),
        "--duration",
        str(duration),
    ]
    argv += ["--clients", str(clients)] if clients else ["--rate", str(rate)]
    cpu0 = tree_cpu_seconds(target.pgid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True, timeout=duration * 10 + 60)
    cpu = tree_cpu_seconds(target.pgid) - cpu0
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["server_cpu_s"] = cpu
    result["load1"] = os.getloadavg()[0]
    return result


def wait_quiet(limit: float, max_wait: float) -> None:
    deadline = time.monotonic() + max_wait
    while limit and os.getloadavg()[0] >= limit and time.monotonic() < deadline:
        time.sleep(5)


def measure(targets: list[Target], key: str, spec_file: Path, args, **load) -> None:
    """Each target's cell in ``args.rounds`` slices, interleaved (A B C D A B C D ...): a burst of background
    load then hits every target alike instead of spoiling one cell; before each slice, wait (up to a minute)
    for the 1-minute load average to drop below --wait-quiet."""
    duration = load.pop("duration") / args.rounds
    slices: dict[str, list[dict]] = {t.name: [] for t in targets}
    for _ in range(args.rounds):
        for t in targets:
            wait_quiet(args.wait_quiet, 60)
            slices[t.name].append(run_load(t, spec_file, duration=duration, **load))
    for t in targets:
        t.results[key] = r = merge(slices[t.name])
        print(
            f"{t.name:<40} {key:>9}: {r['throughput']:.1f} rps, p50 {r['p50_ms']:.1f} ms, p99 {r['p99_ms']:.1f} ms, "
            f"errors {r['errors']}, cpu {r['server_cpu_ms_per_req']:.2f} ms/req, max load {r['load1']:.1f}",
            flush=True,
        )


def request_spec(world, n: int = 2000) -> dict:
    rows = world.rows(n)
    columns = world.inputs
    bodies = [json.dumps({"dataframe_split": {"columns": columns, "data": [[r[c] for c in columns]]}}) for r in rows]
    # the routing key as a header: mlflow models serve ignores it, so both get byte-identical bodies
    return {"bodies": bodies, "headers": [{"X-Routing-Key": f"customer-{i}"} for i in range(n)]}


def fmt(v, digits=1):
    return "n/a" if v is None or math.isnan(v) else f"{v:.{digits}f}"


def write_results(path: Path, targets: list[Target], rates: list[int], args, meta: dict) -> str:
    lines = [
        "# Serving gateway benchmark",
        "",
        f"Generated by `bench/bench_gateway.py` on {meta['date']} ({meta['started']} - {meta['ended']} UTC).",
        (
            f"Machine: {meta['machine']}. Load average (1 min) before: {meta['load_before']:.2f}, after: "
            f"{meta['load_after']:.2f} - a shared machine: other jobs ran meanwhile, so latencies include their noise."
        ),
        "",
        f"Command: `{meta['command']}`",
        "",
        (
            f"Model: fraud HistGradientBoosting pipeline (ColumnTransformer: median impute + scale for 10 numeric, "
            f"one-hot for 4 categorical inputs), trained on {meta['rows']} simulated rows; v1 champion, v2 (retrained) "
            "canary. Requests: one row each, `dataframe_split`, identical bytes for every server, "
            "`X-Routing-Key: customer-<i>` header (ignored by mlflow). The gateway routes 25 % of keys to v2 "
            "(its model time is counted in), validates each row against the signature, logs every prediction "
            "and flushes the logs to the rclone S3 endpoint; mlflow models serve has one model and no log."
        ),
        "",
        f"## Open loop: fixed request rate, {args.duration:g} s per cell ({args.rounds} interleaved slices)",
        "",
        (
            "Latency from the scheduled send time to the full response (includes any queueing), in ms. "
            "CPU = the server's CPU time per answered request. Load = highest 1-minute load average seen "
            "after the cell's slices (2 cores; the bench itself adds ~1)."
        ),
        "",
        "| server | target rps | achieved rps | p50 | p90 | p99 | max | errors | CPU ms/req | load |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for rate in rates:
        for t in targets:
            r = t.results.get(f"open-{rate}")
            if not r:
                continue
            errors = r["errors"] if not r["errors"] else f"{r['errors']} {r['statuses']}"
            lines.append(
                f"| {t.name} | {rate} | {fmt(r['throughput'])} | {fmt(r['p50_ms'])} | {fmt(r['p90_ms'])} | "
                f"{fmt(r['p99_ms'])} | {fmt(r['max_ms'])} | {errors} | {fmt(r['server_cpu_ms_per_req'], 2)} | "
                f"{fmt(r['load1'])} |"
            )
    lines += [
        "",
        (
            f"## Closed loop: {args.clients} clients back to back for {args.closed_duration:g} s (max throughput), "
            f"{args.rounds} interleaved slices"
        ),
        "",
        "| server | throughput rps | p50 ms | p99 ms | errors | CPU ms/req | load |",
        "|---|---|---|---|---|---|---|",
    ]
    for t in targets:
        r = t.results.get("closed")
        if r:
            lines.append(
                f"| {t.name} | {fmt(r['throughput'])} | {fmt(r['p50_ms'])} | {fmt(r['p99_ms'])} | "
                f"{r['errors']} | {fmt(r['server_cpu_ms_per_req'], 2)} | {fmt(r['load1'])} |"
            )
    lines += ["", "## Logging check", "", meta["logging"], "", "## Goals", ""]
    lines += meta["goals"]
    lines += ["", "## Notes", ""] + meta["notes"]
    text = "\n".join(lines) + "\n"
    path.write_text(text)
    return text


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rates", default="50,100,200,400")
    ap.add_argument("--duration", type=float, default=20)
    ap.add_argument("--clients", type=int, default=4)
    ap.add_argument("--closed-duration", type=float, default=15)
    ap.add_argument("--targets", default="gateway,gateway-pipeline,mlflow,mlflow-omp1")
    ap.add_argument("--quick", action="store_true", help="smoke run: rates 50,100, 5 s each")
    ap.add_argument("--rounds", type=int, default=4, help="slices per cell, interleaved across the servers")
    ap.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="LOAD",
        help="wait (up to 15 min at the start, 1 min before each slice) while the 1-minute load "
        "average is at or above LOAD",
    )
    ap.add_argument("--out", default=str(ROOT / "bench" / "RESULTS_gateway.md"))
    args = ap.parse_args()
    if args.quick:
        args.rates, args.duration, args.closed_duration, args.rounds = "50,100", 5, 5, 1
    rates = [int(r) for r in args.rates.split(",")]
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # stop the servers and the stack on a kill too
    wanted = args.targets.split(",")

    home = Path(tempfile.mkdtemp(prefix="bench-gateway-"))
    # The routing key travels in the X-Routing-Key header (ignored by mlflow serve), which the gateway honours
    # only for a pipeline that allows client routing keys: the bench's copy of include/ does.
    include = home / "include"
    shutil.copytree(ROOT / "include", include)
    fraud = include / "pipelines" / "fraud.yaml"
    text = fraud.read_text()
    assert "  routing_key: customer_id" in text
    fraud.write_text(
        text.replace("  routing_key: customer_id", "  routing_key: customer_id\n  client_routing_key: true", 1)
    )
    env = {
        "MLOPS_HOME": str(home),
        "MLOPS_INCLUDE_DIR": str(include),
        "MLOPS_S3_PORT": str(free_port()),
        "MLOPS_MLFLOW_PORT": str(free_port()),
        "MLOPS_GATEWAY_PORT": str(free_port()),
        "MLOPS_AIRFLOW_PORT": str(free_port()),
        "MLOPS_GATEWAY_TOKEN": TOKEN,
        "MLOPS_GATEWAY_DEFAULT_PIPELINE": "fraud",
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
        import httpx
        import pandas as pd
        from mlflow import MlflowClient

        from ml_ops.pipeline.steps import uri
        from ml_ops.pipeline.train import train_and_register
        from ml_ops.rollout.deployment import write_state
        from ml_ops.storage import ObjectStore
        from tests.serving.helpers import build_world

        store = ObjectStore(stack.s3_client())
        print("training v1 and v2 ...", flush=True)
        world = build_world(store, stack.mlflow_url, days=5, rows_per_day=1500, max_iter=100)
        cfg = world.cfg
        frames = [store.read_parquet(uri(cfg, "features", ds)) for ds in world.days]
        v2 = train_and_register(
            pd.concat(frames[1:-1]),
            frames[-1],
            tracking_uri=stack.mlflow_url,
            experiment=cfg.name,
            model_name=cfg.name,
            target=cfg.target.column,
            numeric=world.numeric,
            categorical=world.categorical,
            estimator=cfg.model.estimator,
            params={**cfg.model.params, "max_iter": 100, "learning_rate": 0.08},
            data_uris={},
            tags={},
            reference_sample_rows=500,
            seed=1,
        ).version
        client = MlflowClient(stack.mlflow_url)
        client.set_registered_model_alias(cfg.name, "canary", str(v2))
        write_state(
            store,
            cfg,
            status="running",
            canary_version=v2,
            champion_version=1,
            canary_weight=0.25,
            step=1,
            run_id="bench",
        )
        spec_file = home / "requests.json"
        spec_file.write_text(json.dumps(request_spec(world)))

        targets: list[Target] = []
        if "gateway" in wanted:
            stack.up(["gateway"])
            wait_http(f"{stack.gateway_url}/ready")
            httpx.post(f"{stack.gateway_url}/admin/reload", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=120)
            status = httpx.get(f"{stack.gateway_url}/pipelines").json()["pipelines"]["fraud"]
            assert status["effective_weight"] == 0.25 and status["canary"]["serving"] == v2, status
            targets.append(Target("gateway", f"{stack.gateway_url}/invocations", stack.status()["gateway"]["pid"]))
        if "gateway-pipeline" in wanted:
            port = free_port()
            gw_env = {
                **stack.services()["gateway"].env,
                "MLOPS_GATEWAY_PORT": str(port),
                "MLOPS_GATEWAY_FAST_PATH": "0",
            }
            p = spawn([sys.executable, "-m", "ml_ops.serving"], gw_env, home / "gateway-pipeline.log")
            procs.append(p)
            wait_http(f"http://127.0.0.1:{port}/ready")
            targets.append(Target("gateway, pipeline predict", f"http://127.0.0.1:{port}/invocations", p.pid))
        for key, extra in (("mlflow", {}), ("mlflow-omp1", {"OMP_NUM_THREADS": "1"})):
            if key not in wanted:
                continue
            port = free_port()
            m_env = {
                **os.environ,
                "MLFLOW_TRACKING_URI": stack.mlflow_url,
                "PATH": f"{VENV_BIN}:{os.environ['PATH']}",
                **extra,
            }
            p = spawn(
                [
                    str(VENV_BIN / "mlflow"),
                    "models",
                    "serve",
                    "-m",
                    "models:/fraud/1",
                    "--env-manager",
                    "local",
                    "-p",
                    str(port),
                    "-h",
                    "127.0.0.1",
                ],
                m_env,
                home / f"{key}.log",
            )
            procs.append(p)
            wait_http(f"http://127.0.0.1:{port}/ping")
            name = "mlflow models serve" + (", OMP_NUM_THREADS=1" if extra else "")
            targets.append(Target(name, f"http://127.0.0.1:{port}/invocations", p.pid))

        print("warm-up ...", flush=True)
        for t in targets:
            run_load(t, spec_file, rate=50, duration=3)
        wait_quiet(args.wait_quiet, 900)
        bench_start = datetime.now(timezone.utc)
        for rate in rates:
            measure(targets, f"open-{rate}", spec_file, args, rate=rate, duration=args.duration)
        measure(targets, "closed", spec_file, args, clients=args.clients, duration=args.closed_duration)

        # the gateway's logs: every answered request is in S3 (after one more flush), 25 % on the canary
        logging_note = "gateway not measured"
        if "gateway" in wanted:
            httpx.post(f"{stack.gateway_url}/admin/flush", headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60)
            parts = [u for u in store.list(f"{cfg.prefix()}/serving_logs/") if u.endswith(".parquet")]
            logs = pd.concat([store.read_parquet(u, columns=["ts", "route", "version", "error"]) for u in parts])
            logs = logs[pd.to_datetime(logs["ts"], utc=True) >= pd.Timestamp(bench_start)]
            gw = next(t for t in targets if t.name == "gateway")
            answered = sum(r["ok"] for r in gw.results.values())
            other = next((t for t in targets if t.name.startswith("gateway, pipeline")), None)
            answered += sum(r["ok"] for r in other.results.values()) if other else 0
            share = (logs["route"] == "canary").mean() if len(logs) else float("nan")
            logging_note = (
                f"Rows logged to S3 by the two gateways during the measured runs: {len(logs)} "
                f"(answered requests: {answered}; {len(parts)} parquet parts in total); canary share "
                f"{share:.3f} (weight 0.25); rows with an error: {int(logs['error'].notna().sum())}."
            )
        ended = datetime.now(timezone.utc)
        cpu = ""
        try:
            cpu = next(
                line.split(":", 1)[1].strip()
                for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")
            )
        except (OSError, StopIteration):
            pass
        by = {t.name: t for t in targets}
        goals, notes = goals_text(by, rates), notes_text()
        meta = {
            "date": started.strftime("%Y-%m-%d"),
            "started": started.strftime("%H:%M"),
            "ended": ended.strftime("%H:%M"),
            "machine": f"{os.cpu_count()} cores ({cpu}), {platform.platform()}, Python {platform.python_version()}",
            "load_before": load_before,
            "load_after": os.getloadavg()[0],
            "command": ".venv/bin/python bench/bench_gateway.py " + " ".join(sys.argv[1:]),
            "rows": sum(len(f) for f in frames[:-1]),
            "logging": logging_note,
            "goals": goals,
            "notes": notes,
        }
        print(write_results(Path(args.out), targets, rates, args, meta))
    finally:
        for p in procs:
            kill_group(p)
        stack.down()
        shutil.rmtree(home, ignore_errors=True)


def goals_text(by: dict, rates: list[int]) -> list[str]:
    out = []
    gw, ml = by.get("gateway"), by.get("mlflow models serve")
    if gw and "open-100" in gw.results:
        p99 = gw.results["open-100"]["p99_ms"]
        out.append(f"* p99 <= 20 ms at 100 rps (gateway): {fmt(p99)} ms -> **{'met' if p99 <= 20 else 'missed'}**.")
    if gw and ml and "closed" in gw.results and "closed" in ml.results:
        a, b = gw.results["closed"]["throughput"], ml.results["closed"]["throughput"]
        out.append(
            f"* max throughput >= mlflow models serve: {a:.0f} vs {b:.0f} rps -> **{'met' if a >= b else 'missed'}**."
        )
    return out


def notes_text() -> list[str]:
    return [
        (
            "* What makes the difference: a one-row call of the scikit-learn pipeline costs ~5 ms of CPU, nearly all "
            "of it in the ColumnTransformer's pandas column selection and input validation (the classifier takes "
            "~0.5 ms). The gateway scores models that ml_ops.pipeline.train logged with a numpy re-implementation of the fitted "
            "preprocessing feeding the same fitted classifier (ml_ops/serving/fastpath.py), used only after it matched "
            "the pipeline's scores at load time; the 'pipeline predict' row is the same gateway without it. "
            "`mlflow models serve` also lets HistGradientBoosting fan a one-row prediction out to OpenMP threads; on "
            "2 shared cores the threads mostly wait for each other (see the OMP_NUM_THREADS=1 row). The gateway pins "
            "BLAS/OpenMP to one thread (MLOPS_GATEWAY_MODEL_THREADS), validates and types the input itself, and under "
            "load joins concurrent requests into one model call (natural batching, MLOPS_GATEWAY_BATCH_ROWS)."
        ),
        (
            "* The gateway sets the GIL switch interval to 0.5 ms (MLOPS_GATEWAY_SWITCH_INTERVAL_MS; Python's default "
            "is 5 ms): the event loop then gets the GIL back quickly from a model thread, which lowered p99 at 100 rps "
            "in interleaved A/B runs on this machine (24-37 ms vs 35-59 ms with 5 ms, under a background load of ~3)."
        ),
        (
            "* Each model version predicts in its own thread (MLOPS_GATEWAY_PREDICT=inline calls it on the event loop "
            "instead: no thread hand-off, but a slow canary then stalls the champion's requests too)."
        ),
        (
            "* The load generator shares the 2 cores with the server under test (and with the idle servers and "
            "MLflow/S3); a per-request CPU cost of ~0.05 ms."
        ),
    ]


if __name__ == "__main__":
    if sys.argv[1:2] == ["loadgen"]:
        loadgen_main(sys.argv[2:])
    else:
        main()
