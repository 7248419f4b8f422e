"""A pipeline's dry run before it is switched on: ``mlops pipeline dry-run <name> --days N [--end DAY]``.

Runs the training DAG's steps (``ml_ops.pipeline.steps``: extract → validate → features, and labels with a
``labels:`` section, for each of the N days up to ``end``, then train → compare for ``end``) on the real
source, and prints what each stage would write (URIs, rows), the validation outcome of every day (a failing
day is quarantined, as it would be, and the run goes on with the next one), the model's holdout metrics,
the gate decision and every warning.

It touches nothing the live pipeline uses:

* S3: a copy of the pipeline config whose prefix is the scratch prefix
  ``s3://<bucket>/scratch/dry-run/<name>/`` (``ml_ops.layout.dry_run_prefix``), cleared first so that an
  earlier dry run does not count as history, and left afterwards for inspection;
* MLflow: a SQLite tracking store in a temporary directory, deleted at the end, so no model version,
  alias or run reaches the registry (the comparison has no champion: the first model's floors decide).

Where the source and S3 come from (``connections_from_env``): the source is the Airflow connection in
``AIRFLOW_CONN_<CONN_ID>`` when that variable is set, else the embedded stack's source database; S3 is
``MLOPS_S3_ENDPOINT`` / ``AWS_*`` when set (``ml_ops.storage.store_from_env``), else the embedded stack's.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta, timezone

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DayInterval, training_window
from ml_ops.storage import ObjectStore

DRY_RUN_ID = "dry-run"  # stands in for the Airflow run id in tags and decision records


class DryRunError(ValueError):
    """The dry run cannot start (too few days, no source, S3 unreachable); the message says what to change."""


class ScratchPipeline(Pipeline):
    """A pipeline config whose S3 prefix is its dry-run scratch prefix; everything else is the pipeline's."""

    def prefix(self) -> str:
        return layout.dry_run_prefix(self.bucket, self.name)


def scratch_config(cfg: Pipeline) -> ScratchPipeline:
    """The same (already validated) settings, writing under ``s3://<bucket>/scratch/dry-run/<name>/``."""
    return ScratchPipeline.model_construct(_fields_set=cfg.model_fields_set, **dict(cfg))


def required_days(cfg: Pipeline) -> int:
    """Days a dry run needs so that its last day can train: the training window of that day
    (``training.window_days`` + ``training.holdout_days``) and the ``target.label_delay_days`` after it."""
    end = DayInterval.for_day(date(2000, 1, 1))
    window = training_window(end, cfg.target.label_delay_days, cfg.training.window_days, cfg.training.holdout_days)
    return (end.day - date.fromisoformat(window.train_days[0])).days + 1


def check_days(cfg: Pipeline, days: int) -> None:
    need = required_days(cfg)
    if days < need:
        t = cfg.training
        raise DryRunError(
            f"{cfg.name}: --days {days} is too few to train: the last day's training window needs {need} days "
            f"(training.window_days {t.window_days} + training.holdout_days {t.holdout_days} + "
            f"target.label_delay_days {cfg.target.label_delay_days}); use --days {need} or more"
        )


@dataclass
class DayOutcome:
    ds: str
    extracted: dict | None = None  # {uri, rows, late_rows}
    validation: str = "not run"  # passed | failed
    failures: list[str] = field(default_factory=list)
    features: dict | None = None  # {uri, rows, history_excluded}
    labels: dict | None = None  # labels_step's summary, with a labels: section
    history_excluded: list[str] = field(default_factory=list)  # quarantined days left out of its history


@dataclass
class DryRunReport:
    pipeline: str
    prefix: str  # the scratch prefix written to
    first: str
    end: str
    days: list[DayOutcome] = field(default_factory=list)
    trained: dict | None = None  # train_step's result
    decision: dict | None = None  # compare_step's record
    warnings: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)  # what would go wrong live; empty: the pipeline works

    @property
    def ok(self) -> bool:
        return not self.problems


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.messages.append(record.getMessage())


@contextmanager
def _logged_warnings() -> Iterator[list[str]]:
    """Warnings the steps log (late rows, ...) while the dry run runs."""
    handler = _Collect()
    logger = logging.getLogger("ml_ops")
    logger.addHandler(handler)
    try:
        yield handler.messages
    finally:
        logger.removeHandler(handler)


@contextmanager
def _tracking_store(cfg: Pipeline, tracking_uri: str | None) -> Iterator[str]:
    """The MLflow store the dry run trains into: ``tracking_uri`` if given (the caller's, used as it is), else a
    SQLite store in a temporary directory, deleted afterwards, whose experiment keeps its artifacts beside it
    (not in MLflow's default ``./mlruns`` of the working directory)."""
    if tracking_uri is not None:
        yield tracking_uri
        return
    from mlflow import MlflowClient

    tmp = tempfile.mkdtemp(prefix=f"mlops-dry-run-{cfg.name}-")
    try:
        uri = f"sqlite:///{tmp}/mlflow.db"
        MlflowClient(tracking_uri=uri).create_experiment(cfg.name, artifact_location=f"{tmp}/artifacts")
        yield uri
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def clear_scratch(store: ObjectStore, scratch: ScratchPipeline) -> int:
    """Delete an earlier dry run's objects (only ever under the scratch prefix); returns how many."""
    prefix = scratch.prefix().rstrip("/") + "/"
    if not prefix.startswith(f"s3://{scratch.bucket}/{layout.DRY_RUN_ROOT}/"):
        raise AssertionError(f"refusing to clear {prefix}: not a dry-run scratch prefix")
    uris = store.list(prefix)
    for uri in uris:
        store.delete(uri)
    return len(uris)


def _fmt(value) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def run(
    cfg: Pipeline,
    *,
    days: int,
    end: date,
    engine,
    store: ObjectStore,
    tracking_uri: str | None = None,
    labels_engine=None,
    echo: Callable[[str], None] = print,
) -> DryRunReport:
    """Extract → validate → features for the ``days`` days ending ``end``, then train → compare for ``end``,
    into the scratch prefix and a temporary MLflow store. With ``tracking_uri`` the caller's store is used instead
    and kept (create its experiment ``<name>`` with an artifact location first, or MLflow's default applies).
    With a ``labels:`` section the labels task runs after each day's features, reading ``labels_engine``
    (default: ``engine``)."""
    check_days(cfg, days)
    scratch = scratch_config(cfg)
    first = end - timedelta(days=days - 1)
    report = DryRunReport(cfg.name, scratch.prefix() + "/", first.isoformat(), end.isoformat())
    window = training_window(
        DayInterval.for_day(end), cfg.target.label_delay_days, cfg.training.window_days, cfg.training.holdout_days
    )
    echo(f"dry run of pipeline {cfg.name!r}: {days} day(s) {first}..{end}; training for {end} on {window.label}")
    echo(f"  writes to {report.prefix} (the live prefix {cfg.prefix()}/ is not touched)")
    cleared = clear_scratch(store, scratch)
    if cleared:
        echo(f"  cleared {cleared} object(s) of an earlier dry run")

    with _tracking_store(cfg, tracking_uri) as uri, _logged_warnings() as logged:
        echo(f"  MLflow: {'temporary store ' + uri + ' (deleted at the end)' if tracking_uri is None else uri}")
        echo("")
        for i in range(days):
            interval = DayInterval.for_day(first + timedelta(days=i))
            report.days.append(_day(scratch, store, interval, engine, labels_engine or engine, report, echo))
        _quarantine_warnings(report, [*window.train_days, *window.holdout_days])
        echo("")
        _train_and_compare(scratch, store, DayInterval.for_day(end), uri, report, echo)
        # anything else the steps logged as a warning (late rows are already listed, per day)
        report.warnings.extend(m for m in logged if m not in report.warnings and "after the day was extracted" not in m)

    echo("")
    echo(f"warnings ({len(report.warnings)}):" if report.warnings else "warnings: none")
    for w in report.warnings:
        echo(f"  - {w}")
    objects = len(store.list(report.prefix))
    echo(f"scratch objects: {objects} under {report.prefix} (kept for inspection; the next dry run clears them)")
    if report.ok:
        echo(f"dry run OK: every day validated, a model trained and passed its gate ({cfg.name})")
    else:
        echo(f"dry run found {len(report.problems)} problem(s):")
        for p in report.problems:
            echo(f"  - {p}")
    return report


def _day(cfg, store, interval: DayInterval, engine, labels_engine, report: DryRunReport, echo) -> DayOutcome:
    from ml_ops.pipeline import steps
    from ml_ops.pipeline.validate import DataValidationError

    ds, out = interval.ds, DayOutcome(interval.ds)
    try:
        out.extracted = steps.extract_step(cfg, store, interval, engine)
    except DataValidationError as exc:  # the source query could not run for the day
        return _rejected(out, exc, "extract", report, echo)
    echo(f"{ds}  extract   {out.extracted['rows']:>8} rows -> {out.extracted['uri']}")
    if out.extracted["rows"] == 0:
        report.warnings.append(f"{ds}: the source returned no rows for the day")
    for day, late in (out.extracted.get("late_rows") or {}).items():
        report.warnings.append(f"{ds}: {late} row(s) of {day} reached the source after {day} was extracted")
    try:
        validated = steps.validate_step(cfg, store, interval)
    except DataValidationError as exc:
        return _rejected(out, exc, "validate", report, echo)
    out.validation = "passed"
    echo(f"{'':10}  validate  passed        -> {validated['uri']} (report {validated['report']})")
    out.features = steps.features_step(cfg, store, interval)
    echo(f"{'':10}  features  {out.features['rows']:>8} rows -> {out.features['uri']}")
    if cfg.labels is not None:  # as the DAG runs it, between features and train
        out.labels = steps.labels_step(cfg, store, interval, labels_engine if cfg.labels.sql else None)
        echo(
            f"{'':10}  labels    {out.labels['labelled']:>8} labelled rows of {out.labels['window']} -> "
            f"{layout.stage_prefix(cfg.prefix(), layout.LABELS)}/ ({out.labels['unmatched']} unmatched)"
        )
    out.history_excluded = sorted(
        set(validated.get("history_excluded") or []) | set(out.features.get("history_excluded") or [])
    )
    return out


def _quarantine_warnings(report: DryRunReport, window_days: list[str]) -> None:
    """One warning per quarantined day: what it failed and which later days and windows go without it."""
    for day in report.days:
        if day.validation != "failed":
            continue
        later = [d.ds for d in report.days if day.ds in d.history_excluded]
        where = [f"the history of {len(later)} later day(s) ({later[0]}..{later[-1]})"] if later else []
        if day.ds in window_days:
            where.append("the training window")
        left_out = f"; left out of {' and '.join(where)}" if where else ""
        report.warnings.append(f"{day.ds}: quarantined ({len(day.failures)} failed check(s)){left_out}")


def _rejected(out: DayOutcome, exc, stage: str, report: DryRunReport, echo) -> DayOutcome:
    out.validation = "failed"
    out.failures = [f.line() for f in exc.result.failures] or [str(exc)]
    where = f"{stage}   " if stage == "extract" else "validate"
    echo(f"{out.ds if stage == 'extract' else '':10}  {where}  FAILED: the day is quarantined (left out of later days)")
    for line in out.failures:
        echo(f"{'':14}- {line}")
    report.problems.append(f"{out.ds} fails validation: {'; '.join(out.failures)}")
    return out


def _train_and_compare(cfg, store, interval: DayInterval, tracking_uri: str, report: DryRunReport, echo) -> None:
    from ml_ops.pipeline import steps
    from ml_ops.pipeline.train import METRIC_NAMES

    try:
        trained = steps.train_step(cfg, store, interval, tracking_uri, run_id=DRY_RUN_ID)
    except steps.SkipStep as skip:
        echo(f"train     skipped: {skip}")
        report.warnings.append(f"train skipped: {skip}")
        report.problems.append(f"training for {interval.ds} would be skipped: {skip}")
        return
    except ValueError as exc:  # the model cannot be built or fitted on this data; the message names the field
        echo(f"train     FAILED: {exc}")
        report.problems.append(f"training fails: {exc}")
        return
    report.trained = trained
    quarantined = [d.ds for d in report.days if d.validation == "failed"]
    window = training_window(interval, cfg.target.label_delay_days, cfg.training.window_days, cfg.training.holdout_days)
    left_out = [d for d in quarantined if d in [*window.train_days, *window.holdout_days]]
    m = trained["metrics"]
    echo(
        f"train     {int(m.get('train_rows', 0))} training / {int(m.get('holdout_rows', 0))} holdout rows "
        f"({int(m.get('train_positives', 0))} / {int(m.get('holdout_positives', 0))} positive) -> "
        f"{cfg.name} version {trained['version']} in the dry run's MLflow store (run {trained['run_id']}), "
        "with its reference sample"
    )
    if left_out:
        echo(f"          quarantined day(s) left out of the window: {', '.join(left_out)}")
    echo("          holdout metrics: " + ", ".join(f"{k}={_fmt(m[k])}" for k in METRIC_NAMES if k in m))
    record, _ = steps.compare_step(cfg, store, interval, tracking_uri, trained, run_id=DRY_RUN_ID)
    report.decision = record
    first = record.get("champion_version") is None
    verdict = "would pass" if record["promote"] else "would NOT pass"
    echo(f"compare   gate {verdict}{' (first model: floors only)' if first else ''}: {record['reason']}")
    for check in record.get("checks", []):
        mark = "pass" if check.get("passed") else "FAIL"
        echo(f"          [{mark}] {check.get('name')}: {_fmt(check.get('value'))} vs {_fmt(check.get('threshold'))}")
    echo(f"          decision -> {steps.decision_log_uri(cfg)}")
    if not record["promote"]:
        report.problems.append(f"the model would not pass its gate: {record['reason']}")


# --------------------------------------------------------------------------- sources from the environment


@dataclass
class Connections:
    engine: object  # SQLAlchemy engine of the source
    store: ObjectStore
    source: str  # where they came from, for the printout (no secrets)
    s3: str
    labels_engine: object = None  # the labels table's, when labels.conn_id names another connection


def _engine(conn_id: str) -> tuple[object, str]:
    """An engine for an Airflow connection: ``AIRFLOW_CONN_<CONN_ID>`` when set, else the embedded stack's
    source database."""
    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    if os.environ.get(var):
        from airflow.sdk import BaseHook  # the extract operator's own way from a connection to an engine

        engine = BaseHook.get_connection(conn_id).get_hook().get_sqlalchemy_engine()
        where = f"connection {conn_id!r} from {var}"
    else:
        import sqlalchemy as sa

        from ml_ops.local.stack import Stack

        stack = Stack.from_env()
        if not stack.source_db.is_file():
            raise DryRunError(
                f"no source for connection {conn_id!r}: set {var} (an Airflow connection URI or JSON), "
                f"or load the embedded stack's source database {stack.source_db} (mlops sim ...)"
            )
        engine = sa.create_engine(stack.source_db_url)
        where = f"the embedded stack's source database ({var} is not set)"
    url = getattr(engine, "url", None)
    shown = url.render_as_string(hide_password=True) if hasattr(url, "render_as_string") else str(url)
    return engine, f"{where}: {shown}"


def connections_from_env(cfg: Pipeline) -> Connections:
    """The source and S3 a dry run reads and writes (see the module docstring)."""
    engine, source = _engine(cfg.source.conn_id)
    labels_engine = None
    labels_conn = cfg.labels.conn_id if cfg.labels is not None and cfg.labels.sql else None
    if labels_conn and labels_conn != cfg.source.conn_id:
        labels_engine, where = _engine(labels_conn)
        source += f"; labels: {where}"
    if os.environ.get("MLOPS_S3_ENDPOINT") or os.environ.get("AWS_ACCESS_KEY_ID"):
        from ml_ops.storage import store_from_env

        store, s3 = (
            store_from_env(),
            f"S3 from MLOPS_S3_ENDPOINT/AWS_* ({os.environ.get('MLOPS_S3_ENDPOINT') or 'AWS'})",
        )
    else:
        from ml_ops.local.stack import Stack

        stack = Stack.from_env()
        store, s3 = ObjectStore(stack.s3_client(retries=1)), f"the embedded stack's S3 ({stack.s3_url})"
    try:
        store.client.head_bucket(Bucket=cfg.bucket)
    except Exception as exc:  # noqa: BLE001 - any failure here means the dry run cannot write
        raise DryRunError(
            f"bucket {cfg.bucket!r} on {s3} is not reachable ({type(exc).__name__}: {exc}); start the embedded "
            "stack (make up) or set MLOPS_S3_ENDPOINT, AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
        ) from None
    return Connections(engine, store, source, s3, labels_engine)


def main(argv: list[str] | None = None, prog: str = "mlops pipeline dry-run") -> int:
    """``mlops pipeline dry-run <name> --days N [--end YYYY-MM-DD]``; exit 0 when the pipeline would work
    (every day validated, a model trained and passed its gate), 1 when the run found problems, 2 when it
    could not start."""
    import argparse
    import sys

    from ml_ops.config import ConfigError, load_pipeline_by_name

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Run a pipeline's steps (extract, validate, features, then train and compare) on N days of its "
        "real source, into the scratch prefix s3://<bucket>/scratch/dry-run/<name>/ and a temporary MLflow store, "
        "and print what each stage would write, every day's validation, the holdout metrics, the gate decision "
        "and every warning. Nothing the live pipeline uses is touched. Exit 0: the pipeline would work; 1: "
        "problems found; 2: the dry run could not start.",
    )
    parser.add_argument("name", help="pipeline name (include/pipelines/<name>.yaml)")
    parser.add_argument("--days", type=int, required=True, help="days of the source to run, ending --end")
    parser.add_argument(
        "--end",
        type=date.fromisoformat,
        default=None,
        metavar="YYYY-MM-DD",
        help="last day (default: yesterday, UTC: the day a daily run processes today)",
    )
    args = parser.parse_args(argv)
    end = args.end or datetime.now(timezone.utc).date() - timedelta(days=1)
    try:
        cfg = load_pipeline_by_name(args.name)
        check_days(cfg, args.days)
        conns = connections_from_env(cfg)
    except (ConfigError, DryRunError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"source: {conns.source}")
    print(f"S3: {conns.s3}")
    # Importing Airflow (for the connection) sends every library's INFO lines to stdout, between the dry run's own
    # (some libraries set INFO on their own loggers): the root handlers pass warnings only while it runs, and get
    # their levels back afterwards (main may run inside another process).
    handlers = {h: h.level for h in logging.getLogger().handlers}
    for h in handlers:
        h.setLevel(max(h.level, logging.WARNING))
    try:
        report = run(
            cfg, days=args.days, end=end, engine=conns.engine, store=conns.store, labels_engine=conns.labels_engine
        )
    finally:
        for h, level in handlers.items():
            h.setLevel(level)
    return 0 if report.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
