"""Traffic no model was trained on, sent to the serving gateway at a set rate, each event's true label
posted back after the simulator's label delay: what a canary is judged on in the demo and the tests.

    mlops traffic --pipeline fraud --rate 25 --duration 60 [--label-delay 5] [--start YYYY-MM-DD] [--inputs raw|model]
        [--seed 7 --n-customers 2000 --rows-per-day 3000 --concept-change-day D --covariate-shift-day D]

S3, the gateway, MLflow and the source database come from MLOPS_S3_ENDPOINT + AWS_*, MLOPS_GATEWAY_URL,
MLOPS_GATEWAY_TOKEN when set, else from the embedded stack (``make up``).

**Fresh events.** The events are drawn from the simulator (``ml_ops.local.sim.generate_transactions``) for
days after the last day the pipeline extracted (``raw/ds=<day>/``): no features partition, so no training
window, holds them. A ``World`` names the simulated world the source was loaded from (seed, customers,
rows a day, events such as a ``ConceptChange``); the simulator draws every day from (seed, day) and its
customers from (seed, customers, events), so the fresh days continue the same world, drift events included.
``start`` asks for explicitly held-out days instead: a day that a registered model version trained or
was evaluated on (its ``data_window`` tag) is refused; a held-out day already extracted is sent as
extracted.

**Model inputs as the batch pipeline computes them.** Each day's inputs come from
``ml_ops.pipeline.features.build_features`` called as the features step calls it, with the per-customer
history of the ``features.lookback_days`` before: validated raw partitions from S3 (quarantined days left
out, as the features step does), and for days after the last extracted one the fresh events themselves.
Requests carry the model's input columns (the gateway's /pipelines, else the configuration), the routing
key and the id column; one event per request, in time order.

**Raw events** (``inputs="raw"``, the default; ``--inputs raw``): instead, each request is the event as the
source holds it (the extract's columns without the label: ``ml_ops.serving.rawinput.RawColumns``) with
``X-Input: raw``, and the gateway computes the model's inputs itself from its online store, as a card
processor's call would. ``inputs="model"`` sends the batch-computed inputs above (a client with its own
feature code).

**Labels.** The event's label is posted to ``/pipelines/<p>/feedback`` after the simulator's delay (the
row's ``label_available_at`` - ``ts``; with a ``labels:`` section the chargeback delays of
``generate_labels``), scaled to ``label_delay`` seconds per simulated day. With ``labels_db`` and
``labels_table`` (a pipeline with a ``labels:`` table) the day's labels are also written to that table, with
their simulated ``labelled_at``, as the chargeback system would.

Open loop: request ``i`` is sent at ``start + i / rate`` whatever the earlier ones are doing (a slow gateway
does not slow the traffic down), and its latency counts from that scheduled moment, so queueing shows
instead of hiding (no coordinated omission). Pass a ``threading.Event`` as ``stop_event`` to stop it from
another thread (the demo runs it in the background while the canary DAG runs).

Nothing replays trained-on feature partitions: scoring a model on its training rows says nothing about it.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import itertools
import json
import math
import os
import sys
import threading
import time
import uuid
from collections import Counter, deque
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.jsonable import to_jsonable

if TYPE_CHECKING:
    import pandas as pd

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
    labels_dropped: int = 0  # still waiting for their delay when the traffic was stopped
    late: int = 0  # requests that left more than 50 ms after their scheduled moment
    elapsed: float = 0.0
    request_ids: list[str] = field(default_factory=list)
    event_ids: list = field(default_factory=list)  # the id column of each answered request, in request_ids' order
    days: list[str] = field(default_factory=list)  # the simulated days the events were drawn from

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
            "days": list(self.days),
        }

    def __str__(self) -> str:
        s = self.summary()
        return (
            f"sent {s['sent']} in {s['elapsed_s']}s ({s['rate']}/s): ok {s['ok']}, failed {s['failed']}; "
            f"p50 {s['p50_ms']} ms, p99 {s['p99_ms']} ms; routes {s['by_route']}; versions {s['by_version']}; "
            f"labels sent {s['labels_sent']} (failed {s['labels_failed']}, dropped {s['labels_dropped']}); "
            f"events of {', '.join(s['days']) or 'no day'}" + (f"; errors {s['errors']}" if s["errors"] else "")
        )


# --------------------------------------------------------------------------- the world and its fresh days


@dataclass(frozen=True)
class World:
    """The simulated world a pipeline's source was loaded from: the arguments of ``generate_transactions``
    that decide who the customers are and what happens on a day (``label_delay_days`` is the pipeline's)."""

    seed: int = 7
    n_customers: int = 2000
    rows_per_day: int = 3000
    events: tuple = ()  # ml_ops.local.sim.CovariateShift / ConceptChange

    def day(self, day: date, label_delay_days: int) -> pd.DataFrame:
        from ml_ops.local.sim import generate_transactions

        return generate_transactions(
            day,
            1,
            rows_per_day=self.rows_per_day,
            n_customers=self.n_customers,
            seed=self.seed,
            label_delay_days=label_delay_days,
            events=self.events,
        )


def raw_days(cfg: Pipeline, store: ObjectStore) -> list[str]:
    """Days with a raw partition (extracted), oldest first."""
    prefix = layout.stage_prefix(cfg.prefix(), layout.RAW) + "/"
    return sorted({layout.day_of(u) for u in store.list(prefix) if u.endswith("/" + layout.DATA_FILE)})


def window_days(data_window: str) -> set[str]:
    """Every day of a version's ``data_window`` tag (``A..B holdout C..D``): trained on or evaluated on."""
    days: set[str] = set()
    for part in data_window.replace("holdout", " ").split():
        first, _, last = part.partition("..")
        d0, d1 = date.fromisoformat(first), date.fromisoformat(last or first)
        days |= {(d0 + timedelta(days=i)).isoformat() for i in range((d1 - d0).days + 1)}
    return days


def trained_days(cfg: Pipeline, tracking_uri: str) -> set[str]:
    """The days any registered version of the pipeline's model was trained or evaluated on."""
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    days: set[str] = set()
    for version in client.search_model_versions(f"name='{cfg.name}'"):
        if version.tags.get("data_window"):
            days |= window_days(version.tags["data_window"])
    return days


@dataclass
class FreshDay:
    """One day of events with the model inputs the batch pipeline computes for them, in time order."""

    ds: str
    raw: pd.DataFrame  # the events (source columns)
    features: pd.DataFrame  # as features/ds=<day>/data.parquet would hold them (same index as raw)
    labels: list[int | None]  # the final label of each event
    delay_days: list[float]  # simulated days from the event to that label

    def requests(self, columns: list[str]) -> tuple[list[str], list[list]]:
        """(columns present, one JSON-ready row per event): features first, else the raw column (e.g. the
        routing key, which is no model input)."""
        present = [c for c in columns if c in self.features.columns or c in self.raw.columns]
        frame = self.features.reindex(columns=[c for c in present if c in self.features.columns])
        for c in present:
            if c not in frame.columns:
                frame[c] = self.raw[c].to_numpy()
        rows = [[to_jsonable(v) for v in rec] for rec in frame[present].itertuples(index=False, name=None)]
        return present, rows

    def raw_requests(self, columns: list[str]) -> tuple[list[str], list[list]]:
        """(columns present, one JSON-ready row per event) of the raw events: timestamps as ISO 8601."""
        import pandas as pd

        present = [c for c in columns if c in self.raw.columns]
        frame = self.raw[present].copy()
        for c in present:
            if pd.api.types.is_datetime64_any_dtype(frame[c]):
                frame[c] = [t.isoformat() for t in pd.to_datetime(frame[c], utc=True)]
        rows = [[to_jsonable(v) for v in rec] for rec in frame.itertuples(index=False, name=None)]
        return present, rows


class FreshEvents:
    """Fresh days one after the other (``next_day``), from ``start`` (default: the day after the last
    extracted day; never a day a model version's ``data_window`` holds, when ``tracking_uri`` is given)."""

    def __init__(
        self,
        cfg: Pipeline,
        store: ObjectStore,
        world: World | None = None,
        *,
        start: date | None = None,
        tracking_uri: str | None = None,
        labels_db: str | None = None,
        labels_table: str | None = None,
    ) -> None:
        from ml_ops.local.sim.transactions import COLUMNS

        self.cfg, self.store, self.world = cfg, store, world or World()
        needed = {cfg.source.id_column, cfg.source.timestamp_column, *cfg.feature_columns}
        needed |= {c for c in (cfg.features.entity_column, cfg.features.amount_column, cfg.routing_key) if c}
        if cfg.labels is None:
            needed.add(cfg.target.column)
        unknown = sorted(c for c in needed if c not in COLUMNS)
        if unknown:
            raise ValueError(
                f"pipeline {cfg.name!r} needs column(s) {unknown} the transaction simulator does not produce: "
                "the traffic generator draws simulated card transactions"
            )
        extracted = raw_days(cfg, store)
        self.last_extracted = date.fromisoformat(extracted[-1]) if extracted else None
        if start is None:
            start = self.last_extracted + timedelta(days=1) if extracted else datetime.now(timezone.utc).date()
        elif self.last_extracted is not None and start <= self.last_extracted:
            if tracking_uri is None:
                raise ValueError(
                    f"start {start} is an extracted day (raw partitions up to {self.last_extracted}): give the "
                    "MLflow tracking URI so days a model trained or was evaluated on can be refused"
                )
        self.refused = trained_days(cfg, tracking_uri) if tracking_uri else set()
        if start.isoformat() in self.refused:
            raise ValueError(f"{start} is in the training or holdout window of a registered {cfg.name} version")
        self.next = start
        self.labels_db, self.labels_table = labels_db, labels_table
        self._generated: dict[str, pd.DataFrame] = {}  # days after the last extracted one: the history of later days
        self.days: list[str] = []

    # ---- history and features, as the features step computes them

    def _extracted(self, day: date) -> bool:
        return self.last_extracted is not None and day <= self.last_extracted

    def _raw(self, day: date) -> pd.DataFrame:
        from ml_ops.pipeline.steps import uri

        ds = day.isoformat()
        if self._extracted(day):
            part = uri(self.cfg, layout.RAW, ds)
            if not self.store.exists(part):
                raise ValueError(f"{ds} is inside the extracted history but has no raw partition {part}")
            return self.store.read_parquet(part)
        if ds not in self._generated:
            self._generated[ds] = self.world.day(day, self.cfg.target.label_delay_days)
        return self._generated[ds]

    def history(self, day: date) -> pd.DataFrame | None:
        """The per-entity history of ``day``: validated raw partitions of the lookback (as the features step
        reads them), then the simulated days after the last extracted one."""
        import pandas as pd

        from ml_ops.interval import DayInterval
        from ml_ops.pipeline import history as days

        f = self.cfg.features
        if not f.entity_column:
            return None
        used = [c for c in (f.entity_column, self.cfg.source.timestamp_column, f.amount_column) if c]
        previous = DayInterval.for_day(day).previous_days(f.lookback_days)
        stored = [d for d in previous if self._extracted(date.fromisoformat(d))]
        frames = []
        if stored:
            past = days.require(self.store, self.cfg, day.isoformat(), stored, needed_by="traffic")
            frames += [self.store.read_parquet(u, columns=used) for u in past.uris(self.cfg, layout.RAW)]
        frames += [self._raw(date.fromisoformat(d))[used] for d in previous if d not in stored]
        return pd.concat(frames, ignore_index=True) if frames else None

    def features(self, day: date, raw: pd.DataFrame) -> pd.DataFrame:
        """``build_features`` with the features step's arguments (ml_ops.pipeline.steps.features_step)."""
        from ml_ops.pipeline.features import build_features

        cfg = self.cfg
        label_columns = (cfg.target.column, cfg.target.label_available_column)
        if cfg.labels is not None:
            label_columns = tuple(c for c in label_columns if c in raw.columns)
        keep = (cfg.source.id_column, cfg.source.timestamp_column, *cfg.feature_columns, *label_columns)
        return build_features(
            raw,
            self.history(day),
            entity=cfg.features.entity_column,
            timestamp=cfg.source.timestamp_column,
            amount=cfg.features.amount_column,
            passthrough=list(dict.fromkeys(c for c in keep if c)),
            time_parts=cfg.features.time_parts,
        )

    # ---- labels

    def _labels(self, day: date, raw: pd.DataFrame) -> tuple[list[int | None], list[float]]:
        """Each event's final label and its delay in days; with a labels: section the chargeback table's
        (written to ``labels_table`` when given), else the source row's (``label_available_at``). An extracted
        day of a pipeline whose source rows carry no label takes its events' truth from the world."""
        import numpy as np
        import pandas as pd

        cfg = self.cfg
        ts = pd.to_datetime(raw[cfg.source.timestamp_column])
        if cfg.labels is not None:
            from ml_ops.local.sim import generate_labels, load_labels

            events = raw
            if cfg.target.column not in raw.columns:  # as extracted: the world's day has the same events
                truth = self.world.day(day, cfg.target.label_delay_days).set_index(cfg.source.id_column)
                ids = raw[cfg.source.id_column]
                if not ids.isin(truth.index).all():
                    raise ValueError(f"{day}: the extracted events are not of {self.world}: their labels are unknown")
                events = raw.assign(**{cfg.target.column: truth.loc[ids, cfg.target.column].to_numpy()})
            table = generate_labels(events, self.world.seed)
            if self.labels_db and self.labels_table:
                load_labels(self.labels_db, self.labels_table, table)
            final = table.drop_duplicates(cfg.source.id_column, keep="last").set_index(cfg.source.id_column)
            final = final.reindex(raw[cfg.source.id_column])
            labels = [None if pd.isna(v) else int(v) for v in final["is_fraud"]]
            delay = (pd.to_datetime(final["labelled_at"]).to_numpy() - ts.to_numpy()) / np.timedelta64(1, "D")
            return labels, [float(d) for d in delay]
        labels = [None if pd.isna(v) else int(v) for v in raw[cfg.target.column]]
        available = cfg.target.label_available_column
        if available and available in raw.columns:
            delay = (pd.to_datetime(raw[available]) - ts).dt.total_seconds().to_numpy() / 86400
        else:
            delay = np.full(len(raw), float(cfg.target.label_delay_days))
        return labels, [float(d) for d in delay]

    # ---- the days

    def next_day(self, features: bool = True) -> FreshDay:
        """The next fresh day; ``features=False`` leaves its model inputs out (raw-event traffic: the gateway
        computes them)."""
        day = self.next
        while day.isoformat() in self.refused:  # held-out days from an explicit start: skip any window's days
            day += timedelta(days=1)
        self.next = day + timedelta(days=1)
        raw = self._raw(day).reset_index(drop=True)
        features = self.features(day, raw) if features else raw.iloc[:0]
        labels, delays = self._labels(day, raw)
        keep = day - timedelta(days=self.cfg.features.lookback_days)  # older generated days are history no more
        self._generated = {d: df for d, df in self._generated.items() if date.fromisoformat(d) >= keep}
        self.days.append(day.isoformat())
        return FreshDay(day.isoformat(), raw, features, labels, delays)


# --------------------------------------------------------------------------- the open-loop driver


INPUT_MODES = ("raw", "model")


def request_columns(
    cfg: Pipeline, gateway_url: str | None = None, token: str | None = None, inputs_mode: str = "model"
) -> list[str]:
    """Raw mode: the raw event's columns (required, then optional: what the gateway's raw parser reads).
    Model mode: the model's inputs as the gateway reports them (its champion's signature), else the configured
    columns; plus the routing key and the id column."""
    if inputs_mode == "raw":
        from ml_ops.serving.rawinput import RawColumns

        raw = RawColumns.of(cfg)
        return list(dict.fromkeys([*raw.required, *raw.optional]))
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


class _Labeller:
    """Labels waiting for their delay (each its own); posted in batches when due."""

    def __init__(self, client, url: str, stats: TrafficStats, headers: dict):
        self.client, self.url, self.stats, self.headers = client, url, stats, headers
        self.pending: list = []  # heap of (due, sequence, label)
        self._seq = itertools.count()

    def add(self, request_id: str, label: int, delay: float) -> None:
        item = {"request_id": request_id, "label": label, "row": 0}
        heapq.heappush(self.pending, (time.monotonic() + delay, next(self._seq), item))

    async def post_due(self, everything: bool = False) -> None:
        now = time.monotonic()
        due = []
        while self.pending and (everything or self.pending[0][0] <= now):
            due.append(heapq.heappop(self.pending)[2])
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


class _Queue:
    """Events ready to send, refilled a day at a time in a worker thread before they run out."""

    def __init__(
        self, events: FreshEvents, columns: list[str], stats: TrafficStats, id_column: str | None, mode: str = "model"
    ):
        self.events, self.wanted, self.stats, self.id_column, self.mode = events, columns, stats, id_column, mode
        self.columns: list[str] | None = None
        self.items: deque = deque()
        self.refill: asyncio.Task | None = None

    def _load(self) -> list:
        raw = self.mode == "raw"
        day = self.events.next_day(features=not raw)
        columns, rows = day.raw_requests(self.wanted) if raw else day.requests(self.wanted)
        ids = day.raw[self.id_column].tolist() if self.id_column in day.raw.columns else [None] * len(rows)
        return [day.ds, columns, list(zip(rows, day.labels, day.delay_days, ids, strict=True))]

    def _add(self, loaded: list) -> None:
        ds, columns, items = loaded
        if self.columns is None:
            self.columns = columns
        elif columns != self.columns:  # every day has the same columns: they come from one configuration
            raise RuntimeError(f"{ds}: request columns {columns} differ from the first day's {self.columns}")
        self.stats.days.append(ds)
        self.items.extend(items)

    async def prime(self) -> None:
        self._add(await asyncio.to_thread(self._load))

    async def take(self):
        if len(self.items) < 500 and self.refill is None:
            self.refill = asyncio.create_task(asyncio.to_thread(self._load))
        if not self.items:
            await self.refill
        if self.refill is not None and self.refill.done():
            loaded, self.refill = self.refill.result(), None
            self._add(loaded)
        return self.items.popleft()


async def _send(
    gateway_url: str,
    pipeline: str,
    queue: _Queue,
    *,
    rate: float,
    duration: float,
    label_delay: float,
    stop_event: threading.Event | None,
    token: str | None,
    concurrency: int,
    timeout: float,
    stats: TrafficStats,
) -> TrafficStats:
    import httpx

    base = gateway_url.rstrip("/")
    url = f"{base}/pipelines/{pipeline}/invocations"
    auth = {"Authorization": f"Bearer {token}"} if token else {}
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    stopped = (lambda: stop_event.is_set()) if stop_event is not None else (lambda: False)
    await queue.prime()
    async with httpx.AsyncClient(timeout=timeout, limits=limits) as client:
        labeller = _Labeller(client, f"{base}/pipelines/{pipeline}/feedback", stats, auth)

        async def one(item, scheduled: float) -> None:
            row, label, delay_days, event_id = item
            request_id = uuid.uuid4().hex
            body = json.dumps({"dataframe_split": {"columns": queue.columns, "data": [row]}}).encode()
            headers = {"Content-Type": "application/json", "X-Request-ID": request_id, "X-Input": queue.mode, **auth}
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
                stats.event_ids.append(event_id)
                for route, version in zip(reply.get("routes", []), reply.get("versions", []), strict=False):
                    stats.by_route[route] += 1
                    stats.by_version[version] += 1
                if label is not None:
                    labeller.add(request_id, label, max(0.0, delay_days) * label_delay)
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
            task = asyncio.create_task(one(await queue.take(), scheduled))
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
        if queue.refill is not None:
            await queue.refill  # let a day being drawn finish (and write its labels) before returning
    return stats


def send_traffic(
    cfg: Pipeline,
    store: ObjectStore,
    gateway_url: str,
    *,
    rate: float,
    duration: float,
    label_delay: float = 5.0,
    stop_event: threading.Event | None = None,
    token: str | None = None,
    world: World | None = None,
    start: date | None = None,
    tracking_uri: str | None = None,
    labels_db: str | None = None,
    labels_table: str | None = None,
    concurrency: int = 64,
    timeout: float = 10.0,
    inputs: str = "raw",
) -> TrafficStats:
    """Send ``rate`` one-event requests a second for ``duration`` seconds (or until ``stop_event``) of fresh
    days of ``world`` (see the module's doc); a label comes ``label_delay`` seconds per simulated day of its
    delay after the answer. ``inputs``: ``raw`` events (the gateway computes the features) or ``model`` inputs."""
    if rate <= 0 or duration <= 0 or label_delay < 0:
        raise ValueError(f"rate and duration must be > 0 and label_delay >= 0, got {rate}, {duration}, {label_delay}")
    if inputs not in INPUT_MODES:
        raise ValueError(f"inputs must be one of {INPUT_MODES}, got {inputs!r}")
    events = FreshEvents(
        cfg, store, world, start=start, tracking_uri=tracking_uri, labels_db=labels_db, labels_table=labels_table
    )
    stats = TrafficStats()
    if inputs == "raw":
        wait_ready(gateway_url)
    columns = request_columns(cfg, gateway_url, token, inputs_mode=inputs)
    queue = _Queue(events, columns, stats, cfg.source.id_column, mode=inputs)
    return asyncio.run(
        _send(
            gateway_url,
            cfg.name,
            queue,
            rate=rate,
            duration=duration,
            label_delay=label_delay,
            stop_event=stop_event,
            token=token,
            concurrency=concurrency,
            timeout=timeout,
            stats=stats,
        )
    )


def wait_ready(gateway_url: str, timeout: float = 120.0) -> None:
    """Wait for the gateway's /ready (its models loaded and its online store materialised: before that, raw events
    get 503 rather than features computed without their customer's history)."""
    import httpx

    deadline, why = time.monotonic() + timeout, "no answer"
    while time.monotonic() < deadline:
        try:
            resp = httpx.get(f"{gateway_url.rstrip('/')}/ready", timeout=10)
            if resp.status_code == 200:
                return
            why = resp.json().get("error") or resp.text[:200]
        except Exception as exc:  # noqa: BLE001 - not up yet
            why = f"{type(exc).__name__}: {exc}"
        time.sleep(0.5)
    raise RuntimeError(f"gateway {gateway_url} not ready after {timeout:.0f} s: {why}")


replay = send_traffic  # the name callers knew; it sends fresh events now, never trained-on partitions


def _local_defaults() -> tuple[ObjectStore, str, str | None, object]:
    """Store, gateway URL, token and the embedded stack: from MLOPS_S3_ENDPOINT/AWS_*, MLOPS_GATEWAY_URL and
    MLOPS_GATEWAY_TOKEN when set, else those of the embedded stack (`make up`, MLOPS_HOME)."""
    from ml_ops.local.stack import Stack
    from ml_ops.storage import ObjectStore, store_from_env

    stack = Stack.from_env()
    store = store_from_env() if os.environ.get("MLOPS_S3_ENDPOINT") else ObjectStore(stack.s3_client())
    token = os.environ.get("MLOPS_GATEWAY_TOKEN")
    if token is None and (stack.home / "secrets.json").exists():
        token = stack.gateway_token
    return store, os.environ.get("MLOPS_GATEWAY_URL") or stack.gateway_url, token, stack


def main(argv: list[str] | None = None) -> int:
    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.sim import ConceptChange, CovariateShift

    store, gateway_url, token, stack = _local_defaults()
    ap = argparse.ArgumentParser(prog="mlops traffic", description=__doc__.splitlines()[0])
    ap.add_argument("--pipeline", required=True)
    ap.add_argument("--gateway", default=gateway_url, help=f"default: {gateway_url}")
    ap.add_argument("--rate", type=float, default=50.0, help="requests per second")
    ap.add_argument("--duration", type=float, default=60.0, help="seconds")
    ap.add_argument(
        "--label-delay", type=float, default=5.0, help="seconds per simulated day of a label's delay (default 5)"
    )
    ap.add_argument(
        "--start", type=date.fromisoformat, help="first day to draw (default: the day after the last extracted one)"
    )
    ap.add_argument(
        "--inputs",
        choices=INPUT_MODES,
        default="raw",
        help="raw: the source's event columns, the gateway computes the features (default); model: the model's inputs",
    )
    world = ap.add_argument_group("the simulated world the source was loaded from (ml_ops.local.sim)")
    world.add_argument("--seed", type=int, default=7)
    world.add_argument("--n-customers", type=int, default=2000)
    world.add_argument("--rows-per-day", type=int, default=3000)
    world.add_argument("--covariate-shift-day", type=date.fromisoformat)
    world.add_argument("--covariate-shift-share", type=float, default=0.3)
    world.add_argument("--concept-change-day", type=date.fromisoformat)
    ap.add_argument(
        "--tracking-uri",
        default=os.environ.get("MLFLOW_TRACKING_URI") or stack.mlflow_url,
        help="MLflow, to refuse days a model version trained or was evaluated on (with --start)",
    )
    ap.add_argument(
        "--labels-table",
        help="with a labels: section: also write the labels to this table of the local source database",
    )
    ap.add_argument(
        "--token",
        default=token,
        help="bearer token (pipelines with serving.require_token); default $MLOPS_GATEWAY_TOKEN or the local stack's",
    )
    args = ap.parse_args(argv)
    cfg = load_pipeline_by_name(args.pipeline)
    events = []
    if args.covariate_shift_day:
        events.append(CovariateShift(args.covariate_shift_day, args.covariate_shift_share))
    if args.concept_change_day:
        events.append(ConceptChange(args.concept_change_day))
    stop = threading.Event()
    try:
        stats = send_traffic(
            cfg,
            store,
            args.gateway,
            rate=args.rate,
            duration=args.duration,
            label_delay=args.label_delay,
            stop_event=stop,
            token=args.token,
            world=World(args.seed, args.n_customers, args.rows_per_day, tuple(events)),
            start=args.start,
            tracking_uri=args.tracking_uri if args.start else None,
            labels_db=stack.source_db_url if args.labels_table else None,
            labels_table=args.labels_table,
            inputs=args.inputs,
        )
    except KeyboardInterrupt:
        return 130
    print(stats)
    print(json.dumps(stats.summary(), indent=2))
    return 0 if stats.ok else 1


if __name__ == "__main__":
    sys.exit(main())
