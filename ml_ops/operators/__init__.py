"""Thin Airflow operators over the plain functions in ml_ops."""

from ml_ops.operators.compare import CompareOperator
from ml_ops.operators.extract import ExtractOperator
from ml_ops.operators.features import FeaturesOperator
from ml_ops.operators.promote import PromoteOperator
from ml_ops.operators.train import TrainOperator
from ml_ops.operators.validate import ValidateOperator

__all__ = [
    "CompareOperator",
    "ExtractOperator",
    "FeaturesOperator",
    "PromoteOperator",
    "TrainOperator",
    "ValidateOperator",
]
