"""Canary rollouts through the real stack: Airflow's canary DAG (deferrable, on the triggerer), the
serving gateway taking fresh simulated traffic, MLflow aliases and S3 logs. Short steps (30 s) so a full
rollout fits in a few minutes; everything else is as deployed."""

from __future__ import annotations

import json
import shutil
import threading
import time
import urllib.request
from contextlib import contextmanager
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from ml_ops import layout
from tests.e2e.helpers import load_fraud_source, running_stack

pytestmark = pytest.mark.e2e

DAG = "fraud_canary"
D0 = date(2026, 3, 1)
DAYS = 5
SEED, ROWS_PER_DAY = 5, 2000  # this world's simulator arguments: the traffic continues the same customers
# 10 → 25 → 50 → 100 % as in production, 30 s per step; thresholds sized for ~60 requests/s of traffic (the
# quality metrics need labelled positives on both sides: ~2.5 % of rows are fraud).
FAST = {
    "steps": [10, 25, 50, 100],
    "step_minutes": 0.5,
    "max_extensions": 2,
    "min_requests": 50,
    "min_labels": 40,
    "min_per_class": 5,
}
RATE = 60
# A hand-started rollout of a version that never won its gate must say so (the gate is the ticket).
FORCED = {"force": True, "reason": "e2e: rollout of a version built by the test, not by the training DAG"}
# What the YAML of this module's stack changes (tests/e2e/conftest.py's include, copied): the training DAG's
# own challenger must be rollout-able by the Asset chain in a few minutes: the estimator of the world's
# models (same serving cost), a two-day window that the world's feature days cover, a gate it can win
# without a significance margin, and short canary steps.
AUTO_YAML = {
    "  params: {max_iter: 100, early_stopping: false, learning_rate: 0.1, max_leaf_nodes: 31, random_state: 0}": (
        "  params: {max_iter: 60, random_state: 0}"
    ),
    "window_days: 3": "window_days: 2",
    "floors: {roc_auc: 0.75, pr_auc: 0.2}": "floors: {roc_auc: 0.6}",  # this world's 2,000-row days: AUC ~0.8
    "min_improvement: {roc_auc: 0.0}": "min_improvement: {roc_auc: -0.05}",
    "require_significant: true": "require_significant: false",
    "steps: [10, 25, 50, 100]": "steps: [50, 100]",
    "step_minutes: 2 ": "step_minutes: 0.5 ",
    "min_requests: 200 ": "min_requests: 50 ",
}


@pytest.fixture(scope="module")
def canary_include(include_dir, tmp_path_factory):
    """The e2e include/ with AUTO_YAML applied to fraud.yaml (see there), and min_per_class for its canary."""
    target = tmp_path_factory.mktemp("canary") / "include"
    shutil.copytree(include_dir, target)
    fraud = target / "pipelines" / "fraud.yaml"
    text = fraud.read_text()
    for old, new in AUTO_YAML.items():
        assert old in text, old
        text = text.replace(old, new)
    fraud.write_text(text.replace("  max_extensions: 3", "  max_extensions: 3\n  min_per_class: 5"))
    return target


@pytest.fixture(scope="module")
def world(inbox, canary_include):
    """Own stack (the canary moves the fraud aliases other modules assert on), simulated features in
    its S3 and source database, and three real models: v1 (champion), v2 (the same estimator trained on twice
    the data) and v3 ("weak": the same estimator and data with its strongest inputs shuffled, so it costs
    the same and scores alike, but ranks worse)."""
    import sqlalchemy as sa
    from mlflow import MlflowClient

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.interval import DayInterval
    from ml_ops.local.airflow_client import AirflowClient
    from ml_ops.local.sim import generate_transactions
    from ml_ops.local.sim.transactions import LABEL_IN_ROW
    from ml_ops.pipeline.registry import promote
    from ml_ops.pipeline.steps import features_step, labels_step, load_labelled, model_columns, uri, validate_step
    from ml_ops.pipeline.train import train_and_register
    from ml_ops.storage import ObjectStore

    # Fast path off: the fault-injection variants are scored by their own predict, so the champion must be
    # too, or every variant would also differ by the numpy scorer's lower CPU time (a latency failure).
    env = {
        "MLOPS_INCLUDE_DIR": str(canary_include),
        "MLOPS_SCHEDULES": "assets",  # a winning challenger's Asset starts the canary DAG by itself
        "MLOPS_GATEWAY_POLL_SECONDS": "1",
        "MLOPS_GATEWAY_FLUSH_SECONDS": "2",
        "MLOPS_GATEWAY_FAST_PATH": "0",
    }
    with running_stack(inbox, env, prefix="mlops-e2e-canary-") as stack:
        cfg = load_pipeline_by_name("fraud")
        store = ObjectStore(stack.s3_client())
        generated = generate_transactions(D0, DAYS, rows_per_day=ROWS_PER_DAY, seed=SEED)
        # what the training DAG extracts (no label in the rows) and its labels task joins (their own table)
        load_fraud_source(stack.source_db_url, generated, seed=SEED)
        raw = generated.drop(columns=list(LABEL_IN_ROW))
        days = [DayInterval.for_day(D0 + timedelta(days=i)) for i in range(DAYS)]
        for d in days:  # in order, as the training DAG does: features read only validated earlier days
            store.write_parquet(raw[raw["ts"].dt.date == d.day].reset_index(drop=True), uri(cfg, "raw", d.ds))
            validate_step(cfg, store, d)
        for d in days[1:]:
            features_step(cfg, store, d)
        engine = sa.create_engine(stack.source_db_url)
        labels_step(cfg, store, days[-1], engine)  # labels known by the last day's end: days 1-3 have matured
        engine.dispose()
        frames = [load_labelled(store, [uri(cfg, "features", d.ds)], cfg, days[-1].end) for d in days[1:-1]]
        holdout = frames[2]
        numeric, categorical = model_columns(cfg)
        versions = {}
        # Same estimator (so the same serving cost: a logistic regression champion made a gradient-boosting
        # challenger 17 % slower, which the judge rightly rolled back), the challenger trained on more data.
        two_days = pd.concat(frames[:2], ignore_index=True)
        weak = two_days.copy()
        rng = np.random.default_rng(0)
        # every input shuffled but one weak one: on fresh traffic (no model trained on it) the gap must be clear
        # enough for one 50 % step's labels; with the three weakest kept (holdout ROC-AUC ~0.70 against ~0.80)
        # the quality metrics could not separate the two on ~40 labelled positives a side
        for column in [c for c in numeric + categorical if c != "channel"]:
            weak[column] = rng.permutation(weak[column].to_numpy())
        for name, train in (("champion", frames[0]), ("challenger", two_days), ("weak", weak)):
            versions[name] = train_and_register(
                train,
                holdout,
                tracking_uri=stack.mlflow_url,
                experiment=cfg.name,
                model_name=cfg.name,
                target=cfg.target.column,
                numeric=numeric,
                categorical=categorical,
                estimator="sklearn.ensemble.HistGradientBoostingClassifier",
                params={"max_iter": 60, "random_state": 0},
                data_uris={"train": [], "holdout": []},
                tags={"pipeline": cfg.name, "variant": name},
            )
        metrics = {name: result.metrics for name, result in versions.items()}
        versions = {name: result.version for name, result in versions.items()}
        client = MlflowClient(stack.mlflow_url)
        promote(client, cfg.name, versions["champion"], reason="e2e: first champion")
        airflow = AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)
        airflow.wait_for_dag(DAG, timeout=180)
        airflow.unpause(DAG)
        _wait_gateway_serves(stack, versions["champion"])
        yield {
            "stack": stack,
            "cfg": cfg,
            "store": store,
            "client": client,
            "airflow": airflow,
            "versions": versions,
            "metrics": metrics,
        }


def _get(url: str, token: str | None = None) -> dict:
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return json.load(resp)


def _gateway_pipeline(stack, name: str = "fraud") -> dict:
    """What the gateway serves now: loaded champion/canary versions and the weight it routes with."""
    status = _get(f"{stack.gateway_url}/pipelines")["pipelines"][name]
    loaded = {side: status[side]["serving"] if status[side]["loaded"] else None for side in ("champion", "canary")}
    return {
        "champion_version": loaded["champion"],
        "canary_version": loaded["canary"],
        "canary_weight": status["effective_weight"],
    }


def _wait_gateway(stack, timeout: float = 120, **expected) -> dict:
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        try:
            last = _gateway_pipeline(stack)
            if all(last[k] == v for k, v in expected.items()):
                return last
        except (OSError, KeyError) as exc:  # restarting, or not resolved yet
            last = repr(exc)
        time.sleep(1)
    raise AssertionError(f"gateway does not serve {expected}: {last}")


def _wait_gateway_serves(stack, champion: int, timeout: float = 120) -> None:
    _wait_gateway(stack, timeout, champion_version=champion)


@contextmanager
def fresh_traffic(world, rate: float = RATE):
    """Fresh days of this world (after the last extracted day: no model trained on them) sent to the gateway in
    the background, each label posted 1 s per simulated day of its delay later."""
    from ml_ops.local.traffic import World, send_traffic

    stop, result = threading.Event(), {}

    def run():
        result["stats"] = send_traffic(
            world["cfg"],
            world["store"],
            world["stack"].gateway_url,
            rate=rate,
            duration=3600,
            label_delay=1.0,
            stop_event=stop,
            token=world["stack"].gateway_token,  # feedback needs the gateway's token
            world=World(seed=SEED, rows_per_day=ROWS_PER_DAY),
        )

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield result
    finally:
        stop.set()
        thread.join(timeout=60)


def _run_canary(world, version: int, **overrides) -> tuple[str, str, dict]:
    airflow = world["airflow"]
    run_id = airflow.trigger(DAG, conf={**FAST, **FORCED, "version": version, **overrides})
    state = airflow.wait_for_run(DAG, run_id, timeout=900)
    return run_id, state, airflow.xcom(DAG, run_id, "canary") or {}


def _serving_logs_since(world, since: pd.Timestamp) -> pd.DataFrame:
    stack, store = world["stack"], world["store"]
    req = urllib.request.Request(
        f"{stack.gateway_url}/admin/flush",
        data=b"{}",
        method="POST",
        headers={"Authorization": f"Bearer {stack.gateway_token}"},
    )
    urllib.request.urlopen(req, timeout=30).read()
    parts = [u for u in store.list("s3://mlops/pipelines/fraud/serving_logs/") if u.endswith(".parquet")]
    logs = pd.concat([store.read_parquet(u) for u in parts], ignore_index=True)
    return logs[pd.to_datetime(logs["ts"], utc=True) >= since]


def _champion(world) -> int:
    return int(world["client"].get_model_version_by_alias("fraud", "champion").version)


def test_better_challenger_is_promoted_through_every_step_and_survives_a_gateway_restart(world, inbox):
    from ml_ops.pipeline.registry import get_history, previous_champion
    from ml_ops.rollout.deployment import read_state

    stack, cfg, store, airflow = world["stack"], world["cfg"], world["store"], world["airflow"]
    v_old, v_new = world["versions"]["champion"], world["versions"]["challenger"]
    with fresh_traffic(world):
        run_id = airflow.trigger(DAG, conf={**FAST, **FORCED, "version": v_new})
        # wait for step 2 (25 %), then restart the gateway in the middle of it
        deadline = time.monotonic() + 300
        while read_state(store, cfg).get("step") != 1:
            assert time.monotonic() < deadline, read_state(store, cfg)
            time.sleep(1)
        before = _wait_gateway(stack, 30, canary_version=v_new, canary_weight=0.25)
        second = airflow.trigger(DAG, conf={**FAST, **FORCED, "version": v_old})  # a second canary meanwhile
        stack._stop("gateway")
        stack.up(["gateway"])
        # back with the split of the deployment state and the aliases, not from memory (if the DAG moved
        # to the next step during the restart, the gateway follows it)
        after = _wait_gateway(stack, 60, canary_version=v_new)
        assert after["champion_version"] == before["champion_version"]
        assert after["canary_weight"] == read_state(store, cfg)["canary_weight"] >= before["canary_weight"]
        # one canary per pipeline: the second run waits while the first holds the traffic split; it is
        # then cancelled while still queued (once the first ends it would start its own rollout)
        assert airflow.get_run(DAG, second)["state"] == "queued"
        airflow.set_run_state(DAG, second, "failed")
        state = airflow.wait_for_run(DAG, run_id, timeout=900)
    assert state == "success"
    outcome = airflow.xcom(DAG, run_id, "canary")
    assert outcome["outcome"] == "promoted", outcome
    assert _champion(world) == v_new
    assert get_history(world["client"], "fraud")[-1]["version"] == v_new
    assert previous_champion(world["client"], "fraud") == v_old  # what the rollback DAG would restore
    assert "canary" not in world["client"].get_registered_model("fraud").aliases
    final = read_state(store, cfg)
    assert (final["status"], final["canary_weight"]) == ("promoted", 0.0)
    tags = world["client"].get_model_version("fraud", str(v_new)).tags
    assert all(tags.get(f"canary.step{i}", "").startswith("pass") for i in (1, 2, 3, 4)), tags
    run = world["client"].get_run(tags["canary.mlflow_run_id"])
    assert run.data.tags["outcome"] == "promoted" and "latency_ms.p_value" in run.data.metrics
    assert inbox.matching(f"canary v{v_new} promoted")
    # it never won an offline gate: the forced rollout is on the record (decision log, tags)
    assert tags["canary.forced"] == "true" and tags["canary.force_reason"] == FORCED["reason"]
    forced = [d for d in store.read_jsonl(layout.decision_log(cfg.prefix())) if d.get("forced")]
    assert [d["challenger_version"] for d in forced][-1] == v_new, forced
    # the restart lost no judgement: every step was judged on data, none timed out for lack of it
    assert "nodata" not in " ".join(tags[f"canary.step{i}"] for i in (1, 2, 3, 4))


def test_faulty_canary_is_rolled_back_at_the_first_step_and_the_champion_never_fails(world, inbox):
    """A canary that is slow and fails requests: both show at the first step, each as its own critical metric.
    (One rollout for both faults: each costs a minute of the suite; the judge's unit tests take each metric
    alone, and a worse-ranking model of the same cost is the quality test below.)"""
    from ml_ops.rollout.deployment import read_state
    from tests.model_variants import register_variant

    stack, client = world["stack"], world["client"]
    champion = _champion(world)
    bad = register_variant(stack.mlflow_url, "fraud", champion, seed=1, delay_ms=40.0, error_rate=0.3)
    started = pd.Timestamp.now(tz="UTC")
    with fresh_traffic(world) as traffic:
        _, state, outcome = _run_canary(world, bad)
    stats = traffic["stats"]
    assert state == "success" and outcome["outcome"] == "rolled_back", outcome
    assert outcome["step"] == 1, outcome  # caught at 10 %
    assert "critical latency_ms" in outcome["reason"] and "critical error_rate" in outcome["reason"], outcome
    assert _champion(world) == champion
    tags = client.get_model_version("fraud", str(bad)).tags
    assert tags["rolled_back"] == "true" and tags["canary.status"] == "rolled_back"
    assert "canary.step2" not in tags
    assert read_state(world["store"], world["cfg"])["canary_weight"] == 0.0
    assert "canary" not in client.get_registered_model("fraud").aliases
    # throughout, the champion answered every request routed to it: client side, every failure names the
    # canary; server side, the prediction log has no failed champion row
    assert all("(canary)" in error for error in stats.errors), stats.errors
    assert stats.by_route["champion"] > 100, stats
    logs = _serving_logs_since(world, started)
    champion_rows = logs[logs["route"] == "champion"]
    assert len(champion_rows) > 100 and champion_rows["error"].isna().all()
    assert inbox.matching(f"canary v{bad} rolled back")


def test_rollback_dag_restores_the_previous_champion_in_one_trigger(world, inbox):
    from ml_ops.pipeline.registry import previous_champion

    airflow, client = world["airflow"], world["client"]
    current = _champion(world)
    previous = previous_champion(client, "fraud")
    assert previous is not None
    airflow.wait_for_dag("fraud_rollback", timeout=60)
    airflow.unpause("fraud_rollback")
    run_id = airflow.trigger("fraud_rollback", conf={"reason": "e2e: customer complaints"})
    assert airflow.wait_for_run("fraud_rollback", run_id, timeout=300) == "success"
    assert _champion(world) == previous
    assert client.get_model_version("fraud", str(current)).tags["rollback_reason"] == "e2e: customer complaints"
    _wait_gateway_serves(world["stack"], previous)
    assert inbox.matching(f"rolled back to v{previous}")


def test_worse_model_of_the_same_cost_is_rolled_back_by_a_quality_metric(world, inbox):
    """Same estimator, same inputs, scores alike: only the labels show it ranks worse. At 50 % of 100
    requests/s enough labelled positives (~1 a second per side) arrive within the step's extensions."""
    client = world["client"]
    weak, champion = world["versions"]["weak"], _champion(world)
    assert world["metrics"]["weak"]["roc_auc"] < world["metrics"]["champion"]["roc_auc"] - 0.05, world["metrics"]
    with fresh_traffic(world, rate=100):
        _, state, outcome = _run_canary(world, weak, steps=[50, 100], max_extensions=6, min_per_class=30)
    assert state == "success" and outcome["outcome"] == "rolled_back", outcome
    assert outcome["step"] == 1, outcome
    reason = outcome["reason"]
    assert "critical roc_auc" in reason or "critical log_loss" in reason, reason
    assert "critical latency_ms" not in reason and "critical error_rate" not in reason, reason
    assert _champion(world) == champion
    assert client.get_model_version("fraud", str(weak)).tags["rolled_back"] == "true"
    assert inbox.matching(f"canary v{weak} rolled back")


# For the chain test only: wide quality tolerances. This world's retrained challenger (2-day window) and champion
# are close on fresh days, and on ~40 labelled positives a side the default tolerances rolled a close pair back
# once (ROC-AUC 0.878 vs 0.944, p=0.035). The chain is what that test is about; a version that ranks clearly
# worse is the quality test above, under the default tolerances.
CHAIN_METRICS = """  metrics:
    error_rate: {direction: increase, tolerance: 0.01, critical: true}
    latency_ms: {direction: increase, tolerance: 0.10, critical: true}
    score: {direction: either, tolerance: 0.35, weight: 0.5}
    log_loss: {direction: increase, tolerance: 1.0, critical: true}
    roc_auc: {direction: decrease, tolerance: 0.15, critical: true}
"""


def test_a_gate_win_starts_the_canary_through_its_asset_and_it_is_promoted(world, inbox, canary_include):
    """The automatic chain through the real scheduler: the training DAG's challenger wins its gate,
    `announce_canary` emits the Asset, the canary DAG starts by itself, judges it on fresh traffic at every step
    and promotes it (CHAIN_METRICS: the pair is close). No manual trigger. `make demo` runs the same chain."""
    champion = _champion(world)
    runs_before = {r["dag_run_id"] for r in world["airflow"].dag_runs(DAG)}
    fraud = canary_include / "pipelines" / "fraud.yaml"
    original = fraud.read_text()
    marker = "  min_per_class: 5\n"
    assert marker in original
    fraud.write_text(original.replace(marker, marker + CHAIN_METRICS))  # read by the canary task when it runs
    try:
        _run_chain(world, inbox, champion, runs_before)
    finally:
        fraud.write_text(original)


def _run_chain(world, inbox, champion: int, runs_before: set) -> None:
    from tests.e2e.helpers import run_day

    airflow, client, store, cfg = world["airflow"], world["client"], world["store"], world["cfg"]
    trained = run_day(airflow, "fraud_training", D0 + timedelta(days=DAYS - 1))
    assert trained["state"] == "success", trained
    tasks = trained["tasks"]
    assert tasks["challenger_won"] == "success" and tasks["promote"] == "success", tasks
    assert tasks["announce_canary"] == "success", tasks
    challenger = int(client.get_model_version_by_alias("fraud", "canary").version)
    decision = store.read_jsonl(layout.decision_log(cfg.prefix()))[-1]
    assert decision["promote"] is True and decision["key"] == f"fraud:v{challenger}", decision

    with fresh_traffic(world):
        deadline, started = time.monotonic() + 180, []
        while not started and time.monotonic() < deadline:
            started = [r for r in airflow.dag_runs(DAG) if r["dag_run_id"] not in runs_before]
            time.sleep(2)
        assert started, "the announce_canary Asset event started no canary run"
        run = started[0]
        assert run["run_type"] == "asset_triggered", run
        assert airflow.wait_for_run(DAG, run["dag_run_id"], timeout=900) == "success"
    outcome = airflow.xcom(DAG, run["dag_run_id"], "canary")
    assert outcome["version"] == challenger and outcome["outcome"] == "promoted", outcome
    tags = client.get_model_version("fraud", str(challenger)).tags
    assert "canary.forced" not in tags  # it won its gate: nothing to force
    assert tags["canary.status"] == "promoted" and tags["canary.step1"].startswith("pass"), tags
    assert "canary.step2" in tags, tags  # judged at both steps, on labelled fresh traffic
    assert _champion(world) == challenger != champion
    assert inbox.matching(f"canary v{challenger} promoted")
    assert "canary" not in client.get_registered_model("fraud").aliases
