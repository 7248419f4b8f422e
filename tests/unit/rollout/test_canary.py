"""Canary rollout steps against a real S3 endpoint (rclone) and a real sqlite MLflow registry."""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient
from pydantic import ValidationError

from ml_ops.config import load_pipeline_by_name
from ml_ops.local.stack import Stack
from ml_ops.pipeline.registry import current_version, get_history
from ml_ops.rollout import canary
from ml_ops.rollout.deployment import read_state, serving_logs_prefix
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
    """A fresh bucket prefix (pipeline name is per test) and a registry with v1 champion, v2 and v3."""
    cfg = load_pipeline_by_name("fraud").model_copy(update={"name": f"fraud_{uuid.uuid4().hex[:8]}"})
    tracking_uri = fresh_store(tmp_path)
    client = MlflowClient(tracking_uri=tracking_uri)
    client.create_registered_model(cfg.name)
    for _ in range(3):
        client.create_model_version(cfg.name, source=str(tmp_path / "model"))
    client.set_registered_model_alias(cfg.name, "champion", "1")
    return cfg, ObjectStore(s3.s3_client()), client, tracking_uri


def test_start_shifts_the_first_step_and_refuses_a_second_canary(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg)
    state = canary.start(cfg, store, client, 2, run_id="run-a", policy=policy)
    assert (state["status"], state["canary_version"], state["champion_version"]) == ("running", 2, 1)
    assert state["canary_weight"] == pytest.approx(policy.steps[0] / 100)
    assert current_version(client, cfg.name, "canary") == 2
    # the same run, retried, resumes; another run is refused and changes nothing
    assert canary.start(cfg, store, client, 2, run_id="run-a", policy=policy)["step"] == 0
    with pytest.raises(canary.CanaryBusy, match="canary v2 of run run-a is still running"):
        canary.start(cfg, store, client, 3, run_id="run-b", policy=policy)
    assert read_state(store, cfg)["canary_version"] == 2 and current_version(client, cfg.name, "canary") == 2


def test_start_refuses_the_champion_itself_and_missing_versions(world):
    cfg, store, client, _ = world
    with pytest.raises(ValueError, match="already the champion"):
        canary.start(cfg, store, client, 1, run_id="r", policy=canary.policy_for(cfg))
    with pytest.raises(Exception, match="9"):
        canary.start(cfg, store, client, 9, run_id="r", policy=canary.policy_for(cfg))
    assert read_state(store, cfg)["status"] == "idle"


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
    started = datetime.fromisoformat(state["started_at"])
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
    full = {**state, "canary_weight": 1.0}
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
    assert (after["status"], after["canary_weight"], after["canary_version"]) == ("rolled_back", 0.0, None)
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
    assert after["status"] == "promoted" and after["canary_weight"] == 0.0
    assert client.get_model_version(cfg.name, "3").tags["canary.status"] == "promoted"


def test_release_only_ends_the_runs_own_canary(world):
    cfg, store, client, _ = world
    canary.start(cfg, store, client, 2, run_id="run-x", policy=canary.policy_for(cfg))
    assert canary.release(cfg, store, client, run_id="someone-else", why="x") is None
    assert read_state(store, cfg)["status"] == "running"
    assert canary.release(cfg, store, client, run_id="run-x", why="task failed")["outcome"] == "rolled_back"
    assert read_state(store, cfg)["canary_weight"] == 0.0


def test_latency_is_judged_only_against_a_concurrent_champion(world):
    cfg, store, client, _ = world
    policy = canary.policy_for(cfg, {"min_requests": 10})
    state = canary.start(cfg, store, client, 2, run_id="run-l", policy=policy)
    started = datetime.fromisoformat(state["started_at"])
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
    full = {**state, "canary_weight": 1.0}
    judged = {m.name for m in canary.analyse(cfg, store, full, policy, started, end).metrics}
    assert "latency_ms" not in judged and {"error_rate", "score"} <= judged
