"""The nightly monitoring step: drift + quality of a day against the champion that served it.

Airflow-free like ``ml_ops.pipeline.steps``: the operator builds the store and the tracking URI and calls
``monitor_days`` (one day, or every day of a backfill of reports), which runs ``drift_step`` per day and
hands each alarm's subject and text to the ``alert`` callback; ``SkipStep`` becomes a skipped task.

Current data: ``ml_ops.monitoring.current``. The day's champion (model, reference sample, holdout AUC):
``ml_ops.monitoring.champion``. Whether an alarm asks for a retrain: ``ml_ops.monitoring.retrain``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import date, datetime, timedelta, timezone

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DayInterval
from ml_ops.monitoring.champion import CURRENT, HOW, Champion, Champions
from ml_ops.monitoring.current import (
    MIN_LABELLED_ROWS,
    MIN_PER_CLASS,
    SCORE_COLUMN,
    current_data,
    labelled_window,
)
from ml_ops.monitoring.retrain import alarm_kinds
from ml_ops.pipeline.steps import SkipStep, uri
from ml_ops.storage import ObjectStore

log = logging.getLogger(__name__)

# One day partition holds a single weekday, so day_of_week "drifts" against any multi-day reference
# every night; it is left out of the default columns (list it in monitoring.columns to force it).
NEVER_BY_DEFAULT = ("day_of_week",)
MONITORING_KEY_TAG = "monitoring_key"


def monitoring_experiment(cfg: Pipeline) -> str:
    return layout.monitoring_experiment(cfg.name)


def day_step(ds: str) -> int:
    """MLflow step of a day: days since 1970-01-01, so charts over steps are charts over dates."""
    return (date.fromisoformat(ds) - date(1970, 1, 1)).days


def monitoring_columns(cfg: Pipeline, champion: Champion) -> list[str]:
    if cfg.monitoring.columns:
        return list(cfg.monitoring.columns)
    return [c for c in champion.inputs or cfg.feature_columns if c not in NEVER_BY_DEFAULT]


# --------------------------------------------------------------------------- MLflow


def _log_monitoring_run(cfg: Pipeline, tracking_uri: str, ds: str, record: dict, drift_columns: list[dict]) -> str:
    """One run per (pipeline, day), found by tag: a re-run of the day logs into the same run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from ml_ops.pipeline.train import _ensure_experiment

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    exp_id = _ensure_experiment(client, monitoring_experiment(cfg), None)
    key = f"{cfg.name}:{ds}"
    found = client.search_runs([exp_id], f"tags.{MONITORING_KEY_TAG} = '{key}'", max_results=1)
    run_id = found[0].info.run_id if found else client.create_run(exp_id, run_name=f"drift {ds}").info.run_id
    step = day_step(ds)
    ts = int(datetime.combine(date.fromisoformat(ds), datetime.min.time(), tzinfo=timezone.utc).timestamp() * 1000)
    values = {
        "alarm": float(record["alarm"]),
        "drift_alarm": float(record["drift_alarm"]),
        "quality_alarm": float(record["quality_alarm"]),
        "share_drifted": record["share_drifted"],
        "n_current": float(record["n_current"]),
    }
    for c in drift_columns:
        for what in ("p_value", "effect"):
            if c.get(what) is not None:
                values[f"drift.{c['name']}.{what}"] = float(c[what])
        values[f"drift.{c['name']}.drifted"] = float(c["drifted"])
    for k, v in (record["quality"].get("metrics") or {}).items():
        if v is not None:
            values[f"quality.{k}"] = float(v)
    skew = record.get("skew") or {}
    values["skew_alarm"] = float(bool(skew.get("alarm")))
    if skew.get("status") == "compared":
        values["skew.rows"] = float(skew["rows"])
        for name, found in skew["features"].items():
            values[f"skew.{name}.mismatch_share"] = float(found["mismatch_share"])
            if found.get("max_abs_diff") is not None:
                values[f"skew.{name}.max_abs_diff"] = float(found["max_abs_diff"])
    metrics = [Metric(k, v, ts, step) for k, v in values.items()]
    tags = [
        RunTag(MONITORING_KEY_TAG, key),
        RunTag("pipeline", cfg.name),
        RunTag("data_date", ds),
        RunTag("champion_version", str(record["champion_version"])),
        RunTag("champion_source", record["champion_source"]),
        RunTag("report_uri", record["report_uri"]),
        RunTag("alarm", str(record["alarm"]).lower()),
        RunTag("current_source", record["current_source"]),
    ]
    params = (
        []
        if found
        else [
            Param("false_alarm_rate", str(cfg.monitoring.false_alarm_rate)),
            Param("min_effect", str(cfg.monitoring.min_effect)),
            Param("max_sample_rows", str(cfg.monitoring.max_sample_rows)),
        ]
    )
    for i in range(0, len(metrics), 900):  # log_batch takes at most 1000 metrics
        client.log_batch(
            run_id, metrics=metrics[i : i + 900], params=params if i == 0 else [], tags=tags if i == 0 else []
        )
    client.set_terminated(run_id)
    return run_id


# --------------------------------------------------------------------------- one day


def skew_step(cfg: Pipeline, store: ObjectStore, ds: str) -> dict:
    """The day's training/serving skew report (``ml_ops.monitoring.skew``); a failure of the check is reported in
    it, never fails the drift and quality report."""
    from ml_ops.monitoring.skew import skew_check
    from ml_ops.privacy import read_key

    try:
        return skew_check(cfg, store, ds, read_key(cfg.privacy.key_name, airflow=True))
    except Exception as exc:  # noqa: BLE001 - the rest of the night's report still stands
        log.exception("%s ds=%s: skew check failed", cfg.name, ds)
        return {"status": f"failed: {type(exc).__name__}: {exc}", "alarm": False, "features": {}, "rows": 0}


def drift_step(
    cfg: Pipeline, store: ObjectStore, interval: DayInterval, tracking_uri: str, champions: Champions | None = None
) -> dict:
    """Drift and quality of the day against the champion that served it (``champion_source`` says how that
    version was found); report + result under ``drift/ds=<day>/``, metrics in MLflow. Writes nothing when
    the day cannot be monitored. ``champions``: shared by the days of a backfill (models load once)."""
    from ml_ops.monitoring.drift import alarm_text, drift_report
    from ml_ops.monitoring.quality import quality_check

    ds = interval.ds
    champion, champion_source = (champions or Champions(cfg, store, tracking_uri)).for_day(interval)
    columns = monitoring_columns(cfg, champion)
    missing_ref = [c for c in [*columns, SCORE_COLUMN] if c not in champion.reference.columns]
    if missing_ref:
        raise ValueError(f"{cfg.name} v{champion.version}: reference sample lacks column(s) {missing_ref}")
    current, source = current_data(cfg, store, ds, champion, sorted({*columns, *champion.inputs}))
    log.info(
        "%s ds=%s: %d current rows from %s %s; champion v%d (from %s)",
        cfg.name,
        ds,
        source["rows"],
        source["source"],
        {k: v for k, v in source.items() if k not in ("source", "uris", "rows")},
        champion.version,
        champion_source,
    )

    drift = drift_report(
        champion.reference,
        current,
        columns=columns,
        categorical=[c for c in columns if c in cfg.features.categorical],
        score_column=SCORE_COLUMN,
        settings=cfg.monitoring,
        title=f"{cfg.name} ds={ds} vs champion v{champion.version}",
    )

    target = cfg.target.column
    labelled, labels_days = labelled_window(
        cfg, store, interval, champion.inputs, cfg.monitoring.max_sample_rows, exclude=champion.train_uris
    )
    if not labels_days:
        quality = {
            "metrics": {},
            "alarm": False,
            "drift_detected": False,
            "reasons": ["no labelled rows yet"],
            "notes": [],
            "labels_days": [],
        }
    else:
        q = quality_check(
            labelled[target].to_numpy(),
            champion.score(labelled),
            reference_auc=champion.reference_auc,
            quality_drop=cfg.monitoring.quality_drop,
            recent=labelled["_day"].isin(labels_days).to_numpy(),
            min_rows=MIN_LABELLED_ROWS,
            min_per_class=MIN_PER_CLASS,
        )
        quality = {**q.to_dict(), "labels_days": labels_days}

    skew = skew_step(cfg, store, ds)

    report_uri = uri(cfg, layout.DRIFT, ds, layout.REPORT_FILE)
    result_uri = uri(cfg, layout.DRIFT, ds, layout.RESULT_FILE)
    drift_dict = drift.to_dict()
    record = {
        "pipeline": cfg.name,
        "data_date": ds,
        "champion_version": champion.version,
        "champion_source": champion_source,
        "champion_run_id": champion.run_id,
        "current_source": source["source"],
        "current": source,
        # the drift decision's numbers; its own "alarm" is drift_alarm below
        **{k: v for k, v in drift_dict.items() if k not in ("columns", "alarm")},
        "columns": drift_dict["columns"],
        # after the spread, so nothing overwrites them: any alarm is the day's alarm
        "alarm": bool(drift.alarm or quality["alarm"] or skew["alarm"]),
        "drift_alarm": bool(drift.alarm),
        "quality_alarm": bool(quality["alarm"]),
        "skew_alarm": bool(skew["alarm"]),
        "report_uri": report_uri,
        "quality": quality,
        "skew": skew,
        "text": alarm_text(drift) + (f"\n{skew['text']}" if skew.get("text") else ""),
    }
    # the HTML first, the JSON last: result.json present means the day's report is complete
    store.write_text(drift.html, report_uri)
    run_id = _log_monitoring_run(cfg, tracking_uri, ds, record, record["columns"])
    record["mlflow_run_id"] = run_id
    store.write_json({**record, "evidently": drift.json}, result_uri)
    log.info(
        "%s ds=%s: drift alarm=%s %s; quality alarm=%s",
        cfg.name,
        ds,
        drift.alarm,
        drift.drifted_columns,
        quality["alarm"],
    )
    return {
        "data_date": ds,
        "alarm": record["alarm"],
        "drift_alarm": record["drift_alarm"],
        "quality_alarm": record["quality_alarm"],
        "skew_alarm": record["skew_alarm"],
        "skew": {k: skew.get(k) for k in ("status", "rows", "alarm_features")},
        "drifted_columns": drift.drifted_columns,
        "quality": {k: quality["metrics"].get(k) for k in ("roc_auc", "precision", "recall", "n")}
        | {"alarm": quality["alarm"], "reasons": quality.get("reasons", []), "notes": quality.get("notes", [])},
        "report_uri": report_uri,
        "result_uri": result_uri,
        "current_source": source["source"],
        "n_current": source["rows"],
        "mlflow_run_id": run_id,
        "champion_version": champion.version,
        "champion_source": champion_source,
    }


# --------------------------------------------------------------------------- the task: days and alerts


def days_to_monitor(
    interval: DayInterval, start_date: str | None = None, end_date: str | None = None
) -> list[DayInterval]:
    """The run's day, or every day of ``start_date..end_date`` (both given: a backfill of reports)."""
    if not (start_date and end_date):
        return [interval]
    first, last = date.fromisoformat(str(start_date)[:10]), date.fromisoformat(str(end_date)[:10])
    if last < first:
        raise ValueError(f"backfill: end_date {last} is before start_date {first}")
    return [DayInterval.for_day(first + timedelta(days=i)) for i in range((last - first).days + 1)]


def monitor_days(
    cfg: Pipeline,
    store: ObjectStore,
    tracking_uri: str,
    interval: DayInterval,
    *,
    start_date: str | None = None,
    end_date: str | None = None,
    columns: list[str] | None = None,
    alert: Callable[[str, str], object] | None = None,
) -> dict:
    """``drift_step`` for the run's day, or for each day of ``start_date..end_date`` (a backfill of reports,
    each day judged with the champion that served it), calling ``alert(subject, text)`` for every day that
    alarmed (drift, quality or both). ``columns`` overrides ``monitoring.columns``.

    One day: its ``SkipStep`` propagates. A backfill: skipped days are listed (``skipped``) and the others
    go on; ``SkipStep`` only when no day could be monitored. Returns the last monitored day's summary
    (small: it is the task's XCom) with ``skipped`` and ``alarm_days``."""
    if columns:
        cfg = cfg.model_copy(update={"monitoring": cfg.monitoring.model_copy(update={"columns": list(columns)})})
    days = days_to_monitor(interval, start_date, end_date)
    champions = Champions(cfg, store, tracking_uri)
    result, skipped, alarm_days = None, [], []
    for day in days:
        try:
            result = drift_step(cfg, store, day, tracking_uri, champions)
        except SkipStep as skip:
            if len(days) == 1:
                raise
            skipped.append(str(skip))
            continue
        if result["alarm"]:
            alarm_days.append(day.ds)
            if alert is not None:
                alert(alert_subject(cfg, result), alert_text(result, store))
    if result is None:
        raise SkipStep("; ".join(skipped) or "no day to monitor")
    return {**result, "skipped": skipped, "alarm_days": alarm_days}


def alert_subject(cfg: Pipeline, result: dict) -> str:
    return f"[airflow-mlops] {cfg.name}: {' and '.join(alarm_kinds(result))} alarm for {result['data_date']}"


def alert_text(result: dict, store: ObjectStore | None = None) -> str:
    """The alert body for a ``drift_step`` result (drifted columns with numbers, quality, report link)."""
    lines = []
    if store is not None:
        record = store.read_json(result["result_uri"])
        lines.append(record["text"])
    elif result["drifted_columns"]:
        lines.append("Drifted columns: " + ", ".join(result["drifted_columns"]))
    q = result["quality"]
    lines.append(
        "Quality: "
        + ", ".join(f"{k}={v:.3f}" for k, v in q.items() if k in ("roc_auc", "precision", "recall") and v is not None)
    )
    lines += [f"  {r}" for r in q.get("reasons", [])]
    lines += [f"  (not alarmed) {n}" for n in q.get("notes", [])]
    how = HOW.get(result.get("champion_source", CURRENT), "")
    lines.append(f"Champion: v{result['champion_version']}, {how}")
    lines.append(f"Report: {result['report_uri']}")
    return "\n".join(lines)
