"""Canary rollout steps: start, judge one traffic step from the serving logs, promote, roll back.

Airflow-free (the canary operator only schedules these between deferrals), so tests and the demo run
the same code. The traffic split itself lives in the deployment state (``ml_ops.rollout.deployment``) and the
``canary`` alias; the gateway follows both. Order of writes is chosen so that a crash between two of
them never sends traffic to a model nobody is judging: weight 0 is always written first on the way out.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.config import Canary, Pipeline
from ml_ops.rollout.deployment import (
    DeploymentState,
    feedback_prefix,
    read_state,
    reset_state,
    serving_logs_prefix,
    write_state,
)

if TYPE_CHECKING:
    import pandas as pd
    from mlflow import MlflowClient

    from ml_ops.rollout.gate import Ticket
    from ml_ops.rollout.judge import Verdict
    from ml_ops.storage import ObjectStore

CANARY_ALIAS = layout.CANARY
# Params a manual trigger may override, mapped onto the pipeline's `canary:` section.
OVERRIDABLE = (
    "steps",
    "step_minutes",
    "max_extensions",
    "min_requests",
    "min_labels",
    "min_per_class",
    "pass_score",
    "marginal_score",
)


# Metrics that depend on how much traffic a model carries, so only comparable between concurrent windows.
LOAD_DEPENDENT = ("latency_ms",)


class CanaryBusy(RuntimeError):
    """Another canary of the same pipeline holds the traffic split."""


def experiment_name(cfg: Pipeline) -> str:
    return layout.canary_experiment(cfg.name)


def policy_for(cfg: Pipeline, overrides: dict | None = None) -> Canary:
    """The pipeline's canary policy with a manual trigger's Params applied (validated like the YAML)."""
    given = {k: v for k, v in (overrides or {}).items() if k in OVERRIDABLE and v not in (None, [], "")}
    return Canary.model_validate({**cfg.canary.model_dump(), **given})


def weight(policy: Canary, step: int) -> float:
    return policy.steps[step] / 100.0


def _now() -> datetime:
    return datetime.now(timezone.utc)


# --------------------------------------------------------------------------- start


def gate_ticket(cfg: Pipeline, store: ObjectStore, client: MlflowClient, version: int, champion: int | None) -> Ticket:
    """The offline gate's decision on ``version`` (version tags, else the decisions log)."""
    from ml_ops.rollout.gate import ticket

    tags = client.get_model_version(cfg.name, str(version)).tags or {}
    log = [] if tags.get("decision") else store.read_jsonl(layout.decision_log(cfg.prefix()))
    return ticket(version, champion, tags, log)


def start(
    cfg: Pipeline,
    store: ObjectStore,
    client: MlflowClient,
    version: int,
    *,
    run_id: str,
    policy: Canary,
    force: bool = False,
    reason: str | None = None,
    by: str | None = None,
) -> DeploymentState:
    """Put ``version`` on the first step, or resume this run's canary (a retried task continues it).

    Refuses while another run's canary is in progress (one canary per pipeline at a time), and a version
    without a passed offline gate unless ``force`` with a ``reason`` (``ml_ops.rollout.gate``); a forced
    rollout is recorded in the decisions log, the version's tags and the state (the operator alerts)."""
    from ml_ops.pipeline.registry import current_version
    from ml_ops.rollout.gate import admit, forced_record

    state = read_state(store, cfg)
    if state.running:
        if state.run_id == run_id and state.canary_version == version:
            return state  # this run, retried: resume where it was
        raise CanaryBusy(
            f"{cfg.name}: canary v{state.canary_version} of run {state.run_id} is still running "
            f"(step {state.step}, {state.canary_weight:.0%} of traffic); one canary per pipeline at a time"
        )
    client.get_model_version(cfg.name, str(version))  # fail early, naming a version that does not exist
    champion = current_version(client, cfg.name, layout.CHAMPION)
    if champion is None:
        raise ValueError(f"{cfg.name}: no champion to compare v{version} with; promote a first model directly")
    if champion == version:
        raise ValueError(f"{cfg.name}: v{version} is already the champion")
    gate = gate_ticket(cfg, store, client, version, champion)
    forced = admit(gate, force=force, reason=reason)
    why = (reason or "").strip() if forced else ""
    if forced:  # recorded before any traffic moves
        store.append_jsonl(
            layout.decision_log(cfg.prefix()),
            {**forced_record(cfg.name, gate, reason=why, run_id=run_id), "forced_by": by or f"run {run_id}"},
            key="key",
        )
        for key, value in {
            "canary.forced": "true",
            "canary.force_reason": why[:5000],
            "canary.forced_gate": gate.describe()[:5000],
            "canary.forced_run_id": run_id,
            "canary.forced_by": (by or f"run {run_id}")[:5000],
        }.items():
            client.set_model_version_tag(cfg.name, str(version), key, value)
    client.set_registered_model_alias(cfg.name, CANARY_ALIAS, str(version))
    client.set_model_version_tag(cfg.name, str(version), "canary.status", "running")
    now = _now()
    text = f"canary v{version} vs champion v{champion}: step 1 of {len(policy.steps)} ({policy.steps[0]}%)"
    return write_state(
        store,
        cfg,
        status="running",
        canary_version=version,
        champion_version=champion,
        step=0,
        canary_weight=weight(policy, 0),
        run_id=run_id,
        started_at=now,
        step_started_at=now,
        previous_step_started_at=None,
        forced=forced,
        force_reason=why,
        reason=text + (f"; FORCED past its gate ({gate.describe()}): {why}" if forced else ""),
    )


def advance(
    cfg: Pipeline, store: ObjectStore, state: DeploymentState, policy: Canary, step: int, reason: str
) -> DeploymentState:
    return write_state(
        store,
        cfg,
        step=step,
        canary_weight=weight(policy, step),
        previous_step_started_at=state.step_started_at,
        step_started_at=_now(),
        reason=reason,
    )


# --------------------------------------------------------------------------- data of a window


def _hour_prefixes(prefix: str, start: datetime, end: datetime) -> list[str]:
    hour = start.replace(minute=0, second=0, microsecond=0)
    out = []
    while hour <= end:
        out.append(layout.hourly_part(prefix, f"{hour:%Y-%m-%d}", hour.hour, ""))
        hour += timedelta(hours=1)
    return out


def _read_parts(store: ObjectStore, prefix: str, start: datetime, end: datetime) -> pd.DataFrame | None:
    import pandas as pd

    frames = store.read_parquets(
        [u for p in _hour_prefixes(prefix, start, end) for u in store.list(p) if u.endswith(".parquet")]
    )
    if not frames:
        return None
    df = pd.concat(frames, ignore_index=True)
    ts = pd.to_datetime(df["ts"], utc=True)
    return df[(ts >= pd.Timestamp(start)) & (ts <= pd.Timestamp(end))].reset_index(drop=True)


def _since(state: DeploymentState, step_start: datetime) -> tuple[datetime, datetime]:
    """Where the step's canary rows and champion rows start. At 100 % the champion serves nothing in the
    step, so its rows come from the step before, the most recent ones (load drifts over time; older
    windows raise false alarms, bench/RESULTS_canary_judge.md)."""
    if state.canary_weight >= 1.0:
        return step_start, state.previous_step_started_at or state.started_at or step_start
    return step_start, step_start


def _select(logs: pd.DataFrame, state: DeploymentState, canary_since: datetime, champion_since: datetime):
    import pandas as pd

    ts = pd.to_datetime(logs["ts"], utc=True)
    canary = (
        (logs["route"] == layout.CANARY)
        & (logs["version"] == state.canary_version)
        & (ts >= pd.Timestamp(canary_since))
    )
    champion = (
        (logs["route"] == layout.CHAMPION)
        & (logs["version"] == state.champion_version)
        & (ts >= pd.Timestamp(champion_since))
    )
    return logs[canary | champion].reset_index(drop=True)


def window_logs(
    cfg: Pipeline,
    store: ObjectStore,
    state: DeploymentState,
    step_start: datetime,
    end: datetime,
    *,
    since_start: bool = False,
) -> tuple[pd.DataFrame | None, pd.DataFrame | None]:
    """Serving-log rows of the canary and champion versions in the step's window (``_since``), or with
    ``since_start`` all of them since the canary started; and their feedback (labels may arrive late, so
    feedback is read up to now)."""
    started = state.started_at or step_start
    canary_since, champion_since = (started, started) if since_start else _since(state, step_start)
    logs = _read_parts(store, serving_logs_prefix(cfg), min(canary_since, champion_since), end)
    if logs is None:
        return None, None
    feedback = _read_parts(store, feedback_prefix(cfg), started, _now())
    return _select(logs, state, canary_since, champion_since), feedback


def analyse(
    cfg: Pipeline,
    store: ObjectStore,
    state: DeploymentState,
    policy: Canary,
    step_start: datetime,
    end: datetime | None = None,
) -> Verdict:
    """Judge the step. Traffic metrics (errors, latency, scores) on the step's window; quality metrics on
    every labelled prediction since the canary started: quality does not depend on load, labels arrive
    late (a label of step 1 may come during step 3), and with a 2 % base rate each label counts
    (bench/RESULTS_canary_judge.md: the sample sizes quality needs)."""
    from ml_ops.rollout.judge import LABELLED, judge, step_samples

    end = end or _now()
    if any(name in LABELLED for name in policy.metrics):
        everything, feedback = window_logs(cfg, store, state, step_start, end, since_start=True)
        logs = None if everything is None else _select(everything, state, *_since(state, step_start))
        samples = step_samples(logs, feedback)
        quality = step_samples(everything, feedback)
        for route, sample in samples.items():
            sample.update(label=quality[route]["label"], label_score=quality[route]["label_score"])
    else:
        samples = step_samples(*window_logs(cfg, store, state, step_start, end))
    if state.canary_weight >= 1.0:
        # No champion runs beside the canary at 100 %: its latency would come from an earlier, lighter-loaded
        # window (the canary now carries all traffic alone), which measured +17-20 % here with identical
        # serving cost. Latency was judged against a concurrent champion at every earlier step.
        policy = policy.model_copy(
            update={"metrics": {k: v for k, v in policy.metrics.items() if k not in LOAD_DEPENDENT}}
        )
    return judge(samples[layout.CANARY], samples[layout.CHAMPION], policy)


# --------------------------------------------------------------------------- records


def record(
    tracking_uri: str, cfg: Pipeline, state: DeploymentState, step: int, extension: int, verdict: Verdict
) -> str:
    """One MLflow run per canary (found by tag), metrics stepped by analysis; verdicts also as version tags."""
    import json
    import time

    from mlflow import MlflowClient
    from mlflow.entities import Metric, RunTag

    from ml_ops.pipeline.train import _ensure_experiment

    client = MlflowClient(tracking_uri)
    exp_id = _ensure_experiment(client, experiment_name(cfg), None)
    key = f"{cfg.name}:v{state.canary_version}:{state.run_id}"
    found = client.search_runs([exp_id], f"tags.canary_key = '{key}'", max_results=1)
    if found:
        run_id = found[0].info.run_id
    else:
        run_id = client.create_run(
            exp_id,
            run_name=f"canary v{state.canary_version}",
            tags={
                "canary_key": key,
                "pipeline": cfg.name,
                "canary_version": str(state.canary_version),
                "champion_version": str(state.champion_version),
                "airflow_run_id": state.run_id,
            },
        ).info.run_id
    ts, seq = int(time.time() * 1000), step * 100 + extension
    metrics = [Metric(k, float(v), ts, seq) for k, v in verdict.mlflow_metrics().items()]
    metrics.append(Metric("weight", float(state.canary_weight), ts, seq))
    client.log_batch(run_id, metrics=metrics, tags=[RunTag("last_outcome", verdict.outcome)])
    client.log_text(
        run_id, json.dumps(verdict.to_dict(), indent=2, default=str), f"analysis/step{step + 1}_{extension}.json"
    )
    version = str(state.canary_version)
    mc = MlflowClient(tracking_uri)
    mc.set_model_version_tag(cfg.name, version, "canary.mlflow_run_id", run_id)
    mc.set_model_version_tag(
        cfg.name,
        version,
        f"canary.step{step + 1}",
        f"{verdict.outcome} score={verdict.score:.0f} weight={state.canary_weight:.2f}",
    )
    return run_id


def _finish_run(tracking_uri: str, cfg: Pipeline, state: DeploymentState, outcome: str, reason: str) -> None:
    from mlflow import MlflowClient

    client = MlflowClient(tracking_uri)
    version = str(state.canary_version)
    run_id = client.get_model_version(cfg.name, version).tags.get("canary.mlflow_run_id")
    if run_id:
        client.set_tag(run_id, "outcome", outcome)
        client.set_tag(run_id, "reason", reason[:5000])
        client.set_terminated(run_id, "FINISHED" if outcome == "promoted" else "FAILED")
    client.set_model_version_tag(cfg.name, version, "canary.status", outcome)
    client.set_model_version_tag(cfg.name, version, "canary.reason", reason[:5000])


# --------------------------------------------------------------------------- outcomes


def _clear_alias(client: MlflowClient, cfg: Pipeline, version: int) -> None:
    from ml_ops.pipeline.registry import current_version

    if current_version(client, cfg.name, CANARY_ALIAS) == version:
        client.delete_registered_model_alias(cfg.name, CANARY_ALIAS)


def promote(
    cfg: Pipeline, store: ObjectStore, client: MlflowClient, tracking_uri: str, state: DeploymentState, reason: str
) -> dict:
    """Canary → champion (the previous champion stays in the history for rollback), then traffic back to
    a single model and the canary alias cleared."""
    from ml_ops.pipeline.registry import promote as promote_alias

    version = int(state.canary_version)
    previous = promote_alias(client, cfg.name, version, reason=reason)
    reset_state(store, cfg, status="promoted", reason=reason)
    _clear_alias(client, cfg, version)
    _finish_run(tracking_uri, cfg, state, "promoted", reason)
    return {"outcome": "promoted", "version": version, "previous_champion": previous, "reason": reason}


def roll_back(
    cfg: Pipeline,
    store: ObjectStore,
    client: MlflowClient,
    tracking_uri: str | None,
    state: DeploymentState,
    reason: str,
) -> dict:
    """Traffic off the canary first, then the alias cleared and the version marked rolled back."""
    version = int(state.canary_version)
    reset_state(store, cfg, status="rolled_back", reason=reason)
    _clear_alias(client, cfg, version)
    client.set_model_version_tag(cfg.name, str(version), "rolled_back", "true")
    if tracking_uri:
        _finish_run(tracking_uri, cfg, state, "rolled_back", reason)
    return {"outcome": "rolled_back", "version": version, "champion": state.champion_version, "reason": reason}


def release(cfg: Pipeline, store: ObjectStore, client: MlflowClient, *, run_id: str, why: str) -> dict | None:
    """Teardown: if this run still holds the split (its task died mid-canary), give all traffic back."""
    state = read_state(store, cfg)
    if not state.running or state.run_id != run_id:
        return None
    return roll_back(cfg, store, client, None, state, f"canary aborted: {why}")


def verdict_text(state: DeploymentState, verdict: Verdict | None, outcome: dict) -> str:
    """Alert body: the outcome and every metric's numbers."""
    lines = [
        f"{outcome['outcome'].replace('_', ' ')}: v{outcome['version']} (champion was v{state.champion_version})",
        f"Reason: {outcome['reason']}",
    ]
    if state.forced:
        lines.append(f"FORCED past its offline gate: {state.force_reason}")
    if verdict is not None:
        lines.append(f"Judge score {verdict.score:.0f}/100 at {state.canary_weight:.0%} of traffic:")
        for m in verdict.metrics:
            lines.append(f"  [{m.verdict}] {m.reason}")
    return "\n".join(lines)
