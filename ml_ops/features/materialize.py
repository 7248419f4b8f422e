"""Materialisation: (re)build a pipeline's online store from its validated raw partitions.

The events of the newest validated raw day and of the ``features.lookback_days`` days before it (the history the
features step reads: quarantined days left out) are recorded in the online store, with the same entity keys and
the same idempotent update the gateway uses (``ml_ops.features.store``). So a gateway starts warm: an entity's
first event online gets the features the batch code gives it, and an entity with no event in the store gets
what the batch code gives an entity with no history. It is a merge, not a replacement: events the gateway
recorded meanwhile stay, events it already has are not counted twice, so it can run at any time beside live
traffic. ``rebuild=True`` first forgets the pipeline's state (e.g. after a change of the feature definition);
events served since the newest raw day are then missing until they reach a raw partition.

Who runs it: the gateway, off the request path, when a pipeline's champion or canary version is loaded
(at start, too) and whenever a newer validated raw day appears (``ml_ops.serving``); by hand or from any
scheduler with the command line::

    mlops features materialize --pipeline fraud [--until DAY] [--rebuild]

which reads the online store from MLOPS_ONLINE_STORE (MLOPS_ONLINE_NAMESPACE), S3 from MLOPS_S3_ENDPOINT +
AWS_*, and the privacy key from the pipeline's ``privacy.key_name`` (environment, or an Airflow Variable).
"""

from __future__ import annotations

import logging
import time
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np

from ml_ops import layout
from ml_ops.features.online import entity_keyer, make_events

if TYPE_CHECKING:
    from ml_ops.config import Pipeline
    from ml_ops.features.store import OnlineStore
    from ml_ops.storage import ObjectStore

log = logging.getLogger(__name__)
_CHUNK = 20_000  # events per store call


def raw_days(store: ObjectStore, cfg: Pipeline) -> list[str]:
    """Days with a raw partition, oldest first."""
    parts = store.list(layout.stage_prefix(cfg.prefix(), layout.RAW) + "/")
    return sorted({layout.day_of(u) for u in parts if u.endswith("/" + layout.DATA_FILE)})


def newest_validated_day(store: ObjectStore, cfg: Pipeline, until: str | None = None) -> str | None:
    """The newest day (at or before ``until``) whose raw partition is validated; recent days are looked at
    first (each costs a read of its marker)."""
    from ml_ops.pipeline import history

    days = [d for d in raw_days(store, cfg) if until is None or d <= until]
    step = cfg.features.lookback_days + 1
    for end in range(len(days), 0, -step):
        validated = history.status(store, cfg, days[max(0, end - step) : end]).validated
        if validated:
            return validated[-1]
    return None


def materialize(
    cfg: Pipeline,
    store: ObjectStore,
    online: OnlineStore,
    key: bytes | None,
    *,
    until: str | None = None,
    rebuild: bool = False,
) -> dict:
    """Record the events of the newest validated raw day (at or before ``until``) and of its lookback in
    ``online``. Returns what was done: days, events read, events new to the store, seconds."""
    from ml_ops.pipeline import history

    t0 = time.monotonic()
    f = cfg.features
    result = {"pipeline": cfg.name, "store": online.label, "days": [], "events": 0, "new": 0, "rebuilt": rebuild}
    if f.entity_column is None:
        return {**result, "note": "no per-entity history features: nothing to keep online"}
    keyer = entity_keyer(cfg, key)  # before anything is cleared: a missing key must not leave the store empty
    newest = newest_validated_day(store, cfg, until)
    if rebuild:
        result["cleared"] = online.clear(cfg.name)
    if newest is None:
        return {**result, "note": "no validated raw partition yet", "seconds": round(time.monotonic() - t0, 3)}
    last = date.fromisoformat(newest)
    span = [(last - timedelta(days=i)).isoformat() for i in range(f.lookback_days, -1, -1)]
    days = history.status(store, cfg, span).validated
    columns = [f.entity_column, cfg.source.timestamp_column, f.amount_column, cfg.source.id_column]
    columns = list(dict.fromkeys(c for c in columns if c))
    from ml_ops.pipeline.features import _ns

    for ds in days:
        df = store.read_parquet(layout.partition(cfg.prefix(), layout.RAW, ds), columns=columns)
        df = df[df[f.entity_column].notna()]  # a row without entity shares history with nobody
        if not len(df):
            continue
        ts = _ns(df, cfg.source.timestamp_column, f"raw ds={ds}")
        amounts = df[f.amount_column].to_numpy(np.float64) if f.amount_column else None
        keys = [keyer(v) for v in df[f.entity_column].tolist()]
        events = make_events(keys, [str(v) for v in df[cfg.source.id_column].tolist()], ts, amounts)
        for i in range(0, len(events), _CHUNK):
            result["new"] += online.ingest(cfg.name, events[i : i + _CHUNK])
        result["events"] += len(events)
    result.update(days=days, through=newest, seconds=round(time.monotonic() - t0, 3))
    log.info(
        "%s: online store %s materialised from %d day(s) through %s: %d events, %d new (%.1fs)",
        cfg.name,
        online.label,
        len(days),
        newest,
        result["events"],
        result["new"],
        result["seconds"],
    )
    return result


def main(argv: list[str] | None = None, prog: str = "python -m ml_ops.features.materialize") -> int:
    import argparse
    import json
    import os

    from ml_ops.config import load_pipeline_by_name
    from ml_ops.features.store import open_store
    from ml_ops.privacy import read_key
    from ml_ops.storage import store_from_env

    parser = argparse.ArgumentParser(
        prog=prog,
        description="(Re)build a pipeline's online feature store from its validated raw partitions (a merge: "
        "events already there are not counted twice). Store: MLOPS_ONLINE_STORE.",
    )
    parser.add_argument("--pipeline", required=True)
    parser.add_argument("--until", help="newest raw day to use (default: the newest validated one)")
    parser.add_argument("--rebuild", action="store_true", help="forget the pipeline's online state first")
    parser.add_argument("--store", help="online store URL (default: MLOPS_ONLINE_STORE)")
    args = parser.parse_args(argv)
    url = args.store or os.environ.get("MLOPS_ONLINE_STORE")
    if not url:
        parser.error("no online store: set MLOPS_ONLINE_STORE (redis://host:port/db or sqlite:///path) or --store")
    cfg = load_pipeline_by_name(args.pipeline)
    online = open_store(url, namespace=os.environ.get("MLOPS_ONLINE_NAMESPACE") or "mlops")
    try:
        result = materialize(
            cfg,
            store_from_env(),
            online,
            read_key(cfg.privacy.key_name, airflow=True),
            until=args.until,
            rebuild=args.rebuild,
        )
    finally:
        online.close()
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
