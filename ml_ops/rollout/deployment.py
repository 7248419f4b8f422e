"""Deployment state of a pipeline's model on the serving gateway, and where serving data lives.

The canary DAG writes ``<prefix>/deployment/state.json``; the gateway polls it (and the MLflow aliases)
to decide how much traffic goes to the ``canary`` version. Keeping it in the object store rather than in
the gateway's memory is what lets a restarted gateway resume with the same weights.

State fields (``DeploymentState``; the JSON keys are the field names):
    pipeline        name
    status          idle | running | promoted | rolled_back
    canary_version  the version under test (None when idle)
    champion_version the version it is judged against
    canary_weight   share of traffic, 0.0 .. 1.0, routed to the canary (> 0 only while running)
    step            index into the canary's steps (None when idle)
    run_id          the Airflow run driving the canary
    started_at      ISO time the canary started (the champion's comparison data starts here)
    step_started_at ISO time the current step started (previous_step_started_at: the step before)
    updated_at      ISO time of the last write
    reason          last verdict in words
    forced          the canary runs although its version did not pass the offline gate (Params force)
    force_reason    why it was forced (empty unless forced)

Both sides use the same model: the DAG side writes it (``write_state``, ``reset_state``), the gateway reads
it (``read_state``). A state.json that does not fit raises ``DeploymentStateError`` naming the file and
the field; unknown keys are ignored, so a gateway reads what a newer DAG wrote during an upgrade.
"""

from __future__ import annotations

import json
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_serializer,
    field_validator,
    model_validator,
)

from ml_ops import layout

if TYPE_CHECKING:
    from ml_ops.config import Pipeline
    from ml_ops.storage import ObjectStore

Status = Literal["idle", "running", "promoted", "rolled_back"]


class DeploymentStateError(ValueError):
    """A deployment state that cannot be used; the message names the file (or write) and the field."""


class DeploymentState(BaseModel):
    """The traffic split of one pipeline, shared by the canary DAG (writes) and the gateway (reads)."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    pipeline: str
    status: Status = "idle"
    canary_version: int | None = Field(None, ge=1)
    champion_version: int | None = Field(None, ge=1)
    canary_weight: float = Field(0.0, ge=0.0, le=1.0)
    step: int | None = Field(None, ge=0)
    run_id: str | None = None
    started_at: AwareDatetime | None = None
    step_started_at: AwareDatetime | None = None
    previous_step_started_at: AwareDatetime | None = None
    updated_at: AwareDatetime | None = None
    reason: str = ""
    forced: bool = False
    force_reason: str = ""

    @model_validator(mode="after")
    def _traffic_only_to_a_running_canary(self) -> DeploymentState:
        if self.status == "running" and self.canary_version is None:
            raise ValueError("a running canary needs canary_version")
        if self.canary_weight > 0 and self.status != "running":
            raise ValueError(f"canary_weight {self.canary_weight} > 0 needs status 'running', not {self.status!r}")
        return self

    @field_validator("started_at", "step_started_at", "previous_step_started_at", "updated_at")
    @classmethod
    def _whole_seconds(cls, value: datetime | None) -> datetime | None:  # what the file holds, also in memory
        return None if value is None else value.replace(microsecond=0)

    @field_serializer("started_at", "step_started_at", "previous_step_started_at", "updated_at")
    def _iso(self, value: datetime | None) -> str | None:  # the format the previous (dict) code wrote
        return None if value is None else value.isoformat(timespec="seconds")

    @property
    def running(self) -> bool:
        return self.status == "running"

    def to_json(self) -> dict:
        return self.model_dump(mode="json")

    # Read-only mapping access, for callers written against the former dict (``state["canary_weight"]``).
    def __getitem__(self, key: str) -> Any:
        if key not in type(self).model_fields:
            raise KeyError(key)
        return getattr(self, key)

    def get(self, key: str, default: Any = None) -> Any:
        return getattr(self, key) if key in type(self).model_fields else default


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
# Rows of raw-event requests (ml_ops.serving.rawinput) also carry the raw columns that are not model inputs, and
# every row its input mode ("raw" | "model").
INPUT_MODE_COLUMN = "input_mode"
RAW_COLUMN_PREFIX = "event_"  # a raw column whose name the log already uses: the event's timestamp "ts" -> "event_ts"


def raw_log_name(column: str) -> str:
    """The serving-log column of a raw event's column that is not a model input."""
    return f"{RAW_COLUMN_PREFIX}{column}" if column in LOG_COLUMNS or column == INPUT_MODE_COLUMN else column


def state_uri(cfg: Pipeline) -> str:
    return layout.deployment_state(cfg.prefix())


def serving_logs_prefix(cfg: Pipeline) -> str:
    """``.../serving_logs/ds=<date>/hour=<hh>/part-*.parquet``."""
    return layout.stage_prefix(cfg.prefix(), layout.SERVING_LOGS)


def feedback_prefix(cfg: Pipeline) -> str:
    """``.../feedback/ds=<date>/hour=<hh>/part-*.parquet`` (labels posted to the gateway)."""
    return layout.stage_prefix(cfg.prefix(), layout.FEEDBACK)


def _now() -> datetime:
    return datetime.now(timezone.utc).replace(microsecond=0)


def _validate(raw: dict, where: str) -> DeploymentState:
    try:
        return DeploymentState.model_validate(raw)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '<state>'}: {err['msg']}" for err in exc.errors()
        )
        raise DeploymentStateError(f"{where}: {problems}") from None


def parse_state(raw: Any, cfg: Pipeline, where: str = "deployment state") -> DeploymentState:
    """A state from its JSON value (``pipeline`` defaults to the config's name)."""
    if not isinstance(raw, dict):
        raise DeploymentStateError(f"{where}: expected a JSON object, got {type(raw).__name__}")
    return _validate({"pipeline": cfg.name, **raw}, where)


def read_state(store: ObjectStore, cfg: Pipeline) -> DeploymentState:
    """The current state; a pipeline that never had a canary is idle."""
    uri = state_uri(cfg)
    if not store.exists(uri):
        return DeploymentState(pipeline=cfg.name)
    try:
        raw = store.read_json(uri)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DeploymentStateError(f"{uri}: not valid JSON: {exc}") from None
    return parse_state(raw, cfg, uri)


def write_state(store: ObjectStore, cfg: Pipeline, **changes) -> DeploymentState:
    """Apply ``changes`` to the state, validate, and write it whole (one PUT: readers see old or new)."""
    unknown = sorted(set(changes) - set(DeploymentState.model_fields))
    if unknown:
        raise DeploymentStateError(f"write to {state_uri(cfg)}: unknown field(s) {unknown}")
    current = read_state(store, cfg).model_dump()
    state = _validate({**current, **changes, "pipeline": cfg.name, "updated_at": _now()}, f"write to {state_uri(cfg)}")
    store.write_json(state.to_json(), state_uri(cfg))
    return state


def reset_state(store: ObjectStore, cfg: Pipeline, *, status: Status, reason: str) -> DeploymentState:
    """All traffic back on the champion. Written from scratch, not merged: it also replaces a damaged file."""
    state = _validate(
        {"pipeline": cfg.name, "status": status, "reason": reason, "updated_at": _now()}, f"write to {state_uri(cfg)}"
    )
    store.write_json(state.to_json(), state_uri(cfg))
    return state
