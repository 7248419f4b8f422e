"""Typed pipeline configuration loaded from ``include/pipelines/<name>.yaml``.

One YAML file is one model. Validation errors name the file and the field, e.g.
``fraud.yaml: promotion.floors.roc_auc: Input should be a valid number``.
"""

from __future__ import annotations

import os
from datetime import date
from pathlib import Path
from typing import Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from ml_ops import layout

REPO_ROOT = Path(__file__).resolve().parent.parent
METRICS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "log_loss")


def include_dir() -> Path:
    """Folder holding pipelines/, sql/ and expectations/ (override with MLOPS_INCLUDE_DIR)."""
    return Path(os.environ.get("MLOPS_INCLUDE_DIR", REPO_ROOT / "include"))


class _Strict(BaseModel):
    # A typo in a YAML key must be an error, not a silently ignored setting.
    model_config = ConfigDict(extra="forbid", frozen=True)


class Source(_Strict):
    conn_id: str = Field(description="Airflow connection of the source database")
    sql: str = Field(description="SQL file under include/, using bound parameters :start and :end")
    table: str | None = None
    timestamp_column: str
    id_column: str
    late_rows_days: int = Field(
        3, ge=0, le=60, description="earlier days re-counted at each extract for rows that arrived after them"
    )
    late_rows: Literal["report", "reextract"] = Field(
        "report", description="report: record and warn; reextract: also rewrite, re-validate and rebuild that day"
    )

    @field_validator("sql")
    @classmethod
    def _sql_file_exists(cls, value: str) -> str:
        if not (include_dir() / value).is_file():
            raise ValueError(f"SQL file not found: {include_dir() / value}")
        from ml_ops.pipeline import sql

        try:
            sql.check((include_dir() / value).read_text())
        except ValueError as exc:
            raise ValueError(f"{value}: {exc}") from None
        return value


class Validation(_Strict):
    suite: str = Field(description="Great Expectations suite JSON under include/")
    stats_columns: list[str] = Field(
        [],
        description="columns whose null share and mean are compared with recent days (default: the suite's "
        "meta.ml_ops_stats_columns); the suite's label and categorical columns are compared in any case and are "
        "appended to a non-empty list, since the validate step reads only these columns of past days",
    )
    history_days: int = Field(7, ge=0, description="recent partitions the day's statistics are compared with")
    max_mean_shift_sigma: float = Field(6.0, gt=0)

    @field_validator("suite")
    @classmethod
    def _suite_exists(cls, value: str) -> str:
        if not (include_dir() / value).is_file():
            raise ValueError(f"expectation suite not found: {include_dir() / value}")
        return value

    @model_validator(mode="before")
    @classmethod
    def _with_suite_columns(cls, data):
        """A YAML list narrows the null-share and mean checks, not the label and categorical ones: append those
        columns so that the step loads them from past days."""
        listed = data.get("stats_columns") if isinstance(data, dict) else None
        if not listed or not isinstance(listed, list) or not isinstance(data.get("suite"), str):
            return data
        extra = cls.suite_compared_columns(include_dir() / data["suite"])
        return {**data, "stats_columns": list(dict.fromkeys([*listed, *extra]))}

    @staticmethod
    def suite_compared_columns(path: Path) -> list[str]:
        """The suite's label and categorical columns: the rule of ml_ops.pipeline.validate.stats
        (always_compared_columns, which a test holds this to), read here without pandas at DAG parse time.
        Label: meta.ml_ops_label_column, else the one column whose allowed values are exactly {0, 1}.
        Categorical: meta.ml_ops_categorical_columns plus every column whose allowed-value set holds text."""
        import json

        try:
            suite = json.loads(Path(path).read_text())
            meta = suite.get("meta") or {}
            sets: dict[str, list] = {}
            for exp in suite.get("expectations") or []:
                kwargs = exp.get("kwargs") or {}
                if exp.get("type") == "expect_column_values_to_be_in_set" and isinstance(kwargs.get("value_set"), list):
                    sets.setdefault(kwargs.get("column"), []).extend(kwargs["value_set"])
            label = meta.get("ml_ops_label_column")
            if not (isinstance(label, str) and label):
                binary = [c for c, v in sets.items() if len(v) == 2 and set(v) == {0, 1}]
                label = binary[0] if len(binary) == 1 else None
            text = [c for c, v in sets.items() if any(isinstance(x, bool) or not isinstance(x, int | float) for x in v)]
            categorical = [c for c in [*(meta.get("ml_ops_categorical_columns") or []), *text] if c != label]
        except (OSError, ValueError, TypeError, AttributeError):
            return []  # a missing or broken suite is reported by _suite_exists, or by load_suite when the step runs
        return [c for c in dict.fromkeys([label, *categorical]) if isinstance(c, str)]


class Features(_Strict):
    entity_column: str | None = Field(None, description="per-entity history features (e.g. customer_id)")
    amount_column: str | None = None
    lookback_days: int = Field(7, ge=0, le=60)
    numeric: list[str]
    categorical: list[str] = Field(
        [], description="columns of any type, used as text categories (the integer 3 and the text '3' are one category)"
    )
    time_parts: list[Literal["hour_of_day", "day_of_week"]] = Field(
        [], description="parts of the timestamp added as model inputs (opt-in; see README: derived features)"
    )

    @model_validator(mode="after")
    def _history_needs_amount(self) -> Features:
        if (self.entity_column is None) != (self.amount_column is None):
            raise ValueError("entity_column and amount_column go together (both set or both empty)")
        return self


class Target(_Strict):
    column: str
    label_delay_days: int = Field(ge=0, description="days until a label is known")
    label_available_column: str | None = Field(
        None, description="when each label became known; rows labelled after the run's end are not used"
    )


class Labels(_Strict):
    """Labels that arrive on their own, after the event (``ml_ops.pipeline.labels``): rows of a labels table
    (chargebacks, reviews) read with bound SQL, and/or the labels posted to the serving gateway. The labels
    task joins them to each event day's features; training and monitoring then read ``labels/ds=<day>/``
    instead of the label in the source row (``target.label_available_column`` is not used)."""

    conn_id: str | None = Field(None, description="Airflow connection of the labels database (default: source.conn_id)")
    sql: str | None = Field(
        None,
        description="SQL file under include/ returning (id, label, labelled_at) for the labels that became known "
        "in [:start, :end) (bound over the label time, like the extract's SQL over the event time)",
    )
    id_column: str | None = Field(
        None, description="column of the query holding the event's id (default: source.id_column)"
    )
    label_column: str | None = Field(
        None, description="column of the query holding the 0/1 label (default: target.column)"
    )
    labelled_at_column: str = Field("labelled_at", description="column of the query: when the label became known (UTC)")
    trailing_days: int = Field(
        35,
        ge=1,
        le=400,
        description="event days (up to the run's day) re-joined at every run, since labels trickle in; a label "
        "for an older event is counted as unmatched",
    )
    feedback: bool = Field(
        False,
        description="also use the labels posted to the gateway (feedback), joined through the serving logs to the "
        "id column the request sent",
    )

    @field_validator("sql")
    @classmethod
    def _sql_file_exists(cls, value: str | None) -> str | None:
        return None if value is None else Source._sql_file_exists(value)

    @model_validator(mode="after")
    def _has_a_source(self) -> Labels:
        if self.sql is None and not self.feedback:
            raise ValueError("labels need a source: an sql file, feedback: true, or both")
        return self


class Model(_Strict):
    estimator: str = Field(description="import path of a scikit-learn classifier")
    params: dict = {}

    @field_validator("estimator")
    @classmethod
    def _dotted(cls, value: str) -> str:
        if "." not in value:
            raise ValueError("must be an import path like sklearn.ensemble.HistGradientBoostingClassifier")
        return value


class Training(_Strict):
    window_days: int = Field(ge=1, description="labelled days trained on")
    holdout_days: int = Field(ge=1, description="most recent labelled days, scored by both models, never trained on")
    min_rows: int = Field(200, ge=1)
    seed: int = 0


class Promotion(_Strict):
    mode: Literal["direct", "canary"] = Field(
        "direct", description="direct: a winner becomes champion; canary: a winner becomes a canary first"
    )
    primary_metric: Literal[METRICS] = "roc_auc"  # type: ignore[valid-type]
    floors: dict[str, float] = {}
    min_improvement: dict[str, float] = {}
    require_significant: bool = True
    bootstrap_samples: int = Field(1000, ge=100)
    confidence: float = Field(0.95, gt=0.5, lt=1)

    @field_validator("floors", "min_improvement")
    @classmethod
    def _known_metrics(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(METRICS))
        if unknown:
            raise ValueError(f"unknown metric(s) {unknown}; known: {list(METRICS)}")
        return value


class Alerts(_Strict):
    email: list[str] = []
    email_conn_id: str = "smtp_default"
    slack_conn_id: str | None = Field("slack_alerts", description="Slack incoming-webhook connection")
    on_decision: bool = True


class Monitoring(_Strict):
    """Nightly drift and quality monitoring (the drift DAG)."""

    schedule: str | None = Field("0 2 * * *", description="cron of the nightly drift DAG")
    columns: list[str] = Field([], description="columns checked for drift; default: the model's input columns")
    false_alarm_rate: float = Field(0.05, gt=0, lt=0.5, description="share of no-drift days allowed to alarm")
    min_effect: float = Field(
        0.1, ge=0, description="smallest shift worth an alarm (std units / category share), whatever the row count"
    )
    max_sample_rows: int = Field(50_000, ge=1000, description="rows sampled per side before testing")
    quality_drop: float = Field(0.05, ge=0, description="alarm when the champion's daily ROC-AUC falls this much")
    retrain_cooldown_days: int = Field(7, ge=0, description="an alarm triggers at most one retrain per N days")
    on_missing_data: Literal["skip", "fail"] = "skip"
    skew_threshold: float = Field(
        0.01,
        ge=0,
        le=1,
        description="training/serving skew alarm: share of the day's raw-event predictions whose served derived "
        "feature differs from the batch recomputation, on any feature (ml_ops.monitoring.skew)",
    )


class Serving(_Strict):
    """How the serving gateway exposes this pipeline's model."""

    routing_key: str | None = Field(
        None, description="input column hashed for sticky routing (default: features.entity_column)"
    )
    require_token: bool = Field(False, description="prediction routes need the gateway's bearer token")
    feedback_requires_token: bool = Field(
        True,
        description="POST /pipelines/<p>/feedback needs the gateway's bearer token (labels decide canaries); "
        "false opens it to any caller (labels are still accepted only for request ids the gateway served)",
    )
    client_routing_key: bool = Field(
        False,
        description="honour the X-Routing-Key header (the caller then chooses its side of a canary); "
        "by default rows are routed by the routing_key column, else the request id",
    )
    max_batch_rows: int = Field(1000, ge=1, le=100_000, description="rows per request; more gets 413")
    input: Literal["model", "raw"] = Field(
        "model",
        description="what a prediction request without an X-Input header sends: model (the model's inputs, "
        "computed by the client) or raw (the source's columns without the label; the gateway computes the derived "
        "features from its online store, MLOPS_ONLINE_STORE)",
    )
    gateway_conn_id: str = Field(
        "mlops_gateway",
        description="HTTP connection of the gateway (password: admin token); the canary DAG flushes logs",
    )


class Retention(_Strict):
    """Days each stored prefix keeps its day partitions, counted back from the day the retention task runs for
    (null: kept forever). Enforced daily by the monitoring DAG's ``retention`` task (``ml_ops.privacy``)."""

    serving_logs: int | None = Field(90, ge=1, description="gateway prediction logs (and their dead letters)")
    feedback: int | None = Field(90, ge=1, description="labels posted to the gateway (and their dead letters)")
    raw: int | None = Field(365, ge=1, description="extracted source rows, with their validation reports")
    features: int | None = Field(365, ge=1, description="feature partitions")
    labels: int | None = Field(365, ge=1, description="joined labels (pipelines with a labels: section)")


class Privacy(_Strict):
    """Personal data in what the pipeline stores (``ml_ops.privacy``)."""

    personal_columns: list[str] = Field(
        [],
        description="columns that identify a person (e.g. customer_id): stored in the gateway's prediction logs "
        "as keyed hashes (HMAC-SHA256), matched by the erasure DAG; never a model input",
    )
    key_name: str = Field(
        "MLOPS_PRIVACY_KEY",
        pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,127}$",
        description="environment variable (or Airflow Variable) holding the HMAC key",
    )
    retention_days: Retention = Retention()


class CanaryMetric(_Strict):
    """One judged metric: canary vs champion, Kayenta style (ml_ops.rollout.judge)."""

    direction: Literal["increase", "decrease", "either"] = Field(
        description="which change is bad: increase (latency, log_loss), decrease (roc_auc), either (score shift)"
    )
    tolerance: float = Field(
        ge=0,
        description="change allowed before the metric can fail: absolute for rates (error_rate, accuracy) and "
        "areas (roc_auc, pr_auc), relative for latency_ms and log_loss, |P(canary > champion) - 0.5| for score",
    )
    critical: bool = Field(False, description="a failure of this metric fails the canary outright")
    weight: float = Field(1.0, gt=0)


def _default_canary_metrics() -> dict[str, CanaryMetric]:
    # Names and semantics are those of ml_ops.rollout.judge.METRICS; calibration in bench/RESULTS_canary_judge.md.
    return {
        "error_rate": CanaryMetric(direction="increase", tolerance=0.01, critical=True),
        "latency_ms": CanaryMetric(direction="increase", tolerance=0.10, critical=True),
        # Effect size, not a relative shift (fraud scores sit near 0.01): 0.2 flags a gross change of the
        # score distribution (about x10 on fraud-like scores, an inverted or constant model) but lets a
        # retrained model's honest shift through (0.1 rolled back a better challenger trained on twice
        # the data, A = 0.63). Weight 0.5 keeps a score-only failure "marginal", never an outright fail.
        "score": CanaryMetric(direction="either", tolerance=0.20, weight=0.5),
        # Quality on labelled predictions. Accuracy at 0.5 is ~98 % for any model at a 2 % base rate, so it
        # is judged only where configured; a proper scoring rule and a ranking metric instead.
        "log_loss": CanaryMetric(direction="increase", tolerance=0.20, critical=True),
        "roc_auc": CanaryMetric(direction="decrease", tolerance=0.01, critical=True),
    }


class Canary(_Strict):
    """Gradual rollout of a winning challenger (promotion.mode: canary) on the serving gateway."""

    steps: list[int] = Field([10, 25, 50, 100], description="percent of traffic on the canary, step by step")
    step_minutes: float = Field(10.0, gt=0, description="minimum time each step runs before it is judged")
    max_extensions: int = Field(3, ge=0, description="extra step lengths waited for enough data before failing")
    min_requests: int = Field(200, ge=10, description="requests per side a step needs before it is judged")
    min_labels: int = Field(
        200, ge=10, description="labelled predictions per side before a label-based metric is judged"
    )
    min_per_class: int = Field(
        30,
        ge=2,
        description="labelled positives and negatives per side before log_loss, roc_auc and pr_auc are judged "
        "(the rare class makes their variance; fewer and the normal approximation misleads)",
    )
    # 0.95, not 0.99: the tolerance bands, not alpha, keep equal models from failing (whole canaries: 0.8-3.8 %
    # false rollbacks, bench/RESULTS_canary_judge.md); 0.99 was slower to catch real regressions.
    confidence: float = Field(
        0.95,
        gt=0.5,
        lt=1,
        description="one-sided confidence of each metric's test ('either' splits it over both directions)",
    )
    pass_score: float = Field(95, ge=0, le=100, description="judge score at or above which a step passes")
    marginal_score: float = Field(75, ge=0, le=100, description="below this a step fails; in between it is extended")
    metrics: dict[str, CanaryMetric] = Field(
        default_factory=_default_canary_metrics,
        description="judged metrics by name: error_rate, latency_ms, score, log_loss, roc_auc, pr_auc, accuracy "
        "(accuracy: at the score threshold 0.5; only where configured)",
    )

    @field_validator("steps")
    @classmethod
    def _increasing_percent(cls, value: list[int]) -> list[int]:
        if not value or any(not 0 < v <= 100 for v in value) or value != sorted(set(value)):
            raise ValueError("must be increasing percentages in (0, 100], e.g. [10, 25, 50, 100]")
        return value


class Pipeline(_Strict):
    name: str = Field(pattern=r"^[a-z][a-z0-9_]{1,40}$")
    description: str = ""
    owner: str = "ml-team"
    schedule: str | None = "@daily"
    start_date: date
    tags: list[str] = []
    source: Source
    validation: Validation
    features: Features
    target: Target
    labels: Labels | None = None
    model: Model
    training: Training
    promotion: Promotion = Promotion()
    alerts: Alerts = Alerts()
    monitoring: Monitoring = Monitoring()
    serving: Serving = Serving()
    canary: Canary = Canary()
    privacy: Privacy = Privacy()
    bucket: str = Field(default_factory=lambda: os.environ.get("MLOPS_BUCKET", "mlops"))
    aws_conn_id: str = "aws_default"
    mlflow_conn_id: str = "mlflow_default"

    @model_validator(mode="after")
    def _personal_columns_are_not_inputs(self) -> Pipeline:
        personal = set(self.privacy.personal_columns)
        inputs = {
            "features.numeric": self.features.numeric,
            "features.categorical": self.features.categorical,
            "source.id_column": [self.source.id_column],  # joins feedback to events: kept clear
            "target.column": [self.target.column],
        }
        for field, columns in inputs.items():
            clash = [c for c in columns if c in personal]
            if clash:
                what = "joins feedback to served events" if field == "source.id_column" else "is a model input"
                raise ValueError(
                    f"privacy.personal_columns: {clash} named in {field}, which {what}; a personal column is "
                    f"stored hashed and cannot be one (remove it from {field} or from privacy.personal_columns)"
                )
        r, needed = self.privacy.retention_days, self.training_days_needed
        for stage in ("raw", "features", "labels"):
            days = getattr(r, stage)
            if days is not None and days < needed:
                raise ValueError(
                    f"privacy.retention_days.{stage}: {days} days is less than the {needed} days training and "
                    "validation read (training window + holdout + label delay + feature lookback + validation history)"
                )
        if self.labels is not None and self.labels.feedback:
            for stage in ("serving_logs", "feedback"):
                days = getattr(r, stage)
                if days is not None and days < self.labels.trailing_days:
                    raise ValueError(
                        f"privacy.retention_days.{stage}: {days} days is less than labels.trailing_days "
                        f"({self.labels.trailing_days}): feedback would expire before its labels are joined"
                    )
        return self

    @property
    def training_days_needed(self) -> int:
        """Days of raw/features/labels history the steps read back from a run's day."""
        t = self.training
        return (
            t.window_days
            + t.holdout_days
            + self.target.label_delay_days
            + self.features.lookback_days
            + self.validation.history_days
            + 1
        )

    @property
    def personal_columns(self) -> list[str]:
        return list(self.privacy.personal_columns)

    @property
    def feature_columns(self) -> list[str]:
        return [*self.features.numeric, *self.features.categorical]

    @property
    def generated_features(self) -> list[str]:
        """Model inputs derived from the source columns: per-entity history, then the declared time parts."""
        from ml_ops.pipeline.features import feature_columns

        return feature_columns(self.features.entity_column, self.features.amount_column, self.features.time_parts)

    @property
    def routing_key(self) -> str | None:
        return self.serving.routing_key or self.features.entity_column

    def sql_text(self) -> str:
        return (include_dir() / self.source.sql).read_text()

    def suite_path(self) -> Path:
        return include_dir() / self.validation.suite

    def prefix(self) -> str:
        return layout.pipeline_prefix(self.bucket, self.name)


class ConfigError(ValueError):
    """A pipeline YAML that cannot be used; the message names the file and the field."""


def load_pipeline(path: str | Path) -> Pipeline:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path.name}: not valid YAML: {exc}") from exc
    if not isinstance(raw, dict):
        raise ConfigError(f"{path.name}: expected a mapping at the top level")
    raw.setdefault("name", path.stem)
    try:
        return Pipeline.model_validate(raw)
    except ValidationError as exc:
        lines = [
            f"{path.name}: {'.'.join(str(p) for p in err['loc']) or '<root>'}: {err['msg']}" for err in exc.errors()
        ]
        raise ConfigError("\n".join(lines)) from None


def pipeline_files() -> list[Path]:
    return sorted((include_dir() / "pipelines").glob("*.yaml"))


def load_pipeline_by_name(name: str) -> Pipeline:
    path = include_dir() / "pipelines" / f"{name}.yaml"
    if not path.is_file():
        raise ConfigError(f"no pipeline {name!r}: {path} does not exist")
    return load_pipeline(path)


# --------------------------------------------------------------------------- mlops config check

_STACK_CONNECTIONS = ("source_db",)  # connections the embedded stack defines (ml_ops.local.stack_env)


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0]}"


def source_engine(conn_id: str) -> tuple[object, str]:
    """(SQLAlchemy engine, where it came from) for an Airflow connection: ``AIRFLOW_CONN_<ID>`` or the embedded
    stack's source database as the dry run finds them (``ml_ops.pipeline.dry_run``), else Airflow's secrets
    backends and metadata DB (``Connection.get_connection_from_secrets``, as ``airflow connections get``).
    LookupError when none has it."""
    from ml_ops.pipeline.dry_run import DryRunError, _engine

    var = f"AIRFLOW_CONN_{conn_id.upper()}"
    try:
        if os.environ.get(var) or conn_id in _STACK_CONNECTIONS:
            try:
                return _engine(conn_id)
            except DryRunError:
                pass  # no embedded source database: Airflow's metadata DB may still have the connection
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Airflow's deprecation notices about its own hook lookup
            from airflow.models.connection import Connection

            engine = Connection.get_connection_from_secrets(conn_id).get_hook().get_sqlalchemy_engine()
    except Exception as exc:  # noqa: BLE001 - whatever the reason, the live check cannot run
        raise LookupError(
            f"connection {conn_id!r} not resolved ({var} or Airflow's metadata DB): {_reason(exc)}"
        ) from None
    return engine, f"connection {conn_id!r} from Airflow's metadata DB / secrets backends"


def query_columns(engine, sql: str) -> list[str]:
    """The columns ``sql`` returns, run as extract runs it (``ml_ops.pipeline.sql.prepare``, the interval bound
    as timezone-aware datetimes converted the extract's way) inside a wrapper that returns no rows, as the
    late-rows count wraps it. ``SourceQueryError`` names what the database rejected (table, column, syntax)."""
    from sqlalchemy import text

    from ml_ops.interval import DayInterval
    from ml_ops.pipeline.extract import _naive_utc, _named_source_errors
    from ml_ops.pipeline.sql import prepare

    day = DayInterval.for_day(date.today())
    query = f"SELECT * FROM ({prepare(sql).rstrip(';')}) AS config_check WHERE 1 = 0"
    with _named_source_errors(), engine.connect() as conn:
        return list(conn.execute(text(query), {"start": _naive_utc(day.start), "end": _naive_utc(day.end)}).keys())


def _named_columns(cfg: Pipeline) -> dict[str, list[str]]:
    """YAML field -> the columns it names that the extract query must return."""
    src, feats = cfg.source, cfg.features
    fields = {
        "source.timestamp_column": [src.timestamp_column],
        "source.id_column": [src.id_column],
        "features.entity_column": [feats.entity_column],
        "features.amount_column": [feats.amount_column],
        "features.numeric": feats.numeric,
        "features.categorical": feats.categorical,
    }
    if cfg.labels is None:  # with a labels: section the label comes from the labels query, not the source row
        fields["target.column"] = [cfg.target.column]
        fields["target.label_available_column"] = [cfg.target.label_available_column]
    return {field: [c for c in cols if c] for field, cols in fields.items()}


def _labels_columns(cfg: Pipeline) -> dict[str, list[str]]:
    lc = cfg.labels
    return {
        "labels.id_column" + ("" if lc.id_column else " (default: source.id_column)"): [
            lc.id_column or cfg.source.id_column
        ],
        "labels.label_column" + ("" if lc.label_column else " (default: target.column)"): [
            lc.label_column or cfg.target.column
        ],
        "labels.labelled_at_column": [lc.labelled_at_column],
    }


def live_check(cfg: Pipeline) -> list[tuple[str, str]]:
    """Run the extract query (and the labels query) on its connection with no rows, and check it returns every
    column the YAML names. Returns (level, message) lines: ok, warn (the connection cannot be resolved or
    reached: nothing is known), error (the query fails, or a named column is missing)."""
    from ml_ops.pipeline.extract import SourceQueryError

    queries = [("source.sql", cfg.source.sql, cfg.source.conn_id, _named_columns(cfg))]
    if cfg.labels is not None and cfg.labels.sql:
        queries.append(("labels.sql", cfg.labels.sql, cfg.labels.conn_id or cfg.source.conn_id, _labels_columns(cfg)))
    lines = []
    for field, sql_file, conn_id, named in queries:
        where = f"{sql_file} (pipeline {cfg.name!r}, {field})"
        try:
            engine, source = source_engine(conn_id)
        except LookupError as exc:
            lines.append(("warn", f"{where} not run (bound parameters checked only; --offline skips this): {exc}"))
            continue
        try:
            returned = query_columns(engine, (include_dir() / sql_file).read_text())
        except SourceQueryError as exc:
            lines.append(("error", f"{where} on {source}: {exc}"))
            continue
        except Exception as exc:  # noqa: BLE001 - the database cannot be reached: not the YAML's fault
            lines.append(("warn", f"{where} not run: {source} unreachable: {_reason(exc)}"))
            continue
        missing = {f: [c for c in cols if c not in returned] for f, cols in named.items()}
        for f, cols in missing.items():
            if cols:
                lines.append(("error", f"{f}: column(s) {cols} not returned by {where}; it returns {returned}"))
        if not any(missing.values()):
            lines.append(("ok", f"{where} runs on {source} and returns every column the YAML names"))
    return lines


def main(argv: list[str] | None = None, prog: str = "python -m ml_ops.config") -> int:
    """``mlops config check [--offline] [FILE...]``: validate pipeline YAMLs (default: all of them), then run
    their SQL on the source with no rows (``live_check``) unless ``--offline``. Exit 1 when any has an error."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=prog,
        description="Validate pipeline YAMLs: fields, files, the SQL's bound parameters (:start, :end), then a "
        "dry run of the SQL on the pipeline's connection returning no rows, which must name every column the YAML "
        "does. A connection that cannot be resolved is a warning; the static checks still run.",
    )
    parser.add_argument("files", nargs="*", metavar="FILE", help="pipeline YAMLs (default: include/pipelines/*.yaml)")
    parser.add_argument("--offline", action="store_true", help="static checks only: do not run the SQL")
    args = parser.parse_args(argv)
    failed = 0
    for path in [Path(p) for p in args.files] or pipeline_files():
        try:
            cfg = load_pipeline(path)
        except ConfigError as exc:
            failed += 1
            print(f"error {exc}")
            continue
        print(f"ok    {path.name}: pipeline {cfg.name!r}, DAG {cfg.name}_training")
        for level, message in [] if args.offline else live_check(cfg):
            failed += level == "error"
            print(f"{level:<5} {path.name}: {message}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
