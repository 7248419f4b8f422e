"""A real (SQLite) MLflow tracking store per test, cheap to create."""

import os
import shutil
import tempfile


def fresh_store(tmp) -> str:
    """sqlite tracking URI in `tmp`; the schema is migrated once per MLflow version and copied
    (migrating takes ~10 s on this machine)."""
    import mlflow
    from mlflow import MlflowClient

    template = os.path.join(tempfile.gettempdir(), f"ml_ops_test_mlflow_{mlflow.__version__}.db")
    if not os.path.exists(template):
        staging = f"{template}.{os.getpid()}"
        MlflowClient(tracking_uri=f"sqlite:///{staging}").search_experiments()
        os.replace(staging, template)
    shutil.copy(template, os.path.join(tmp, "mlflow.db"))
    return f"sqlite:///{tmp}/mlflow.db"
