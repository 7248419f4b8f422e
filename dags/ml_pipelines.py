"""Airflow DAGs for every pipeline in include/pipelines/*.yaml (one YAML file per model).

Adding a model means adding a YAML file; this file never changes.
"""

from ml_ops.airflow.dag_factory import build_all

globals().update(build_all())
