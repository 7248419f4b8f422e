"""Builds the Airflow DAGs of a pipeline from its YAML config.

Only Airflow and the light config module are imported here: DAG files are re-parsed every few
seconds, so pandas, scikit-learn, MLflow and friends load inside the tasks that use them.
"""

from __future__ import annotations

import logging
import os
from datetime import datetime, timedelta, timezone
from pathlib import Path

from ml_ops import layout
from ml_ops.config import ConfigError, Pipeline, load_pipeline, pipeline_files

log = logging.getLogger(__name__)

DOC = """\
### {name}: training pipeline

{description}

`extract` → `validate` → `features` → `train` → `compare` → `challenger_won` → `promote`

* **Data**: `{prefix}/{{raw,validation,features}}/ds=<day>/` (one partition per data day, overwritten on re-run).
* **Validation** fails the run with every failed expectation named; the report is `validation/ds=<day>/report.html`.
  A rejected day is quarantined (`validation/quarantine.jsonl`): later days' history and training windows
  leave it out until it is fixed and re-run.
* **Run order**: one run at a time; Airflow starts queued runs in `run_after` order, so days triggered together
  run oldest day first when each run's `run_after` is its logical date (the `mlops` REST client sets it; the
  default is the moment of the trigger). A day whose earlier days are not validated yet waits while their runs
  are running, and otherwise fails at once naming them (trigger them, then clear the day).
* **Features**: the model inputs are the declared columns plus these derived ones: {derived}.
* **Train** uses the {window} labelled days before the {holdout}-day holdout (labels arrive {delay} day(s) late);
  it skips until that history exists. The model is registered in MLflow as `{name}` with alias `challenger`.
* **Compare** scores challenger and `champion` on the same holdout: floors {floors}, minimum improvement
  {improvement}, paired bootstrap CI of the {primary} difference; decisions in `{prefix}/decisions/log.jsonl`.
* **Promote** ({mode}) runs only for a winner; a loser skips it.

Manual trigger: Params `data_date` (YYYY-MM-DD, which day to process) and `force_retrain`
(register a new version even if this day's model exists).
Config: `include/pipelines/{name}.yaml`.
"""

LABELS_DOC = """
**Labels** (task `labels`, between `features` and `train`): the labels known by the run's end (labels table,
gateway feedback) are joined to the features of the last {days} days → `{prefix}/labels/ds=<day>/`; a label
for an id in no features partition is counted (`{prefix}/labels/unmatched.jsonl`). Training and monitoring
use these labels, not the source row's.
"""


def schedules_mode() -> str:
    """MLOPS_SCHEDULES: ``on`` (default), ``off`` (runs only by trigger/backfill: test stacks that drive
    the days themselves) or ``assets`` (no clock schedules, but Asset-triggered DAGs still react)."""
    mode = os.environ.get("MLOPS_SCHEDULES", "on").lower()
    if mode not in ("on", "off", "assets"):
        raise ConfigError(f"MLOPS_SCHEDULES={mode!r}: expected on, off or assets")
    return mode


# Days a run can mean: far-future dates passed the "date" format check and then overflowed the interval code.
DAY_PATTERN = r"^(19[7-9][0-9]|2[01][0-9][0-9])-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$"


def day_param(description: str):
    """An optional YYYY-MM-DD Param bounded to 1970..2199."""
    from airflow.sdk import Param

    return Param(None, type=["null", "string"], format="date", pattern=DAY_PATTERN, description=description)


def default_args(cfg: Pipeline) -> dict:
    from ml_ops.airflow.notify import PipelineFailureNotifier

    return {
        "owner": cfg.owner,
        "retries": 2,
        "retry_delay": timedelta(seconds=20),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=10),
        "execution_timeout": timedelta(minutes=30),
        "on_failure_callback": PipelineFailureNotifier(cfg.name, cfg.alerts),
    }


def retrain_asset(cfg: Pipeline):
    """The Asset a monitoring alarm emits to request a retrain and the training DAG is scheduled on. Its
    events' extra names the day to train for (``data_date``, read by ``ml_ops.interval.interval_from_context``)."""
    from airflow.sdk import Asset

    return Asset(name=f"{cfg.name}_retrain")


def build_training_dag(cfg: Pipeline):
    from airflow.providers.standard.operators.empty import EmptyOperator
    from airflow.sdk import DAG, Asset, AssetOrTimeSchedule, CronDataIntervalTimetable, Param, task

    from ml_ops.airflow.operators import (
        CompareOperator,
        ExtractOperator,
        FeaturesOperator,
        LabelsOperator,
        PromoteOperator,
        TrainOperator,
        ValidateOperator,
    )

    p = cfg.promotion
    mode = schedules_mode()
    retrain = retrain_asset(cfg)
    # The daily schedule, or a retrain requested by the monitoring DAG's alarm (Asset; its day in the extra).
    if mode == "on" and cfg.schedule:
        schedule = AssetOrTimeSchedule(
            timetable=CronDataIntervalTimetable(cfg.schedule, timezone="UTC"), assets=[retrain]
        )
    else:
        schedule = [retrain] if mode == "assets" else None
    with DAG(
        dag_id=f"{cfg.name}_training",
        description=cfg.description or f"{cfg.name} training pipeline",
        schedule=schedule,
        start_date=datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        # Runs share the model registry and the append-only logs, and each day's checks read earlier days: one
        # at a time. Queued runs start in run_after order (ml_ops.local.airflow_client.run_after_for).
        max_active_runs=1,
        dagrun_timeout=timedelta(hours=3),
        tags=["ml-ops", "training", cfg.name, *cfg.tags],
        doc_md=DOC.format(
            name=cfg.name,
            description=cfg.description,
            prefix=cfg.prefix(),
            window=cfg.training.window_days,
            holdout=cfg.training.holdout_days,
            delay=cfg.target.label_delay_days,
            floors=p.floors or "none",
            improvement=p.min_improvement or "none",
            primary=p.primary_metric,
            mode=p.mode,
            derived=", ".join(f"`{c}`" for c in cfg.generated_features) or "none",
        )
        + (LABELS_DOC.format(prefix=cfg.prefix(), days=cfg.labels.trailing_days) if cfg.labels else ""),
        params={
            "data_date": day_param("Day to process (default: the run's data interval)"),
            "force_retrain": Param(
                False, type="boolean", description="Register a new model version even if one exists for this day"
            ),
        },
        default_args=default_args(cfg),
    ) as dag:
        extract = ExtractOperator(task_id="extract", pipeline=cfg.name)
        validate = ValidateOperator(task_id="validate", pipeline=cfg.name)
        features = FeaturesOperator(task_id="features", pipeline=cfg.name)
        train = TrainOperator(task_id="train", pipeline=cfg.name, execution_timeout=timedelta(hours=1))
        compare = CompareOperator(task_id="compare", pipeline=cfg.name, train_result=train.output)

        @task.short_circuit(task_id="challenger_won")
        def challenger_won(decision: dict) -> bool:
            """Skips promotion for a challenger that did not pass the gate (a normal outcome, not a failure)."""
            return bool(decision["promote"])

        promote = PromoteOperator(task_id="promote", pipeline=cfg.name, decision=compare.output)
        handed_on = layout.CANARY if p.mode == "canary" else layout.CHAMPION

        @task.short_circuit(task_id=f"new_{handed_on}")
        def new_version(result: dict, handed_on: str) -> bool:
            """Only a real hand-off is announced: a first model that went straight to champion (canary mode)
            or a re-run that found it already champion must not start a rollout or wake a listener."""
            return result.get("moved") == handed_on

        new_version(promote.output, handed_on) >> EmptyOperator(
            task_id=f"announce_{handed_on}",
            # Named, not s3:// URI'd: an s3 URI makes Airflow import the amazon provider at parse time.
            outlets=[Asset(name=f"{cfg.name}_{handed_on}", extra={"decision_log": layout.decision_log(cfg.prefix())})],
        )
        if cfg.labels is not None:  # labels that arrive on their own are joined to the features before training
            extract >> validate >> features >> LabelsOperator(task_id="labels", pipeline=cfg.name) >> train
        else:
            extract >> validate >> features >> train
        challenger_won(compare.output) >> promote
    return dag


MONITORING_DOC = """\
### {name}: nightly drift and quality monitoring

What the `champion` served that day (the gateway's prediction logs, `{prefix}/serving_logs/ds=<day>/`;
without them the day's features scored by the champion) against the champion's training reference sample.
Report: `{prefix}/drift/ds=<day>/report.html` (Evidently) with `result.json`; per-day metrics in the MLflow
experiment `{name}-monitoring`. A column drifts when its KS / chi-square p-value survives Holm's
correction at {rate} and its effect is at least {effect} (Wasserstein/sd or share moved). A quality alarm
fires when ROC-AUC on matured labels falls {drop} below the champion's holdout AUC, or ADWIN sees a change
in the error stream. An alarm sends email/Slack and requests a retrain (Asset `{name}_retrain`) at most
once per {cooldown} days.

Manual trigger: Params `data_date`, or `start_date`/`end_date` for a backfill of reports, and `columns`.

**Retention** (task `retention`, beside the report; scheduled runs only, skipped in manual and backfill runs):
day partitions older than `privacy.retention_days`, counted back from the run's day, are deleted ({retention});
audit in `{retention_log}`.
"""


def build_monitoring_dag(cfg: Pipeline):
    from airflow.sdk import DAG, CronDataIntervalTimetable, Param, task

    from ml_ops.airflow.operators import DriftOperator, RetentionOperator

    m = cfg.monitoring
    scheduled = m.schedule and schedules_mode() == "on"
    with DAG(
        dag_id=f"{cfg.name}_monitoring",
        description=f"{cfg.name}: nightly drift and quality report",
        schedule=CronDataIntervalTimetable(m.schedule, timezone="UTC") if scheduled else None,
        start_date=datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,  # drift/retrain_log.jsonl is rewritten whole
        tags=["ml-ops", "monitoring", cfg.name, *cfg.tags],
        doc_md=MONITORING_DOC.format(
            name=cfg.name,
            prefix=cfg.prefix(),
            rate=m.false_alarm_rate,
            effect=m.min_effect,
            drop=m.quality_drop,
            cooldown=m.retrain_cooldown_days,
            retention=", ".join(
                f"{k} {v} days" if v is not None else f"{k} kept"
                for k, v in cfg.privacy.retention_days.model_dump().items()
            ),
            retention_log=layout.retention_log(cfg.prefix()),
        ),
        params={
            "data_date": day_param("Day to report on"),
            "start_date": day_param("Backfill: first day"),
            "end_date": day_param("Backfill: last day"),
            "columns": Param(
                [], type="array", description="Columns to check (default: monitoring.columns or model inputs)"
            ),
        },
        default_args=default_args(cfg),
    ) as dag:
        drift = DriftOperator(task_id="drift_report", pipeline=cfg.name)

        retrain = retrain_asset(cfg)

        @task.short_circuit(task_id="retrain_due")
        def retrain_due(result: dict) -> dict | None:
            """An alarm (drift or quality) asks for a retrain of its day, at most once per
            monitoring.retrain_cooldown_days. XCom: the request (the Asset event's extra), or nothing."""
            from ml_ops.config import load_pipeline_by_name
            from ml_ops.monitoring.retrain import retrain_request
            from ml_ops.storage import store_from_airflow

            pipeline = load_pipeline_by_name(cfg.name)
            return retrain_request(store_from_airflow(pipeline.aws_conn_id), pipeline, result)

        @task(task_id="request_retrain", outlets=[retrain])
        def request_retrain(request: dict, *, outlet_events=None) -> dict:
            """Emits the retrain Asset event; its extra names the day the training run processes."""
            outlet_events[retrain].extra = request
            return request

        request_retrain(retrain_due(drift.output))
        RetentionOperator(task_id="retention", pipeline=cfg.name)  # independent of the report: runs either way
    return dag


ERASURE_DOC = """\
### {name}: erase one person's data

Manual trigger only. Removes every row of Params `entity_id` (matched in {columns}) from every partition of
`{prefix}/{{raw,features,labels,serving_logs,feedback}}/` and the logs' dead letters: raw values in raw and
features, the keyed hash (HMAC-SHA256, key `{key}`) in the serving logs, the entity's events in labels, the
labels posted for its predictions in feedback. Each affected object is rewritten whole (atomically); a raw
day stays validated. The audit record (who triggered it, Params `reason`, when, every object with its row
counts; the entity only as its keyed hash) is appended to `{audit}`.

Models already trained on the entity's rows are not retrained by this DAG.
"""


def build_erasure_dag(cfg: Pipeline):
    from airflow.sdk import DAG, Param

    from ml_ops.airflow.operators import EraseEntityOperator

    columns = cfg.personal_columns or [c for c in [cfg.features.entity_column] if c]
    with DAG(
        dag_id=f"{cfg.name}_erasure",
        description=f"{cfg.name}: erase every row of one person (manual trigger)",
        schedule=None,
        start_date=datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,  # objects are rewritten whole: one erasure at a time
        tags=["ml-ops", "privacy", cfg.name, *cfg.tags],
        doc_md=ERASURE_DOC.format(
            name=cfg.name,
            columns=", ".join(f"`{c}`" for c in columns) or "no column (set privacy.personal_columns)",
            prefix=cfg.prefix(),
            key=cfg.privacy.key_name,
            audit=layout.erasure_log(cfg.prefix()),
        ),
        params={
            "entity_id": Param(  # required: no default (manual trigger only)
                type="string", minLength=1, maxLength=256, description=f"The id to erase ({', '.join(columns)})"
            ),
            "reason": Param(
                type="string", minLength=1, maxLength=500, description="Why (e.g. the request's ticket; recorded)"
            ),
        },
        default_args=default_args(cfg),
    ) as dag:
        EraseEntityOperator(task_id="erase", pipeline=cfg.name, execution_timeout=timedelta(hours=2))
    return dag


CANARY_DOC = """\
### {name}: canary rollout of a winning challenger

Starts when the training DAG's `announce_canary` task emits Asset `{name}_canary` (promotion.mode: canary), or manually
with Params. The `canary` version takes {steps} % of the serving gateway's traffic step by step; each step
runs {minutes} min, then the judge compares canary and champion on that step's serving logs (error rate,
latency, score distribution) and, once labels arrive, on every labelled prediction since the start (log
loss, ROC-AUC with DeLong's variance): one-sided tests with tolerance bands, critical metrics, a 0-100 score
(pass ≥ {pass_score}, marginal ≥ {marginal_score}). Too little data extends a step up to {ext} times, then
fails. Pass all steps → `champion`; fail → all traffic back to the champion, version tagged `rolled_back`,
alert. Only a version that passed its offline gate (compare decision "promote" against the current
champion) is rolled out, unless Params `force` with a `reason` (recorded in `{decision_log}`,
the version's `canary.forced` tags and the alert). Verdicts: MLflow experiment `{name}-canary` and
`canary.*` tags on the version. State: `{prefix}/deployment/state.json`. One canary at a time.

Undo a promotion with the `{name}_rollback` DAG.
"""


def build_canary_dag(cfg: Pipeline):
    from airflow.sdk import DAG, Asset, Param

    from ml_ops.airflow.operators import CanaryOperator, ReleaseTrafficOperator

    c = cfg.canary
    # Deferred waits count against the timeout too: every step at its longest, plus slack for judging.
    longest = timedelta(minutes=c.step_minutes * (1 + c.max_extensions) * len(c.steps) + 30)
    with DAG(
        dag_id=f"{cfg.name}_canary",
        description=f"{cfg.name}: canary rollout of a winning challenger on the serving gateway",
        schedule=[Asset(name=f"{cfg.name}_canary")] if schedules_mode() != "off" else None,
        start_date=datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,  # one canary per pipeline; the deployment state also refuses a second one
        tags=["ml-ops", "deployment", cfg.name, *cfg.tags],
        doc_md=CANARY_DOC.format(
            name=cfg.name,
            steps=" → ".join(map(str, c.steps)),
            minutes=c.step_minutes,
            pass_score=c.pass_score,
            marginal_score=c.marginal_score,
            ext=c.max_extensions,
            prefix=cfg.prefix(),
            decision_log=layout.decision_log(cfg.prefix()),
        ),
        params={
            "version": Param(
                None,
                type=["null", "integer"],
                minimum=1,
                description="Model version to roll out (default: the version holding the 'canary' alias)",
            ),
            "steps": Param(
                None,
                type=["null", "array"],
                items={"type": "integer", "minimum": 1, "maximum": 100},
                description=f"Traffic percent per step (default {c.steps})",
            ),
            "step_minutes": Param(
                None,
                type=["null", "number"],
                exclusiveMinimum=0,
                description=f"Minutes per step (default {c.step_minutes})",
            ),
            "max_extensions": Param(
                None,
                type=["null", "integer"],
                minimum=0,
                description=f"Extra waits for enough data (default {c.max_extensions})",
            ),
            "min_requests": Param(
                None,
                type=["null", "integer"],
                minimum=10,
                description=f"Requests per side before judging (default {c.min_requests})",
            ),
            "min_labels": Param(
                None,
                type=["null", "integer"],
                minimum=10,
                description=f"Labelled predictions per side before accuracy is judged (default {c.min_labels})",
            ),
            "pass_score": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=100,
                description=f"Judge score that passes a step (default {c.pass_score})",
            ),
            "marginal_score": Param(
                None,
                type=["null", "number"],
                minimum=0,
                maximum=100,
                description=f"Below this a step fails (default {c.marginal_score})",
            ),
            "min_per_class": Param(
                None,
                type=["null", "integer"],
                minimum=2,
                description=f"Labelled positives and negatives per side before log_loss / roc_auc are judged "
                f"(default {c.min_per_class})",
            ),
            "force": Param(
                False,
                type="boolean",
                description="Roll out a version that did not pass its offline gate (needs a reason; recorded in "
                "the decisions log, the version's tags and the alert)",
            ),
            "reason": Param(
                None,
                type=["null", "string"],
                description="Why the rollout is forced (required with force)",
            ),
        },
        default_args={**default_args(cfg), "retries": 1},
    ) as dag:
        rollout = CanaryOperator(task_id="canary", pipeline=cfg.name, execution_timeout=longest)
        # Teardown: whatever ends the rollout (failure, timeout, marked failed), traffic goes back to the champion.
        rollout >> ReleaseTrafficOperator(task_id="release_traffic", pipeline=cfg.name).as_teardown(setups=rollout)
    return dag


def build_rollback_dag(cfg: Pipeline):
    from airflow.sdk import DAG, Param

    from ml_ops.airflow.operators import RollbackOperator

    with DAG(
        dag_id=f"{cfg.name}_rollback",
        description=f"{cfg.name}: put the previous champion back (one manual trigger)",
        schedule=None,
        start_date=datetime.combine(cfg.start_date, datetime.min.time(), tzinfo=timezone.utc),
        catchup=False,
        max_active_runs=1,
        tags=["ml-ops", "deployment", cfg.name, *cfg.tags],
        doc_md=f"### {cfg.name}: rollback\n\nMoves `champion` back to the previous holder recorded in the "
        f"`champion_history` tag, ending a running canary first. Param `reason` is recorded and alerted.",
        params={"reason": Param("manual rollback", type="string", minLength=1, description="Why (recorded in MLflow)")},
        default_args={**default_args(cfg), "retries": 0},
    ) as dag:
        RollbackOperator(task_id="rollback", pipeline=cfg.name)
    return dag


def build_pipeline_dags(cfg: Pipeline) -> dict:
    dags = [
        build_training_dag(cfg),
        build_monitoring_dag(cfg),
        build_canary_dag(cfg),
        build_rollback_dag(cfg),
    ]
    if cfg.personal_columns or cfg.features.entity_column:  # a pipeline without people has nothing to erase
        dags.append(build_erasure_dag(cfg))
    return {dag.dag_id: dag for dag in dags}


def build_all(paths: list[Path] | None = None) -> dict:
    """DAGs of every pipeline YAML. A broken YAML is logged with the field that is wrong and left
    out, so one bad file does not take the other pipelines off the scheduler; the DAG integrity
    test and ``python -m ml_ops.config`` fail on it."""
    dags: dict = {}
    for path in paths if paths is not None else pipeline_files():
        try:
            dags.update(build_pipeline_dags(load_pipeline(path)))
        except ConfigError as exc:
            log.error("pipeline %s not loaded:\n%s", path, exc)
    return dags
