from ml_ops.hooks.mlflow import MlflowHook

__all__ = ["MlflowHook"]
