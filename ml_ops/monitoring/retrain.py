"""Retrain policy: an alarm (drift or quality; not a skew alarm) asks for a retrain of the day it is for, at most once per
``monitoring.retrain_cooldown_days``.

The monitoring DAG's ``retrain_due`` task calls ``retrain_request``; a request becomes the extra of the
retrain Asset event, and the training run that event starts processes the day it names
(``ml_ops.interval.interval_from_context`` reads ``data_date`` from the triggering event).
"""

from __future__ import annotations

import logging
from datetime import date, datetime, timezone

from ml_ops import layout
from ml_ops.config import Pipeline
from ml_ops.interval import DATA_DATE
from ml_ops.storage import ObjectStore

log = logging.getLogger(__name__)


def retrain_log_uri(cfg: Pipeline) -> str:
    return layout.retrain_log(cfg.prefix())


def should_retrain(store: ObjectStore, cfg: Pipeline, day: str) -> bool:
    """True at most once per ``retrain_cooldown_days``: records the retrain in ``drift/retrain_log.jsonl``.

    Idempotent per day: asking again for a day already recorded says True again (a retried task emits
    the same Asset event); a day within the cooldown of another recorded day says False."""
    d = date.fromisoformat(day)
    log_uri = retrain_log_uri(cfg)
    records = store.read_jsonl(log_uri)
    if any(r.get("day") == day for r in records):
        return True
    cooldown = cfg.monitoring.retrain_cooldown_days
    recent = [r["day"] for r in records if abs((d - date.fromisoformat(r["day"])).days) < cooldown]
    if recent:
        log.info("%s %s: retrain suppressed, cooldown of %d days after %s", cfg.name, day, cooldown, recent)
        return False
    store.append_jsonl(
        log_uri,
        {"day": day, "pipeline": cfg.name, "at": datetime.now(timezone.utc).isoformat(timespec="seconds")},
        key="day",
    )
    return True


RETRAINED_ON = ("drift", "quality")  # a skew alarm is alerted, not retrained on: the serving path is at fault


def alarm_kinds(result: dict) -> list[str]:
    """Which alarms a monitoring result raised: ``drift``, ``quality``, ``skew`` (training/serving), or none."""
    return [k for k in (*RETRAINED_ON, "skew") if result.get(f"{k}_alarm")]


def retrain_request(store: ObjectStore, cfg: Pipeline, result: dict) -> dict | None:
    """The retrain Asset event's extra for a monitoring result that alarmed (drift, quality or both) when the
    cooldown allows a retrain; None otherwise. The extra names the day (``data_date``) training must process."""
    raised = alarm_kinds(result)
    kinds = [k for k in raised if k in RETRAINED_ON]
    if not kinds and (raised or not result.get("alarm")):  # none, or skew only (an alarm without kinds: retrain)
        return None
    day = result["data_date"]
    if not should_retrain(store, cfg, day):
        return None
    return {DATA_DATE: day, "pipeline": cfg.name, "alarms": kinds, "log": retrain_log_uri(cfg)}
