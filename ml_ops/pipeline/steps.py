"""The pipeline's steps: pipeline config + object store + day in, objects written, a small summary out.

Airflow-free, so the operators stay thin (they only build clients from connections and turn
``SkipStep`` / ``DataValidationError`` into Airflow's skip and fail), and the benchmarks and tests
run exactly the code the DAGs run.
"""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DayInterval, training_window
from ml_ops.storage import ObjectStore

if TYPE_CHECKING:
    import pandas as pd


log = logging.getLogger(__name__)


class SkipStep(Exception):
    """Nothing to do yet, which is not an error (e.g. the training window's history is incomplete)."""


def uri(cfg: Pipeline, stage: str, ds: str, filename: str = "data.parquet") -> str:
    return layout.partition(cfg.prefix(), stage, ds, filename)


def decision_log_uri(cfg: Pipeline) -> str:
    return layout.decision_log(cfg.prefix())


def existing_partitions(store: ObjectStore, cfg: Pipeline, stage: str, days: list[str]) -> list[str]:
    """URIs of the partitions among ``days`` that exist, oldest first (absent days are left out)."""
    present = set(store.list(layout.stage_prefix(cfg.prefix(), stage) + "/"))
    return [u for u in (uri(cfg, stage, d) for d in days) if u in present]


def extract_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval, engine) -> dict:
    """The day's source rows → raw partition; then earlier days are re-counted for late rows. A query
    that cannot run on the source fails the day at once, with a validation report saying why."""
    from ml_ops.pipeline.extract import SourceQueryError, extract_interval

    parse_dates = [c for c in (cfg.source.timestamp_column, cfg.target.label_available_column) if c]
    try:
        result = extract_interval(
            engine, cfg.sql_text(), interval.start, interval.end, store, uri(cfg, layout.RAW, interval.ds), parse_dates
        )
    except SourceQueryError as exc:
        _reject_unreadable_day(cfg, store, interval, f"{exc} (SQL file {cfg.source.sql})")
    return {**result.to_xcom(), "late_rows": late_rows_step(cfg, store, interval, engine)}


def _reject_unreadable_day(cfg: Pipeline, store: ObjectStore, interval: DayInterval, reason: str):
    """Reports and quarantine for a day whose rows could not even be read, then ``DataValidationError``."""
    from ml_ops.pipeline import history
    from ml_ops.pipeline.validate import DataValidationError, Outcome, ValidationResult

    outcome = Outcome(check="source_query_runs", column=None, success=False, source="extract", error=reason)
    result = ValidationResult(
        success=False, failures=[outcome.to_failure()], statistics={}, outcomes=[outcome], suite_name=cfg.name
    )
    label = f"{cfg.name} ds={interval.ds}"
    store.write_json(result.to_json(), uri(cfg, layout.VALIDATION, interval.ds, layout.RESULT_FILE))
    html = store.write_text(result.to_html(label=label), uri(cfg, layout.VALIDATION, interval.ds, layout.REPORT_FILE))
    history.mark_rejected(store, cfg, interval.ds, failed=[reason], report=html)
    raise DataValidationError(result, f"{label} (report: {html})")


def late_rows_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval, engine) -> dict[str, int]:
    """Rows that reached the source after their day was extracted, for the last ``source.late_rows_days``
    days: recorded in ``raw/late_rows.jsonl`` (and, with ``late_rows: reextract``, the day is rewritten,
    re-validated and its features rebuilt). Returns {day: late rows}."""
    from datetime import date

    from ml_ops.pipeline.extract import count_interval, extract_interval

    days = interval.previous_days(cfg.source.late_rows_days)
    found: dict[str, int] = {}
    for part in existing_partitions(store, cfg, layout.RAW, days):
        day = DayInterval.for_day(date.fromisoformat(layout.day_of(part)))
        extracted = store.parquet_rows(part)
        now = count_interval(engine, cfg.sql_text(), day.start, day.end)
        if now <= extracted:
            continue
        found[day.ds] = now - extracted
        log.warning("%s ds=%s: %d row(s) arrived after the day was extracted", cfg.name, day.ds, now - extracted)
        record = {
            "ds": day.ds,
            "extracted_rows": extracted,
            "source_rows": now,
            "late_rows": now - extracted,
            "seen_by": interval.ds,
            "action": cfg.source.late_rows,
        }
        if cfg.source.late_rows == "reextract":
            parse_dates = [c for c in (cfg.source.timestamp_column, cfg.target.label_available_column) if c]
            extract_interval(engine, cfg.sql_text(), day.start, day.end, store, part, parse_dates)
            validate_step(cfg, store, day)
            features_step(cfg, store, day)
            record["note"] = "re-extracted; features of the days after it were built without these rows"
        store.append_jsonl(layout.late_rows_log(cfg.prefix()), {**record, "key": f"{day.ds}:{now}"}, key="key")
    return found


def validate_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval) -> dict:
    """Writes ``result.json`` and ``report.html`` whatever the outcome. A passing day gets its validated
    marker; a failing one is quarantined (left out of every later day's history) and raises
    ``DataValidationError`` naming every failed expectation."""
    from ml_ops.pipeline import history
    from ml_ops.pipeline.validate import DataValidationError, load_suite, validate_frame

    df = store.read_parquet(uri(cfg, layout.RAW, interval.ds))
    past = history.require(
        store, cfg, interval.ds, interval.previous_days(cfg.validation.history_days), needed_by="validate"
    )
    result = validate_frame(
        df,
        load_suite(cfg.suite_path()),
        # Only the compared columns of past days: reading whole partitions dominated the step's time and memory.
        history=[
            store.read_parquet(u, columns=cfg.validation.stats_columns or None) for u in past.uris(cfg, layout.RAW)
        ],
        stats_columns=cfg.validation.stats_columns,
        max_mean_shift_sigma=cfg.validation.max_mean_shift_sigma,
    )
    label = f"{cfg.name} ds={interval.ds}"
    json_uri = store.write_json(result.to_json(), uri(cfg, layout.VALIDATION, interval.ds, layout.RESULT_FILE))
    html_uri = store.write_text(
        result.to_html(label=label), uri(cfg, layout.VALIDATION, interval.ds, layout.REPORT_FILE)
    )
    if not result.success:
        failed = [f.line() for f in result.failures]
        history.mark_rejected(store, cfg, interval.ds, failed=failed, report=html_uri)
        raise DataValidationError(result, f"{label} (report: {html_uri}; the day is quarantined until it passes)")
    history.mark_validated(store, cfg, interval.ds, rows=len(df))
    return {"uri": json_uri, "report": html_uri, "rows": len(df), "history_excluded": past.rejected}


def features_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval) -> dict:
    import pandas as pd

    from ml_ops.pipeline import history as days
    from ml_ops.pipeline.features import build_features

    today = store.read_parquet(uri(cfg, layout.RAW, interval.ds))
    history, excluded = None, []
    if cfg.features.entity_column:
        # Only validated days: a quarantined day's rows must not leak into the next week's history.
        past = days.require(
            store, cfg, interval.ds, interval.previous_days(cfg.features.lookback_days), needed_by="features"
        )
        uris, excluded = past.uris(cfg, layout.RAW), past.rejected
        used = [cfg.features.entity_column, cfg.source.timestamp_column, cfg.features.amount_column]
        history = pd.concat([store.read_parquet(u, columns=used) for u in uris], ignore_index=True) if uris else None
    label_columns = (cfg.target.column, cfg.target.label_available_column)
    if cfg.labels is not None:  # labels come from labels/ds=<day>/: the source row need not carry one
        label_columns = tuple(c for c in label_columns if c in today.columns)
    keep = (cfg.source.id_column, cfg.source.timestamp_column, *cfg.feature_columns, *label_columns)
    features = build_features(
        today,
        history,
        entity=cfg.features.entity_column,
        timestamp=cfg.source.timestamp_column,
        amount=cfg.features.amount_column,
        passthrough=list(dict.fromkeys(c for c in keep if c)),
        time_parts=cfg.features.time_parts,
    )
    written = store.write_parquet(features, uri(cfg, layout.FEATURES, interval.ds))
    return {"uri": written, "rows": len(features), "history_excluded": excluded}


def model_columns(cfg: Pipeline) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs: the configured columns plus the generated features."""
    numeric = [*cfg.features.numeric, *cfg.generated_features]
    return list(dict.fromkeys(numeric)), list(cfg.features.categorical)


def labels_step(cfg: Pipeline, store: ObjectStore, interval: DayInterval, engine) -> dict:
    """Labels known by the run's end (labels table via ``engine``, and/or gateway feedback) joined to the
    features of the last ``labels.trailing_days`` days → ``labels/ds=<day>/``; labels matching no features
    partition are counted in the result (``unmatched``). See ``ml_ops.pipeline.labels``."""
    from ml_ops.pipeline.labels import labels_step as join_labels

    return join_labels(cfg, store, interval, engine)


def load_labelled(store: ObjectStore, uris: list[str], cfg: Pipeline, labels_known_at: datetime) -> pd.DataFrame:
    """Feature partitions concatenated, keeping rows whose label was known by ``labels_known_at``.

    With a ``labels:`` section the label is the one in ``labels/ds=<day>/`` (written by the labels task),
    joined on the id column; otherwise the source row's, known at ``target.label_available_column``."""
    import pandas as pd

    if cfg.labels is not None:
        from ml_ops.pipeline.labels import attach_labels

        frames = [attach_labels(store, cfg, store.read_parquet(u), layout.day_of(u), labels_known_at) for u in uris]
        return pd.concat(frames, ignore_index=True)
    df = pd.concat([store.read_parquet(u) for u in uris], ignore_index=True)
    keep = df[cfg.target.column].notna()
    if cfg.target.label_available_column:
        known_at = pd.to_datetime(df[cfg.target.label_available_column], utc=True)
        keep &= known_at <= pd.Timestamp(labels_known_at)
    return df[keep].reset_index(drop=True)


def train_step(
    cfg: Pipeline, store: ObjectStore, interval: DayInterval, tracking_uri: str, *, run_id: str, force: bool = False
) -> dict:
    """Fit on the labelled window, register as ``challenger``. Raises ``SkipStep`` until the window exists.

    Idempotent per (pipeline, day): re-running returns the version already registered for the day,
    unless ``force`` asks for a new one.
    """
    import ml_ops
    from ml_ops.pipeline.train import train_and_register

    window = training_window(interval, cfg.target.label_delay_days, cfg.training.window_days, cfg.training.holdout_days)
    from ml_ops.pipeline import history

    # A quarantined day is left out of the window (recorded on the run), not waited for.
    rejected = set(history.status(store, cfg, [*window.train_days, *window.holdout_days]).rejected)
    train_days = [d for d in window.train_days if d not in rejected]
    holdout_days = [d for d in window.holdout_days if d not in rejected]
    train_uris = existing_partitions(store, cfg, layout.FEATURES, train_days)
    holdout_uris = existing_partitions(store, cfg, layout.FEATURES, holdout_days)
    missing = len(train_days) + len(holdout_days) - len(train_uris) - len(holdout_uris)
    if missing:
        raise SkipStep(
            f"not enough labelled history for {interval.ds}: {missing} feature partition(s) of {window.label} missing"
        )
    if not train_uris or not holdout_uris:
        raise SkipStep(
            f"every day of the {'training' if not train_uris else 'holdout'} window {window.label} is quarantined"
        )
    frames = {
        "training": load_labelled(store, train_uris, cfg, window.labels_known_at),
        "holdout": load_labelled(store, holdout_uris, cfg, window.labels_known_at),
    }
    for name, part in frames.items():
        classes = part[cfg.target.column].nunique()
        if len(part) < cfg.training.min_rows or classes < 2:
            raise SkipStep(
                f"{name} set of {window.label} has {len(part)} labelled rows and {classes} class(es); "
                f"need >= {cfg.training.min_rows} rows and both classes"
            )
    numeric, categorical = model_columns(cfg)
    key = f"{cfg.name}:{interval.ds}" + (f":{run_id}" if force else "")
    result = train_and_register(
        frames["training"],
        frames["holdout"],
        tracking_uri=tracking_uri,
        experiment=cfg.name,
        model_name=cfg.name,
        target=cfg.target.column,
        numeric=numeric,
        categorical=categorical,
        estimator=cfg.model.estimator,
        params=cfg.model.params,
        data_uris={"train": train_uris, "holdout": holdout_uris},
        tags={
            "pipeline": cfg.name,
            "data_date": interval.ds,
            "data_window": window.label,
            "code_version": ml_ops.code_version(),
            "validation_uri": uri(cfg, "validation", window.holdout_days[-1], "report.html"),
            "airflow_run_id": run_id,
            "excluded_days": ",".join(sorted(rejected)) or "none",  # quarantined days left out of the window
            "derived_features": ",".join(cfg.generated_features) or "none",  # what features added to the source
        },
        seed=cfg.training.seed,
        run_name=f"train {interval.ds}",
        idempotency_key=key,
    )
    return {
        "version": int(result.version),
        "run_id": result.run_id,
        "model_uri": result.model_uri,
        "holdout_uris": holdout_uris,
        "labels_known_at": window.labels_known_at.isoformat(),
        "metrics": {k: round(float(v), 6) for k, v in result.metrics.items()},
    }


def compare_step(
    cfg: Pipeline, store: ObjectStore, interval: DayInterval, tracking_uri: str, trained: dict, *, run_id: str
) -> tuple[dict, bool]:
    """Champion/challenger on the same holdout; the decision goes to MLflow (tags + comparison run)
    and the S3 decision log. Returns (record, newly_logged). Never moves an alias."""
    from ml_ops.pipeline.compare import Policy, compare_and_record

    holdout = load_labelled(store, trained["holdout_uris"], cfg, datetime.fromisoformat(trained["labels_known_at"]))
    p = cfg.promotion
    decision = compare_and_record(
        tracking_uri=tracking_uri,
        model_name=cfg.name,
        challenger_version=int(trained["version"]),
        holdout_df=holdout,
        target=cfg.target.column,
        policy=Policy(
            primary_metric=p.primary_metric,
            floors=dict(p.floors),
            min_improvement=dict(p.min_improvement),
            require_significant=p.require_significant,
            bootstrap_samples=p.bootstrap_samples,
            confidence=p.confidence,
        ),
        experiment=cfg.name,
        idempotency_key=f"{cfg.name}:v{trained['version']}",
        seed=cfg.training.seed,
    )
    record = {
        **decision.to_dict(),
        "key": f"{cfg.name}:v{trained['version']}",
        "pipeline": cfg.name,
        "data_date": interval.ds,
        "airflow_run_id": run_id,
        "mode": p.mode,
    }
    newly_logged = store.append_jsonl(decision_log_uri(cfg), record, key="key")
    return record, newly_logged


def decision_text(record: dict) -> str:
    """A person-readable account of a decision, for alerts."""
    lines = [record["reason"], f"Data date: {record['data_date']}", "Checks:"]
    for check in record.get("checks", []):
        mark = "pass" if check.get("passed") else "FAIL"
        lines.append(f"  [{mark}] {check.get('name')}: {check.get('value')} vs {check.get('threshold')}")
    return "\n".join(lines)


def promote_step(cfg: Pipeline, client, decision: dict, *, by: str | None = None) -> dict:
    """Move the winner forward, unless the champion changed since the comparison (a stale re-run
    of an old day must not put an older model back)."""
    from ml_ops.pipeline.registry import current_version, promote

    version = int(decision["version"])
    current = current_version(client, cfg.name, layout.CHAMPION)
    if current == version:
        return {"champion": version, "previous": None, "moved": None, "note": "already champion"}
    if current != decision.get("champion_version"):
        raise SkipStep(
            f"champion is v{current} now, but v{version} was compared with v{decision.get('champion_version')}; "
            "re-run the comparison"
        )
    if cfg.promotion.mode == "canary" and current is not None:
        # The canary DAG (scheduled on this task's Asset) shifts traffic and decides; a first model has
        # nothing to be judged against and becomes champion directly.
        client.set_registered_model_alias(cfg.name, layout.CANARY, str(version))
        return {"canary": version, "champion": current, "moved": "canary"}
    previous = promote(client, cfg.name, version, reason=decision["reason"], by=by)
    return {"champion": version, "previous": previous, "moved": "champion"}
