"""The typed deployment state: the files the previous code wrote, malformed files, writes, the gateway's read."""

from __future__ import annotations

import json
from datetime import datetime, timezone
from types import SimpleNamespace

import pytest

from ml_ops.config import load_pipeline_by_name
from ml_ops.rollout.deployment import (
    DeploymentState,
    DeploymentStateError,
    read_state,
    reset_state,
    state_uri,
    write_state,
)

# What the dict-based code wrote for a running canary (its keys, its ISO format).
OLD_RUNNING = {
    "canary_version": 3,
    "canary_weight": 0.25,
    "champion_version": 2,
    "pipeline": "fraud",
    "previous_step_started_at": "2026-11-23T10:02:00+00:00",
    "reason": "step 1/4 (10%) passed (score 100); now 25%",
    "run_id": "manual__2026-11-23T10:00:00+00:00",
    "started_at": "2026-11-23T10:00:00+00:00",
    "status": "running",
    "step": 1,
    "step_started_at": "2026-11-23T10:04:00+00:00",
    "updated_at": "2026-11-23T10:04:00+00:00",
}
OLD_ROLLED_BACK = {
    "canary_version": None,
    "canary_weight": 0.0,
    "champion_version": None,
    "pipeline": "fraud",
    "previous_step_started_at": None,
    "reason": "step 1/4 (10%) failed: fail (score 50): critical latency_ms ...",
    "run_id": None,
    "started_at": None,
    "status": "rolled_back",
    "step": None,
    "step_started_at": None,
    "updated_at": "2026-11-23T10:03:00+00:00",
}


class MemoryStore:
    """The three calls the state functions make, on a dict (the S3 path is covered by test_canary)."""

    def __init__(self):
        self.objects: dict[str, bytes] = {}

    def exists(self, uri: str) -> bool:
        return uri in self.objects

    def read_json(self, uri: str):
        return json.loads(self.objects[uri])

    def write_json(self, obj, uri: str) -> str:
        self.objects[uri] = json.dumps(obj, indent=2, sort_keys=True, default=str).encode()
        return uri


@pytest.fixture()
def cfg():
    return load_pipeline_by_name("fraud")


@pytest.fixture()
def store():
    return MemoryStore()


def put(store: MemoryStore, cfg, raw) -> None:
    store.objects[state_uri(cfg)] = raw if isinstance(raw, bytes) else json.dumps(raw).encode()


def test_a_pipeline_without_a_state_file_is_idle(store, cfg):
    state = read_state(store, cfg)
    assert state == DeploymentState(pipeline="fraud")
    assert (state.status, state.canary_weight, state.canary_version, state.running) == ("idle", 0.0, None, False)


@pytest.mark.parametrize("old", [OLD_RUNNING, OLD_ROLLED_BACK], ids=["running", "rolled_back"])
def test_a_state_written_by_the_previous_code_reads_and_round_trips(store, cfg, old):
    put(store, cfg, old)
    state = read_state(store, cfg)
    assert state.status == old["status"] and state.canary_weight == old["canary_weight"]
    if old["started_at"]:
        assert state.started_at == datetime(2026, 11, 23, 10, 0, tzinfo=timezone.utc)
        assert state.step_started_at.isoformat() == old["step_started_at"]
    dumped = state.to_json()
    assert {k: dumped[k] for k in old} == old  # same keys, same values, same timestamp format
    assert (dumped["forced"], dumped["force_reason"]) == (False, "")


def test_the_state_reads_like_the_former_dict(store, cfg):
    put(store, cfg, OLD_RUNNING)
    state = read_state(store, cfg)
    assert state["canary_weight"] == 0.25 and state.get("step") == 1 and state.get("nope", "x") == "x"
    with pytest.raises(KeyError):
        state["nope"]


@pytest.mark.parametrize(
    "change, field",
    [
        ({"canary_weight": 1.5}, "canary_weight"),
        ({"canary_weight": "a lot"}, "canary_weight"),
        ({"status": "paused"}, "status"),
        ({"started_at": "yesterday"}, "started_at"),
        ({"step_started_at": "2026-11-23T10:04:00"}, "step_started_at"),  # no timezone
        ({"canary_version": "three"}, "canary_version"),
        ({"step": -1}, "step"),
    ],
)
def test_a_malformed_state_names_the_file_and_the_field(store, cfg, change, field):
    put(store, cfg, {**OLD_RUNNING, **change})
    with pytest.raises(DeploymentStateError, match=rf"state\.json: {field}: ") as err:
        read_state(store, cfg)
    assert state_uri(cfg) in str(err.value)


def test_inconsistent_or_unreadable_states_are_refused(store, cfg):
    put(store, cfg, {**OLD_RUNNING, "canary_version": None})
    with pytest.raises(DeploymentStateError, match="a running canary needs canary_version"):
        read_state(store, cfg)
    put(store, cfg, {**OLD_ROLLED_BACK, "canary_weight": 0.5})
    with pytest.raises(DeploymentStateError, match="canary_weight 0.5 > 0 needs status 'running'"):
        read_state(store, cfg)
    put(store, cfg, b"{not json")
    with pytest.raises(DeploymentStateError, match="not valid JSON"):
        read_state(store, cfg)
    put(store, cfg, [1, 2])
    with pytest.raises(DeploymentStateError, match="expected a JSON object"):
        read_state(store, cfg)


def test_unknown_keys_from_a_newer_writer_are_ignored(store, cfg):
    put(store, cfg, {**OLD_RUNNING, "shadow_weight": 0.5})
    assert read_state(store, cfg).canary_weight == 0.25


def test_writes_are_validated_before_anything_is_written(store, cfg):
    state = write_state(store, cfg, status="running", canary_version=2, champion_version=1, canary_weight=0.1)
    assert isinstance(state, DeploymentState) and state.updated_at.tzinfo is not None
    before = dict(store.objects)
    for bad, field in (({"canary_weight": 1.2}, "canary_weight"), ({"status": "done"}, "status")):
        with pytest.raises(DeploymentStateError, match=field):
            write_state(store, cfg, **bad)
    with pytest.raises(DeploymentStateError, match=r"unknown field\(s\) \['weight'\]"):
        write_state(store, cfg, weight=0.5)
    assert store.objects == before
    assert read_state(store, cfg) == state


def test_reset_replaces_even_a_damaged_file(store, cfg):
    put(store, cfg, {**OLD_RUNNING, "canary_weight": 7})
    state = reset_state(store, cfg, status="rolled_back", reason="manual")
    assert (state.status, state.canary_weight, state.canary_version, state.reason) == (
        "rolled_back",
        0.0,
        None,
        "manual",
    )
    assert read_state(store, cfg) == state


def test_the_gateway_routes_by_the_typed_state(store, cfg):
    """ml_ops.serving.models reads the same model: weight only for the version holding the canary alias."""
    from ml_ops.serving.models import Deployment, ModelResolver
    from ml_ops.serving.settings import Settings

    class Registry:  # no champion or canary alias: nothing to load
        def get_registered_model(self, name):
            return SimpleNamespace(aliases={})

    put(store, cfg, OLD_RUNNING)
    deployment, loaded = ModelResolver(Settings(), store, client=Registry())._resolve(cfg, None)
    assert not loaded and deployment.weight == 0.0 and deployment.state == read_state(store, cfg)
    assert "state asks 25% for canary v3 but the canary alias is unset" in deployment.errors[0]
    status = deployment.status()
    assert status["canary_weight"] == 0.25 and status["effective_weight"] == 0.0
    assert status["state"]["status"] == "running" and status["state"]["updated_at"] == OLD_RUNNING["updated_at"]
    assert Deployment(cfg).status()["state"]["status"] is None  # never read: the same keys, empty
    put(store, cfg, {**OLD_RUNNING, "canary_weight": 2})
    with pytest.raises(DeploymentStateError, match="canary_weight"):  # poll_once keeps the last deployment
        ModelResolver(Settings(), store, client=Registry())._resolve(cfg, None)
