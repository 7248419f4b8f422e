"""Step-level rules that matter for the registry: promotion is never stale, canary mode never touches an
existing champion."""

import pytest
from mlflow import MlflowClient

from ml_ops.config import load_pipeline_by_name
from ml_ops.pipeline.steps import SkipStep, decision_text, promote_step
from tests.mlflow_store import fresh_store


@pytest.fixture()
def client(tmp_path):
    c = MlflowClient(tracking_uri=fresh_store(tmp_path))
    c.create_registered_model("fraud")
    for _ in range(3):
        c.create_model_version("fraud", source=str(tmp_path / "model"))
    return c


def direct():
    """The fraud pipeline with promotion.mode direct (the shipped YAML rolls winners out as canaries)."""
    cfg = load_pipeline_by_name("fraud")
    return cfg.model_copy(update={"promotion": cfg.promotion.model_copy(update={"mode": "direct"})})


def decision(version, champion_version, reason="better"):
    return {"version": version, "champion_version": champion_version, "reason": reason, "promote": True}


def test_first_winner_becomes_champion_then_next(client):
    cfg = direct()
    assert promote_step(cfg, client, decision(1, None)) == {"champion": 1, "previous": None, "moved": "champion"}
    assert promote_step(cfg, client, decision(2, 1))["previous"] == 1
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == "2"


def test_stale_decision_does_not_put_an_older_model_back(client):
    cfg = direct()
    promote_step(cfg, client, decision(1, None))
    promote_step(cfg, client, decision(2, 1))
    # re-running day 1's promote after v2 took over: v1 was compared with "no champion"
    with pytest.raises(SkipStep, match="champion is v2 now"):
        promote_step(cfg, client, decision(1, None))
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == "2"


def test_rerun_of_the_same_promotion_is_a_no_op(client):
    cfg = direct()
    promote_step(cfg, client, decision(1, None))
    assert promote_step(cfg, client, decision(1, None))["note"] == "already champion"


def test_canary_mode_sets_canary_alias_only_once_a_champion_exists(client):
    cfg = load_pipeline_by_name("fraud").model_copy(
        update={"promotion": load_pipeline_by_name("fraud").promotion.model_copy(update={"mode": "canary"})}
    )
    # a first model has nothing to be judged against: it becomes champion directly
    # a first model goes straight to champion; the next winner only gets the canary alias (and is announced)
    assert promote_step(cfg, client, decision(1, None)) == {"champion": 1, "previous": None, "moved": "champion"}
    assert promote_step(cfg, client, decision(2, 1)) == {"canary": 2, "champion": 1, "moved": "canary"}
    assert str(client.get_model_version_by_alias("fraud", "canary").version) == "2"
    assert str(client.get_model_version_by_alias("fraud", "champion").version) == "1"


def test_decision_text_lists_checks():
    text = decision_text(
        {
            "reason": "reject: floor",
            "data_date": "2026-01-05",
            "checks": [{"name": "floor:roc_auc", "value": 0.6, "threshold": 0.75, "passed": False}],
        }
    )
    assert "[FAIL] floor:roc_auc: 0.6 vs 0.75" in text and "2026-01-05" in text
