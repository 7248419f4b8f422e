"""A small real world for the gateway tests and benchmark: simulated fraud days in S3 (raw + features,
built by the pipeline's own steps) and a real model registered in MLflow as ``champion``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta

START = date(2026, 3, 2)


@dataclass
class World:
    cfg: object  # ml_ops.config.Pipeline
    days: list[str]
    features: object  # pandas.DataFrame of every feature partition, in time order
    numeric: list[str]
    categorical: list[str]
    champion: int

    @property
    def inputs(self) -> list[str]:
        return [*self.numeric, *self.categorical]

    def rows(self, n: int, *, offset: int = 0, extra: tuple[str, ...] = ()) -> list[dict]:
        """``n`` request rows (JSON-safe dicts): the model's inputs plus ``extra`` columns."""
        import math

        cols = [*self.inputs, *extra]
        part = self.features.iloc[offset : offset + n][cols]
        out = []
        for rec in part.to_dict("records"):
            out.append(
                {
                    k: (None if isinstance(v, float) and math.isnan(v) else v.item() if hasattr(v, "item") else v)
                    for k, v in rec.items()
                }
            )
        return out


def build_world(
    store, tracking_uri: str, *, pipeline: str = "fraud", days: int = 4, rows_per_day: int = 1200, max_iter: int = 40
) -> World:
    """Simulate ``days`` days, write raw + features partitions, train on all but the last day (holdout),
    register the model as version 1 of ``pipeline`` and give it the ``champion`` alias."""
    import pandas as pd
    from mlflow import MlflowClient

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.interval import DayInterval
    from ml_ops.local.sim import generate_transactions
    from ml_ops.pipeline.history import mark_validated
    from ml_ops.pipeline.steps import features_step, model_columns, uri
    from ml_ops.pipeline.train import train_and_register

    cfg = load_pipeline_by_name(pipeline)
    raw = generate_transactions(
        START, days, rows_per_day=rows_per_day, n_customers=400, seed=11, label_delay_days=cfg.target.label_delay_days
    )
    ds_list = [(START + timedelta(days=i)).isoformat() for i in range(days)]
    for ds in ds_list:
        day = raw[raw["ts"].dt.strftime("%Y-%m-%d") == ds].reset_index(drop=True)
        store.write_parquet(day, uri(cfg, "raw", ds))
        mark_validated(store, cfg, ds, rows=len(day))  # the fixture's days count as validated
    for ds in ds_list:
        features_step(cfg, store, DayInterval.for_day(date.fromisoformat(ds)))
    frames = [store.read_parquet(uri(cfg, "features", ds)) for ds in ds_list]
    numeric, categorical = model_columns(cfg)
    train, holdout = pd.concat(frames[:-1], ignore_index=True), frames[-1]
    result = train_and_register(
        train,
        holdout,
        tracking_uri=tracking_uri,
        experiment=cfg.name,
        model_name=cfg.name,
        target=cfg.target.column,
        numeric=numeric,
        categorical=categorical,
        estimator=cfg.model.estimator,
        params={**cfg.model.params, "max_iter": max_iter},
        data_uris={},
        tags={"purpose": "gateway tests"},
        reference_sample_rows=500,
        seed=0,
        run_name="gateway-world",
    )
    MlflowClient(tracking_uri).set_registered_model_alias(cfg.name, "champion", str(result.version))
    return World(cfg, ds_list, pd.concat(frames, ignore_index=True), numeric, categorical, result.version)
