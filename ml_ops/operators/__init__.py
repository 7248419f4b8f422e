"""Thin Airflow operators over ``ml_ops.steps``."""

from ml_ops.operators.canary import CanaryOperator, ReleaseTrafficOperator, RollbackOperator
from ml_ops.operators.pipeline import (
    CompareOperator,
    DriftOperator,
    ExtractOperator,
    FeaturesOperator,
    PipelineOperator,
    PromoteOperator,
    TrainOperator,
    ValidateOperator,
)

__all__ = [
    "CanaryOperator",
    "CompareOperator",
    "DriftOperator",
    "ExtractOperator",
    "FeaturesOperator",
    "PipelineOperator",
    "PromoteOperator",
    "ReleaseTrafficOperator",
    "RollbackOperator",
    "TrainOperator",
    "ValidateOperator",
]
