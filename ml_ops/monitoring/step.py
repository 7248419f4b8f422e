"""The nightly monitoring steps: drift + quality report per day, and the retraining cooldown.

Airflow-free like ``ml_ops.pipeline.steps``: the operator builds the store and the tracking URI, calls
``drift_step``, maps ``SkipStep`` to a skipped task and sends the alert when ``alarm`` is true.

Current data is what the champion served that day: the gateway's prediction logs
(``serving_logs/ds=<day>/hour=<hh>/part-*.parquet``: inputs and served score, failed predictions and
canary-routed rows left out). A day without logs (no traffic, or no gateway) falls back to the day's
feature partition scored by the champion; the result says which (``current_source``). The reference is
the champion's own training sample (``reference/reference.parquet`` in its MLflow run), so a new
champion brings its own reference.
"""

from __future__ import annotations

import json
import logging
from datetime import date, datetime, timezone
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DayInterval
from ml_ops.pipeline.steps import SkipStep, uri
from ml_ops.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)

SCORE_COLUMN = "score"
# One day partition holds a single weekday, so day_of_week "drifts" against any multi-day reference
# every night; it is left out of the default columns (list it in monitoring.columns to force it).
NEVER_BY_DEFAULT = ("day_of_week",)
QUALITY_WINDOW_DAYS = 7  # labelled days the error-stream detector sees (before the label delay)
MONITORING_KEY_TAG = "monitoring_key"
# quality is reported on the newest labelled days, going back until there are this many rows and this
# many of each class (fraud has a few dozen positives a day: one day's AUC would be noise)
MIN_LABELLED_ROWS = 100
MIN_PER_CLASS = 20


def monitoring_experiment(cfg: Pipeline) -> str:
    return layout.monitoring_experiment(cfg.name)


def retrain_log_uri(cfg: Pipeline) -> str:
    return layout.retrain_log(cfg.prefix())


def day_step(ds: str) -> int:
    """MLflow step of a day: days since 1970-01-01, so charts over steps are charts over dates."""
    return (date.fromisoformat(ds) - date(1970, 1, 1)).days


def _no_data(cfg: Pipeline, ds: str, reason: str):
    message = f"{cfg.name} ds={ds}: no usable current data: {reason}"
    if cfg.monitoring.on_missing_data == "skip":
        raise SkipStep(message)
    raise ValueError(message + " (monitoring.on_missing_data=fail)")


# --------------------------------------------------------------------------- champion


class Champion:
    """The champion's model, version, training run, reference sample and holdout AUC."""

    def __init__(self, cfg: Pipeline, tracking_uri: str):
        import mlflow
        import mlflow.pyfunc
        import pandas as pd
        from mlflow import MlflowClient

        from ml_ops.pipeline.registry import current_version

        client = MlflowClient(tracking_uri)
        version = current_version(client, cfg.name, layout.CHAMPION)
        if version is None:
            raise SkipStep(f"{cfg.name}: no champion model yet; nothing to monitor")
        mv = client.get_model_version(cfg.name, str(version))
        self.version = version
        self.run_id = mv.run_id
        self.model = mlflow.pyfunc.load_model(f"models:/{cfg.name}/{version}")
        path = mlflow.artifacts.download_artifacts(
            run_id=mv.run_id, artifact_path=layout.REFERENCE_ARTIFACT, tracking_uri=tracking_uri
        )
        self.reference = pd.read_parquet(path)
        run = client.get_run(mv.run_id)
        self.reference_auc = run.data.metrics.get("roc_auc")  # holdout AUC: out of sample
        try:  # rows the champion was fitted on score better than new rows: keep them out of quality
            self.train_uris = set(json.loads(run.data.params.get("data_uris.train", "[]")))
        except ValueError:  # clipped by MLflow's param length limit
            self.train_uris = set()
        schema = self.model.metadata.get_input_schema()
        self.inputs = schema.input_names() if schema is not None and schema.has_input_names() else []

    def score(self, df: pd.DataFrame):
        from ml_ops.scoring import score

        return score(self.model, df)


def monitoring_columns(cfg: Pipeline, champion: Champion) -> list[str]:
    if cfg.monitoring.columns:
        return list(cfg.monitoring.columns)
    return [c for c in champion.inputs or cfg.feature_columns if c not in NEVER_BY_DEFAULT]


# --------------------------------------------------------------------------- current data


SERVING_LOGS, FEATURES = layout.SERVING_LOGS, layout.FEATURES  # the current data's two sources


def _check_columns(cfg: Pipeline, ds: str, what: str, df: pd.DataFrame, required: list[str]) -> None:
    """Required columns present and numeric where the config says numeric, else ``_no_data``."""
    import pandas as pd

    missing = [c for c in required if c not in df.columns]
    if missing:
        _no_data(cfg, ds, f"{what} lacks column(s) {missing} that the champion needs; it has {sorted(df.columns)}")
    wrong = [
        c
        for c in required
        # an all-null column (an hour of logs without the value) has no type to check
        if c in cfg.features.numeric and not pd.api.types.is_numeric_dtype(df[c]) and df[c].notna().any()
    ]
    if wrong:
        _no_data(
            cfg,
            ds,
            f"{what}: column(s) {wrong} should be numeric but are {[str(df[c].dtype) for c in wrong]}",
        )


def load_current(cfg: Pipeline, store: ObjectStore, ds: str, required: list[str], why: str = "") -> pd.DataFrame:
    """The day's features partition; missing, unreadable, empty or schema-mismatched → ``_no_data``
    (``why``: why the features stand in, appended to that message)."""
    part = uri(cfg, layout.FEATURES, ds)
    also = f"; {why}" if why else ""
    if not store.exists(part):
        _no_data(cfg, ds, f"{part} does not exist (features not built for this day?){also}")
    try:
        df = store.read_parquet(part)
    except Exception as exc:  # noqa: BLE001 - a truncated or foreign file: say which object, not just the parser's error
        _no_data(cfg, ds, f"{part} cannot be read as parquet: {type(exc).__name__}: {exc}{also}")
    if len(df) == 0:
        _no_data(cfg, ds, f"{part} has 0 rows{also}")
    _check_columns(cfg, ds, part, df, required)
    return df


def serving_log_parts(cfg: Pipeline, store: ObjectStore, ds: str) -> list[str]:
    """The day's ``serving_logs/ds=<day>/hour=<hh>/part-*.parquet`` objects, in hour order."""

    prefix = layout.day_prefix(cfg.prefix(), layout.SERVING_LOGS, ds)
    names = ((u, u.rsplit("/", 1)[-1]) for u in store.list(prefix))
    return [u for u, name in names if name.startswith("part-") and name.endswith(".parquet")]


def load_serving_logs(
    cfg: Pipeline, store: ObjectStore, ds: str, required: list[str]
) -> tuple[pd.DataFrame | None, dict]:
    """The day's successful champion-routed predictions from the gateway's logs: ``required`` input
    columns plus the log columns monitoring uses (version, route, score, error, ts).

    Returns ``(None, info)`` when the day has no usable traffic (no part files, or none of their rows
    is a successful champion prediction): the features partition stands in. A part file that cannot be
    read or lacks a column the champion needs is not silently skipped: ``_no_data`` names the object.
    ``info``: uris, rows read, rows dropped as failed predictions and as canary-routed."""
    import pandas as pd

    parts = serving_log_parts(cfg, store, ds)
    info: dict = {"uris": parts, "rows_logged": 0, "dropped_errors": 0, "dropped_canary": 0}
    if not parts:
        info["note"] = f"no serving logs under {layout.day_prefix(cfg.prefix(), layout.SERVING_LOGS, ds)}"
        return None, info
    frames = []
    for part in parts:
        try:
            # Only what monitoring uses: older or newer gateways may log other columns too.
            df = store.read_parquet(
                part, columns=list(dict.fromkeys(["ts", "version", "route", "score", "error", *required]))
            )
        except Exception as exc:  # noqa: BLE001 - name the object, not just the parser's error
            _no_data(cfg, ds, f"{part} cannot be read as parquet: {type(exc).__name__}: {exc}")
        if len(df):
            _check_columns(cfg, ds, part, df, [*required, "version", "route", "score", "error"])
            frames.append(df)
    if not frames:
        info["note"] = f"the {len(parts)} serving-log file(s) of ds={ds} hold 0 rows"
        return None, info
    logs = pd.concat(frames, ignore_index=True)
    for c in required:  # parts typed differently (int/float, an all-null hour) concatenate as object
        if c in cfg.features.numeric:
            logs[c] = pd.to_numeric(logs[c], errors="coerce")
    failed = logs["error"].notna()
    champion = logs["route"].astype("string").eq(layout.CHAMPION).fillna(False).astype(bool)
    info.update(
        rows_logged=len(logs),
        dropped_errors=int(failed.sum()),
        dropped_canary=int((~failed & ~champion).sum()),
    )
    logs = logs[~failed & champion].reset_index(drop=True)
    if len(logs) == 0:
        info["note"] = (
            f"none of the {info['rows_logged']} logged rows of ds={ds} is a successful champion prediction "
            f"({info['dropped_errors']} failed, {info['dropped_canary']} routed to the canary)"
        )
        return None, info
    return logs, info


def current_data(
    cfg: Pipeline, store: ObjectStore, ds: str, champion: Champion, required: list[str]
) -> tuple[pd.DataFrame, dict]:
    """The day's current data: ``required`` columns + ``score`` (the champion's score), whichever the
    source; and a description of the source (``source``: ``serving_logs`` | ``features``).

    Serving logs keep the score the gateway served, except for rows answered by another champion
    version (a promotion during the day) or without a score: those are re-scored by today's champion,
    so the score column compared with the champion's reference is the champion's."""
    import pandas as pd

    required = [c for c in dict.fromkeys(required) if c != SCORE_COLUMN]
    logs, info = load_serving_logs(cfg, store, ds, required)
    if logs is not None:
        score = pd.to_numeric(logs["score"], errors="coerce").astype("float64")
        version = pd.to_numeric(logs["version"], errors="coerce")
        stale = (version != champion.version) | score.isna()
        if stale.any():
            score[stale] = champion.score(logs.loc[stale, required])
        current = logs[required].assign(**{SCORE_COLUMN: score.to_numpy()})
        return current, {"source": SERVING_LOGS, **info, "rows": len(current), "rescored": int(stale.sum())}
    features = load_current(cfg, store, ds, required, why=info.get("note", ""))
    current = features[required].reset_index(drop=True)
    current[SCORE_COLUMN] = champion.score(current)
    part = uri(cfg, layout.FEATURES, ds)
    return current, {"source": FEATURES, "uris": [part], "rows": len(current), "note": info.get("note", "")}


def labelled_window(
    cfg: Pipeline,
    store: ObjectStore,
    interval: DayInterval,
    columns: list[str],
    max_rows_per_day: int,
    exclude: set[str] = frozenset(),
) -> tuple[pd.DataFrame, list[str]]:
    """Rows of the last days whose labels were known by the interval's end, in time order, at most
    ``max_rows_per_day`` per day, leaving out the partitions in ``exclude`` (the champion's training data);
    and the newest labelled days quality is reported on (see MIN_PER_CLASS)."""
    import pandas as pd

    from ml_ops.pipeline.steps import existing_partitions, load_labelled

    days = [*interval.previous_days(cfg.target.label_delay_days + QUALITY_WINDOW_DAYS - 1), interval.ds]
    frames = []
    for part in existing_partitions(store, cfg, "features", days):
        if part in exclude:
            continue
        df = load_labelled(store, [part], cfg, interval.end)
        if len(df) > max_rows_per_day:
            df = df.sample(max_rows_per_day, random_state=0)
        if len(df):
            frames.append(df.assign(_day=part.split("ds=")[1][:10]))
    if not frames:
        return pd.DataFrame(columns=[*columns, "_day"]), []
    out = pd.concat(frames, ignore_index=True)
    out = out.sort_values(cfg.source.timestamp_column, kind="stable").reset_index(drop=True)
    recent: list[str] = []
    for d in sorted(out["_day"].unique(), reverse=True):
        recent.append(d)
        y = out.loc[out["_day"].isin(recent), cfg.target.column]
        if len(y) >= MIN_LABELLED_ROWS and min(int(y.sum()), int(len(y) - y.sum())) >= MIN_PER_CLASS:
            break
    return out, sorted(recent)


# --------------------------------------------------------------------------- MLflow


def _log_monitoring_run(cfg: Pipeline, tracking_uri: str, ds: str, record: dict, drift_columns: list[dict]) -> str:
    """One run per (pipeline, day), found by tag: a re-run of the day logs into the same run."""
    from mlflow import MlflowClient
    from mlflow.entities import Metric, Param, RunTag

    from ml_ops.pipeline.train import _ensure_experiment

    client = MlflowClient(tracking_uri)
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
    metrics = [Metric(k, v, ts, step) for k, v in values.items()]
    tags = [
        RunTag(MONITORING_KEY_TAG, key),
        RunTag("pipeline", cfg.name),
        RunTag("data_date", ds),
        RunTag("champion_version", str(record["champion_version"])),
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


# --------------------------------------------------------------------------- the step


def drift_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval, tracking_uri: str) -> dict:
    """Drift and quality of the day against the champion's reference; report + result under
    ``drift/ds=<day>/``, metrics in MLflow. Writes nothing when the day cannot be monitored."""
    from ml_ops.monitoring.drift import alarm_text, drift_report
    from ml_ops.monitoring.quality import quality_check

    ds = interval.ds
    champion = Champion(cfg, tracking_uri)
    columns = monitoring_columns(cfg, champion)
    missing_ref = [c for c in [*columns, SCORE_COLUMN] if c not in champion.reference.columns]
    if missing_ref:
        raise ValueError(f"{cfg.name} v{champion.version}: reference sample lacks column(s) {missing_ref}")
    current, source = current_data(cfg, store, ds, champion, sorted({*columns, *champion.inputs}))
    log.info(
        "%s ds=%s: %d current rows from %s %s",
        cfg.name,
        ds,
        source["rows"],
        source["source"],
        {k: v for k, v in source.items() if k not in ("source", "uris", "rows")},
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

    report_uri = uri(cfg, "drift", ds, "report.html")
    result_uri = uri(cfg, "drift", ds, "result.json")
    record = {
        "pipeline": cfg.name,
        "data_date": ds,
        "champion_version": champion.version,
        "champion_run_id": champion.run_id,
        "current_source": source["source"],
        "current": source,
        "alarm": bool(drift.alarm or quality["alarm"]),
        "drift_alarm": drift.alarm,
        "quality_alarm": bool(quality["alarm"]),
        "report_uri": report_uri,
        **{k: v for k, v in drift.to_dict().items() if k != "columns"},
        "columns": drift.to_dict()["columns"],
        "quality": quality,
        "text": alarm_text(drift),
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
        "drift_alarm": drift.alarm,
        "quality_alarm": record["quality_alarm"],
        "drifted_columns": drift.drifted_columns,
        "quality": {k: quality["metrics"].get(k) for k in ("roc_auc", "precision", "recall", "n")}
        | {"alarm": quality["alarm"], "reasons": quality.get("reasons", [])},
        "report_uri": report_uri,
        "result_uri": result_uri,
        "current_source": source["source"],
        "n_current": source["rows"],
        "mlflow_run_id": run_id,
        "champion_version": champion.version,
    }


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
    lines.append(f"Report: {result['report_uri']}")
    return "\n".join(lines)


def should_retrain(store: ObjectStore, cfg: Pipeline, day: str) -> bool:
    """True at most once per ``retrain_cooldown_days``: records the retrain in ``drift/retrain_log.jsonl``.

    Idempotent per day: asking again for a day already recorded says True again (a retried task emits
    the same Asset event); a day within the cooldown of another recorded day says False."""
    d = date.fromisoformat(day)
    log_uri = retrain_log_uri(cfg)
    records = store.read_jsonl(log_uri)
    if any(r.get("day") == day for r in records):
        return True
    cooldown = cfg.monitoring.retrain_cooldown_days
    recent = [r["day"] for r in records if abs((d - date.fromisoformat(r["day"])).days) < cooldown]
    if recent:
        log.info("%s %s: retrain suppressed, cooldown of %d days after %s", cfg.name, day, cooldown, recent)
        return False
    store.append_jsonl(
        log_uri,
        {"day": day, "pipeline": cfg.name, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        key="day",
    )
    return True
