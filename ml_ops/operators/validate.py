from __future__ import annotations

from ml_ops.operators.base import PipelineOperator


class ValidateOperator(PipelineOperator):
    """Great Expectations suite + statistics vs recent days on the day's raw partition.

    Writes ``validation/ds=<day>/{result.json,report.html}`` in every case, then fails the task
    (without retries: the data will not change) when anything failed, so nothing downstream runs.
    """

    def execute(self, context) -> dict:
        from airflow.sdk.exceptions import AirflowFailException

        from ml_ops.validate import load_suite, validate_frame

        cfg, interval = self.cfg, self.interval(context)
        df = self.store.read_parquet(self.uri("raw", interval.ds))
        history_uris = self.existing_partitions("raw", interval.previous_days(cfg.validation.history_days))
        history = [self.store.read_parquet(u) for u in history_uris]
        result = validate_frame(
            df,
            load_suite(cfg.suite_path()),
            history=history,
            stats_columns=cfg.validation.stats_columns,
            max_mean_shift_sigma=cfg.validation.max_mean_shift_sigma,
        )
        label = f"{cfg.name} ds={interval.ds}"
        json_uri = self.store.write_json(result.to_json(), self.uri("validation", interval.ds, "result.json"))
        html_uri = self.store.write_text(
            result.to_html(label=label), self.uri("validation", interval.ds, "report.html")
        )
        self.log.info("validation report: %s", html_uri)
        if not result.success:
            raise AirflowFailException(f"{result.message(label=label)}\nReport: {html_uri}")
        return {"uri": json_uri, "report": html_uri, "rows": len(df)}
