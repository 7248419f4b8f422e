"""airflow-mlops: Airflow 3 operators and DAGs for the whole life of a tabular model.

The public names are few; they load lazily so that ``import ml_ops.pipeline.features`` stays Airflow-free
and DAG files parse fast.
"""

from __future__ import annotations

import os
from importlib import import_module

__version__ = "0.1.0"

_PUBLIC = {
    "load_pipeline": "ml_ops.config",
    "Pipeline": "ml_ops.config",
    "build_pipeline_dags": "ml_ops.airflow.dag_factory",
    "ExtractOperator": "ml_ops.airflow.operators",
    "ValidateOperator": "ml_ops.airflow.operators",
    "FeaturesOperator": "ml_ops.airflow.operators",
    "TrainOperator": "ml_ops.airflow.operators",
    "CompareOperator": "ml_ops.airflow.operators",
    "PromoteOperator": "ml_ops.airflow.operators",
    "MlflowHook": "ml_ops.airflow.hooks",
}
__all__ = [*sorted(_PUBLIC), "code_version"]  # noqa: PLE0604 - names, resolved lazily


def __getattr__(name: str):
    if name in _PUBLIC:
        return getattr(import_module(_PUBLIC[name]), name)
    raise AttributeError(f"module 'ml_ops' has no attribute {name!r}")


def code_version() -> str:
    """Package version plus the git commit when known (MLOPS_CODE_VERSION wins, e.g. an image tag)."""
    if os.environ.get("MLOPS_CODE_VERSION"):
        return os.environ["MLOPS_CODE_VERSION"]
    from pathlib import Path

    git = Path(__file__).resolve().parent.parent / ".git"
    try:
        ref = (git / "HEAD").read_text().strip()
        if ref.startswith("ref: "):
            ref_file = git / ref[5:]
            ref = ref_file.read_text().strip() if ref_file.exists() else ref[5:]
        return f"{__version__}+{ref[:12]}"
    except OSError:
        return __version__
