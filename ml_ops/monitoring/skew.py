"""Training/serving skew: the derived features the gateway served for raw events, recomputed by the batch code.

For the day's raw-event predictions in the serving logs (``input_mode`` raw, successful, any route; the day of
the request), the batch execution (``ml_ops.pipeline.features.build_features``) recomputes their derived
features from every event known for their event days and the ``features.lookback_days`` before them: the
validated raw partitions (what training sees) and the raw events the gateway served in that time (which may not
have reached a raw partition yet), one event per (entity, event id). Entities are matched by the keyed hash the
logs hold (``ml_ops.privacy``): the raw partitions' ids are hashed with the pipeline's key; without the key only
the served events make the history (said in ``note``).

Per derived feature: the share of served rows whose value differs from the batch one (counts and time parts
exactly, the rest beyond ``RTOL``/``ATOL``) and the largest absolute difference. A share above
``monitoring.skew_threshold`` on any feature is the skew alarm, an alarm of its own: it is alerted, but it does
not ask for a retrain (a model retrained on batch features does not fix the serving path).
"""

from __future__ import annotations

import logging
from datetime import date, timedelta
from typing import TYPE_CHECKING

import numpy as np

from ml_ops import layout
from ml_ops.features.definition import COUNT_WINDOWS_NS, FEATURE_COLUMNS_TIME
from ml_ops.rollout.deployment import INPUT_MODE_COLUMN, raw_log_name

if TYPE_CHECKING:
    import pandas as pd

    from ml_ops.config import Pipeline
    from ml_ops.storage import ObjectStore

log = logging.getLogger(__name__)
RTOL, ATOL = 1e-6, 1e-9  # float features: equal within these (the two executions sum in different orders)
EXACT = {*COUNT_WINDOWS_NS, *FEATURE_COLUMNS_TIME}
_ENTITY, _ID, _TS, _AMOUNT = "_entity", "_event_id", "_ts", "_amount"


def _served_raw(cfg: Pipeline, store: ObjectStore, ds: str, features: list[str]) -> pd.DataFrame | None:
    """The day's successful raw-event rows of the serving logs: event columns (renamed) + served features."""
    import pandas as pd

    from ml_ops.monitoring.current import serving_log_parts

    f, src = cfg.features, cfg.source
    names = {
        raw_log_name(f.entity_column): _ENTITY,
        raw_log_name(src.id_column): _ID,
        raw_log_name(src.timestamp_column): _TS,
    }
    if f.amount_column:
        names[raw_log_name(f.amount_column)] = _AMOUNT
    frames = []
    for part in serving_log_parts(cfg, store, ds):
        df = store.read_parquet(part)
        if INPUT_MODE_COLUMN not in df.columns or not len(df):
            continue
        df = df[(df[INPUT_MODE_COLUMN] == "raw") & df["error"].isna()]
        missing = [c for c in [*names, *features] if c not in df.columns]
        if len(df) and not missing:
            frames.append(df[[*names, *features]].rename(columns=names))
    if not frames:
        return None
    out = pd.concat(frames, ignore_index=True)
    out[_TS] = pd.to_datetime(out[_TS], utc=True).dt.tz_localize(None)
    return out


MAX_RAW_DAYS = 60  # raw partitions read at most, back from the newest served event's day


def _known_events(
    cfg: Pipeline, store: ObjectStore, ds: str, key: bytes | None, first: date, last: date
) -> tuple[pd.DataFrame, dict]:
    """Every event that can make the history of the served events (event days ``first``..``last``): validated
    raw partitions of those days and their lookback (entity hashed like the logs), and the raw events served on
    ``ds`` and the lookback before it; one per (entity, event id)."""
    import pandas as pd

    from ml_ops.pipeline import history
    from ml_ops.privacy import Pseudonymizer

    f, src = cfg.features, cfg.source
    day = date.fromisoformat(ds)
    days = [(day - timedelta(days=i)).isoformat() for i in range(f.lookback_days, -1, -1)]
    span = min((last - first).days + f.lookback_days, MAX_RAW_DAYS)
    raw_days = [(last - timedelta(days=i)).isoformat() for i in range(span, -1, -1)]
    personal = f.entity_column in cfg.personal_columns
    info: dict = {"raw_days": [], "served_days": []}
    frames = []
    if personal and key is None:
        info["note"] = f"no privacy key ({cfg.privacy.key_name}): history from the served events only"
    else:
        hashed = Pseudonymizer(cfg, key).value if personal else (lambda v: v if isinstance(v, str) else str(v))
        cols = [c for c in dict.fromkeys([f.entity_column, src.id_column, src.timestamp_column, f.amount_column]) if c]
        for d in history.status(store, cfg, raw_days).validated:
            raw = store.read_parquet(layout.partition(cfg.prefix(), layout.RAW, d), columns=cols)
            raw = raw[raw[f.entity_column].notna()]
            frames.append(
                pd.DataFrame(
                    {
                        _ENTITY: [hashed(v) for v in raw[f.entity_column].tolist()],
                        _ID: raw[src.id_column].astype(str).to_numpy(),
                        _TS: pd.to_datetime(raw[src.timestamp_column]).to_numpy(),
                        _AMOUNT: raw[f.amount_column].to_numpy(np.float64) if f.amount_column else np.nan,
                    }
                )
            )
            info["raw_days"].append(d)
    for d in days:
        served = _served_raw(cfg, store, d, [])
        if served is not None:
            frames.append(served.assign(**({} if f.amount_column else {_AMOUNT: np.nan})))
            info["served_days"].append(d)
    events = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=[_ENTITY, _ID, _TS, _AMOUNT])
    events[_TS] = pd.to_datetime(events[_TS])
    return events.drop_duplicates([_ENTITY, _ID], keep="first").reset_index(drop=True), info


def skew_check(cfg: Pipeline, store: ObjectStore, ds: str, key: bytes | None) -> dict:
    """The day's skew report (see the module docstring); ``status`` says when there was nothing to compare."""
    import pandas as pd

    from ml_ops.pipeline.features import build_features

    threshold = cfg.monitoring.skew_threshold
    features = list(cfg.generated_features)
    result: dict = {"threshold": threshold, "alarm": False, "alarm_features": [], "features": {}, "rows": 0}
    if not features:
        return {**result, "status": "no derived features"}
    if cfg.features.entity_column is None:
        return {**result, "status": "no per-entity features (time parts only: nothing kept online)"}
    served = _served_raw(cfg, store, ds, features)
    if served is None or not len(served):
        return {**result, "status": "no raw-event predictions logged"}
    start = served[_TS].min().floor("D")
    events, info = _known_events(cfg, store, ds, key, start.date(), served[_TS].max().date())
    today = events[events[_TS] >= start].reset_index(drop=True)
    past = events[events[_TS] < start].reset_index(drop=True)
    batch = build_features(
        today,
        past if len(past) else None,
        entity=_ENTITY,
        timestamp=_TS,
        amount=_AMOUNT if cfg.features.amount_column else None,
        passthrough=[_ENTITY, _ID],
        time_parts=cfg.features.time_parts,
    )
    joined = served.merge(batch, on=[_ENTITY, _ID], how="left", suffixes=("", "_batch"), validate="many_to_one")
    unmatched = int(joined[f"{features[0]}_batch"].isna().sum())
    for c in features:
        got = pd.to_numeric(joined[c], errors="coerce").to_numpy(np.float64)
        want = joined[f"{c}_batch"].to_numpy(np.float64)
        if c in EXACT:
            same = got == want
        else:
            same = np.isclose(got, want, rtol=RTOL, atol=ATOL, equal_nan=True)
        diff = np.abs(got - want)
        share = float(np.mean(~same))
        result["features"][c] = {
            "mismatch_share": round(share, 6),
            "mismatched": int((~same).sum()),
            "max_abs_diff": float(np.nanmax(diff)) if np.isfinite(diff).any() else None,
        }
        if share > threshold:
            result["alarm_features"].append(c)
    result.update(status="compared", rows=len(served), unmatched=unmatched, **info)
    result["alarm"] = bool(result["alarm_features"])
    if result["alarm"]:
        worst = ", ".join(
            f"{c} {result['features'][c]['mismatch_share']:.1%} (largest difference "
            f"{result['features'][c]['max_abs_diff']:.6g})"
            for c in result["alarm_features"]
        )
        result["text"] = (
            f"Training/serving skew on {len(served)} raw-event predictions: served features differ from the batch "
            f"features of the same events beyond {threshold:.1%} of rows: {worst}"
        )
    log.info("%s ds=%s: skew %s", cfg.name, ds, {k: v["mismatch_share"] for k, v in result["features"].items()})
    return result
