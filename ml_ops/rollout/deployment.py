"""Deployment state of a pipeline's model on the serving gateway, and where serving data lives.

The canary DAG writes ``<prefix>/deployment/state.json``; the gateway polls it (and the MLflow aliases)
to decide how much traffic goes to the ``canary`` version. Keeping it in the object store rather than in
the gateway's memory is what lets a restarted gateway resume with the same weights.

State fields:
    pipeline        name
    status          idle | running | promoted | rolled_back
    canary_version  the version under test (None when idle)
    champion_version the version it is judged against
    canary_weight   share of traffic, 0.0 .. 1.0, routed to the canary
    step            index into the canary's steps (None when idle)
    run_id          the Airflow run driving the canary
    started_at      ISO time the canary started (the champion's comparison data starts here)
    step_started_at ISO time the current step started (previous_step_started_at: the step before)
    updated_at      ISO time of the last write
    reason          last verdict in words
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import TYPE_CHECKING

from ml_ops import layout

if TYPE_CHECKING:
    from ml_ops.config import Pipeline
    from ml_ops.storage import ObjectStore

IDLE = {
    "status": "idle",
    "canary_version": None,
    "champion_version": None,
    "canary_weight": 0.0,
    "step": None,
    "run_id": None,
    "started_at": None,
    "step_started_at": None,
    "previous_step_started_at": None,
    "reason": "",
}

# Columns every serving-log row carries besides the model's input columns (one row per prediction).
LOG_COLUMNS = (
    "request_id",  # str: X-Request-ID or generated; the feedback endpoint labels by it
    "row",  # int: position of the row in its request (0 for single-row requests)
    "ts",  # timestamp (UTC) the request arrived
    "version",  # int: model version that answered (None if the request failed before routing)
    "route",  # "champion" | "canary"
    "routing_key",  # str: value hashed for sticky routing
    "latency_ms",  # float: wall time of the request's model call, the same for each of its rows
    "model_cpu_ms",  # float: CPU time of that call in the model's thread (what the canary judge compares)
    "score",  # float: P(positive); NaN when the prediction failed
    "error",  # str | None: why the prediction failed
)
FEEDBACK_COLUMNS = ("request_id", "row", "label", "ts")


def state_uri(cfg: Pipeline) -> str:
    return layout.deployment_state(cfg.prefix())


def serving_logs_prefix(cfg: Pipeline) -> str:
    """``.../serving_logs/ds=<date>/hour=<hh>/part-*.parquet``."""
    return layout.stage_prefix(cfg.prefix(), layout.SERVING_LOGS)


def feedback_prefix(cfg: Pipeline) -> str:
    """``.../feedback/ds=<date>/hour=<hh>/part-*.parquet`` (labels posted to the gateway)."""
    return layout.stage_prefix(cfg.prefix(), layout.FEEDBACK)


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def read_state(store: ObjectStore, cfg: Pipeline) -> dict:
    """The current state; a pipeline that never had a canary is idle."""
    uri = state_uri(cfg)
    if not store.exists(uri):
        return {"pipeline": cfg.name, **IDLE, "updated_at": None}
    return {"pipeline": cfg.name, **IDLE, **store.read_json(uri)}


def write_state(store: ObjectStore, cfg: Pipeline, **changes) -> dict:
    """Merge ``changes`` into the state and write it whole (one PUT: readers see old or new, never half)."""
    state = {**read_state(store, cfg), **changes, "pipeline": cfg.name, "updated_at": _now()}
    weight = float(state["canary_weight"] or 0.0)
    if not 0.0 <= weight <= 1.0:
        raise ValueError(f"canary_weight must be within 0..1, got {weight}")
    state["canary_weight"] = weight
    store.write_json(state, state_uri(cfg))
    return state


def reset_state(store: ObjectStore, cfg: Pipeline, *, status: str, reason: str) -> dict:
    """All traffic back on the champion."""
    return write_state(store, cfg, **{**IDLE, "status": status, "reason": reason})
