"""Which model answers for each pipeline: MLflow aliases + deployment state, polled; versions cached.

Every ``poll_seconds`` (and on /admin/reload) a background thread re-reads, per pipeline YAML:
the versions holding ``champion`` and ``canary`` in the registered model named like the pipeline, and
the deployment state ``s3://<bucket>/pipelines/<p>/deployment/state.json``. Traffic goes to the canary
only when the state's ``canary_weight > 0`` and its ``canary_version`` is the version holding ``canary``.
New versions are loaded (and warmed up) in that thread, off the request path; only then is the
pipeline's ``Deployment`` replaced, in one reference assignment. A request reads the deployment once, so
it finishes on the models it started with even if a swap happens meanwhile.

If MLflow or S3 cannot be read, the state file does not validate (``DeploymentState``: the error names the
field), or a new version fails to load, the previous deployment keeps serving and the error is shown in
/pipelines (and /ready, while a champion is not loaded).
"""

from __future__ import annotations

import gc
import logging
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field, replace
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

import numpy as np

from ml_ops import layout
from ml_ops.config import ConfigError, Pipeline, load_pipeline, pipeline_files
from ml_ops.rollout.deployment import DeploymentState, read_state
from ml_ops.scoring import scores_from_output
from ml_ops.serving.routing import CANARY, CHAMPION
from ml_ops.serving.runner import ModelRunner
from ml_ops.serving.schema import InputSchema
from ml_ops.serving.settings import Settings

log = logging.getLogger("ml_ops.serving.models")
CHAMPION_ALIAS, CANARY_ALIAS = layout.CHAMPION, layout.CANARY


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


@dataclass(eq=False)
class LoadedModel:
    pipeline: str
    version: int
    model: object  # mlflow.pyfunc.PyFuncModel
    schema: InputSchema | None
    path: str | None = None
    tags: dict = field(default_factory=dict)
    load_seconds: float = 0.0
    runner: ModelRunner | None = None
    scorer: str = "pipeline"  # "numpy" once use_fast_path() has checked ml_ops.serving.fastpath against it

    def __post_init__(self) -> None:
        # We validate and type the input ourselves (ml_ops.serving.schema), so the model's own predict
        # function is called directly, skipping pyfunc's second schema enforcement (~0.4 ms a call).
        fn = getattr(self.model, "_predict_fn", None)
        self._predict = fn if self.schema is not None and callable(fn) else self.model.predict
        self._fast = None  # ml_ops.serving.fastpath scorer, once use_fast_path() has checked it

    def score(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        if self._fast is not None:
            return self._fast(columns, n)
        return self._pipeline_score(columns, n)

    def _pipeline_score(self, columns: dict[str, np.ndarray], n: int) -> np.ndarray:
        import pandas as pd

        # copied into one block per dtype: scikit-learn's column selection is ~10% faster than on 14 blocks
        frame = pd.DataFrame(columns) if columns else pd.DataFrame(index=range(n))
        return scores_from_output(self._predict(frame), n)

    def use_fast_path(self) -> str:
        """Score with ``ml_ops.serving.fastpath`` when this is a model ``ml_ops.pipeline.train`` logged and the
        numpy scorer gives its scores on check rows (the input example, a made-up row, a row of missing
        values); returns what was decided, for the load log line."""
        from ml_ops.serving.fastpath import compile_pipeline, verified

        unwrap = getattr(self.model, "unwrap_python_model", None)
        python_model = unwrap() if callable(unwrap) else None
        # by class name: train pickles ScoreModel by value; a test's VariantModel (faults) must keep its path
        if type(python_model).__name__ != "ScoreModel" or self.schema is None:
            return "pipeline predict (not an ml_ops.pipeline.train model)"
        fast = compile_pipeline(getattr(python_model, "pipeline", None))
        if fast is None:
            return "pipeline predict (steps the numpy scorer does not know)"
        rows = [self._made_up_row(), self._made_up_row(missing=True)]
        example = getattr(self.model, "input_example", None)
        if example is not None and hasattr(example, "columns"):
            from ml_ops.serving.schema import Table, convert

            rows.append(
                convert(
                    Table(list(example.columns), {c: example[c].tolist() for c in example.columns}, len(example)),
                    self.schema,
                )
            )
        why = verified(fast, self._pipeline_score, rows)
        if why:
            log.warning(
                "%s v%s: numpy scorer differs from the pipeline (%s): serving the pipeline",
                self.pipeline,
                self.version,
                why,
            )
            return "pipeline predict (numpy scorer did not match)"
        self._fast, self.scorer = fast, "numpy"
        return "numpy scorer (checked against the pipeline)"

    def _made_up_row(self, missing: bool = False) -> dict[str, np.ndarray]:
        fill = {"double": 0.0, "float": 0.0, "long": 0, "integer": 0, "boolean": False, "string": "warm-up"}
        if missing:
            fill = {**fill, "double": np.nan, "float": np.nan, "string": None}
        return {
            c.name: np.array([fill.get(c.kind)], dtype=object if c.kind == "string" else None)
            for c in self.schema.columns
        }

    def warm_up(self) -> None:
        """One prediction on a made-up row: the first call of a scikit-learn model is slow, and a model
        that cannot predict is better found here than on a request (failure is only logged: a model may
        legitimately reject made-up values)."""
        if self.schema is None:
            return
        try:
            self.score(self._made_up_row(), 1)
        except Exception as exc:  # noqa: BLE001
            log.warning(
                "%s v%s: warm-up prediction failed: %s: %s", self.pipeline, self.version, type(exc).__name__, exc
            )

    def close(self) -> None:
        if self.path:
            shutil.rmtree(self.path, ignore_errors=True)


@dataclass(frozen=True)
class Deployment:
    """What one pipeline serves right now (replaced whole on every change)."""

    cfg: Pipeline
    champion: LoadedModel | None = None
    canary: LoadedModel | None = None
    weight: float = 0.0  # share of keys routed to the canary now (0 unless the canary is loaded)
    champion_version: int | None = None  # version holding the alias (may be loading or failed)
    canary_version: int | None = None
    state: DeploymentState | None = None  # the deployment state as last read (None: not read yet)
    errors: tuple[str, ...] = ()
    polled_at: str | None = None
    resolved: bool = True  # False until aliases and state could be read once (MLflow/S3 down at start)

    @property
    def name(self) -> str:
        return self.cfg.name

    def model(self, route: str) -> LoadedModel | None:
        return self.canary if route == CANARY else self.champion

    @cached_property
    def fallback_schema(self) -> InputSchema:
        from ml_ops.pipeline.steps import model_columns

        return InputSchema.from_columns(*model_columns(self.cfg))

    @cached_property
    def schemas(self) -> list[InputSchema]:
        found = [m.schema for m in (self.champion, self.canary if self.weight > 0 else None) if m and m.schema]
        return list(dict.fromkeys(found))

    @cached_property
    def extra_columns(self) -> list[str]:
        """Columns a request may send besides the model's inputs: routing key and row id."""
        return [c for c in dict.fromkeys([self.cfg.routing_key, self.cfg.source.id_column]) if c]

    @cached_property
    def log_dtypes(self) -> dict[str, str]:
        """Column types of the serving logs: the model's inputs, then the routing key and id as text."""
        dtypes: dict[str, str] = {}
        for schema in self.schemas or [self.fallback_schema]:
            dtypes.update(schema.dtypes)
        for c in self.extra_columns:
            dtypes.setdefault(c, "object")
        return dtypes

    def ready(self) -> tuple[bool, str]:
        if not self.resolved:
            return False, "; ".join(self.errors) or f"{self.name} not resolved yet"
        if self.champion_version is None:
            return True, "no champion"
        if self.champion is None or self.champion.version != self.champion_version:
            why = "; ".join(self.errors) or "loading"
            return False, f"champion v{self.champion_version} of {self.name} not loaded yet ({why})"
        return True, "ok"

    def status(self) -> dict:
        def side(resolved, loaded):
            return {
                "version": resolved,
                "serving": loaded.version if loaded else None,
                "loaded": bool(loaded) and loaded.version == resolved,
                "variant": (loaded.tags.get("variant") if loaded else None),
                "scorer": (loaded.scorer if loaded else None),
            }

        keep = {
            "status",
            "canary_version",
            "champion_version",
            "canary_weight",
            "step",
            "run_id",
            "updated_at",
            "reason",
            "forced",
        }
        inputs = (self.champion.schema or self.fallback_schema) if self.champion else self.fallback_schema
        return {
            "pipeline": self.name,
            CHAMPION: side(self.champion_version, self.champion),
            CANARY: side(self.canary_version, self.canary),
            "canary_weight": self.state.canary_weight if self.state else 0.0,
            "effective_weight": self.weight,
            "state": self.state.model_dump(mode="json", include=keep) if self.state else dict.fromkeys(keep),
            "routing_key": self.cfg.routing_key,
            "id_column": self.cfg.source.id_column,
            "inputs": inputs.names,
            "require_token": self.cfg.serving.require_token,
            "max_batch_rows": self.cfg.serving.max_batch_rows,
            "errors": list(self.errors),
            "polled_at": self.polled_at,
        }


def aliases(client, name: str) -> dict[str, int]:
    """Every alias of the registered model -> version, in one call (so champion and canary are read
    together); empty when the model does not exist. Any other failure (MLflow unreachable) raises,
    so the caller keeps what it serves instead of dropping the model."""
    from mlflow.exceptions import MlflowException

    try:
        found = client.get_registered_model(name).aliases or {}
    except MlflowException as exc:
        if str(getattr(exc, "error_code", "")) == "RESOURCE_DOES_NOT_EXIST":
            return {}
        raise
    return {alias: int(version) for alias, version in found.items()}


class ModelResolver:
    def __init__(self, settings: Settings, store, *, client=None):
        self.settings, self.store = settings, store
        self._client = client
        self._deployments: dict[str, Deployment] = {}
        self._configs: dict[Path, tuple[float, Pipeline | None]] = {}
        self._config_errors: dict[str, str] = {}
        self._cache: OrderedDict[tuple[str, int], LoadedModel] = OrderedDict()
        self._load_errors: dict[tuple[str, int], str] = {}
        self._poll_lock = threading.Lock()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.polls = 0
        self.last_error: str | None = None

    # ---- reading --------------------------------------------------------------------------------------
    def get(self, name: str) -> Deployment | None:
        return self._deployments.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self._deployments)

    def status(self) -> dict[str, dict]:
        return {name: d.status() for name, d in sorted(self._deployments.items())}

    def ready(self) -> tuple[bool, str]:
        if self.polls == 0:
            return (
                False,
                f"first resolution of the models not finished{f' ({self.last_error})' if self.last_error else ''}",
            )
        if not self._deployments:
            return False, "no pipelines: no valid YAML under include/pipelines"
        waiting = [why for d in self._deployments.values() for ok, why in [d.ready()] if not ok]
        return (False, "; ".join(waiting)) if waiting else (True, "ok")

    # ---- polling --------------------------------------------------------------------------------------
    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self._client = MlflowClient(self.settings.tracking_uri)
        return self._client

    def _pipelines(self) -> list[Pipeline]:
        """Every valid pipeline YAML (re-read when its file changes; a broken edit keeps the last good one)."""
        found = []
        for path in pipeline_files():
            mtime = path.stat().st_mtime
            cached = self._configs.get(path)
            if cached is None or cached[0] != mtime:
                try:
                    cfg = load_pipeline(path)
                    self._config_errors.pop(path.stem, None)
                except ConfigError as exc:
                    log.error("pipeline config %s is invalid, keeping the last good one: %s", path, exc)
                    self._config_errors[path.stem] = str(exc)
                    cfg = cached[1] if cached else None
                self._configs[path] = cached = (mtime, cfg)
            if cached[1] is not None:
                found.append(cached[1])
        return found

    def poll_once(self) -> dict[str, dict]:
        with self._poll_lock:
            loaded_any = False
            try:
                configs = self._pipelines()
            except OSError as exc:
                configs = [d.cfg for d in self._deployments.values()]
                log.error("cannot list pipeline YAMLs: %s", exc)
            seen = set()
            for cfg in configs:
                seen.add(cfg.name)
                previous = self._deployments.get(cfg.name)
                try:
                    deployment, loaded = self._resolve(cfg, previous)
                    loaded_any |= loaded
                except Exception as exc:  # noqa: BLE001 - MLflow/S3 down: keep serving what we have
                    why = f"cannot resolve {cfg.name}: {type(exc).__name__}: {exc}"
                    log.error(why)
                    self.last_error = why
                    deployment = replace(
                        previous or Deployment(cfg, resolved=False), cfg=cfg, errors=(why,), polled_at=_now()
                    )
                self._deployments = {**self._deployments, cfg.name: deployment}  # atomic swap
            if seen != set(self._deployments):
                self._deployments = {k: v for k, v in self._deployments.items() if k in seen}
            self._evict()
            if loaded_any:
                gc.collect()
                gc.freeze()  # loaded models are long-lived: keep them out of future GC passes
            self.polls += 1
            return self.status()

    def _resolve(self, cfg: Pipeline, previous: Deployment | None) -> tuple[Deployment, bool]:
        client = self.client
        held = aliases(client, cfg.name)
        champion_v, canary_v = held.get(CHAMPION_ALIAS), held.get(CANARY_ALIAS)
        state = read_state(self.store, cfg)
        errors: list[str] = []
        loaded = False

        champion = None
        if champion_v is not None:
            champion, fresh = self._model(cfg.name, champion_v, errors)
            loaded |= fresh
            if champion is None and previous and previous.champion:
                champion = previous.champion  # the new champion failed to load: keep answering with the old
                errors.append(f"still serving v{champion.version}")
        canary = None
        if canary_v is not None:
            canary, fresh = self._model(cfg.name, canary_v, errors)
            loaded |= fresh
        want, state_v = state.canary_weight, state.canary_version
        matches = canary_v is not None and state_v == canary_v
        weight = want if (matches and canary is not None) else 0.0
        if want > 0 and not matches:
            errors.append(
                f"state asks {want:.0%} for canary v{state_v} but the canary alias is "
                f"{'unset' if canary_v is None else f'v{canary_v}'}: all traffic on the champion"
            )
        deployment = Deployment(cfg, champion, canary, weight, champion_v, canary_v, state, tuple(errors), _now())
        if previous is None or self._changed(previous, deployment):
            log.info(
                "%s: champion v%s (serving v%s), canary v%s at %.0f%%%s",
                cfg.name,
                champion_v,
                champion.version if champion else None,
                canary_v,
                weight * 100,
                f" [{'; '.join(errors)}]" if errors else "",
            )
        return deployment, loaded

    @staticmethod
    def _changed(a: Deployment, b: Deployment) -> bool:
        return (a.champion, a.canary, a.weight, a.champion_version, a.canary_version, a.errors) != (
            b.champion,
            b.canary,
            b.weight,
            b.champion_version,
            b.canary_version,
            b.errors,
        )

    # ---- the version cache ----------------------------------------------------------------------------
    def _model(self, name: str, version: int, errors: list[str]) -> tuple[LoadedModel | None, bool]:
        key = (name, version)
        found = self._cache.get(key)
        if found is not None:
            self._cache.move_to_end(key)
            return found, False
        try:
            model = self._load(name, version)
        except Exception as exc:  # noqa: BLE001 - a broken version must not stop the others
            why = f"v{version} failed to load: {type(exc).__name__}: {exc}"
            if self._load_errors.get(key) != why:
                log.error("%s %s", name, why)
            self._load_errors[key] = why
            errors.append(why)
            return None, False
        self._load_errors.pop(key, None)
        self._cache[key] = model
        return model, True

    def _load(self, name: str, version: int) -> LoadedModel:
        from ml_ops.pipeline.train import load_model_version

        t0 = time.perf_counter()
        path = tempfile.mkdtemp(prefix=f"mlops-gateway-{name}-v{version}-")
        try:
            # the tracking URI of the settings, passed explicitly (no process-global MLflow state)
            pyfunc = load_model_version(self.settings.tracking_uri, name, version, dst_path=path)
            try:
                tags = dict(self.client.get_model_version(name, str(version)).tags)
            except Exception:  # noqa: BLE001 - tags are only informative
                tags = {}
            model = LoadedModel(
                name, version, pyfunc, InputSchema.from_mlflow(pyfunc.metadata.get_input_schema()), path, tags
            )
        except BaseException:
            shutil.rmtree(path, ignore_errors=True)
            raise
        model.runner = ModelRunner(
            model.score,
            name=f"{name}-v{version}",
            max_rows=self.settings.batch_rows,
            threads=self.settings.model_threads,
            inline=self.settings.predict_inline,
        )
        scorer = model.use_fast_path() if self.settings.fast_path else "pipeline predict (MLOPS_GATEWAY_FAST_PATH=0)"
        model.warm_up()
        model.load_seconds = time.perf_counter() - t0
        log.info(
            "%s v%s loaded in %.1fs, scored by %s%s",
            name,
            version,
            model.load_seconds,
            scorer,
            f" (variant: {tags['variant']})" if tags.get("variant") else "",
        )
        return model

    def _evict(self) -> None:
        in_use = {id(m) for d in self._deployments.values() for m in (d.champion, d.canary) if m}
        spare: dict[str, int] = {}
        for key in reversed(list(self._cache)):  # most recently used first
            model = self._cache[key]
            if id(model) in in_use:
                continue
            spare[key[0]] = spare.get(key[0], 0) + 1
            if spare[key[0]] > self.settings.cache_versions:
                del self._cache[key]
                model.close()  # in-flight requests keep their reference; only the files go
                log.info("%s v%s evicted from the cache", *key)

    # ---- background thread ----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.poll_once()
            except Exception:
                log.exception("poll failed")
            self._stop.wait(self.settings.poll_seconds)

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="model-poller", daemon=True)
            self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None
