"""Thin Airflow operators over ``ml_ops.pipeline.steps``."""

from ml_ops.airflow.operators.canary import CanaryOperator, ReleaseTrafficOperator, RollbackOperator
from ml_ops.airflow.operators.pipeline import (
    CompareOperator,
    DriftOperator,
    ExtractOperator,
    FeaturesOperator,
    LabelsOperator,
    PipelineOperator,
    PromoteOperator,
    TrainOperator,
    ValidateOperator,
)
from ml_ops.airflow.operators.privacy import EraseEntityOperator, RetentionOperator

__all__ = [
    "CanaryOperator",
    "CompareOperator",
    "DriftOperator",
    "EraseEntityOperator",
    "ExtractOperator",
    "FeaturesOperator",
    "LabelsOperator",
    "PipelineOperator",
    "PromoteOperator",
    "ReleaseTrafficOperator",
    "RetentionOperator",
    "RollbackOperator",
    "TrainOperator",
    "ValidateOperator",
]
