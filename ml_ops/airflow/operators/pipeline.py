"""Thin Airflow operators over ``ml_ops.pipeline.steps``.

An operator holds the pipeline name (templated), builds its clients from Airflow connections in
``execute`` (never at parse time), calls one step, and maps the step's outcome onto Airflow:
``SkipStep`` → skipped, ``DataValidationError`` → failed without retries (the data will not change),
``IncompleteHistory`` → rescheduled while the missing days' runs are running, else failed at once naming them.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from functools import cached_property

from airflow.sdk import BaseOperator

from ml_ops.config import Pipeline, load_pipeline_by_name
from ml_ops.interval import interval_from_context

# How often a step whose earlier days are being processed by other runs looks again (reschedule mode: no
# worker slot is held meanwhile).
HISTORY_POKE = timedelta(seconds=15)


def history_gap(message: str, missing: list[str], runs: dict[str, str]) -> tuple[bool, str]:
    """What a step does when the earlier days ``missing`` are not validated yet: ``(wait, message)``.

    ``runs`` maps a day to the state of its run of this DAG ("running" or "queued"; absent: no active run).
    Waiting is right only while every missing day is being processed by a run that is running (it holds a run
    slot of its own, e.g. a backfill's, and will finish). A day whose run is only queued is queued behind this
    one (one run of the DAG at a time: Airflow started the later day first), and a day with no run will not
    appear by waiting: both fail at once, naming the days, instead of holding the DAG's only run slot."""
    queued = [d for d in missing if runs.get(d) == "queued"]
    absent = [d for d in missing if runs.get(d) not in ("running", "queued")]
    if not queued and not absent:
        return True, f"{message} Their run(s) are running: waiting for them (rescheduled, no worker slot held)."
    parts = [message]
    if queued:
        parts.append(
            f"The run(s) of {', '.join(queued)} are queued behind this one (the DAG runs one day at a time and "
            "this later day was started first): they run next; clear this run once they have succeeded."
        )
    if absent:
        parts.append(
            f"No run of {', '.join(absent)} is queued or running: trigger them first (oldest first, or one "
            "backfill), then clear this run."
        )
    return False, " ".join(parts)


def active_runs(context, days: list[str]) -> dict[str, str]:
    """{day: "running" | "queued"} for the runs of this DAG whose logical date is one of ``days`` (midnight
    UTC: REST triggers with a day and @daily runs), asked through the Task SDK. Empty if Airflow cannot say."""
    ti = context.get("ti")
    dag_id = getattr(ti, "dag_id", None)
    found: dict[str, str] = {}
    if ti is None or dag_id is None:
        return found
    try:
        for day in days:
            at = datetime.fromisoformat(day).replace(tzinfo=timezone.utc)
            for state in ("running", "queued"):
                if ti.get_dr_count(dag_id=dag_id, logical_dates=[at], states=[state]):
                    found[day] = state
                    break
    except Exception as exc:  # the answer only refines the message: the step fails naming the days anyway
        import logging

        logging.getLogger(__name__).warning("could not ask Airflow for the runs of %s: %s", days, exc)
    return found


class PipelineOperator(BaseOperator):
    template_fields = ("pipeline",)
    ui_color = "#e8f4fd"
    per_day = True  # steps of a data day get its interval; deployment steps do not have one

    def __init__(self, *, pipeline: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline

    @cached_property
    def cfg(self) -> Pipeline:
        return load_pipeline_by_name(self.pipeline)

    def store(self):
        from ml_ops.storage import store_from_airflow

        return store_from_airflow(self.cfg.aws_conn_id)

    # MLflow is reached only through the pipeline's connection (default mlflow_default), passed on explicitly:
    # no process-global tracking URI, no credentials in os.environ (ml_ops.airflow.hooks).
    def mlflow_client(self):
        """An MlflowClient on the connection's tracking server (tracking and registry)."""
        from ml_ops.airflow.hooks import MlflowHook

        return MlflowHook(self.cfg.mlflow_conn_id).get_conn()

    def tracking_uri(self) -> str:
        """The connection's tracking URI, credentials included: for the steps, never for logs."""
        from ml_ops.airflow.hooks import MlflowHook

        return MlflowHook(self.cfg.mlflow_conn_id).get_tracking_uri()

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowFailException, AirflowRescheduleException, AirflowSkipException

        from ml_ops.config import ConfigError
        from ml_ops.pipeline.history import IncompleteHistory
        from ml_ops.pipeline.steps import SkipStep
        from ml_ops.pipeline.train import ModelBuildError
        from ml_ops.pipeline.validate import DataValidationError

        try:
            result = self.run_step(context, interval_from_context(context) if self.per_day else None)
        except SkipStep as skip:
            raise AirflowSkipException(str(skip)) from None
        except IncompleteHistory as gap:
            # Not a data error, but retrying would hold the DAG's only run slot without helping: the missing
            # days are processed by other runs, which this one waits for (reschedule) or does not block.
            wait, message = history_gap(str(gap), gap.missing, active_runs(context, gap.missing))
            if wait:
                self.log.info("%s", message)
                raise AirflowRescheduleException(datetime.now(timezone.utc) + HISTORY_POKE) from None
            raise AirflowFailException(message) from None
        except (DataValidationError, ConfigError, ModelBuildError) as failed:
            # bad data, bad configuration, a model that cannot be built: the same input fails again, so no
            # retries; infrastructure errors (S3, MLflow, the source database) propagate and are retried
            raise AirflowFailException(f"{self.pipeline} (include/pipelines/{self.pipeline}.yaml): {failed}") from None
        self.log.info("%s: %s", self.task_id, result)
        return result

    def run_step(self, context, interval):
        raise NotImplementedError


class ExtractOperator(PipelineOperator):
    """Source rows of the run's day → ``raw/ds=<day>/data.parquet``. XCom: ``{uri, rows}``."""

    def run_step(self, context, interval):
        from airflow.sdk import BaseHook

        from ml_ops.pipeline.steps import extract_step

        engine = BaseHook.get_connection(self.cfg.source.conn_id).get_hook().get_sqlalchemy_engine()
        return extract_step(self.cfg, self.store(), interval, engine)


class ValidateOperator(PipelineOperator):
    """Expectation suite + statistics vs recent days; reports under ``validation/ds=<day>/``."""

    def run_step(self, context, interval):
        from ml_ops.pipeline.steps import validate_step

        return validate_step(self.cfg, self.store(), interval)


class FeaturesOperator(PipelineOperator):
    """Raw day (+ lookback days for per-entity history) → ``features/ds=<day>/data.parquet``."""

    def run_step(self, context, interval):
        from ml_ops.pipeline.steps import features_step

        return features_step(self.cfg, self.store(), interval)


class LabelsOperator(PipelineOperator):
    """Labels known by the run's end (labels table, gateway feedback) joined to the trailing window's
    features → ``labels/ds=<day>/``. XCom: per-day counts and the unmatched labels (small)."""

    def run_step(self, context, interval):
        from airflow.sdk import BaseHook

        from ml_ops.pipeline.steps import labels_step

        engine = None
        if self.cfg.labels.sql:  # feedback alone needs no database
            conn_id = self.cfg.labels.conn_id or self.cfg.source.conn_id
            engine = BaseHook.get_connection(conn_id).get_hook().get_sqlalchemy_engine()
        return labels_step(self.cfg, self.store(), interval, engine)


def triggered_by(context) -> str:
    """Who a decision is on, for the audit trail: the Airflow user who triggered the run, else the run itself
    (a schedule, an Asset event or a backfill has no user)."""
    run = context.get("dag_run")
    user = getattr(run, "triggering_user_name", None)
    kind = getattr(getattr(run, "run_type", None), "value", getattr(run, "run_type", None)) or "run"
    return f"user {user}" if user else f"{kind} run {context.get('run_id')}"


def asset_triggered(context) -> bool:
    """The run was started by Asset events (for the training DAG: the monitoring DAG's retrain request)."""
    # In the Task SDK context["dag_run"].run_type is this enum (airflow.sdk.types.DagRunProtocol); a str enum,
    # equal to core Airflow's airflow.utils.types.DagRunType.ASSET_TRIGGERED and to "asset_triggered".
    from airflow.sdk.api.datamodels._generated import DagRunType

    return getattr(context.get("dag_run"), "run_type", None) == DagRunType.ASSET_TRIGGERED


class TrainOperator(PipelineOperator):
    """Fits and registers the challenger; skips until the labelled window exists. A retrain request (an
    asset-triggered run) trains for the day the request names (``interval_from_context``), anew."""

    def run_step(self, context, interval):
        from ml_ops.pipeline.steps import train_step

        params = context.get("params") or {}
        # A run started by the monitoring DAG's retrain request must train anew, not reuse the day's model.
        force = bool(params.get("force_retrain")) or asset_triggered(context)
        return train_step(self.cfg, self.store(), interval, self.tracking_uri(), run_id=context["run_id"], force=force)


class CompareOperator(PipelineOperator):
    """Champion vs challenger on one holdout; records and announces the decision. XCom: the decision."""

    template_fields = ("pipeline", "train_result")

    def __init__(self, *, train_result, **kwargs) -> None:
        super().__init__(**kwargs)
        self.train_result = train_result

    def run_step(self, context, interval):
        from ml_ops.airflow.notify import send_alert
        from ml_ops.pipeline.steps import compare_step, decision_text

        record, newly_logged = compare_step(
            self.cfg, self.store(), interval, self.tracking_uri(), self.train_result, run_id=context["run_id"]
        )
        version = record["challenger_version"]
        verdict = "wins" if record["promote"] else "does not win"
        if newly_logged and self.cfg.alerts.on_decision:
            send_alert(
                self.cfg.alerts,
                f"[airflow-mlops] {self.cfg.name}: challenger v{version} {verdict}",
                decision_text(record),
                context,
            )
        return {
            "promote": bool(record["promote"]),
            "version": int(version),
            "champion_version": record.get("champion_version"),
            "reason": record["reason"],
        }


class PromoteOperator(PipelineOperator):
    """Winner → ``champion`` (mode direct, previous champion kept for rollback) or ``canary``."""

    template_fields = ("pipeline", "decision")

    def __init__(self, *, decision, **kwargs) -> None:
        super().__init__(**kwargs)
        self.decision = decision

    def run_step(self, context, interval):
        from ml_ops.pipeline.steps import promote_step

        return promote_step(self.cfg, self.mlflow_client(), self.decision, by=triggered_by(context))


class DriftOperator(PipelineOperator):
    """Nightly drift + quality of the run's day (or of every day in Params start_date..end_date) against
    the champion that served it; alerts on each alarm. XCom: the last day's summary (small)."""

    def run_step(self, context, interval):
        from ml_ops.airflow.notify import send_alert
        from ml_ops.monitoring.step import monitor_days

        params = context.get("params") or {}
        return monitor_days(
            self.cfg,
            self.store(),
            self.tracking_uri(),
            interval,
            start_date=params.get("start_date"),
            end_date=params.get("end_date"),
            columns=params.get("columns"),
            alert=lambda subject, text: send_alert(self.cfg.alerts, subject, text, context),
        )
