"""Every name the pipelines share with the outside world, defined once.

Registry aliases, MLflow experiment and artifact names, and the S3 key pattern of every object a
pipeline writes. The gateway, the operators, the plugin and monitoring all build their names here, so
moving a prefix or renaming an alias is a change of one line. Airflow-free and import-light.

S3 layout under ``s3://<bucket>/pipelines/<pipeline>/`` (the pipeline's *prefix*)::

    raw/ds=YYYY-MM-DD/data.parquet                       extract
    raw/late_rows.jsonl                                  rows that arrived after their day was extracted
    validation/ds=YYYY-MM-DD/{result.json,report.html}   validate
    validation/ds=YYYY-MM-DD/validated.json              the day passed (names the raw object's ETag)
    validation/quarantine.jsonl                          rejected days, and their release once fixed
    features/ds=YYYY-MM-DD/data.parquet                  features
    labels/ds=YYYY-MM-DD/data.parquet                    labels (labels: set): the day's events' labels so far
    labels/ds=YYYY-MM-DD/labels.json                     how many rows are labelled, how many labels were corrected
    labels/unmatched.jsonl                               per run: labels whose id is in no features partition
    decisions/log.jsonl                                  champion/challenger decisions (append-only)
    deployment/state.json                                traffic split (canary DAG writes, gateway reads)
    serving_logs/ds=YYYY-MM-DD/hour=HH/part-*.parquet    every prediction (gateway)
    feedback/ds=YYYY-MM-DD/hour=HH/part-*.parquet        labels posted to the gateway
    dead_letter/<log>/ds=YYYY-MM-DD/hour=HH/part-*.jsonl gateway log rows that could not be written as
                                                         parquet, one JSON line each with the reason
    drift/ds=YYYY-MM-DD/{report.html,result.json}        nightly monitoring
    drift/retrain_log.jsonl                              retrain requests (cooldown)
    privacy/erasure_log.jsonl                            erasures of one entity: who, why, objects, row counts
    privacy/retention_log.jsonl                          retention runs: partitions deleted per prefix

A dry run (``mlops pipeline dry-run``) writes the same layout under the pipeline's *scratch prefix*
``s3://<bucket>/scratch/dry-run/<pipeline>/``, never under ``pipelines/``.
"""

from __future__ import annotations

import re

# --------------------------------------------------------------------------- MLflow registry aliases
CHAMPION = "champion"  # serves the traffic; the monitoring DAG watches it
CHALLENGER = "challenger"  # the newest trained version, until it is compared
CANARY = "canary"  # under a canary rollout on the gateway
ROUTES = (CHAMPION, CANARY)  # the gateway's routes, logged per prediction

# --------------------------------------------------------------------------- MLflow names
REFERENCE_ARTIFACT = "reference/reference.parquet"  # training sample logged with each version


def training_experiment(pipeline: str) -> str:
    return pipeline


def monitoring_experiment(pipeline: str) -> str:
    return f"{pipeline}-monitoring"


def canary_experiment(pipeline: str) -> str:
    return f"{pipeline}-canary"


# --------------------------------------------------------------------------- S3 keys
PIPELINES_ROOT = "pipelines"

# Day-partitioned stages: <prefix>/<stage>/ds=<day>/<file>
RAW = "raw"
VALIDATION = "validation"
FEATURES = "features"
LABELS = "labels"  # labels of each event day, re-joined as they arrive (pipelines with labels:)
DRIFT = "drift"
# Hour-partitioned logs written by the gateway: <prefix>/<stage>/ds=<day>/hour=<hh>/part-*.parquet
SERVING_LOGS = "serving_logs"
FEEDBACK = "feedback"
DEAD_LETTER = "dead_letter"  # <prefix>/dead_letter/<stage>/ds=<day>/hour=<hh>/part-*.jsonl
PRIVACY = "privacy"  # audit logs of erasures and retention (ml_ops.privacy); never itself expired

DATA_FILE = "data.parquet"
RESULT_FILE = "result.json"
REPORT_FILE = "report.html"
VALIDATED_MARKER = "validated.json"  # in validation/ds=<day>/: the day passed, for the raw bytes it names
LABELS_SUMMARY = "labels.json"  # in labels/ds=<day>/: rows labelled so far, corrections, as of which run

# Stages whose reports the Airflow plugin's report route may serve.
REPORT_STAGES = (VALIDATION, DRIFT)


def pipeline_key(pipeline: str) -> str:
    """Key prefix of a pipeline inside its bucket (no scheme, no bucket)."""
    return f"{PIPELINES_ROOT}/{pipeline}"


def pipeline_prefix(bucket: str, pipeline: str) -> str:
    return f"s3://{bucket}/{pipeline_key(pipeline)}"


DRY_RUN_ROOT = "scratch/dry-run"  # outside PIPELINES_ROOT: nothing that reads a live pipeline lists it


def dry_run_key(pipeline: str) -> str:
    """Key prefix of a pipeline's dry runs inside its bucket (no scheme, no bucket)."""
    return f"{DRY_RUN_ROOT}/{pipeline}"


def dry_run_prefix(bucket: str, pipeline: str) -> str:
    """``s3://<bucket>/scratch/dry-run/<pipeline>``: a dry run's stand-in for ``pipeline_prefix``."""
    return f"s3://{bucket}/{dry_run_key(pipeline)}"


def stage_prefix(prefix: str, stage: str) -> str:
    """``<prefix>/<stage>`` (no trailing slash); list it with a trailing ``/``."""
    return f"{prefix.rstrip('/')}/{stage}"


def partition(prefix: str, stage: str, ds: str, filename: str = DATA_FILE) -> str:
    """``<prefix>/<stage>/ds=<ds>/<filename>``; ``prefix`` may be an ``s3://`` URI or a bare key."""
    return f"{stage_prefix(prefix, stage)}/ds={ds}/{filename}"


def day_prefix(prefix: str, stage: str, ds: str) -> str:
    """``<prefix>/<stage>/ds=<ds>/``: every object of one day of an hour-partitioned stage."""
    return f"{stage_prefix(prefix, stage)}/ds={ds}/"


def hourly_part(stage_uri: str, ds: str, hour: int, name: str) -> str:
    """``<stage_uri>/ds=<ds>/hour=<hh>/<name>`` (serving logs and feedback)."""
    return f"{stage_uri}/ds={ds}/hour={hour:02d}/{name}"


def dead_letter_prefix(stage_uri: str) -> str:
    """Where rows of an hour-partitioned log that cannot be written go: ``<stage_uri>`` is
    ``<prefix>/<stage>``, its dead letters are under ``<prefix>/dead_letter/<stage>`` (a sibling of the
    stage, so readers of the stage never list them)."""
    parent, _, stage = stage_uri.rstrip("/").rpartition("/")
    return f"{parent}/{DEAD_LETTER}/{stage}"


def day_of(uri: str) -> str:
    """The ``YYYY-MM-DD`` of a partition URI (``.../ds=<day>/...``)."""
    return uri.split("ds=", 1)[1][:10]


def decision_log(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/decisions/log.jsonl"


def deployment_state(prefix: str) -> str:
    return f"{prefix.rstrip('/')}/deployment/state.json"


def late_rows_log(prefix: str) -> str:
    """Rows that reached the source after their day was extracted, per day and count."""
    return f"{stage_prefix(prefix, RAW)}/late_rows.jsonl"


def quarantine_log(prefix: str) -> str:
    """Days whose validation failed (and their release once fixed), append-only."""
    return f"{stage_prefix(prefix, VALIDATION)}/quarantine.jsonl"


def unmatched_labels_log(prefix: str) -> str:
    """Per labels run: labels whose id is in no features partition of its window (too late, or unknown)."""
    return f"{stage_prefix(prefix, LABELS)}/unmatched.jsonl"


def retrain_log(prefix: str) -> str:
    return f"{stage_prefix(prefix, DRIFT)}/retrain_log.jsonl"


def erasure_log(prefix: str) -> str:
    """Append-only audit of erasures (``ml_ops.privacy.erase_entity``): who, why, when, objects and rows."""
    return f"{stage_prefix(prefix, PRIVACY)}/erasure_log.jsonl"


def retention_log(prefix: str) -> str:
    """Append-only audit of retention runs (``ml_ops.privacy.enforce_retention``): partitions deleted."""
    return f"{stage_prefix(prefix, PRIVACY)}/retention_log.jsonl"


# A report key the plugin's route serves: pipelines/<p>/<validation|drift>/ds=<day>/<file>.<html|json>
REPORT_KEY = re.compile(
    rf"^{PIPELINES_ROOT}/(?P<pipeline>[a-z][a-z0-9_]{{1,40}})/(?P<stage>{'|'.join(REPORT_STAGES)})/"
    r"ds=\d{4}-\d{2}-\d{2}/(?P<file>[A-Za-z0-9_][A-Za-z0-9_.-]{0,100})\.(?P<ext>html|json)$"
)
