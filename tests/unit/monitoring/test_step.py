"""drift_step / should_retrain against a real S3 (embedded stack) and a real sqlite MLflow store.

Simulated fraud days: a covariate shift on SHIFT and a concept change on CHANGE; the champion is
trained on the days before both. Features are built by the pipeline's own steps.
"""

from __future__ import annotations

import socket
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml_ops.config import load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import ConceptChange, CovariateShift, generate_transactions
from ml_ops.local.stack import Stack
from ml_ops.monitoring.step import (
    MONITORING_KEY_TAG,
    Champion,
    day_step,
    drift_step,
    monitoring_experiment,
    retrain_log_uri,
    should_retrain,
)
from ml_ops.pipeline.steps import SkipStep, features_step, model_columns, uri
from ml_ops.pipeline.train import train_and_register
from ml_ops.rollout.deployment import LOG_COLUMNS, serving_logs_prefix
from ml_ops.storage import ObjectStore
from tests.mlflow_store import fresh_store

START = date(2026, 1, 1)
SHIFT = date(2026, 1, 11)
CHANGE = date(2026, 1, 13)
DAYS = 16


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def day(i: int) -> DayInterval:
    return DayInterval.for_day(START + timedelta(days=i))


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    home = tmp_path_factory.mktemp("monitor")
    stack = Stack(
        home=home / "stack",
        s3_port=_free_port(),
        mlflow_port=_free_port(),
        airflow_port=_free_port(),
        startup_timeout=60,
    )
    stack.up(["s3"])
    store = ObjectStore(stack.s3_client())
    cfg = load_pipeline_by_name("fraud")
    raw = generate_transactions(
        START,
        DAYS,
        rows_per_day=1500,
        n_customers=1200,
        label_delay_days=2,
        events=[CovariateShift(SHIFT, share=0.3), ConceptChange(CHANGE)],
    )
    for i in range(DAYS):
        part = raw[raw["ts"].dt.date == (START + timedelta(days=i))]
        store.write_parquet(part.reset_index(drop=True), uri(cfg, "raw", day(i).ds))
    for i in range(1, DAYS):
        features_step(cfg, store, day(i))

    tracking_uri = fresh_store(home)
    train_uris = [uri(cfg, "features", day(i).ds) for i in range(1, 7)]
    holdout_uris = [uri(cfg, "features", day(i).ds) for i in (7, 8)]
    numeric, categorical = model_columns(cfg)
    result = train_and_register(
        pd.concat([store.read_parquet(u) for u in train_uris], ignore_index=True),
        pd.concat([store.read_parquet(u) for u in holdout_uris], ignore_index=True),
        tracking_uri=tracking_uri,
        experiment=cfg.name,
        model_name=cfg.name,
        target=cfg.target.column,
        numeric=numeric,
        categorical=categorical,
        estimator="sklearn.linear_model.LogisticRegression",
        # fast; HistGradientBoosting's OpenMP threads crawl on a busy 2-core CI runner
        params={"C": 1.0, "max_iter": 300},
        data_uris={"train": train_uris, "holdout": holdout_uris},
        tags={"pipeline": cfg.name},
        artifact_location=str(home / "artifacts"),
    )
    MlflowClient(tracking_uri).set_registered_model_alias(cfg.name, "champion", str(result.version))
    yield cfg, store, tracking_uri
    stack.down()


@pytest.fixture(scope="module")
def shift_day(world):
    cfg, store, tracking_uri = world
    return drift_step(cfg, store, day(10), tracking_uri)


def test_no_champion_skips(world, tmp_path):
    cfg, store, _ = world
    with pytest.raises(SkipStep, match="no champion"):
        drift_step(cfg, store, day(9), fresh_store(tmp_path))


def test_day_before_the_shift_is_quiet(world):
    # a Friday: on the simulator's Saturdays the busier weekend moves entity_txn_count_24h by ~0.2 sd
    # against the all-week reference, a real (weekly) change the default 0.1 floor reports
    cfg, store, tracking_uri = world
    out = drift_step(cfg, store, day(8), tracking_uri)
    assert not out["drift_alarm"], out
    # labels known by now are those of the champion's training days, which are not quality evidence
    assert not out["quality_alarm"] and out["quality"]["reasons"] == ["no labelled rows yet"]


def test_shift_day_alarms_names_columns_and_writes_the_report(world, shift_day):
    cfg, store, _ = world
    assert shift_day["alarm"] and shift_day["drift_alarm"]
    # the holdout day's labels have arrived; the fraud mechanism did not change with the new segment
    assert not shift_day["quality_alarm"] and shift_day["quality"]["roc_auc"] > 0.75, shift_day["quality"]
    assert {"customer_age", "account_age_days", "country"} <= set(shift_day["drifted_columns"])
    assert "day_of_week" not in shift_day["drifted_columns"]
    html = store.get_bytes(shift_day["report_uri"]).decode()
    assert html.lstrip().startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    record = store.read_json(shift_day["result_uri"])
    assert record["evidently_agrees"] is True and record["champion_version"] == 1
    assert "customer_age: Wasserstein/std" in record["text"]
    assert [c["name"] for c in record["columns"]][-1] in ("score", *cfg.features.categorical)
    assert any(c["name"] == "score" for c in record["columns"])  # prediction drift is a column


def test_mlflow_run_per_day_is_reused_on_rerun(world, shift_day):
    cfg, store, tracking_uri = world
    again = drift_step(cfg, store, day(10), tracking_uri)
    assert again["mlflow_run_id"] == shift_day["mlflow_run_id"]
    client = MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(monitoring_experiment(cfg))
    key = f"{cfg.name}:{day(10).ds}"
    assert len(client.search_runs([exp.experiment_id], f"tags.{MONITORING_KEY_TAG} = '{key}'")) == 1
    run = client.get_run(shift_day["mlflow_run_id"])
    assert run.data.metrics["alarm"] == 1.0 and run.data.tags["report_uri"] == shift_day["report_uri"]
    history = client.get_metric_history(run.info.run_id, "drift.customer_age.effect")
    assert {m.step for m in history} == {day_step(day(10).ds)}


def test_concept_change_is_caught_once_labels_matured(world):
    cfg, store, tracking_uri = world
    out = drift_step(cfg, store, day(15), tracking_uri)  # labels of the days after CHANGE are known
    assert out["quality_alarm"], str(store.read_json(out["result_uri"])["quality"]["reasons"])
    assert any("roc_auc" in r or "ADWIN" in r for r in out["quality"]["reasons"])


def test_missing_empty_or_mismatched_data_is_explained_and_loses_nothing(world, shift_day):
    cfg, store, tracking_uri = world
    with pytest.raises(SkipStep, match=r"features/ds=2026-01-20/data.parquet does not exist"):
        drift_step(cfg, store, DayInterval.for_day(date(2026, 1, 20)), tracking_uri)
    failing = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"on_missing_data": "fail"})})
    with pytest.raises(ValueError, match="does not exist.*on_missing_data=fail"):
        drift_step(failing, store, DayInterval.for_day(date(2026, 1, 20)), tracking_uri)

    good = store.read_parquet(uri(cfg, "features", day(10).ds))
    bad_day = DayInterval.for_day(date(2026, 1, 21))
    store.write_parquet(good.iloc[:0], uri(cfg, "features", bad_day.ds))
    with pytest.raises(SkipStep, match="has 0 rows"):
        drift_step(cfg, store, bad_day, tracking_uri)
    store.write_parquet(good.drop(columns=["amount"]), uri(cfg, "features", bad_day.ds))
    with pytest.raises(SkipStep, match=r"lacks column\(s\) \['amount'\]"):
        drift_step(cfg, store, bad_day, tracking_uri)
    store.write_parquet(good.assign(customer_age="old"), uri(cfg, "features", bad_day.ds))
    with pytest.raises(SkipStep, match=r"\['customer_age'\] should be numeric"):
        drift_step(cfg, store, bad_day, tracking_uri)
    assert not store.exists(uri(cfg, "drift", bad_day.ds, "report.html"))
    # the shift day's report survives a later failed attempt
    assert store.exists(shift_day["report_uri"]) and store.exists(shift_day["result_uri"])


def test_one_retrain_per_cooldown(world):
    cfg, store, _ = world
    assert cfg.monitoring.retrain_cooldown_days == 7
    decisions = {
        d: should_retrain(store, cfg, d) for d in ["2026-02-01", "2026-02-01", "2026-02-02", "2026-02-07", "2026-02-08"]
    }
    assert decisions == {"2026-02-01": True, "2026-02-02": False, "2026-02-07": False, "2026-02-08": True}
    assert should_retrain(store, cfg, "2026-02-01")  # a retried task gets the same answer
    assert [r["day"] for r in store.read_jsonl(retrain_log_uri(cfg))] == ["2026-02-01", "2026-02-08"]


# --------------------------------------------------------------------------- serving logs as current data

LOGS_DAY = "2026-02-20"  # far from any features partition: only the logs can be the current data
SCORE_DAY = "2026-02-21"
BAD_LOGS_DAY = "2026-02-23"


@pytest.fixture(scope="module")
def champion(world):
    cfg, _, tracking_uri = world
    return Champion(cfg, tracking_uri)


def log_rows(
    features: pd.DataFrame, inputs: list[str], ds: str, *, route: str = "champion", version=1, score=None, error=None
) -> pd.DataFrame:
    """Rows as the gateway logs them: the model's inputs + LOG_COLUMNS, spread over the day's hours."""
    n = len(features)
    rows = features[inputs].reset_index(drop=True)
    rows["request_id"] = [f"{route}-{ds}-{i}" for i in range(n)]
    rows["row"] = 0
    rows["ts"] = pd.Timestamp(ds, tz="UTC") + pd.to_timedelta(np.arange(n) * (86_399 // max(n, 1)), unit="s")
    rows["version"] = version
    rows["route"] = route
    rows["routing_key"] = [f"c{i % 97}" for i in range(n)]
    rows["latency_ms"] = 3.0
    rows["model_cpu_ms"] = 2.5
    rows["score"] = np.nan if score is None else score
    rows["error"] = error
    assert set(LOG_COLUMNS) <= set(rows.columns)
    return rows


def write_serving_logs(store: ObjectStore, cfg, ds: str, rows: pd.DataFrame) -> list[str]:
    """One part file per hour, under serving_logs/ds=<day>/hour=<hh>/, as the gateway writes them."""
    uris = []
    for hour, part in rows.groupby(rows["ts"].dt.hour):
        target = f"{serving_logs_prefix(cfg)}/ds={ds}/hour={hour:02d}/part-00000.parquet"
        uris.append(store.write_parquet(part.reset_index(drop=True), target))
    return uris


def test_serving_logs_are_the_current_data_champion_rows_only(world, champion):
    """A quiet day's traffic: its champion rows are all that is compared. Canary rows and failed
    predictions carry wildly shifted inputs and would alarm if they were not left out; rows a previous
    champion version answered carry a nonsense score and are re-scored by today's champion."""
    cfg, store, tracking_uri = world
    quiet = store.read_parquet(uri(cfg, "features", day(8).ds))
    inputs = champion.inputs
    served = log_rows(quiet, inputs, LOGS_DAY, score=champion.score(quiet))
    stale = served.sample(200, random_state=1).index
    served.loc[stale, ["version", "score"]] = [0, 0.999]  # answered by the champion before a promotion
    shifted = quiet.sample(400, random_state=2).assign(amount=lambda d: d["amount"] * 50, customer_age=19)
    canary = log_rows(shifted.iloc[:300], inputs, LOGS_DAY, route="canary", version=2, score=0.99)
    failed = log_rows(shifted.iloc[300:], inputs, LOGS_DAY, score=None, error="ValueError: bad input")
    write_serving_logs(store, cfg, LOGS_DAY, pd.concat([served, canary, failed], ignore_index=True))
    # a second file of an hour whose few requests carried no amount: an all-null column has no type
    nulls = log_rows(quiet.iloc[:5], inputs, LOGS_DAY, route="canary", version=2, score=0.5).assign(amount=None)
    assert nulls["amount"].dtype == object
    store.write_parquet(nulls, f"{serving_logs_prefix(cfg)}/ds={LOGS_DAY}/hour=23/part-00001.parquet")
    assert not store.exists(uri(cfg, "features", LOGS_DAY))

    out = drift_step(cfg, store, DayInterval.for_day(date.fromisoformat(LOGS_DAY)), tracking_uri)
    assert out["current_source"] == "serving_logs" and out["n_current"] == len(quiet), out
    assert not out["drift_alarm"], out["drifted_columns"]
    record = store.read_json(out["result_uri"])
    assert record["current_source"] == "serving_logs" and record["n_current"] == len(quiet)
    current = record["current"]
    assert (current["rows_logged"], current["dropped_canary"], current["dropped_errors"]) == (
        len(quiet) + 405,
        305,
        100,
    )
    assert current["rescored"] == 200 and len(current["uris"]) > 12
    assert all("/serving_logs/ds=2026-02-20/hour=" in u for u in current["uris"])
    run = MlflowClient(tracking_uri).get_run(out["mlflow_run_id"])
    assert run.data.tags["current_source"] == "serving_logs"


def test_the_served_score_is_what_score_drift_compares(world, champion):
    cfg, store, tracking_uri = world
    quiet = store.read_parquet(uri(cfg, "features", day(8).ds))
    # the gateway served scores the champion would not give (e.g. a broken preprocessing in serving)
    write_serving_logs(
        store, cfg, SCORE_DAY, log_rows(quiet, champion.inputs, SCORE_DAY, score=1.0 - champion.score(quiet))
    )
    out = drift_step(cfg, store, DayInterval.for_day(date.fromisoformat(SCORE_DAY)), tracking_uri)
    assert out["current_source"] == "serving_logs"
    assert out["drift_alarm"] and out["drifted_columns"] == ["score"], out["drifted_columns"]


def test_without_usable_logs_the_features_stand_in(world, champion, shift_day):
    cfg, store, tracking_uri = world
    record = store.read_json(shift_day["result_uri"])
    assert shift_day["current_source"] == record["current_source"] == "features"
    assert record["current"]["uris"] == [uri(cfg, "features", day(10).ds)]
    assert "no serving logs under" in record["current"]["note"]

    # a day whose traffic all went to the canary or failed: the champion served nothing, features stand in
    holdout = store.read_parquet(uri(cfg, "features", day(7).ds))
    write_serving_logs(
        store,
        cfg,
        day(7).ds,
        pd.concat(
            [
                log_rows(holdout.iloc[:100], champion.inputs, day(7).ds, route="canary", version=2, score=0.1),
                log_rows(holdout.iloc[100:150], champion.inputs, day(7).ds, error="TimeoutError"),
            ],
            ignore_index=True,
        ),
    )
    out = drift_step(cfg, store, day(7), tracking_uri)
    assert out["current_source"] == "features" and out["n_current"] == len(holdout)
    note = store.read_json(out["result_uri"])["current"]["note"]
    assert "none of the 150 logged rows" in note and "50 failed, 100 routed to the canary" in note

    # no logs and no features: the message says both
    with pytest.raises(SkipStep, match=r"features/ds=2026-02-22/data.parquet does not exist.*no serving logs"):
        drift_step(cfg, store, DayInterval.for_day(date(2026, 2, 22)), tracking_uri)


def test_unusable_log_files_are_named(world, champion):
    cfg, store, tracking_uri = world
    bad_day = DayInterval.for_day(date.fromisoformat(BAD_LOGS_DAY))
    quiet = store.read_parquet(uri(cfg, "features", day(8).ds))
    rows = log_rows(quiet.iloc[:500], champion.inputs, BAD_LOGS_DAY, score=0.1)
    part = f"{serving_logs_prefix(cfg)}/ds={BAD_LOGS_DAY}/hour=07/part-00000.parquet"
    store.write_parquet(rows.drop(columns=["amount"]), part)
    with pytest.raises(SkipStep, match=r"hour=07/part-00000.parquet lacks column\(s\) \['amount'\]"):
        drift_step(cfg, store, bad_day, tracking_uri)
    store.write_parquet(rows.assign(amount="12.50"), part)
    with pytest.raises(SkipStep, match=r"hour=07/part-00000.parquet: column\(s\) \['amount'\] should be numeric"):
        drift_step(cfg, store, bad_day, tracking_uri)
    store.put_bytes(part, b"PAR1 not really parquet")
    failing = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"on_missing_data": "fail"})})
    with pytest.raises(ValueError, match=r"hour=07/part-00000.parquet cannot be read as parquet.*on_missing_data=fail"):
        drift_step(failing, store, bad_day, tracking_uri)
    assert not store.exists(uri(cfg, "drift", BAD_LOGS_DAY, "report.html"))
