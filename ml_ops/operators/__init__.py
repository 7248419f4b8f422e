"""Thin Airflow operators over ``ml_ops.steps``."""

from ml_ops.operators.pipeline import (
    CompareOperator,
    ExtractOperator,
    FeaturesOperator,
    PipelineOperator,
    PromoteOperator,
    TrainOperator,
    ValidateOperator,
)

__all__ = [
    "CompareOperator",
    "ExtractOperator",
    "FeaturesOperator",
    "PipelineOperator",
    "PromoteOperator",
    "TrainOperator",
    "ValidateOperator",
]
