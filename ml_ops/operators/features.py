from __future__ import annotations

from ml_ops.operators.base import PipelineOperator


class FeaturesOperator(PipelineOperator):
    """Raw day (+ the lookback days for per-entity history) → ``features/ds=<day>/data.parquet``."""

    def execute(self, context) -> dict:
        import pandas as pd

        from ml_ops.features import build_features

        cfg, interval = self.cfg, self.interval(context)
        today = self.store.read_parquet(self.uri("raw", interval.ds))
        history = None
        if cfg.features.entity_column:
            uris = self.existing_partitions("raw", interval.previous_days(cfg.features.lookback_days))
            history = pd.concat([self.store.read_parquet(u) for u in uris], ignore_index=True) if uris else None
        passthrough = [
            c
            for c in (
                cfg.source.id_column,
                cfg.source.timestamp_column,
                *cfg.feature_columns,
                cfg.target.column,
                cfg.target.label_available_column,
            )
            if c
        ]
        features = build_features(
            today,
            history,
            entity=cfg.features.entity_column,
            timestamp=cfg.source.timestamp_column,
            amount=cfg.features.amount_column,
            passthrough=list(dict.fromkeys(passthrough)),
        )
        uri = self.store.write_parquet(features, self.uri("features", interval.ds))
        return {"uri": uri, "rows": len(features)}
