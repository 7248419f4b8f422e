"""Fault-injection versions of a registered model, for gateway and canary tests.

``register_variant`` wraps a version's fitted scikit-learn pipeline in ``VariantModel``, which can
compute for ``delay_ms`` more on every call (CPU, like a heavier model: the canary judge compares
the model call's CPU time), raise on a random share of calls (``error_rate``, seeded) or return
1 - p (``invert``), and registers it as a new version of the same model, tagged ``variant=<description>``.
The wrapper is pickled by value and this file ships with the model (``code_paths``), so any process that
can load the base model (the gateway) can load the variant without the tests on its path.
"""

from __future__ import annotations

import os
import random
import sys
import threading
import time
from contextlib import contextmanager

import mlflow.pyfunc
import numpy as np
import pandas as pd


class InjectedFailure(RuntimeError):
    """Raised by a VariantModel on purpose."""


class VariantModel(mlflow.pyfunc.PythonModel):
    """P(positive) of the wrapped pipeline, with the configured faults."""

    def __init__(
        self, pipeline, *, delay_ms: float = 0.0, error_rate: float = 0.0, invert: bool = False, seed: int = 0
    ):
        self.pipeline = pipeline  # same attribute as ml_ops.pipeline.train.ScoreModel: unwrap_python_model().pipeline
        self.delay_ms, self.error_rate, self.invert, self.seed = delay_ms, error_rate, invert, seed
        self._rng = self._lock = None

    def __getstate__(self):
        state = dict(self.__dict__)
        state["_rng"] = state["_lock"] = None  # neither pickles; recreated on first use
        return state

    def _draw(self) -> float:
        if self._lock is None:
            self._lock, self._rng = threading.Lock(), random.Random(self.seed)
        with self._lock:
            return self._rng.random()

    # the DataFrame hint silences MLflow's "add type hints" warning without changing input handling
    def predict(self, context, model_input: pd.DataFrame, params=None) -> np.ndarray:
        if self.delay_ms:  # busy, not asleep: a slower model costs CPU time
            end = time.thread_time() + self.delay_ms / 1000.0
            while time.thread_time() < end:
                pass
        if self.error_rate and self._draw() < self.error_rate:
            raise InjectedFailure(f"injected failure (variant error_rate={self.error_rate})")
        score = np.asarray(self.pipeline.predict_proba(model_input))[:, 1].astype("float64")
        return 1.0 - score if self.invert else score


def describe(*, delay_ms: float = 0.0, error_rate: float = 0.0, invert: bool = False, seed: int = 0) -> str:
    parts = [
        f"delay_ms={delay_ms:g}" if delay_ms else "",
        f"error_rate={error_rate:g}" if error_rate else "",
        "invert" if invert else "",
    ]
    return ",".join(p for p in parts if p) or "identity"


@contextmanager
def _tracking(uri: str):
    previous = mlflow.get_tracking_uri()
    old_uv = os.environ.get("MLFLOW_LOG_UV_FILES")
    mlflow.set_tracking_uri(uri)
    os.environ["MLFLOW_LOG_UV_FILES"] = "false"  # the model needs its pins, not this repo's uv.lock
    try:
        yield
    finally:
        mlflow.set_tracking_uri(previous)
        if old_uv is None:
            os.environ.pop("MLFLOW_LOG_UV_FILES", None)
        else:
            os.environ["MLFLOW_LOG_UV_FILES"] = old_uv


def register_variant(
    tracking_uri: str,
    model_name: str,
    base_version: int,
    *,
    delay_ms: float = 0.0,
    error_rate: float = 0.0,
    invert: bool = False,
    seed: int = 0,
) -> int:
    """Register a fault-injecting copy of ``model_name`` v``base_version``; returns the new version."""
    import cloudpickle
    from mlflow import MlflowClient

    from ml_ops.pipeline.train import pinned_requirements

    if not 0.0 <= error_rate <= 1.0 or delay_ms < 0:
        raise ValueError(f"error_rate must be in [0, 1] and delay_ms >= 0, got {error_rate}, {delay_ms}")
    description = describe(delay_ms=delay_ms, error_rate=error_rate, invert=invert, seed=seed)
    client = MlflowClient(tracking_uri)
    base_mv = client.get_model_version(model_name, str(base_version))
    with _tracking(tracking_uri):
        base = mlflow.pyfunc.load_model(f"models:/{model_name}/{base_version}")
        wrapper = VariantModel(
            base.unwrap_python_model().pipeline, delay_ms=delay_ms, error_rate=error_rate, invert=invert, seed=seed
        )
        experiment_id = client.get_run(base_mv.run_id).info.experiment_id if base_mv.run_id else None
        module = sys.modules[__name__]
        cloudpickle.register_pickle_by_value(module)
        try:
            with mlflow.start_run(
                experiment_id=experiment_id,
                run_name=f"variant of v{base_version}: {description}",
                tags={"variant": description, "base_version": str(base_version)},
            ):
                info = mlflow.pyfunc.log_model(
                    name="model",
                    python_model=wrapper,
                    signature=base.metadata.signature,
                    input_example=base.input_example,
                    code_paths=[__file__],
                    pip_requirements=pinned_requirements(),
                )
        finally:
            cloudpickle.unregister_pickle_by_value(module)
        mv = mlflow.register_model(
            info.model_uri,
            model_name,
            await_registration_for=0,
            tags={"variant": description, "base_version": str(base_version), "seed": str(seed)},
        )
    return int(mv.version)
