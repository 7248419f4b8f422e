"""Thin Airflow operators over ``ml_ops.steps``."""

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
    "CompareOperator",
    "DriftOperator",
    "ExtractOperator",
    "FeaturesOperator",
    "PipelineOperator",
    "PromoteOperator",
    "TrainOperator",
    "ValidateOperator",
]
