"""Common ground of the pipeline operators: the pipeline's config, the object store, the day."""

from __future__ import annotations

from functools import cached_property

from airflow.sdk import BaseOperator

from ml_ops.config import Pipeline, load_pipeline_by_name
from ml_ops.interval import DayInterval, interval_from_context
from ml_ops.storage import ObjectStore, partition_uri, store_from_airflow


class PipelineOperator(BaseOperator):
    """Holds the pipeline name; config, hooks and clients are built in ``execute``, never at parse time."""

    template_fields = ("pipeline",)
    ui_color = "#e8f4fd"

    def __init__(self, *, pipeline: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.pipeline = pipeline

    @cached_property
    def cfg(self) -> Pipeline:
        return load_pipeline_by_name(self.pipeline)

    @cached_property
    def store(self) -> ObjectStore:
        return store_from_airflow(self.cfg.aws_conn_id)

    def uri(self, stage: str, ds: str, filename: str = "data.parquet") -> str:
        return partition_uri(self.cfg.prefix(), stage, ds, filename)

    def interval(self, context) -> DayInterval:
        return interval_from_context(context)

    def existing_partitions(self, stage: str, days: list[str]) -> list[str]:
        """URIs of the partitions among ``days`` that exist (missing days are simply absent)."""
        present = set(self.store.list(f"{self.cfg.prefix()}/{stage}/"))
        return [u for u in (self.uri(stage, d) for d in days) if u in present]
