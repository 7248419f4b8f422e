"""drift_step / monitor_days / the retrain policy against a real S3 (embedded stack) and a real sqlite MLflow
store; and the DriftOperator in a process configured like docker-compose's Airflow (only the mlflow_default
connection) against a real MLflow tracking server that demands basic auth.

Simulated fraud days: a covariate shift on SHIFT and a concept change on CHANGE; the champion is
trained on the days before both. Features are built by the pipeline's own steps.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import subprocess
import sys
import threading
from datetime import date, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from mlflow import MlflowClient

from ml_ops import layout
from ml_ops.config import load_pipeline_by_name
from ml_ops.interval import DayInterval
from ml_ops.local.sim import ConceptChange, CovariateShift, generate_transactions
from ml_ops.local.stack import Stack
from ml_ops.monitoring.champion import Champion
from ml_ops.monitoring.retrain import retrain_log_uri, retrain_request, should_retrain
from ml_ops.monitoring.step import (
    MONITORING_KEY_TAG,
    day_step,
    drift_step,
    monitor_days,
    monitoring_experiment,
)
from ml_ops.pipeline import registry
from ml_ops.pipeline.history import mark_validated
from ml_ops.pipeline.steps import SkipStep, features_step, model_columns, uri
from ml_ops.pipeline.train import train_and_register
from ml_ops.rollout.deployment import LOG_COLUMNS, serving_logs_prefix
from ml_ops.storage import ObjectStore
from tests.mlflow_store import fresh_store

REPO = Path(__file__).resolve().parents[3]
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
def stack(tmp_path_factory):
    stack = Stack(
        home=tmp_path_factory.mktemp("stack"),
        s3_port=_free_port(),
        mlflow_port=_free_port(),
        airflow_port=_free_port(),
        startup_timeout=60,
    )
    stack.up(["s3"])  # MLflow only for the test that needs a tracking server (tracking_server)
    yield stack
    stack.down()


def train_champion(cfg, store, tracking_uri: str, artifact_location: str | None = None) -> int:
    """The champion: trained on days 1-6, holdout 7-8, registered and given the alias; its version."""
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
        artifact_location=artifact_location,
    )
    MlflowClient(tracking_uri).set_registered_model_alias(cfg.name, layout.CHAMPION, str(result.version))
    return result.version


@pytest.fixture(scope="module")
def world(stack, tmp_path_factory):
    home = tmp_path_factory.mktemp("monitor")
    store = ObjectStore(stack.s3_client())
    shipped = load_pipeline_by_name("fraud")
    # This world's rows carry their label (label_available_at, 2 days late): fraud's config in the in-row mode,
    # which monitoring reads as it reads the labels task's partitions (labels from their own table reach
    # monitoring in tests/unit/pipeline/test_labels.py).
    target = shipped.target.model_copy(update={"label_delay_days": 2, "label_available_column": "label_available_at"})
    cfg = shipped.model_copy(update={"labels": None, "target": target})
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
        mark_validated(store, cfg, day(i).ds, rows=len(part))  # this fixture's days count as validated
    for i in range(1, DAYS):
        features_step(cfg, store, day(i))

    tracking_uri = fresh_store(home)
    train_champion(cfg, store, tracking_uri, artifact_location=str(home / "artifacts"))
    return cfg, store, tracking_uri


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
    logged = [r["day"] for r in store.read_jsonl(retrain_log_uri(cfg))]
    assert [d for d in logged if d.startswith("2026-02")] == ["2026-02-01", "2026-02-08"]


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


# --------------------------------------------------------------------------- the alarm-to-retrain loop


def test_quality_only_alarm_alerts_and_requests_a_retrain_of_its_day(world):
    """The day's alarm is drift OR quality: a quality alarm without drift alerts and asks for a retrain
    (the drift result spread into the record once overwrote the combined alarm with drift's own)."""
    cfg, store, tracking_uri = world
    no_drift = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"min_effect": 1e6})})
    alerts = []
    out = monitor_days(
        no_drift, store, tracking_uri, day(15), alert=lambda subject, text: alerts.append((subject, text))
    )
    assert not out["drift_alarm"] and out["quality_alarm"] and out["alarm"], out
    record = store.read_json(out["result_uri"])
    assert (record["alarm"], record["drift_alarm"], record["quality_alarm"]) == (True, False, True)
    assert MlflowClient(tracking_uri).get_run(out["mlflow_run_id"]).data.metrics["alarm"] == 1.0
    assert [subject for subject, _ in alerts] == [f"[airflow-mlops] fraud: quality alarm for {day(15).ds}"]
    assert any(r in alerts[0][1] for r in out["quality"]["reasons"]) and "Report: " in alerts[0][1]
    assert out["alarm_days"] == [day(15).ds]

    request = retrain_request(store, no_drift, out)
    assert request is not None and request["data_date"] == day(15).ds and request["alarms"] == ["quality"]
    assert retrain_request(store, no_drift, {**out, "alarm": False, "quality_alarm": False}) is None


@pytest.fixture
def promoted_on_day_13(world, monkeypatch):
    """v2 (v1's files and run) promoted at 06:00 on day 13 through the registry (alias history and all) and
    champion today; v1 held the alias before. Undone afterwards for the other tests of the module."""
    cfg, store, tracking_uri = world
    client = MlflowClient(tracking_uri)
    v1 = client.get_model_version(cfg.name, "1")
    v2 = client.create_model_version(cfg.name, client.get_model_version_download_uri(cfg.name, "1"), run_id=v1.run_id)
    monkeypatch.setattr(registry, "_now", lambda: "2026-01-01T00:00:00+00:00")
    registry.promote(client, cfg.name, 1, reason="first champion")  # already holds it: records the history
    monkeypatch.setattr(registry, "_now", lambda: f"{day(13).ds}T06:00:00+00:00")
    registry.promote(client, cfg.name, v2.version, reason="won")
    yield int(v2.version)
    client.set_registered_model_alias(cfg.name, layout.CHAMPION, "1")
    client.delete_registered_model_tag(cfg.name, registry._history_key(layout.CHAMPION))
    client.delete_model_version(cfg.name, v2.version)


def test_backfill_judges_each_day_with_the_champion_that_served_it(world, champion, promoted_on_day_13):
    cfg, store, tracking_uri = world
    v2 = promoted_on_day_13
    assert registry.current_version(MlflowClient(tracking_uri), cfg.name) == v2  # today's champion
    # day 14's traffic, as the gateway logged it: answered by v2 on the champion route
    served = store.read_parquet(uri(cfg, "features", day(14).ds))
    write_serving_logs(
        store, cfg, day(14).ds, log_rows(served, champion.inputs, day(14).ds, version=v2, score=champion.score(served))
    )
    alerts = []
    out = monitor_days(
        cfg,
        store,
        tracking_uri,
        day(14),
        start_date=day(12).ds,
        end_date=day(14).ds,
        alert=lambda subject, text: alerts.append(text),
    )
    records = [store.read_json(uri(cfg, "drift", day(i).ds, "result.json")) for i in (12, 13, 14)]
    assert [(r["champion_version"], r["champion_source"]) for r in records] == [
        (1, "alias_history"),  # before the promotion: v1, not today's v2
        (v2, "alias_history"),  # v2 held the alias for 18 of the day's 24 hours
        (v2, "serving_logs"),  # the logs say who answered
    ]
    assert out["data_date"] == day(14).ds and out["champion_version"] == v2 and out["skipped"] == []
    tags = MlflowClient(tracking_uri).get_run(records[0]["mlflow_run_id"]).data.tags
    assert tags["champion_version"] == "1" and tags["champion_source"] == "alias_history"
    assert alerts and "Champion: v1, held the champion alias that day" in alerts[0]  # the covariate shift persists


# --------------------------------------------------------------------------- as Airflow runs it

USER, PASSWORD = "monitor", "s3cr@t:/pw"


@pytest.fixture(scope="module")
def tracking_server(stack, world):
    """The stack's MLflow server (artifacts proxied to S3) with the champion trained into it, behind a proxy
    that answers 401 unless a request carries USER/PASSWORD as HTTP basic auth. Yields the proxy's port and
    the (method, path, authorised) of every request it saw."""
    import requests

    cfg, store, _ = world
    stack.up(["mlflow"])
    version = train_champion(cfg, store, stack.mlflow_url)
    expected = "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    seen: list[tuple[str, str, bool]] = []
    hop = {"connection", "keep-alive", "transfer-encoding", "content-encoding", "content-length", "host"}

    class Proxy(BaseHTTPRequestHandler):
        def _forward(self):
            body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            authorised = self.headers.get("Authorization") == expected
            seen.append((self.command, self.path, authorised))
            if not authorised:
                self.send_response(401)
                self.send_header("WWW-Authenticate", 'Basic realm="mlflow"')
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            headers = {k: v for k, v in self.headers.items() if k.lower() not in hop | {"authorization"}}
            up = requests.request(self.command, stack.mlflow_url + self.path, headers=headers, data=body, timeout=60)
            self.send_response(up.status_code)
            for k, v in up.headers.items():
                if k.lower() not in hop:
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(up.content)))
            self.end_headers()
            self.wfile.write(up.content)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _forward

        def log_message(self, *args):
            pass

    proxy = ThreadingHTTPServer(("127.0.0.1", 0), Proxy)
    threading.Thread(target=proxy.serve_forever, daemon=True).start()
    yield proxy.server_address[1], seen, version
    proxy.shutdown()
    proxy.server_close()


def test_drift_operator_runs_with_only_the_mlflow_connection(stack, world, tracking_server):
    """The monitoring task in its own process, configured as docker-compose configures Airflow: connections
    mlflow_default (with basic-auth credentials) and aws_default, no MLFLOW_TRACKING_URI and no
    MLFLOW_TRACKING_USERNAME/PASSWORD. The champion must load through the connection alone."""
    cfg, store, _ = world
    port, seen, version = tracking_server
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MLFLOW_", "AWS_", "AIRFLOW_CONN_"))}
    env.update(
        AIRFLOW_CONN_MLFLOW_DEFAULT=json.dumps(
            {
                "conn_type": "http",
                "host": "127.0.0.1",
                "port": port,
                "schema": "http",
                "login": USER,
                "password": PASSWORD,
            }
        ),
        AIRFLOW_CONN_AWS_DEFAULT=json.dumps(
            {
                "conn_type": "aws",
                "login": stack.s3_access_key,
                "password": stack.s3_secret_key,
                "extra": {"endpoint_url": stack.s3_url, "region_name": "us-east-1"},
            }
        ),
        MLOPS_BUCKET=cfg.bucket,
        AWS_REQUEST_CHECKSUM_CALCULATION="when_required",  # rclone's S3, as the stack sets for Airflow
        AWS_RESPONSE_CHECKSUM_VALIDATION="when_required",
    )
    code = (
        "import json, os, sys\n"
        "from ml_ops.airflow.operators import DriftOperator\n"
        "result = DriftOperator(task_id='drift_report', pipeline='fraud').execute({'params': {'data_date': sys.argv[1]}})\n"
        "leaked = sorted(k for k in os.environ if k.startswith('MLFLOW_TRACKING'))\n"
        "print('RESULT ' + json.dumps({**result, 'leaked': leaked}))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, day(8).ds],
        env=env,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads(next(line for line in out.stdout.splitlines() if line.startswith("RESULT "))[7:])
    assert result["data_date"] == day(8).ds and result["champion_version"] == version and result["leaked"] == []
    server = MlflowClient(stack.mlflow_url)
    record = store.read_json(result["result_uri"])
    assert record["champion_run_id"] == server.get_model_version(cfg.name, str(version)).run_id
    run = server.get_run(result["mlflow_run_id"])  # the day's monitoring run is on the server
    assert run.data.tags["data_date"] == day(8).ds and run.data.tags["champion_version"] == str(version)
    # every request carried the connection's credentials, model and reference downloads included
    assert seen and all(authorised for _, _, authorised in seen), [r for r in seen if not r[2]][:5]
    assert any("/mlflow-artifacts/" in path and method == "GET" for method, path, _ in seen)
