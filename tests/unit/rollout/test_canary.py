"""Canary rollout steps against a real S3 endpoint (rclone) and a real sqlite MLflow registry."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from ml_ops import layout
from ml_ops.config import load_pipeline_by_name
from ml_ops.local.stack import Stack
from ml_ops.pipeline.registry import current_version, get_history
from ml_ops.rollout import canary
from ml_ops.rollout.deployment import feedback_prefix, read_state, serving_logs_prefix
from ml_ops.rollout.gate import GateRefused
from ml_ops.storage import ObjectStore
from tests.e2e.helpers import free_port
from tests.mlflow_store import fresh_store


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    home = tmp_path_factory.mktemp("canary")
    stack = Stack(
        home=home / "stack", s3_port=free_port(), mlflow_port=free_port(), airflow_port=free_port(), startup_timeout=60
    )
    stack.up(["s3"])
    yield stack
    stack.down()


@pytest.fixture()
def world(s3, tmp_path):
    """A fresh bucket prefix (pipeline name is per test) and a registry with v1 champion, v2 and v3 (both
    won their gate against v1, tagged as compare_and_record does) and v4 (lost it)."""
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": f"fraud_{uuid.uuid4().hex[:8]}"})
    tracking_uri = fresh_store(tmp_path)
    client = MlflowClient(tracking_uri=tracking_uri)
    client.create_registered_model(cfg.name)
    for _ in range(4):
        client.create_model_version(cfg.name, source=str(tmp_path / "model"))
    client.set_registered_model_alias(cfg.name, "champion", "1")
    for version, decision in ((2, "promote"), (3, "promote"), (4, "reject")):
        gate = {"decision": decision, "compared_to": "1", "decision_reason": f"{decision}: test"}
        for key, value in gate.items():
            client.set_model_version_tag(cfg.name, str(version), key, value)
    return cfg, ObjectStore(s3.s3_client()), client, tracking_uri


def test_start_shifts_the_first_step_and_refuses_a_second_canary(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg)
    state = canary.start(cfg, store, client, 2, run_id="run-a", policy=policy)
    assert (state.status, state.canary_version, state.champion_version, state.forced) == ("running", 2, 1, False)
    assert state.canary_weight == pytest.approx(policy.steps[0] / 100)
    assert current_version(client, cfg.name, "canary") == 2
    # the same run, retried, resumes; another run is refused and changes nothing
    assert canary.start(cfg, store, client, 2, run_id="run-a", policy=policy).step == 0
    with pytest.raises(canary.CanaryBusy, match="canary v2 of run run-a is still running"):
        canary.start(cfg, store, client, 3, run_id="run-b", policy=policy)
    assert read_state(store, cfg).canary_version == 2 and current_version(client, cfg.name, "canary") == 2


def test_start_refuses_the_champion_itself_and_missing_versions(world):
    cfg, store, client, _ = world
    with pytest.raises(ValueError, match="already the champion"):
        canary.start(cfg, store, client, 1, run_id="r", policy=canary.policy_for(cfg))
    with pytest.raises(Exception, match="9"):
        canary.start(cfg, store, client, 9, run_id="r", policy=canary.policy_for(cfg))
    assert read_state(store, cfg).status == "idle"


def test_a_version_that_lost_its_gate_is_refused_and_nothing_moves(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg)
    with pytest.raises(GateRefused, match=r"v4 lost its gate \(version tags\): reject: test"):
        canary.start(cfg, store, client, 4, run_id="r", policy=policy)
    client.set_registered_model_alias(cfg.name, "champion", "3")  # v2 won against v1, not against v3
    with pytest.raises(GateRefused, match="the champion is now v3"):
        canary.start(cfg, store, client, 2, run_id="r", policy=policy)
    with pytest.raises(GateRefused, match="non-empty reason"):
        canary.start(cfg, store, client, 4, run_id="r", policy=policy, force=True, reason=" ")
    assert read_state(store, cfg).status == "idle" and current_version(client, cfg.name, "canary") is None
    assert store.read_jsonl(layout.decision_log(cfg.prefix())) == []
    assert "canary.forced" not in client.get_model_version(cfg.name, "4").tags


def test_forcing_a_version_past_its_gate_is_recorded_in_the_log_the_tags_and_the_state(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg)
    state = canary.start(
        cfg, store, client, 4, run_id="run-f", policy=policy, force=True, reason="INC-42 hotfix", by="user alice"
    )
    assert (state.status, state.canary_version, state.forced, state.force_reason) == (
        "running",
        4,
        True,
        "INC-42 hotfix",
    )
    assert "FORCED past its gate (v4 lost its gate" in state.reason and read_state(store, cfg) == state
    tags = client.get_model_version(cfg.name, "4").tags
    assert (tags["canary.forced"], tags["canary.force_reason"], tags["canary.forced_run_id"]) == (
        "true",
        "INC-42 hotfix",
        "run-f",
    )
    assert tags["canary.forced_gate"].startswith("v4 lost its gate")
    assert tags["canary.forced_by"] == "user alice"  # who forced it, for the audit
    # retried: resumes, logs nothing twice
    assert canary.start(cfg, store, client, 4, run_id="run-f", policy=policy, force=True, reason="INC-42 hotfix")
    (logged,) = store.read_jsonl(layout.decision_log(cfg.prefix()))
    assert logged["forced_by"] == "user alice"
    assert (logged["kind"], logged["challenger_version"], logged["force_reason"]) == (
        "canary_forced",
        4,
        "INC-42 hotfix",
    )
    out = canary.roll_back(cfg, store, client, None, state, "step 1/4 (10%) failed: x")
    assert "FORCED past its offline gate: INC-42 hotfix" in canary.verdict_text(state, None, out)


def test_manual_params_override_the_policy_and_are_validated(world):
    cfg = world[0]
    policy = canary.policy_for(cfg, {"steps": [50, 100], "step_minutes": 0.5, "version": 3, "pass_score": None})
    assert policy.steps == [50, 100] and policy.step_minutes == 0.5 and policy.pass_score == cfg.canary.pass_score
    with pytest.raises(ValidationError, match="increasing percentages"):
        canary.policy_for(cfg, {"steps": [50, 10]})


def _logs(rows: list[tuple[datetime, str, int]]) -> pd.DataFrame:
    n = len(rows)
    return pd.DataFrame(
        {
            "request_id": [f"r{i}" for i in range(n)],
            "row": 0,
            "ts": [r[0] for r in rows],
            "version": [r[2] for r in rows],
            "route": [r[1] for r in rows],
            "routing_key": "k",
            "latency_ms": np.full(n, 2.0),
            "score": np.full(n, 0.1),
            "error": [None] * n,
        }
    )


def test_window_reads_the_steps_canary_rows_and_at_full_weight_the_champion_since_start(world):
    cfg, store, client, _ = world
    state = canary.start(cfg, store, client, 2, run_id="run-w", policy=canary.policy_for(cfg))
    started = state.started_at
    step2 = started + timedelta(minutes=5)
    rows = [
        (started + timedelta(minutes=1), "champion", 1),
        (started + timedelta(minutes=1), "canary", 2),
        (step2 + timedelta(minutes=1), "champion", 1),
        (step2 + timedelta(minutes=1), "canary", 2),
        (step2 + timedelta(minutes=2), "canary", 3),  # a version that is not under test
        (started - timedelta(hours=2), "champion", 1),
    ]  # before the canary, another hour partition
    df = _logs(rows)
    for hour, part in df.groupby(df["ts"].dt.floor("h")):
        store.write_parquet(part, f"{serving_logs_prefix(cfg)}/ds={hour:%Y-%m-%d}/hour={hour:%H}/part-0.parquet")
    end = step2 + timedelta(minutes=3)
    logs, feedback = canary.window_logs(cfg, store, state, step2, end)
    assert feedback is None
    assert sorted(zip(logs["route"], logs["version"], strict=False)) == [("canary", 2), ("champion", 1)]
    full = state.model_copy(update={"canary_weight": 1.0})
    logs, _ = canary.window_logs(cfg, store, full, step2, end)
    assert sorted(zip(logs["route"], logs["version"], strict=False)) == [
        ("canary", 2),
        ("champion", 1),
        ("champion", 1),
    ]


def test_roll_back_takes_traffic_off_first_and_marks_the_version(world):
    cfg, store, client, _ = world
    state = canary.start(cfg, store, client, 2, run_id="run-r", policy=canary.policy_for(cfg))
    out = canary.roll_back(cfg, store, client, None, state, "latency_ms high")
    after = read_state(store, cfg)
    assert (after.status, after.canary_weight, after.canary_version) == ("rolled_back", 0.0, None)
    assert current_version(client, cfg.name, "canary") is None
    assert current_version(client, cfg.name, "champion") == 1
    assert client.get_model_version(cfg.name, "2").tags["rolled_back"] == "true"
    assert out["outcome"] == "rolled_back" and "latency" in out["reason"]


def test_promote_moves_champion_records_history_and_clears_the_canary(world):
    cfg, store, client, tracking_uri = world
    state = canary.start(cfg, store, client, 3, run_id="run-p", policy=canary.policy_for(cfg))
    out = canary.promote(cfg, store, client, tracking_uri, state, "passed all steps")
    assert out["previous_champion"] == 1 and current_version(client, cfg.name, "champion") == 3
    assert [h["version"] for h in get_history(client, cfg.name)][-1] == 3
    assert current_version(client, cfg.name, "canary") is None
    after = read_state(store, cfg)
    assert after.status == "promoted" and after.canary_weight == 0.0
    assert client.get_model_version(cfg.name, "3").tags["canary.status"] == "promoted"


def test_release_only_ends_the_runs_own_canary(world):
    cfg, store, client, _ = world
    canary.start(cfg, store, client, 2, run_id="run-x", policy=canary.policy_for(cfg))
    assert canary.release(cfg, store, client, run_id="someone-else", why="x") is None
    assert read_state(store, cfg).status == "running"
    assert canary.release(cfg, store, client, run_id="run-x", why="task failed")["outcome"] == "rolled_back"
    assert read_state(store, cfg).canary_weight == 0.0


def test_latency_is_judged_only_against_a_concurrent_champion(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg, {"min_requests": 10})
    state = canary.start(cfg, store, client, 2, run_id="run-l", policy=policy)
    started = state.started_at
    rows = [
        (started + timedelta(seconds=i), route, version)
        for i in range(1, 40)
        for route, version in (("champion", 1), ("canary", 2))
    ]
    df = _logs(rows)
    for hour, part in df.groupby(df["ts"].dt.floor("h")):
        store.write_parquet(part, f"{serving_logs_prefix(cfg)}/ds={hour:%Y-%m-%d}/hour={hour:%H}/part-1.parquet")
    end = started + timedelta(minutes=1)
    judged = {m.name for m in canary.analyse(cfg, store, state, policy, started, end).metrics}
    assert "latency_ms" in judged
    # at 100 % the champion's side comes from an earlier, lighter-loaded window: latency is not comparable
    full = state.model_copy(update={"canary_weight": 1.0})
    judged = {m.name for m in canary.analyse(cfg, store, full, policy, started, end).metrics}
    assert "latency_ms" not in judged and {"error_rate", "score"} <= judged


def test_quality_is_judged_on_every_labelled_prediction_since_the_start_traffic_on_the_step(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg, {"min_requests": 10, "min_labels": 10, "min_per_class": 2})
    state = canary.start(cfg, store, client, 2, run_id="run-q", policy=policy)
    started = state.started_at - timedelta(minutes=10)  # in the past: labels are read up to now
    step2 = started + timedelta(minutes=5)
    rows = [
        (at + timedelta(seconds=i), route, version)
        for at in (started, step2)
        for i in range(1, 31)
        for route, version in (("champion", 1), ("canary", 2))
    ]
    df = _logs(rows)
    df["score"] = np.tile([0.1, 0.1, 0.3, 0.3], len(df) // 4)
    for hour, part in df.groupby(df["ts"].dt.floor("h")):
        store.write_parquet(part, f"{serving_logs_prefix(cfg)}/ds={hour:%Y-%m-%d}/hour={hour:%H}/part-2.parquet")
    labels = df[["request_id", "row", "ts"]].assign(label=(np.arange(len(df)) % 5 == 0).astype(int))
    labels["ts"] = labels["ts"] + pd.Timedelta(seconds=1)
    for hour, part in labels.groupby(labels["ts"].dt.floor("h")):
        store.write_parquet(part, f"{feedback_prefix(cfg)}/ds={hour:%Y-%m-%d}/hour={hour:%H}/part-0.parquet")
    moved = state.model_copy(update={"step": 1, "canary_weight": 0.25, "started_at": started, "step_started_at": step2})
    verdict = canary.analyse(cfg, store, moved, policy, step2, step2 + timedelta(minutes=1))
    m = {x.name: x for x in verdict.metrics}
    assert (m["error_rate"].n_canary, m["error_rate"].n_champion) == (30, 30)  # the step's window
    assert (m["log_loss"].n_canary, m["log_loss"].n_champion) == (60, 60)  # every label since the start
    assert m["roc_auc"].positives_canary == 12 and m["roc_auc"].verdict == "pass"
    traffic_only = policy.model_copy(update={"metrics": {"error_rate": policy.metrics["error_rate"]}})
    assert canary.analyse(cfg, store, moved, traffic_only, step2, step2 + timedelta(minutes=1)).outcome == "pass"
