"""Train a tabular binary classifier, log everything to MLflow and register it as "challenger".

Airflow-free: DataFrames and plain values in, a `TrainResult` out.

Serving contract: the registered model is a small pyfunc wrapper (`ScoreModel`) around the fitted
sklearn Pipeline, so `mlflow.pyfunc.load_model(uri).predict(df)` returns a 1-D float array with the
positive-class probability (the fraud score). `pyfunc_predict_fn="predict_proba"` on the sklearn
flavor would return an (n, 2) array instead. The wrapper class is pickled *by value*, so loading
the model needs only the pinned pip requirements, not this package. The sklearn Pipeline itself is
available as `mlflow.pyfunc.load_model(uri).unwrap_python_model().pipeline`.

Threshold metrics (f1, precision, recall) use `SCORE_THRESHOLD = 0.5` on that score.

Categorical inputs are cast to text (``ml_ops.scoring.as_category_text``) before fitting and in every frame
logged with the model (reference sample, signature example), so the one-hot categories are text and the
signature declares those columns ``string``: an integer column listed under ``features.categorical`` is a
column of labels. Errors in building or fitting the model name the pipeline's YAML field and the column.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import json
import os
import sys
import tempfile
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import mlflow
import mlflow.pyfunc
import numpy as np
import pandas as pd
from mlflow import MlflowClient
from mlflow.entities import Metric, Param
from mlflow.exceptions import MlflowException
from mlflow.tracking.context import registry as run_context
from sklearn.base import is_classifier
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.metrics import (
    average_precision_score,
    f1_score,
    log_loss,
    precision_score,
    recall_score,
    roc_auc_score,
)
from sklearn.pipeline import Pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from ml_ops import layout
from ml_ops.scoring import SCORE_THRESHOLD, as_category_text  # noqa: F401 - SCORE_THRESHOLD: threshold metrics

METRIC_NAMES = ("roc_auc", "pr_auc", "f1", "precision", "recall", "log_loss")
GREATER_IS_BETTER = {m: m != "log_loss" for m in METRIC_NAMES}
PINNED_PACKAGES = ("mlflow", "scikit-learn", "pandas", "numpy", "cloudpickle")
CHALLENGER_ALIAS = layout.CHALLENGER
IDEMPOTENCY_TAG = "idempotency_key"
MODEL_ARTIFACT_NAME = "model"
REFERENCE_ARTIFACT = layout.REFERENCE_ARTIFACT
REFERENCE_SCORE_COLUMN = "score"
PERMUTATION_MAX_ROWS = 2000  # bounds permutation-importance cost: rows x features x repeats
PERMUTATION_REPEATS = 3
_MAX_PARAM_CHARS = 6000  # MLflow's param value limit
_MAX_TAG_CHARS = 5000  # stay under the smallest store limit for model-version tag values
# The pipeline YAML fields the feature lists come from (ml_ops.pipeline.steps.model_columns), named in errors.
NUMERIC_FIELD = "features.numeric"
CATEGORICAL_FIELD = "features.categorical"


class ModelBuildError(ValueError):
    """The model cannot be built or fitted from this configuration and data (an estimator that does not import,
    rejected params, a column of the wrong kind): deterministic, so the task fails at once instead of retrying."""


@dataclass
class TrainResult:
    run_id: str
    model_uri: str
    version: int
    metrics: dict[str, float] = field(default_factory=dict)
    reused: bool = False  # True when an existing version matched the idempotency key


# --------------------------------------------------------------------------- model building


def _import_estimator(path: str) -> type:
    module_name, _, cls_name = path.rpartition(".")
    if not module_name:
        raise ModelBuildError(
            f"estimator {path!r}: expected a dotted import path like 'sklearn.ensemble.HistGradientBoostingClassifier'"
        )
    try:
        cls = getattr(importlib.import_module(module_name), cls_name)
    except (ImportError, AttributeError) as exc:
        raise ModelBuildError(f"estimator {path!r} cannot be imported: {exc}") from exc
    return cls


def build_model(estimator: str, params: dict, numeric: list[str], categorical: list[str]) -> Pipeline:
    """Pipeline(preprocess -> classifier); the fitted preprocessing ships inside the logged model."""
    cls = _import_estimator(estimator)
    try:
        clf = cls(**(params or {}))
    except TypeError as exc:
        raise ModelBuildError(f"estimator {estimator!r} rejected params {params!r}: {exc}") from exc
    if not is_classifier(clf) or not hasattr(clf, "predict_proba"):
        raise ModelBuildError(f"estimator {estimator!r} is not a classifier with predict_proba")
    if not numeric and not categorical:
        raise ModelBuildError("build_model: numeric and categorical feature lists are both empty")
    both = [c for c in categorical if c in set(numeric)]
    if both:
        raise ModelBuildError(
            f"{CATEGORICAL_FIELD}: column(s) {both} also listed under {NUMERIC_FIELD}; "
            "a column is used either as a number or as labels"
        )
    transformers = []
    if numeric:
        transformers.append(
            (
                "num",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="median")),
                        ("scale", StandardScaler()),
                    ]
                ),
                list(numeric),
            )
        )
    if categorical:
        transformers.append(
            (
                "cat",
                Pipeline(
                    [
                        ("impute", SimpleImputer(strategy="constant", fill_value="__missing__")),
                        # dense output: some estimators (HistGradientBoosting) reject sparse input
                        ("onehot", OneHotEncoder(handle_unknown="ignore", sparse_output=False)),
                    ]
                ),
                list(categorical),
            )
        )
    return Pipeline([("preprocess", ColumnTransformer(transformers, remainder="drop")), ("clf", clf)])


class ScoreModel(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: predict() returns P(positive class) as a 1-D float array."""

    def __init__(self, pipeline):
        self.pipeline = pipeline

    # The pd.DataFrame hint is one MLflow infers no schema from: it silences MLflow's
    # "add type hints" warning without changing input handling (the signature still applies).
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        proba = self.pipeline.predict_proba(model_input)
        return np.asarray(proba)[:, 1].astype("float64")


# --------------------------------------------------------------------------- metrics


def classification_metrics(y_true, y_score, threshold: float = SCORE_THRESHOLD) -> dict[str, float]:
    """Holdout metrics shared by training and comparison (same names everywhere)."""
    y = np.asarray(y_true).astype(int)
    s = np.clip(np.asarray(y_score, dtype="float64"), 1e-15, 1 - 1e-15)
    if np.unique(y).size < 2:
        raise ValueError(f"metrics need both classes in the labels; got only {np.unique(y).tolist()}")
    pred = (s >= threshold).astype(int)
    return {
        "roc_auc": float(roc_auc_score(y, s)),
        "pr_auc": float(average_precision_score(y, s)),
        "f1": float(f1_score(y, pred, zero_division=0)),
        "precision": float(precision_score(y, pred, zero_division=0)),
        "recall": float(recall_score(y, pred, zero_division=0)),
        "log_loss": float(log_loss(y, s, labels=[0, 1])),
    }


def pinned_requirements() -> list[str]:
    """Exact versions of the serving dependencies, read at runtime (no requirement inference)."""
    return [f"{p}=={importlib.metadata.version(p)}" for p in PINNED_PACKAGES]


# --------------------------------------------------------------------------- registry helpers


def _quote(value: str) -> str:
    return "'" + value.replace("\\", "\\\\").replace("'", "\\'") + "'"


def find_existing_version(client: MlflowClient, model_name: str, idempotency_key: str):
    """The model version tagged with this idempotency key, or None."""
    try:
        versions = client.search_model_versions(
            f"name = {_quote(model_name)} and tags.{IDEMPOTENCY_TAG} = {_quote(idempotency_key)}"
        )
    except MlflowException as exc:
        from ml_ops.pipeline.registry import RegistryUnreachable, is_absent

        if is_absent(exc):
            return None  # registered model does not exist yet
        # "no version yet" on an outage would register a duplicate version for the same day
        raise RegistryUnreachable(
            f"MLflow lookup of {model_name} versions for {idempotency_key} failed: {exc}"
        ) from exc
    # double-check in Python: tag filtering support differs between stores
    matches = [v for v in versions if v.tags.get(IDEMPOTENCY_TAG) == idempotency_key]
    return max(matches, key=lambda v: int(v.version)) if matches else None


def _ensure_experiment(client: MlflowClient, name: str, artifact_location: str | None) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if exp.lifecycle_stage == "deleted":
            client.restore_experiment(exp.experiment_id)
        return exp.experiment_id
    return client.create_experiment(name, artifact_location=artifact_location)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 20] + f"...(+{len(text) - limit + 20} chars)"


# --------------------------------------------------------------------------- artifacts


@contextmanager
def _pickle_by_value(module_name: str):
    """Pickle ScoreModel by value so loading the model does not need this package installed."""
    import cloudpickle

    module = sys.modules[module_name]
    cloudpickle.register_pickle_by_value(module)
    try:
        yield
    finally:
        cloudpickle.unregister_pickle_by_value(module)


def log_score_model(
    client: MlflowClient, run_id: str, pipeline: Pipeline, input_example: pd.DataFrame, name: str = MODEL_ARTIFACT_NAME
):
    """Log the fitted pipeline as a pyfunc scoring model (an MLflow 3 LoggedModel) of run ``run_id``;
    returns the LoggedModel (READY).

    Through ``client`` only: ``mlflow.pyfunc.log_model`` resolves the process-global tracking URI and active
    run. The steps are those of ``mlflow.models.Model.log``: create the LoggedModel, record it as the run's
    output, save the pyfunc locally with an MLmodel naming model and run, upload, mark READY (FAILED on error).

    Fast path (see bench/RESULTS_model_logging.md): explicit pinned pip_requirements so MLflow
    does not spawn a subprocess to infer them, and an explicit signature so it is not inferred.
    """
    from mlflow.entities import LoggedModelOutput, LoggedModelStatus
    from mlflow.models import Model, infer_signature

    wrapper = ScoreModel(pipeline)
    signature = infer_signature(input_example, wrapper.predict(None, input_example))
    run = client.get_run(run_id)
    model = client.create_logged_model(
        run.info.experiment_id,
        name=name,
        source_run_id=run_id,
        tags=run_context.resolve_tags(),
        params={k: str(v) for k, v in run.data.params.items()},
    )
    try:
        client.log_outputs(run_id, [LoggedModelOutput(model.model_id, step=0)])
        mlflow_model = Model(
            artifact_path=model.artifact_location, model_uuid=model.model_id, run_id=run_id, model_id=model.model_id
        )
        with tempfile.TemporaryDirectory() as tmp, _pickle_by_value(__name__):
            path = os.path.join(tmp, name)
            mlflow.pyfunc.save_model(
                path,
                python_model=wrapper,
                signature=signature,
                input_example=input_example,
                pip_requirements=pinned_requirements(),
                mlflow_model=mlflow_model,
                # MLflow copies uv.lock/pyproject.toml of the uv project (default: the cwd) into the model; our
                # pins replace them. A directory that is no uv project says so without MLFLOW_LOG_UV_FILES.
                uv_project_path=tmp,
            )
            client.log_model_artifacts(model.model_id, path)
    except BaseException:
        client.finalize_logged_model(model.model_id, LoggedModelStatus.FAILED)
        raise
    return client.finalize_logged_model(model.model_id, LoggedModelStatus.READY)


def _register_version(client: MlflowClient, model_name: str, model, run_id: str, tags: dict[str, str]):
    """New version of ``model_name`` (created if absent) from a LoggedModel, as ``mlflow.register_model`` does."""
    try:
        client.create_registered_model(model_name)
    except MlflowException as exc:
        if exc.error_code not in ("RESOURCE_ALREADY_EXISTS", "ALREADY_EXISTS"):
            raise
    return client.create_model_version(
        model_name,
        # The LoggedModel's files, not "models:/<model_id>": MLflow's SQL registry store resolves such a source
        # through the process-global tracking URI (sqlalchemy_store.create_model_version); both register the
        # same storage location.
        source=model.artifact_location,
        run_id=run_id,
        tags=tags,
        await_creation_for=0,
        model_id=model.model_id,
    )


def load_model_version(tracking_uri: str, model_name: str, version: int | str, dst_path: str | None = None):
    """The pyfunc model of a registered version, loaded with an explicit tracking URI.

    ``mlflow.pyfunc.load_model("models:/<name>/<version>")`` takes no tracking URI, and a ``models:/`` URI is
    resolved through the process-global registry URI even when ``download_artifacts`` is given one
    (``ModelsArtifactRepository._get_model_uri_infos``). So the client resolves where the version's files are,
    ``download_artifacts(..., tracking_uri=)`` fetches them, and the local copy is loaded."""
    import mlflow.artifacts

    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    source = client.get_model_version_download_uri(model_name, str(version))
    if source.startswith("models:/"):  # MLflow 3: the version points at a LoggedModel
        source = client.get_logged_model(source.removeprefix("models:/").split("/")[0]).artifact_location
    local = mlflow.artifacts.download_artifacts(artifact_uri=source, tracking_uri=tracking_uri, dst_path=dst_path)
    return mlflow.pyfunc.load_model(local)


def _plot_curves(y, score, threshold: float) -> dict[str, Any]:
    """Confusion matrix, ROC and PR figures (matplotlib Figure objects: Agg, no pyplot state)."""
    from matplotlib.figure import Figure
    from sklearn.metrics import ConfusionMatrixDisplay, PrecisionRecallDisplay, RocCurveDisplay

    figs = {}
    fig = Figure(figsize=(4.5, 4))
    ConfusionMatrixDisplay.from_predictions(y, (score >= threshold).astype(int), ax=fig.subplots(), colorbar=False)
    fig.suptitle(f"holdout, threshold={threshold}")
    figs["plots/confusion_matrix.png"] = fig
    fig = Figure(figsize=(4.5, 4))
    RocCurveDisplay.from_predictions(y, score, ax=fig.subplots())
    figs["plots/roc_curve.png"] = fig
    fig = Figure(figsize=(4.5, 4))
    PrecisionRecallDisplay.from_predictions(y, score, ax=fig.subplots())
    figs["plots/pr_curve.png"] = fig
    return figs


def _feature_importance(pipeline, X: pd.DataFrame, y: np.ndarray, seed: int) -> pd.DataFrame:
    """Permutation importance (roc_auc drop) of the raw input columns on a bounded holdout sample."""
    from sklearn.inspection import permutation_importance

    rng = np.random.default_rng(seed)
    if len(X) > PERMUTATION_MAX_ROWS:
        idx = np.sort(rng.choice(len(X), PERMUTATION_MAX_ROWS, replace=False))
        X, y = X.iloc[idx], y[idx]
    res = permutation_importance(
        pipeline, X, y, scoring="roc_auc", n_repeats=PERMUTATION_REPEATS, random_state=seed, n_jobs=1
    )
    return (
        pd.DataFrame(
            {"feature": X.columns, "importance_mean": res.importances_mean, "importance_std": res.importances_std}
        )
        .sort_values("importance_mean", ascending=False)
        .reset_index(drop=True)
    )


def _importance_figure(imp: pd.DataFrame):
    from matplotlib.figure import Figure

    top = imp.head(30).iloc[::-1]
    fig = Figure(figsize=(6, max(2.5, 0.3 * len(top) + 1)))
    ax = fig.subplots()
    ax.barh(top["feature"], top["importance_mean"], xerr=top["importance_std"])
    ax.set_xlabel("roc_auc drop when permuted")
    fig.tight_layout()
    return fig


def _log_data_uris(
    client: MlflowClient, run_id: str, data_uris: dict[str, list[str]], frames: dict[str, pd.DataFrame], target: str
) -> None:
    """Data lineage: one dataset input per split (source = the S3 uri) plus params/tags/artifact."""
    from mlflow.data import from_pandas
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    for split, uris in (data_uris or {}).items():
        uris = [uris] if isinstance(uris, str) else list(uris)
        as_json = json.dumps(uris)
        client.log_param(run_id, f"data_uris.{split}", _clip(as_json, _MAX_PARAM_CHARS))
        client.set_tag(run_id, f"data_uris.{split}", _clip(as_json, _MAX_TAG_CHARS))
        df = frames.get(split)
        if df is None or not uris:
            continue
        # a dataset has a single source: the uri itself, or the common prefix of several files
        source = uris[0] if len(uris) == 1 else os.path.commonprefix(uris)
        ds = from_pandas(df, source=source, targets=target, name=split)
        tags = [InputTag("n_uris", str(len(uris))), InputTag(MLFLOW_DATASET_CONTEXT, split)]
        client.log_inputs(run_id, [DatasetInput(ds._to_mlflow_entity(), tags)])
    client.log_dict(
        run_id,
        {k: list(v) if not isinstance(v, str) else [v] for k, v in (data_uris or {}).items()},
        "data/data_uris.json",
    )


# --------------------------------------------------------------------------- main entry point


def _check_columns(df: pd.DataFrame, which: str, numeric: list[str], categorical: list[str], target: str) -> None:
    for what, columns in ((NUMERIC_FIELD, numeric), (CATEGORICAL_FIELD, categorical), ("target.column", [target])):
        missing = [c for c in columns if c not in df.columns]
        if missing:
            has = [str(c) for c in df.columns]
            has = has if len(has) <= 40 else [*has[:40], f"... (+{len(has) - 40})"]
            raise ModelBuildError(f"{what}: {which} is missing column(s) {missing}; its columns: {has}")


def _not_a_number(value) -> bool:
    try:
        float(value)
    except (TypeError, ValueError):
        return True
    return False


def _check_numeric(df: pd.DataFrame, numeric: list[str]) -> None:
    """A numeric input must hold numbers (or text of numbers): name the column and values that do not."""
    for c in numeric:
        col = df[c]
        if pd.api.types.is_numeric_dtype(col) or pd.api.types.is_bool_dtype(col):
            continue
        values = col[col.notna()].tolist()
        bad = [v for v in values if _not_a_number(v)]
        if bad:
            examples = ", ".join(repr(v)[:40] for v in list(dict.fromkeys(map(str, bad)))[:3])
            raise ModelBuildError(
                f"{NUMERIC_FIELD}: column {c!r} holds values that are not numbers ({len(bad)} of {len(col)} "
                f"training rows, e.g. {examples}); list it under {CATEGORICAL_FIELD} to use its values as labels"
            )


def _fit_error(pipeline: Pipeline, X: pd.DataFrame, estimator: str, params: dict, exc: Exception) -> str:
    """Why fitting failed, naming the YAML field and column: each column is fitted alone through its
    preprocessing; when every column passes, the estimator itself failed."""
    from sklearn.base import clone

    for name, block, columns in pipeline.named_steps["preprocess"].transformers:
        what = NUMERIC_FIELD if name == "num" else CATEGORICAL_FIELD
        for c in columns:
            try:
                clone(block).fit_transform(X[[c]])
            except Exception as col_exc:  # noqa: BLE001 - any failure of this column is what we report
                return f"{what}: column {c!r} cannot be used: {type(col_exc).__name__}: {col_exc}"
    return f"model.estimator: {estimator} (model.params {params or {}}) failed to fit: {type(exc).__name__}: {exc}"


def train_and_register(
    train_df: pd.DataFrame,
    holdout_df: pd.DataFrame,
    *,
    tracking_uri: str,
    experiment: str,
    model_name: str,
    target: str,
    numeric: list[str],
    categorical: list[str],
    estimator: str,
    params: dict,
    data_uris: dict[str, list[str]],
    tags: dict[str, str],
    reference_sample_rows: int = 5000,
    seed: int = 0,
    run_name: str | None = None,
    idempotency_key: str | None = None,
    artifact_location: str | None = None,
) -> TrainResult:
    """Fit, evaluate on the holdout, log to MLflow, register a new version with alias "challenger".

    With `idempotency_key` (e.g. "<pipeline>/<data interval>"), a version already tagged with the
    same key is returned as-is (no new run, no alias change): re-running a train task is safe.
    `artifact_location` is only used when the experiment has to be created.
    """
    # Explicit client calls throughout: the fluent API (mlflow.start_run, log_*, register_model) works on the
    # process-global tracking URI and active run.
    client = MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)
    if idempotency_key:
        existing = find_existing_version(client, model_name, idempotency_key)
        if existing is not None:
            metrics = client.get_run(existing.run_id).data.metrics if existing.run_id else {}
            return TrainResult(
                existing.run_id,
                f"models:/{model_name}/{existing.version}",
                int(existing.version),
                dict(metrics),
                reused=True,
            )

    features = list(numeric) + list(categorical)
    for which, df in (("the training data", train_df), ("the holdout data", holdout_df)):
        _check_columns(df, which, list(numeric), list(categorical), target)
    _check_numeric(train_df, list(numeric))
    # Categorical inputs as text, here and in every frame logged with the model (ml_ops.scoring.category_text).
    train_df = as_category_text(train_df, categorical)
    holdout_df = as_category_text(holdout_df, categorical)
    y_train = train_df[target].to_numpy().astype(int)
    y_hold = holdout_df[target].to_numpy().astype(int)
    if np.unique(y_train).size < 2:
        raise ModelBuildError(f"train_df: target {target!r} has a single class {np.unique(y_train).tolist()}")

    pipeline = build_model(estimator, params, numeric, categorical)
    if "random_state" in pipeline.named_steps["clf"].get_params() and "random_state" not in (params or {}):
        pipeline.set_params(clf__random_state=seed)
    exp_id = _ensure_experiment(client, experiment, artifact_location)
    tags = {k: str(v) for k, v in (tags or {}).items()}

    # the tags mlflow.start_run adds (user, source, git commit) + ours
    run_id = client.create_run(exp_id, run_name=run_name, tags=run_context.resolve_tags(tags)).info.run_id
    try:
        t0 = time.perf_counter()
        try:
            pipeline.fit(train_df[features], y_train)
        except (ValueError, TypeError) as exc:
            raise ModelBuildError(_fit_error(pipeline, train_df[features], estimator, params, exc)) from exc
        fit_seconds = time.perf_counter() - t0
        X_hold = holdout_df[features]
        score = pipeline.predict_proba(X_hold)[:, 1]
        metrics = classification_metrics(y_hold, score)
        metrics.update(
            {
                "train_rows": float(len(train_df)),
                "train_positives": float(y_train.sum()),
                "holdout_rows": float(len(holdout_df)),
                "holdout_positives": float(y_hold.sum()),
                "fit_seconds": fit_seconds,
            }
        )

        run_params = {
            "estimator": estimator,
            "target": target,
            "seed": seed,
            "threshold": SCORE_THRESHOLD,
            "numeric": json.dumps(list(numeric)),
            "categorical": json.dumps(list(categorical)),
        }
        run_params.update({f"clf.{k}": v for k, v in (params or {}).items()})
        run_params.update({f"tag.{k}": v for k, v in tags.items()})  # window info etc.
        if idempotency_key:
            run_params["idempotency_key"] = idempotency_key
            client.set_tag(run_id, IDEMPOTENCY_TAG, idempotency_key)
        client.log_batch(run_id, params=[Param(k, _clip(str(v), _MAX_PARAM_CHARS)) for k, v in run_params.items()])
        _log_data_uris(client, run_id, data_uris, {"train": train_df, "holdout": holdout_df}, target)

        for path, fig in _plot_curves(y_hold, score, SCORE_THRESHOLD).items():
            client.log_figure(run_id, fig, path)
        imp = _feature_importance(pipeline, X_hold, y_hold, seed)
        client.log_text(run_id, imp.to_csv(index=False), "feature_importance/permutation_importance.csv")
        client.log_figure(run_id, _importance_figure(imp), "feature_importance/permutation_importance.png")

        # reference sample for drift reports: features + target + model score
        ref = train_df[features + [target]]
        if len(ref) > reference_sample_rows:
            ref = ref.sample(reference_sample_rows, random_state=seed)
        ref = ref.reset_index(drop=True)
        ref[REFERENCE_SCORE_COLUMN] = pipeline.predict_proba(ref[features])[:, 1]
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, os.path.basename(REFERENCE_ARTIFACT))
            ref.to_parquet(path, index=False)
            client.log_artifact(run_id, path, artifact_path=os.path.dirname(REFERENCE_ARTIFACT))

        t0 = time.perf_counter()
        # numeric columns as float64 in the signature: integer columns would reject NaN at serving
        example = train_df[features].head(5).reset_index(drop=True)
        example = example.astype({c: "float64" for c in numeric})
        model = log_score_model(client, run_id, pipeline, example)
        metrics["model_logging_seconds"] = time.perf_counter() - t0
        # step-0 metrics of the run are the step-0 model's (as mlflow.log_metrics links them after log_model)
        now = int(time.time() * 1000)
        client.log_batch(
            run_id, metrics=[Metric(k, float(v), now, 0, model_id=model.model_id) for k, v in metrics.items()]
        )
    except BaseException:
        client.set_terminated(run_id, "FAILED")
        raise
    client.set_terminated(run_id)

    version_tags = dict(tags)
    version_tags.update({"estimator": estimator, "run_id": run_id, "holdout_roc_auc": f"{metrics['roc_auc']:.6f}"})
    if idempotency_key:
        version_tags[IDEMPOTENCY_TAG] = idempotency_key
    version_tags = {k: _clip(v, _MAX_TAG_CHARS) for k, v in version_tags.items()}
    mv = _register_version(client, model_name, model, run_id, version_tags)
    client.set_registered_model_alias(model_name, CHALLENGER_ALIAS, mv.version)
    return TrainResult(run_id, f"models:/{model_name}/{mv.version}", int(mv.version), metrics)
