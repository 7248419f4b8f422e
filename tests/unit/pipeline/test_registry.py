"""Alias promotion/rollback history against a real (sqlite) MLflow registry."""

import json

import pytest
from mlflow import MlflowClient

from ml_ops.pipeline.registry import (
    current_version,
    get_history,
    previous_champion,
    promote,
    rollback,
)
from tests.mlflow_store import fresh_store


@pytest.fixture(scope="module")
def client(tmp_path_factory):
    return MlflowClient(tracking_uri=fresh_store(tmp_path_factory.mktemp("registry")))


@pytest.fixture()
def client_and_model(client, request, tmp_path):
    name = f"fraud_{request.node.name}"
    client.create_registered_model(name)
    for _ in range(3):  # versions need a source, not a real model, for alias bookkeeping
        client.create_model_version(name, source=str(tmp_path / "model"))
    return client, name


def test_promote_moves_alias_and_records_history(client_and_model):
    client, name = client_and_model
    assert current_version(client, name, "champion") is None
    assert promote(client, name, 1, reason="first model") is None
    assert promote(client, name, 2, reason="better auc") == 1
    assert current_version(client, name, "champion") == 2
    history = json.loads(client.get_registered_model(name).tags["champion_history"])
    assert [(e["version"], e["reason"]) for e in history] == [(1, "first model"), (2, "better auc")]
    assert client.get_model_version(name, "1").tags["replaced_by"] == "2"


def test_promote_is_idempotent(client_and_model):
    client, name = client_and_model
    promote(client, name, 1, reason="first")
    assert promote(client, name, 1, reason="retry") is None
    assert len(get_history(client, name)) == 1


def test_rollback_restores_previous_and_does_not_toggle(client_and_model):
    client, name = client_and_model
    promote(client, name, 1, reason="a")
    promote(client, name, 2, reason="b")
    promote(client, name, 3, reason="c")
    assert previous_champion(client, name) == 2
    assert rollback(client, name, reason="v3 broke prod") == 2
    assert current_version(client, name, "champion") == 2
    assert client.get_model_version(name, "3").tags["rollback_reason"] == "v3 broke prod"
    assert get_history(client, name)[-1]["action"] == "rollback"
    # a second rollback goes further back (to 1), not forward to the rolled-back 3
    assert rollback(client, name, reason="v2 too") == 1
    with pytest.raises(ValueError, match="no previous 'champion'"):
        rollback(client, name, reason="nothing left")


def test_rollback_without_history_fails(client_and_model):
    client, name = client_and_model
    with pytest.raises(ValueError, match="no previous"):
        rollback(client, name, reason="x")


def test_history_is_bounded(client_and_model, monkeypatch):
    import ml_ops.pipeline.registry as reg

    client, name = client_and_model
    monkeypatch.setattr(reg, "HISTORY_MAX_ENTRIES", 4)
    for i in range(6):
        promote(client, name, 1 + i % 3, reason=f"r{i}")
    history = get_history(client, name)
    assert len(history) == 4 and history[-1]["reason"] == "r5"


def test_absent_is_none_but_unreachable_raises(client, monkeypatch):
    from ml_ops.pipeline.registry import RegistryUnreachable

    assert current_version(client, "never_registered", "champion") is None  # model absent
    client.create_registered_model("no_alias_yet")
    assert current_version(client, "no_alias_yet", "champion") is None  # alias absent
    # A server that does not answer is not "no version yet": that could register a duplicate version.
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    down = MlflowClient(tracking_uri="http://127.0.0.1:9", registry_uri="http://127.0.0.1:9")
    with pytest.raises(RegistryUnreachable, match="no_alias_yet@champion"):
        current_version(down, "no_alias_yet", "champion")


def test_promotion_and_rollback_record_who_asked(client_and_model):
    client, name = client_and_model
    promote(client, name, 1, reason="first", by="scheduled run scheduled__2026-01-05")
    promote(client, name, 2, reason="better", by="user alice")
    assert rollback(client, name, reason="complaints", by="user bob") == 1
    history = get_history(client, name)
    assert [(e["action"], e.get("by")) for e in history] == [
        ("promote", "scheduled run scheduled__2026-01-05"),
        ("promote", "user alice"),
        ("rollback", "user bob"),
    ]
    assert client.get_model_version(name, "2").tags["promoted_by"] == "user alice"
    assert client.get_model_version(name, "2").tags["rolled_back_by"] == "user bob"
