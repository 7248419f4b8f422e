"""Replay a pipeline's feature rows against the serving gateway at a set rate, posting each row's true
label back after a delay: the traffic a canary is judged on in the demo and the tests.

    python -m ml_ops.local.traffic --pipeline fraud --gateway http://127.0.0.1:8000 --rate 50 --duration 60 \\
        --label-delay 5 [--days N] [--token T]

S3 comes from MLOPS_S3_ENDPOINT + AWS_* when set, else it is the embedded stack's (``make up``).

Open loop: request ``i`` is sent at ``start + i / rate`` whatever the earlier ones are doing (a slow
gateway does not slow the traffic down), and its latency counts from that scheduled moment, so queueing
shows instead of hiding (no coordinated omission). Rows come from ``features/ds=*/data.parquet`` in
time order (the last ``days`` partitions; cycled when exhausted), one row per request, with only the
model's input columns (from the gateway's /pipelines, else ``ml_ops.pipeline.steps.model_columns``), the routing
key (joined from the raw partition when the features lack it) and the id column. Labels
(``target.column``) of answered requests go to ``/pipelines/<p>/feedback`` ``label_delay`` seconds
after the answer, in batches.

``replay(...)`` is the same from Python; pass a ``threading.Event`` as ``stop_event`` to stop it from
another thread (the demo runs it in the background while a canary DAG runs).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from ml_ops.jsonable import to_jsonable

if TYPE_CHECKING:
    from ml_ops.config import Pipeline
    from ml_ops.storage import ObjectStore

LABEL_BATCH = 500


@dataclass
class TrafficStats:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    by_status: Counter = field(default_factory=Counter)
    by_route: Counter = field(default_factory=Counter)
    by_version: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # first 80 characters of each distinct error
    latencies_ms: list[float] = field(default_factory=list)
    labels_sent: int = 0
    labels_failed: int = 0
    labels_dropped: int = 0  # still waiting for their delay when the replay was stopped
    late: int = 0  # requests that left more than 50 ms after their scheduled moment
    elapsed: float = 0.0
    request_ids: list[str] = field(default_factory=list)

    def percentile(self, q: float) -> float:
        if not self.latencies_ms:
            return math.nan
        values = sorted(self.latencies_ms)
        return values[min(len(values) - 1, max(0, math.ceil(q / 100 * len(values)) - 1))]

    @property
    def achieved_rate(self) -> float:
        return self.sent / self.elapsed if self.elapsed else 0.0

    def summary(self) -> dict:
        return {
            "sent": self.sent,
            "ok": self.ok,
            "failed": self.failed,
            "rate": round(self.achieved_rate, 1),
            "p50_ms": round(self.percentile(50), 2),
            "p99_ms": round(self.percentile(99), 2),
            "by_route": dict(self.by_route),
            "by_version": {str(k): v for k, v in self.by_version.items()},
            "by_status": {str(k): v for k, v in self.by_status.items()},
            "errors": dict(self.errors.most_common(5)),
            "labels_sent": self.labels_sent,
            "labels_failed": self.labels_failed,
            "labels_dropped": self.labels_dropped,
            "late": self.late,
            "elapsed_s": round(self.elapsed, 2),
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"sent {s['sent']} in {s['elapsed_s']}s ({s['rate']}/s): ok {s['ok']}, failed {s['failed']}; "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; routes {s['by_route']}; versions {s['by_version']}; "
            f"labels sent {s['labels_sent']} (failed {s['labels_failed']}, dropped {s['labels_dropped']})"
            + (f"; errors {s['errors']}" if s["errors"] else "")
        )


# --------------------------------------------------------------------------- the rows


def request_columns(cfg: Pipeline, gateway_url: str | None = None, token: str | None = None) -> list[str]:
    """The model's inputs as the gateway reports them (its champion's signature), else the configured
    columns; plus the routing key and the id column."""
    inputs = None
    if gateway_url:
        import httpx

        try:
            headers = {"Authorization": f"Bearer {token}"} if token else {}
            status = httpx.get(f"{gateway_url.rstrip('/')}/pipelines", timeout=10, headers=headers).json()
            inputs = status["pipelines"][cfg.name]["inputs"]
        except Exception:  # noqa: BLE001 - gateway not up yet or older: use the configuration
            inputs = None
    if not inputs:
        from ml_ops.pipeline.steps import model_columns

        numeric, categorical = model_columns(cfg)
        inputs = [*numeric, *categorical]
    return list(dict.fromkeys([*inputs, *(c for c in (cfg.routing_key, cfg.source.id_column) if c)]))


def load_rows(cfg: Pipeline, store: ObjectStore, columns: list[str], *, days: int | None = None):
    """(columns, rows, labels): the feature partitions' rows as JSON-ready lists, oldest first."""
    import pandas as pd

    from ml_ops.pipeline.steps import uri

    parts = sorted(u for u in store.list(f"{cfg.prefix()}/features/") if u.endswith("/data.parquet"))
    if days:
        parts = parts[-days:]
    if not parts:
        raise ValueError(f"no feature partitions under {cfg.prefix()}/features/: run the training DAG first")
    target, id_col, key = cfg.target.column, cfg.source.id_column, cfg.routing_key
    frames = []
    for part in parts:
        df = store.read_parquet(part, columns=[*columns, target, cfg.source.timestamp_column])
        if key and key not in df.columns and id_col in df.columns:
            ds = part.split("/ds=")[1].split("/")[0]
            raw_uri = uri(cfg, "raw", ds)
            if store.exists(raw_uri):
                df = df.merge(store.read_parquet(raw_uri, columns=[id_col, key]), on=id_col, how="left")
        frames.append(df)
    df = pd.concat(frames, ignore_index=True)
    if cfg.source.timestamp_column in df.columns:
        df = df.sort_values(cfg.source.timestamp_column, kind="stable").reset_index(drop=True)
    present = [c for c in columns if c in df.columns]
    rows = [[to_jsonable(v) for v in rec] for rec in df[present].itertuples(index=False, name=None)]
    labels = [None if pd.isna(v) else int(v) for v in df[target]] if target in df.columns else [None] * len(df)
    return present, rows, labels


# --------------------------------------------------------------------------- the open-loop driver


class _Labeller:
    """Labels waiting for their delay; posted in batches when due."""

    def __init__(self, client, url: str, delay: float, stats: TrafficStats, headers: dict):
        self.client, self.url, self.delay, self.stats, self.headers = client, url, delay, stats, headers
        self.pending: deque = deque()

    def add(self, request_id: str, label: int) -> None:
        self.pending.append((time.monotonic() + self.delay, {"request_id": request_id, "label": label, "row": 0}))

    async def post_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = []
        while self.pending and (everything or self.pending[0][0] <= now):
            due.append(self.pending.popleft()[1])
        for i in range(0, len(due), LABEL_BATCH):
            chunk = due[i : i + LABEL_BATCH]
            try:
                resp = await self.client.post(self.url, json={"labels": chunk}, headers=self.headers)
                ok = resp.status_code == 200
            except Exception:  # noqa: BLE001
                ok = False
            if ok:
                self.stats.labels_sent += len(chunk)
            else:
                self.stats.labels_failed += len(chunk)


async def _replay(
    gateway_url: str,
    pipeline: str,
    columns: list[str],
    rows: list,
    labels: list,
    *,
    rate: float,
    duration: float,
    label_delay: float,
    stop_event: threading.Event | None,
    token: str | None,
    concurrency: int,
    timeout: float,
) -> TrafficStats:
    import httpx

    stats = TrafficStats()
    base = gateway_url.rstrip("/")
    url = f"{base}/pipelines/{pipeline}/invocations"
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    stopped = (lambda: stop_event.is_set()) if stop_event is not None else (lambda: False)
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        labeller = _Labeller(client, f"{base}/pipelines/{pipeline}/feedback", label_delay, stats, auth)

        async def one(i: int, scheduled: float) -> None:
            row = rows[i % len(rows)]
            request_id = uuid.uuid4().hex
            body = json.dumps({"dataframe_split": {"columns": columns, "data": [row]}}).encode()
            headers = {"Content-Type": "application/json", "X-Request-ID": request_id, **auth}
            if time.perf_counter() - scheduled > 0.05:
                stats.late += 1
            try:
                resp = await client.post(url, content=body, headers=headers)
                status = resp.status_code
                reply = resp.json() if status == 200 else None
                error = None if status == 200 else resp.text[:80]
            except Exception as exc:  # noqa: BLE001 - a refused/timed-out request is a failure, not a crash
                status, reply, error = "exception", None, f"{type(exc).__name__}: {exc}"[:80]
            stats.latencies_ms.append((time.perf_counter() - scheduled) * 1000.0)
            stats.by_status[status] += 1
            if reply is not None:
                stats.ok += 1
                stats.request_ids.append(request_id)
                for route, version in zip(reply.get("routes", []), reply.get("versions", []), strict=False):
                    stats.by_route[route] += 1
                    stats.by_version[version] += 1
                label = labels[i % len(labels)]
                if label is not None:
                    labeller.add(request_id, label)
            else:
                stats.failed += 1
                stats.errors[error] += 1

        tasks: set[asyncio.Task] = set()
        start = time.perf_counter()
        last_labels = time.monotonic()
        i = 0
        while not stopped():
            scheduled = start + i / rate
            if scheduled - start >= duration:
                break
            wait = scheduled - time.perf_counter()
            if wait > 0:
                await asyncio.sleep(min(wait, 0.1))
                continue
            task = asyncio.create_task(one(i, scheduled))
            tasks.add(task)
            task.add_done_callback(tasks.discard)
            stats.sent += 1
            i += 1
            if time.monotonic() - last_labels > 0.25:
                last_labels = time.monotonic()
                await labeller.post_due()
        if tasks:
            await asyncio.gather(*tasks)
        stats.elapsed = time.perf_counter() - start
        # labels of the last requests: wait for their delay unless told to stop
        while labeller.pending and not stopped():
            await labeller.post_due()
            await asyncio.sleep(0.1)
        if stopped():
            await labeller.post_due()
            stats.labels_dropped = len(labeller.pending)
    return stats


def replay(
    cfg: Pipeline,
    store: ObjectStore,
    gateway_url: str,
    *,
    rate: float,
    duration: float,
    label_delay: float = 5.0,
    stop_event: threading.Event | None = None,
    token: str | None = None,
    days: int | None = None,
    concurrency: int = 64,
    timeout: float = 10.0,
) -> TrafficStats:
    """Send ``rate`` one-row requests a second for ``duration`` seconds (or until ``stop_event``)."""
    if rate <= 0 or duration <= 0:
        raise ValueError(f"rate and duration must be > 0, got {rate}, {duration}")
    columns = request_columns(cfg, gateway_url, token)
    columns, rows, labels = load_rows(cfg, store, columns, days=days)
    return asyncio.run(
        _replay(
            gateway_url,
            cfg.name,
            columns,
            rows,
            labels,
            rate=rate,
            duration=duration,
            label_delay=label_delay,
            stop_event=stop_event,
            token=token,
            concurrency=concurrency,
            timeout=timeout,
        )
    )


def _local_defaults() -> tuple[ObjectStore, str, str | None]:
    """Store, gateway URL and token: from MLOPS_S3_ENDPOINT/AWS_*, MLOPS_GATEWAY_URL and MLOPS_GATEWAY_TOKEN
    when set, else those of the embedded stack (`make up`, MLOPS_HOME)."""
    from ml_ops.local.stack import Stack
    from ml_ops.storage import ObjectStore, store_from_env

    stack = Stack.from_env()
    store = store_from_env() if os.environ.get("MLOPS_S3_ENDPOINT") else ObjectStore(stack.s3_client())
    token = os.environ.get("MLOPS_GATEWAY_TOKEN")
    if token is None and (stack.home / "secrets.json").exists():
        token = stack.gateway_token
    return store, os.environ.get("MLOPS_GATEWAY_URL") or stack.gateway_url, token


def main(argv: list[str] | None = None) -> int:
    from ml_ops.config import load_pipeline_by_name

    store, gateway_url, token = _local_defaults()
    ap = argparse.ArgumentParser(prog="python -m ml_ops.local.traffic", description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--gateway", default=gateway_url, help=f"default: {gateway_url}")
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument("--label-delay", type=float, default=5.0, help="seconds from answer to label")
    ap.add_argument("--days", type=int, default=None, help="replay only the last N feature partitions")
    ap.add_argument(
        "--token",
        default=token,
        help="bearer token (pipelines with serving.require_token); default $MLOPS_GATEWAY_TOKEN or the local stack's",
    )
    args = ap.parse_args(argv)
    cfg = load_pipeline_by_name(args.pipeline)
    stop = threading.Event()
    try:
        stats = replay(
            cfg,
            store,
            args.gateway,
            rate=args.rate,
            duration=args.duration,
            label_delay=args.label_delay,
            stop_event=stop,
            token=args.token,
            days=args.days,
        )
    except KeyboardInterrupt:
        return 130
    print(stats)
    print(json.dumps(stats.summary(), indent=2))
    return 0 if stats.ok else 1


if __name__ == "__main__":
    sys.exit(main())
