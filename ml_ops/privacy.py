"""Personal data in what a pipeline stores: keyed hashes in the gateway's logs, retention, erasure.

* **Keyed hashes** (``Pseudonymizer``): the columns a pipeline's ``privacy.personal_columns`` names (e.g.
  ``customer_id``) are written to the gateway's prediction logs as HMAC-SHA256 hex digests under a key from the
  secrets store (``privacy.key_name``, default ``MLOPS_PRIVACY_KEY``: an environment variable, or in Airflow
  tasks an Airflow Variable of that name). The same value always gives the same digest, so joins on the column
  (monitoring, the erasure below) still work; without the key a digest cannot be reversed by trying ids. So is
  the ``routing_key`` column when the routing key is personal. Sticky routing hashes the raw value before
  anything is logged, so routing is unchanged. Feedback rows carry only ``request_id, row, label, ts``: they are
  joined to the served rows by request id, never by a person's id. Raw, features and labels partitions keep the
  raw values (training computes per-customer history from them); they are protected by retention, erasure and
  server-side encryption (``ml_ops.storage``). A gateway without the key writes those columns as nulls (never
  the raw value) and says so in its log.
* **Retention** (``enforce_retention``, the monitoring DAG's ``retention`` task): day partitions older than
  ``privacy.retention_days.<prefix>`` are deleted (raw with its validation reports, features, labels, serving
  logs and feedback with their dead letters); one audit line per run in ``layout.retention_log``.
* **Erasure** (``erase_entity``, the ``<pipeline>_erasure`` DAG): every row of one entity is removed from every
  raw, features, labels, serving-log and feedback partition (and the logs' dead letters): raw values in
  raw/features, the keyed hash in the logs, the entity's event ids in labels, its (request id, row) pairs in
  feedback. Each affected object is rewritten whole (one atomic PUT; an object left empty is deleted). A raw
  partition's validation marker is moved to the rewritten bytes, so the day stays validated. One audit record
  (who, why, when, objects and row counts; the entity only as its keyed hash) goes to ``layout.erasure_log``.
"""

from __future__ import annotations

import hmac
import json
import logging
import math
import os
from collections.abc import Iterable, Mapping
from datetime import date, datetime, timedelta, timezone
from typing import TYPE_CHECKING

from ml_ops import layout
from ml_ops.config import ConfigError, Pipeline

if TYPE_CHECKING:
    import pandas as pd

    from ml_ops.storage import ObjectStore

log = logging.getLogger(__name__)

# Prefixes with a retention period: (stage, day-partitioned stages that follow it)
RETAINED = {
    layout.SERVING_LOGS: (layout.SERVING_LOGS, f"{layout.DEAD_LETTER}/{layout.SERVING_LOGS}"),
    layout.FEEDBACK: (layout.FEEDBACK, f"{layout.DEAD_LETTER}/{layout.FEEDBACK}"),
    layout.RAW: (layout.RAW, layout.VALIDATION),
    layout.FEATURES: (layout.FEATURES,),
    layout.LABELS: (layout.LABELS,),
}


class PrivacyKeyMissing(ConfigError):
    """Personal columns are configured but the HMAC key is nowhere to be found."""


# --------------------------------------------------------------------------- keyed hashes


def read_key(name: str, *, airflow: bool = False, environ: Mapping[str, str] | None = None) -> bytes | None:
    """The HMAC key named ``name``: the environment variable, else (``airflow=True``, inside a task) the Airflow
    Variable of that name. None when neither holds it."""
    value = (os.environ if environ is None else environ).get(name)
    if not value and airflow:
        try:
            from airflow.sdk import Variable

            value = Variable.get(name, default=None)
        except Exception as exc:  # noqa: BLE001 - no Variable backend reachable: the key is just not there
            log.debug("Airflow Variable %s not readable: %s", name, exc)
            value = None
    return value.encode() if value else None


def keyed_hash(key: bytes, value) -> str | None:
    """HMAC-SHA256 hex digest of ``str(value)`` (None and NaN stay None)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    text = value if isinstance(value, str) else str(value)
    return hmac.digest(key, text.encode("utf-8", "surrogatepass"), "sha256").hex()  # = hmac.new(...).hexdigest()


class Pseudonymizer:
    """Replaces a pipeline's personal columns (and the routing key, when personal) in log rows by keyed hashes."""

    def __init__(self, cfg: Pipeline, key: bytes | None):
        self.pipeline = cfg.name
        self.columns = set(cfg.personal_columns)
        if cfg.routing_key in self.columns:
            self.columns.add("routing_key")
        self.key = key
        self._warned = False
        self._cache: dict[str, str | None] = {}  # customers come back: most values are hashed once

    CACHE_SIZE = 100_000  # entries (~20 MB); emptied when full

    @classmethod
    def for_pipeline(cls, cfg: Pipeline, *, airflow: bool = False) -> Pseudonymizer:
        return cls(cfg, read_key(cfg.privacy.key_name, airflow=airflow) if cfg.personal_columns else None)

    @property
    def active(self) -> bool:
        return bool(self.columns)

    def value(self, value) -> str | None:
        if self.key is None:
            return None
        if not isinstance(value, str):
            return keyed_hash(self.key, value)
        found = self._cache.get(value)
        if found is None:
            if len(self._cache) >= self.CACHE_SIZE:
                self._cache.clear()
            found = self._cache[value] = keyed_hash(self.key, value)
        return found

    def apply(self, columns: dict) -> dict:
        """``columns`` (name -> scalar or list of values, as ``PartitionedLog.append`` takes them) with every
        personal column hashed; changed in place and returned."""
        if not self.columns:
            return columns
        if self.key is None and not self._warned:
            self._warned = True
            log.error(
                "pipeline %s: personal columns %s are logged as nulls: no HMAC key (privacy.key_name)",
                self.pipeline,
                sorted(self.columns),
            )
        for name in self.columns.intersection(columns):
            values = columns[name]
            if isinstance(values, (list, tuple)) or hasattr(values, "tolist"):
                seq = values.tolist() if hasattr(values, "tolist") else values
                columns[name] = [self.value(v) for v in seq]
            else:
                columns[name] = self.value(values)
        return columns


# --------------------------------------------------------------------------- retention


def _day(uri: str) -> date | None:
    if "/ds=" not in uri:
        return None
    try:
        return date.fromisoformat(layout.day_of(uri))
    except ValueError:
        return None


def enforce_retention(
    cfg: Pipeline, store: ObjectStore, today: date, *, run_id: str = "manual", by: str = "retention"
) -> dict:
    """Delete every day partition older than its prefix's retention period (``privacy.retention_days``): a day D
    of a prefix kept N days goes when ``D < today - N``. Appends one audit line to ``layout.retention_log``.
    Returns ``{prefix: {"kept_days": N, "cutoff": day, "deleted": objects, "days": [day, ...]}}``."""
    prefix = cfg.prefix()
    retention = cfg.privacy.retention_days
    result: dict = {}
    for name, stages in RETAINED.items():
        days = getattr(retention, name)
        if days is None:
            result[name] = {"kept_days": None}
            continue
        cutoff = today - timedelta(days=days)
        deleted, gone_days = 0, set()
        for stage in stages:
            for uri in store.list(layout.stage_prefix(prefix, stage) + "/ds="):
                day = _day(uri)
                if day is not None and day < cutoff:
                    store.delete(uri)
                    deleted += 1
                    gone_days.add(day.isoformat())
        result[name] = {"kept_days": days, "cutoff": cutoff.isoformat(), "deleted": deleted, "days": sorted(gone_days)}
    record = {
        "id": f"{today.isoformat()}:{run_id}",
        "pipeline": cfg.name,
        "day": today.isoformat(),
        "run_id": run_id,
        "by": by,
        "at": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "prefixes": result,
    }
    if not store.append_jsonl(layout.retention_log(prefix), record, key="id"):  # a retry of the same run
        record["id"] = f"{record['id']}:{record['at']}"
        store.append_jsonl(layout.retention_log(prefix), record, key="id")
    deleted = sum(r.get("deleted", 0) for r in result.values())
    log.info("%s: retention as of %s deleted %d object(s): %s", cfg.name, today, deleted, result)
    return {"deleted": deleted, "prefixes": result, "log": layout.retention_log(prefix)}


# --------------------------------------------------------------------------- erasure


def _matches(series: pd.Series, value: str) -> pd.Series:
    """Rows whose value equals ``value`` as the gateway would have written it (text), numbers compared as numbers."""
    import pandas as pd

    if pd.api.types.is_numeric_dtype(series) and not pd.api.types.is_bool_dtype(series):
        try:
            number = float(value)
        except ValueError:
            return pd.Series(False, index=series.index)
        return (pd.to_numeric(series, errors="coerce") == number).fillna(False).astype(bool)
    return series.astype("string").eq(value).fillna(False).astype(bool)


def _rewrite(store: ObjectStore, uri: str, df: pd.DataFrame, drop: pd.Series, report: list[dict]) -> int:
    """Write ``df`` without the ``drop`` rows back to ``uri`` (atomically; deleted when nothing is left)."""
    removed = int(drop.sum())
    if not removed:
        return 0
    kept = df.loc[~drop.to_numpy()].reset_index(drop=True)
    if len(kept):
        store.write_parquet(kept, uri)
    else:
        store.delete(uri)
    report.append({"uri": uri, "rows_removed": removed, "rows_left": len(kept)})
    return removed


def _parquet_parts(store: ObjectStore, prefix: str, stage: str) -> list[str]:
    return [u for u in store.list(layout.stage_prefix(prefix, stage) + "/ds=") if u.endswith(".parquet")]


def _revalidate_marker(store: ObjectStore, cfg: Pipeline, raw_uri: str, removed: int, at: str) -> None:
    """A rewritten raw partition keeps its validated verdict: the marker names the new bytes."""
    ds = layout.day_of(raw_uri)
    marker = layout.partition(cfg.prefix(), layout.VALIDATION, ds, layout.VALIDATED_MARKER)
    if not store.exists(marker) or not store.exists(raw_uri):
        return
    found = store.read_json(marker)
    found.update(
        raw_etag=store.etag(raw_uri),
        rows=max(0, int(found.get("rows") or 0) - removed),
        erased={"at": at, "rows": removed, **({"before": found["erased"]} if "erased" in found else {})},
    )
    store.write_json(found, marker)


def erase_entity(
    cfg: Pipeline,
    store: ObjectStore,
    entity_id: str,
    *,
    key: bytes | None,
    by: str,
    reason: str,
    run_id: str = "manual",
    online_store=None,
) -> dict:
    """Remove every row of one entity (``entity_id``, matched in the personal columns, else in
    ``features.entity_column``) from every raw, features, labels, serving-log and feedback partition, and its
    events from the gateway's ``online_store`` (an ``ml_ops.features.store.OnlineStore``, when given), then append
    the audit record to ``layout.erasure_log``. Returns the record."""
    import pandas as pd

    entity_id = str(entity_id).strip()
    if not entity_id:
        raise ValueError("entity_id is empty")
    if not reason or not str(reason).strip():
        raise ValueError("an erasure needs a reason (it is recorded)")
    columns = cfg.personal_columns or [c for c in [cfg.features.entity_column] if c]
    if not columns:
        raise ConfigError(
            f"pipeline {cfg.name!r} names no entity column: set privacy.personal_columns (or features.entity_column)"
        )
    hashed_in_logs = bool(cfg.personal_columns)
    if hashed_in_logs and key is None:
        raise PrivacyKeyMissing(
            f"pipeline {cfg.name!r}: no HMAC key in {cfg.privacy.key_name} (environment or Airflow Variable): the "
            "serving logs hold the personal columns as keyed hashes, which cannot be matched without it"
        )
    pseudo = Pseudonymizer(cfg, key)
    log_value = pseudo.value(entity_id) if hashed_in_logs else entity_id
    log_columns = [*columns, *(["routing_key"] if hashed_in_logs and "routing_key" in pseudo.columns else [])]
    at = datetime.now(timezone.utc).isoformat(timespec="seconds")
    prefix, id_col = cfg.prefix(), cfg.source.id_column
    objects: list[dict] = []
    ids: set[str] = set()
    served: set[tuple[str, int]] = set()

    def rows_of(df: pd.DataFrame, names: Iterable[str], value: str) -> pd.Series:
        mask = pd.Series(False, index=df.index)
        for c in names:
            if c in df.columns:
                mask |= _matches(df[c], value)
        return mask

    # raw: raw values; collect the entity's event ids (features and labels rows are events, keyed by id)
    for uri in _parquet_parts(store, prefix, layout.RAW):
        df = store.read_parquet(uri)
        drop = rows_of(df, columns, entity_id)
        if drop.any() and id_col in df.columns:
            ids.update(df.loc[drop, id_col].astype(str))
        removed = _rewrite(store, uri, df, drop, objects)
        if removed:
            _revalidate_marker(store, cfg, uri, removed, at)

    # serving logs: the keyed hash; collect (request id, row) for feedback and the event ids
    for uri in _parquet_parts(store, prefix, layout.SERVING_LOGS):
        df = store.read_parquet(uri)
        drop = rows_of(df, log_columns, log_value)
        if drop.any():
            hit = df.loc[drop]
            served.update(zip(hit["request_id"].astype(str), hit["row"].astype(int), strict=False))
            if id_col in df.columns:
                ids.update(hit[id_col].dropna().astype(str))
        _rewrite(store, uri, df, drop, objects)

    # features: the entity's events (and its raw values, should a features partition carry the column)
    for uri in _parquet_parts(store, prefix, layout.FEATURES):
        df = store.read_parquet(uri)
        drop = rows_of(df, columns, entity_id)
        if ids and id_col in df.columns:
            drop |= df[id_col].astype(str).isin(ids)
        _rewrite(store, uri, df, drop, objects)

    # feedback: the labels of the entity's served rows
    for uri in _parquet_parts(store, prefix, layout.FEEDBACK):
        df = store.read_parquet(uri)
        if not served or df.empty:
            continue
        pairs = pd.Series(list(zip(df["request_id"].astype(str), df["row"].astype(int), strict=False)), index=df.index)
        _rewrite(store, uri, df, pairs.isin(served), objects)

    # labels: the entity's events (and its column, should a labels partition carry one)
    for uri in _parquet_parts(store, prefix, layout.LABELS):
        df = store.read_parquet(uri)
        drop = rows_of(df, columns, entity_id)
        if ids and "id" in df.columns:
            drop |= df["id"].astype(str).isin(ids)
        _rewrite(store, uri, df, drop, objects)

    # dead letters of the logs: JSON lines whose row is the entity's
    for stage in (layout.SERVING_LOGS, layout.FEEDBACK):
        dead = layout.dead_letter_prefix(layout.stage_prefix(prefix, stage))
        for uri in [u for u in store.list(dead + "/") if u.endswith(".jsonl")]:
            lines = store.get_bytes(uri).decode().splitlines()
            keep, removed = [], 0
            for line in lines:
                try:
                    row = json.loads(line).get("row") or {}
                except ValueError:
                    keep.append(line)
                    continue
                mine = any(str(row.get(c)) == log_value for c in log_columns if row.get(c) is not None) or (
                    stage == layout.FEEDBACK and (str(row.get("request_id")), row.get("row")) in served
                )
                if mine:
                    removed += 1
                else:
                    keep.append(line)
            if removed:
                if keep:
                    store.put_bytes(uri, ("\n".join(keep) + "\n").encode(), "application/x-ndjson")
                else:
                    store.delete(uri)
                objects.append({"uri": uri, "rows_removed": removed, "rows_left": len(keep)})

    online = None
    if online_store is not None and cfg.features.entity_column:
        from ml_ops.features.online import entity_keyer

        online = online_store.forget(cfg.name, entity_keyer(cfg, key)(entity_id))

    record = {
        "id": f"{run_id}:{at}",
        "pipeline": cfg.name,
        # the audit holds no personal data: the entity as its keyed hash (the raw id when nothing is hashed)
        "entity": pseudo.value(entity_id) if key is not None else None,
        "columns": columns,
        "reason": str(reason),
        "by": by,
        "run_id": run_id,
        "at": at,
        "objects": objects,
        "rows_removed": sum(o["rows_removed"] for o in objects),
        "rows_by_prefix": _by_prefix(prefix, objects),
        "online_store_events_removed": online,  # None: no online store given
    }
    store.append_jsonl(layout.erasure_log(prefix), record, key="id")
    log.info(
        "%s: erased %d row(s) of one entity from %d object(s) (%s)",
        cfg.name,
        record["rows_removed"],
        len(objects),
        record["rows_by_prefix"],
    )
    return {**record, "log": layout.erasure_log(prefix)}


def _by_prefix(prefix: str, objects: list[dict]) -> dict[str, int]:
    out: dict[str, int] = {}
    for o in objects:
        rest = o["uri"].split(prefix.rstrip("/") + "/", 1)[-1]
        stage = rest.split("/ds=", 1)[0]
        out[stage] = out.get(stage, 0) + o["rows_removed"]
    return out
