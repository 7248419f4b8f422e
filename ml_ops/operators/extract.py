from __future__ import annotations

from ml_ops.operators.base import PipelineOperator


class ExtractOperator(PipelineOperator):
    """Source rows of the run's day → ``raw/ds=<day>/data.parquet``. XCom: ``{"uri", "rows"}``."""

    def execute(self, context) -> dict:
        from airflow.sdk import BaseHook

        from ml_ops.extract import extract_interval

        cfg, interval = self.cfg, self.interval(context)
        engine = BaseHook.get_connection(cfg.source.conn_id).get_hook().get_sqlalchemy_engine()
        parse_dates = [c for c in (cfg.source.timestamp_column, cfg.target.label_available_column) if c]
        result = extract_interval(
            engine, cfg.sql_text(), interval.start, interval.end, self.store, self.uri("raw", interval.ds),
            parse_dates,
        )
        self.log.info("extracted %d rows for %s to %s", result.rows, interval.ds, result.uri)
        return result.to_xcom()
