"""Nightly monitoring through the real stack (issue 4's acceptance scenario): Airflow's monitoring DAG on
simulated days with a covariate shift on day D and a concept change two days later, the gateway's
prediction logs as current data, alerts in the SMTP inbox and on the Slack endpoint, and the retrain
Asset starting the training DAG (MLOPS_SCHEDULES=assets: no clock schedules, Asset triggers only).

Runtime is kept small: the history (raw + features partitions, the champion) is built in-process with
the pipeline's own step functions against the stack's S3 and MLflow, as the canary e2e test does; what
goes through Airflow is what this test is about: the monitoring DAG, its alerts, and the retrain it
requests (an asset-triggered training run, which extracts, validates, trains and compares for real).

The simulated calendar is fixed (deterministic data and verdicts) and moved by whole weeks so that it
ends just before yesterday: an asset-triggered run has no logical date and processes the last full day
before it was created (ml_ops.interval), which must exist in the source for the retrain to train.
"""

from __future__ import annotations

import shutil
import time
from datetime import date, datetime, timedelta, timezone

import pytest

from tests.e2e.helpers import load_fraud_source, run_day, running_stack

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(1800)]

MON, TRAIN = "fraud_monitoring", "fraud_training"
START = date(2026, 1, 4)  # day 0 of the scenario, a Sunday: reference Sun-Tue, holdout Wed, quiet Thu and Fri
WARMUP = 7  # raw days before day 0, so day 0's per-customer history features are complete
CHAMPION_DAY, QUIET, SHIFT, CONCEPT, CONCEPT_SEEN = 4, (4, 5), 6, 8, 9  # day indices
LOGGED = (5, SHIFT, SHIFT + 1, CONCEPT_SEEN)  # days with gateway logs; day 4 has none (features stand in)
SHIFTED = {"customer_age", "account_age_days", "country"}  # the new segment's columns (sim CovariateShift)
ROWS_PER_DAY = 1500


def scenario_offset(yesterday: date) -> timedelta:
    """Whole weeks that move the scenario so it ends 1 to 7 days before ``yesterday`` (same weekdays)."""
    gap = (yesterday - (START + timedelta(days=CONCEPT_SEEN))).days
    return timedelta(weeks=(gap - 1) // 7)


@pytest.fixture(scope="module")
def monitoring_include(include_dir, tmp_path_factory):
    """The e2e include/ (short training window) with a promotion floor no model meets: the retrain's
    challenger is trained and compared but never promoted, so every monitored day is judged against
    the same champion v1 whenever the retrain finishes (this test is about monitoring, not promotion)."""
    target = tmp_path_factory.mktemp("monitoring") / "include"
    shutil.copytree(include_dir, target)
    fraud = target / "pipelines" / "fraud.yaml"
    text = fraud.read_text()
    old = "floors: {roc_auc: 0.75, pr_auc: 0.2}"
    assert old in text
    fraud.write_text(text.replace(old, "floors: {roc_auc: 0.999, pr_auc: 0.2}"))
    return target


def _log_rows(features, inputs: list[str], ds: str, scores, *, route: str, version: int, error=None):
    """Rows as the gateway logs them (ml_ops.rollout.deployment.LOG_COLUMNS + the model's inputs)."""
    import numpy as np
    import pandas as pd

    from ml_ops.rollout.deployment import LOG_COLUMNS

    rows = features[inputs].reset_index(drop=True)
    n = len(rows)
    rows["request_id"] = [f"{ds}-{route}-{i}" for i in range(n)]
    rows["row"] = 0
    rows["ts"] = (
        pd.Timestamp(ds, tz="UTC")
        + pd.to_timedelta(features["hour_of_day"].to_numpy(), unit="h")
        + pd.to_timedelta(np.arange(n) % 3600, unit="s")
    )
    rows["version"] = version
    rows["route"] = route
    rows["routing_key"] = [f"k{i % 997}" for i in range(n)]
    rows["latency_ms"] = 4.0
    rows["model_cpu_ms"] = 3.5
    rows["score"] = np.nan if error else scores
    rows["error"] = error
    assert set(LOG_COLUMNS) <= set(rows.columns)
    return rows


def _write_serving_logs(store, cfg, champion, ds: str) -> dict:
    """The day's traffic as the gateway would have logged it: the features partition scored by the
    champion (the served score), plus a few canary-routed and failed predictions that monitoring must
    leave out. One part file per hour."""
    import pandas as pd

    from ml_ops.pipeline.steps import uri
    from ml_ops.rollout.deployment import serving_logs_prefix

    features = store.read_parquet(uri(cfg, "features", ds))
    champion_rows = _log_rows(
        features, champion.inputs, ds, champion.score(features), route="champion", version=champion.version
    )
    canary = features.sample(60, random_state=1)
    failed = features.sample(20, random_state=2).assign(amount=-1.0)
    rows = pd.concat(
        [
            champion_rows,
            _log_rows(canary, champion.inputs, ds, 0.5, route="canary", version=champion.version + 100),
            _log_rows(
                failed,
                champion.inputs,
                ds,
                None,
                route="champion",
                version=champion.version,
                error="ValueError: amount must be >= 0",
            ),
        ],
        ignore_index=True,
    )
    for hour, part in rows.groupby(rows["ts"].dt.hour):
        store.write_parquet(
            part.reset_index(drop=True), f"{serving_logs_prefix(cfg)}/ds={ds}/hour={hour:02d}/part-00000.parquet"
        )
    return {"champion_rows": len(champion_rows), "canary": len(canary), "failed": len(failed)}


def _seed(stack, cfg, store, days: dict[int, date], yesterday: date) -> dict:
    """Source rows through today (their labels in their own table), raw partitions from WARMUP days before
    day 0, features from day 0, the champion (trained on days 0-2, holdout day 3, as the training DAG would on
    day 4, with the labels its labels task joins as of day 4's end), the labels joined as of yesterday's end
    (the daily training runs' labels task would have; monitoring reads them) and the gateway's logs of the
    LOGGED days."""
    import sqlalchemy as sa
    from mlflow import MlflowClient

    from ml_ops.interval import DayInterval
    from ml_ops.local.sim import ConceptChange, CovariateShift, generate_transactions
    from ml_ops.monitoring.champion import Champion
    from ml_ops.pipeline.history import mark_validated
    from ml_ops.pipeline.registry import promote
    from ml_ops.pipeline.steps import extract_step, features_step, labels_step, train_step

    offset = days[0] - START
    first = START - timedelta(days=WARMUP)
    n_days = WARMUP + (yesterday + timedelta(days=1) - days[0]).days + 1  # through today (a run after midnight)
    df = generate_transactions(
        first,
        n_days,
        rows_per_day=ROWS_PER_DAY,
        seed=11,
        label_delay_days=1,
        events=[
            CovariateShift(START + timedelta(days=SHIFT), share=0.3),
            ConceptChange(START + timedelta(days=CONCEPT)),
        ],
    )
    for col in ("ts", "label_available_at"):  # same rows, same weekdays, whole weeks later
        df[col] = df[col] + offset
    load_fraud_source(stack.source_db_url, df, seed=11)  # no label in the rows; chargebacks in their own table

    engine = sa.create_engine(stack.source_db_url)
    calendar = [days[0] + timedelta(days=i) for i in range(-WARMUP, (yesterday - days[0]).days + 1)]
    for day in calendar:
        extracted = extract_step(cfg, store, DayInterval.for_day(day), engine)
        mark_validated(store, cfg, day.isoformat(), rows=extracted["rows"])  # the scenario's days count as validated
    for day in calendar[WARMUP:]:
        features_step(cfg, store, DayInterval.for_day(day))

    client = MlflowClient(stack.mlflow_url)
    labels_step(cfg, store, DayInterval.for_day(days[CHAMPION_DAY]), engine)
    trained = train_step(cfg, store, DayInterval.for_day(days[CHAMPION_DAY]), stack.mlflow_url, run_id="e2e-seed")
    promote(client, cfg.name, trained["version"], reason="e2e seed: first model")
    labels_step(cfg, store, DayInterval.for_day(yesterday), engine)
    engine.dispose()
    champion = Champion(cfg, stack.mlflow_url)
    logs = {i: _write_serving_logs(store, cfg, champion, days[i].isoformat()) for i in LOGGED}
    return {"champion": trained["version"], "logs": logs}


def _asset_runs(airflow) -> list[dict]:
    return [r for r in airflow.dag_runs(TRAIN) if r.get("run_type") == "asset_triggered"]


@pytest.fixture(scope="module")
def scenario(inbox, monitoring_include):
    """Runs the monitoring DAG through Airflow over the scenario; returns what the tests look at."""
    from mlflow import MlflowClient

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.local.airflow_client import AirflowClient
    from ml_ops.storage import ObjectStore

    yesterday = datetime.now(timezone.utc).date() - timedelta(days=1)
    offset = scenario_offset(yesterday)
    days = {i: START + offset + timedelta(days=i) for i in range(CONCEPT_SEEN + 1)}
    env = {"MLOPS_SCHEDULES": "assets", "MLOPS_INCLUDE_DIR": str(monitoring_include)}
    with running_stack(inbox, env, prefix="mlops-e2e-monitoring-") as stack:
        cfg = load_pipeline_by_name("fraud")
        store = ObjectStore(stack.s3_client())
        seeded = _seed(stack, cfg, store, days, yesterday)
        airflow = AirflowClient(stack.airflow_url, stack.admin_user, stack.admin_password)
        airflow.wait_for_dag(MON, timeout=180)
        airflow.wait_for_dag(TRAIN, timeout=180)
        airflow.unpause(TRAIN)  # a paused DAG does not get Asset-triggered runs queued
        mails_before = len(inbox.emails)
        slack_before = len(inbox.slack)

        runs = {
            "quiet": run_day(
                airflow,
                MON,
                days[QUIET[-1]],
                conf={"start_date": days[QUIET[0]].isoformat(), "end_date": days[QUIET[-1]].isoformat()},
            )
        }
        quiet_messages = (inbox.emails[mails_before:], inbox.slack[slack_before:])
        runs["shift"] = run_day(airflow, MON, days[SHIFT])
        runs["after_shift"] = run_day(airflow, MON, days[SHIFT + 1])
        runs["concept"] = run_day(airflow, MON, days[CONCEPT_SEEN])

        deadline = time.monotonic() + 600  # the retrain was requested by the shift day's run
        while not (retrains := _asset_runs(airflow)) and time.monotonic() < deadline:
            time.sleep(3)
        assert retrains, "no asset-triggered training run after the shift day's alarm"
        retrain_state = airflow.wait_for_run(TRAIN, retrains[0]["dag_run_id"], timeout=900)
        time.sleep(10)  # a second request (there must be none) would have queued a run by now
        retrains = _asset_runs(airflow)
        retrain_tasks = {t["task_id"]: t["state"] for t in airflow.task_instances(TRAIN, retrains[0]["dag_run_id"])}
        events = airflow.request("GET", "/assets/events", params={"source_dag_id": MON, "limit": 100})
        results = {
            i: store.read_json(f"{cfg.prefix()}/drift/ds={d.isoformat()}/result.json")
            for i, d in days.items()
            if i in (*QUIET, SHIFT, SHIFT + 1, CONCEPT_SEEN)
        }
        client = MlflowClient(stack.mlflow_url)
        versions = client.search_model_versions(f"name='{cfg.name}'")
        yield {
            "days": days,
            "yesterday": yesterday,
            "cfg": cfg,
            "store": store,
            "runs": runs,
            "results": results,
            "retrains": retrains,
            "retrain_state": retrain_state,
            "retrain_tasks": retrain_tasks,
            "asset_events": events["asset_events"],
            "seeded": seeded,
            "quiet_messages": quiet_messages,
            "versions": versions,
            "champion": client.get_model_version_by_alias(cfg.name, "champion"),
        }


def _alarm_mails(inbox, ds: str) -> list[dict]:
    return [m for m in inbox.emails if "[airflow-mlops] fraud:" in m["subject"] and f"alarm for {ds}" in m["subject"]]


def _alarm_slack(inbox, ds: str) -> list[dict]:
    return [s for s in inbox.slack if f"alarm for {ds}" in s["payload"].get("text", "")]


def test_days_before_the_shift_raise_no_alarm_and_send_nothing(scenario, inbox):
    run = scenario["runs"]["quiet"]
    assert run["state"] == "success", run
    assert run["tasks"]["drift_report"] == "success"
    assert run["tasks"]["retrain_due"] == "success" and run["tasks"]["request_retrain"] == "skipped", run["tasks"]
    for i in QUIET:
        result = scenario["results"][i]
        assert not result["alarm"], (i, [c["name"] for c in result["columns"] if c["drifted"]], result["quality"])
        assert result["champion_version"] == scenario["seeded"]["champion"]
    mails, slack = scenario["quiet_messages"]
    assert mails == [] and slack == [], (mails, slack)
    assert not any(_alarm_mails(inbox, scenario["days"][i].isoformat()) for i in QUIET)


def test_shift_day_alarms_names_the_columns_and_alerts_people(scenario, inbox):
    ds = scenario["days"][SHIFT].isoformat()
    run = scenario["runs"]["shift"]
    assert run["state"] == "success" and run["tasks"]["request_retrain"] == "success", run
    result = scenario["results"][SHIFT]
    drifted = {c["name"] for c in result["columns"] if c["drifted"]}
    assert result["drift_alarm"] and SHIFTED <= drifted, drifted
    # the report a user opens, and its columns
    html = scenario["store"].get_bytes(result["report_uri"]).decode()
    assert html.lstrip().startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")
    assert all(c in html for c in SHIFTED)
    mails = _alarm_mails(inbox, ds)
    assert mails, [m["subject"] for m in inbox.emails]
    body = mails[0]["body"]
    assert "drift" in mails[0]["subject"] and all(c in body for c in SHIFTED), body
    assert result["report_uri"] in body
    slack = _alarm_slack(inbox, ds)
    assert slack and all(c in slack[0]["payload"]["text"] for c in SHIFTED), slack


def test_one_retrain_for_the_episode(scenario):
    """Alarms on D, D+1 and D+3 (within the 7-day cooldown): one Asset event, one training run."""
    assert scenario["results"][SHIFT + 1]["drift_alarm"] and scenario["results"][CONCEPT_SEEN]["alarm"]
    for key in ("after_shift", "concept"):
        run = scenario["runs"][key]
        assert run["state"] == "success", run
        # the alarm asks, the cooldown says no: the short-circuit skips the Asset-emitting task
        assert run["tasks"]["retrain_due"] == "success" and run["tasks"]["request_retrain"] == "skipped", run
    events = scenario["asset_events"]
    assert len(events) == 1 and events[0]["name"] == "fraud_retrain", events
    assert events[0]["source_run_id"] == scenario["runs"]["shift"]["run_id"]
    assert len(scenario["retrains"]) == 1, scenario["retrains"]
    assert scenario["retrain_state"] == "success", scenario["retrain_tasks"]
    retrain_log = scenario["store"].read_jsonl(f"{scenario['cfg'].prefix()}/drift/retrain_log.jsonl")
    assert [r["day"] for r in retrain_log] == [scenario["days"][SHIFT].isoformat()]
    # the retrain trained for real for the alarm's day (the Asset event names it), forced despite an earlier
    # model; this test's promotion floor keeps it out of the champion alias
    tasks = scenario["retrain_tasks"]
    assert tasks["train"] == "success" and tasks["compare"] == "success", tasks
    new = [v for v in scenario["versions"] if v.version != scenario["champion"].version]
    assert len(new) == 1 and new[0].tags["data_date"] == scenario["days"][SHIFT].isoformat(), new
    assert int(scenario["champion"].version) == scenario["seeded"]["champion"]


def test_concept_change_caught_by_quality_once_labels_matured(scenario, inbox):
    """Two days after the change (label delay 1 day): the champion's AUC on the matured labels fell."""
    result = scenario["results"][CONCEPT_SEEN]
    quality = result["quality"]
    assert quality["alarm"] and result["quality_alarm"], quality
    assert scenario["days"][CONCEPT].isoformat() in quality["labels_days"], quality
    assert any("roc_auc" in r or "ADWIN" in r for r in quality["reasons"]), quality
    # before the change's labels matured, quality was fine on the quiet days
    assert not any(scenario["results"][i]["quality_alarm"] for i in QUIET)
    mails = _alarm_mails(inbox, scenario["days"][CONCEPT_SEEN].isoformat())
    assert mails and "quality" in mails[0]["subject"], [m["subject"] for m in mails]
    assert "roc_auc" in mails[0]["body"]


def test_current_data_is_the_gateway_logs_champion_rows_only(scenario):
    results, logs = scenario["results"], scenario["seeded"]["logs"]
    assert results[QUIET[0]]["current_source"] == "features"  # no traffic logged that day
    assert "no serving logs" in results[QUIET[0]]["current"]["note"]
    for i in LOGGED:
        current = results[i]["current"]
        assert results[i]["current_source"] == "serving_logs", (i, current)
        assert current["rows"] == results[i]["n_current"] == logs[i]["champion_rows"]
        assert (current["dropped_canary"], current["dropped_errors"]) == (logs[i]["canary"], logs[i]["failed"])
        assert current["rescored"] == 0  # the served score is the champion's
