from __future__ import annotations

from ml_ops.operators.base import PipelineOperator


def model_columns(cfg) -> tuple[list[str], list[str]]:
    """(numeric, categorical) model inputs: configured columns plus the generated features."""
    from ml_ops.features import FEATURE_COLUMNS_HISTORY, FEATURE_COLUMNS_TIME

    numeric = [*cfg.features.numeric, *FEATURE_COLUMNS_TIME]
    if cfg.features.entity_column:
        numeric += FEATURE_COLUMNS_HISTORY
    return list(dict.fromkeys(numeric)), list(cfg.features.categorical)


def load_labelled(store, uris: list[str], cfg, labels_known_at):
    """Feature partitions concatenated, keeping only rows whose label was known by ``labels_known_at``."""
    import pandas as pd

    df = pd.concat([store.read_parquet(u) for u in uris], ignore_index=True)
    col = cfg.target.label_available_column
    if col:
        known = pd.to_datetime(df[col], utc=True) <= pd.Timestamp(labels_known_at)
        df = df[known & df[cfg.target.column].notna()]
    return df.reset_index(drop=True)


class TrainOperator(PipelineOperator):
    """Fits the pipeline's estimator on the labelled window and registers it as ``challenger``.

    Skips (not fails) when the window's feature partitions are not all there yet, e.g. in the
    first days of a pipeline: downstream comparison and promotion are skipped with it.
    """

    def execute(self, context) -> dict:
        import ml_ops
        from airflow.sdk.exceptions import AirflowSkipException

        from ml_ops.hooks.mlflow import MlflowHook
        from ml_ops.interval import training_window
        from ml_ops.train import train_and_register

        cfg, interval = self.cfg, self.interval(context)
        window = training_window(
            interval, cfg.target.label_delay_days, cfg.training.window_days, cfg.training.holdout_days
        )
        train_uris = self.existing_partitions("features", window.train_days)
        holdout_uris = self.existing_partitions("features", window.holdout_days)
        missing = len(window.train_days) + len(window.holdout_days) - len(train_uris) - len(holdout_uris)
        if missing:
            raise AirflowSkipException(
                f"not enough labelled history for {interval.ds}: {missing} of the feature partitions "
                f"{window.label} are missing"
            )
        train_df = load_labelled(self.store, train_uris, cfg, window.labels_known_at)
        holdout_df = load_labelled(self.store, holdout_uris, cfg, window.labels_known_at)
        for name, part in (("training", train_df), ("holdout", holdout_df)):
            classes = part[cfg.target.column].nunique() if len(part) else 0
            if len(part) < cfg.training.min_rows or classes < 2:
                raise AirflowSkipException(
                    f"{name} set for {window.label} has {len(part)} labelled rows and {classes} classes; "
                    f"need >= {cfg.training.min_rows} rows and both classes"
                )
        numeric, categorical = model_columns(cfg)
        params = context.get("params") or {}
        key = f"{cfg.name}:{interval.ds}"
        if params.get("force_retrain"):
            key += f":{context['run_id']}"  # a forced retrain registers a new version on purpose
        validation_uris = [self.uri("validation", d, "report.html") for d in window.train_days + window.holdout_days]
        result = train_and_register(
            train_df,
            holdout_df,
            tracking_uri=MlflowHook(cfg.mlflow_conn_id).get_tracking_uri(),
            experiment=cfg.name,
            model_name=cfg.name,
            target=cfg.target.column,
            numeric=numeric,
            categorical=categorical,
            estimator=cfg.model.estimator,
            params=cfg.model.params,
            data_uris={"train": train_uris, "holdout": holdout_uris},
            tags={
                "pipeline": cfg.name,
                "data_date": interval.ds,
                "data_window": window.label,
                "code_version": ml_ops.code_version(),
                "validation_uri": validation_uris[-1],
                "airflow_run_id": context["run_id"],
            },
            seed=cfg.training.seed,
            run_name=f"train {interval.ds}",
            idempotency_key=key,
        )
        self.log.info("registered %s version %s (run %s): %s", cfg.name, result.version, result.run_id, result.metrics)
        return {
            "version": result.version,
            "run_id": result.run_id,
            "model_uri": result.model_uri,
            "holdout_uris": holdout_uris,
            "labels_known_at": window.labels_known_at.isoformat(),
        }
