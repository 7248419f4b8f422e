"""Which earlier days a step may build on: validated, rejected (quarantined) or not processed yet.

A raw partition is *validated* when its marker ``validation/ds=<day>/validated.json`` names the ETag of
the raw object it was written for: a re-extracted partition (new bytes, new ETag) is not validated until
validate passes again, so marker and partition can never disagree. A day whose validation failed is
*rejected*: it stays out of every later day's history and training window, with a record in
``validation/quarantine.jsonl``, until it is fixed and re-run. A day with neither (not extracted, or not
validated yet) inside the stretch of history that exists is *missing*: a step that needs it stops with
``IncompleteHistory`` naming the days, instead of silently computing from incomplete history (the operator
then waits while those days' runs are running, and otherwise fails at once naming them).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from ml_ops import layout

if TYPE_CHECKING:
    from ml_ops.config import Pipeline
    from ml_ops.storage import ObjectStore


class IncompleteHistory(RuntimeError):
    """Earlier days this step needs are not validated yet (``missing``, oldest first). Not a data error: once
    those days are processed, the same step passes."""

    def __init__(self, message: str, missing: list[str]) -> None:
        super().__init__(message)
        self.missing = list(missing)


@dataclass(frozen=True)
class History:
    validated: list[str]  # days whose raw partition passed validation, oldest first
    rejected: list[str]  # days whose validation failed (quarantined)
    missing: list[str]  # days inside existing history with no validated or rejected partition

    def uris(self, cfg: Pipeline, stage: str) -> list[str]:
        return [layout.partition(cfg.prefix(), stage, d) for d in self.validated]


def _marker(cfg: Pipeline, ds: str) -> str:
    return layout.partition(cfg.prefix(), layout.VALIDATION, ds, layout.VALIDATED_MARKER)


def mark_validated(store: ObjectStore, cfg: Pipeline, ds: str, *, rows: int) -> str:
    """Written by validate after the day passed; ties the verdict to the exact raw bytes validated."""
    raw = layout.partition(cfg.prefix(), layout.RAW, ds)
    marker = {"ds": ds, "raw": raw, "raw_etag": store.etag(raw), "rows": rows}
    was_rejected = any(r["ds"] == ds and r["status"] == "rejected" for r in quarantine(store, cfg))
    uri = store.write_json(marker, _marker(cfg, ds))
    if was_rejected:  # the record of the release sits beside the rejection it ends
        _record(store, cfg, {"ds": ds, "status": "released", "raw_etag": marker["raw_etag"], "rows": rows})
    return uri


def mark_rejected(store: ObjectStore, cfg: Pipeline, ds: str, *, failed: list[str], report: str) -> None:
    """Quarantine the day: no marker (so no later step reads it) and a visible record of why."""
    marker = _marker(cfg, ds)
    if store.exists(marker):
        store.delete(marker)
    raw = layout.partition(cfg.prefix(), layout.RAW, ds)
    etag = store.etag(raw) if store.exists(raw) else None
    _record(store, cfg, {"ds": ds, "status": "rejected", "raw_etag": etag, "failed": failed, "report": report})


def _record(store: ObjectStore, cfg: Pipeline, record: dict) -> None:
    # Keyed on day, verdict and raw bytes: a re-run of the same day with the same data adds nothing.
    key = f"{record['ds']}:{record['status']}:{record['raw_etag']}"
    store.append_jsonl(layout.quarantine_log(cfg.prefix()), {**record, "key": key}, key="key")


def quarantine(store: ObjectStore, cfg: Pipeline) -> list[dict]:
    return store.read_jsonl(layout.quarantine_log(cfg.prefix()))


def status(store: ObjectStore, cfg: Pipeline, days: list[str]) -> History:
    """Classify ``days`` (oldest first). History "exists" from the earliest day with a raw partition:
    absent days before it are the start of the pipeline's life, not gaps."""
    raw_etags = store.list_etags(layout.stage_prefix(cfg.prefix(), layout.RAW) + "/")
    validation = set(store.list(layout.stage_prefix(cfg.prefix(), layout.VALIDATION) + "/"))
    raw_days = sorted(layout.day_of(u) for u in raw_etags if u.endswith("/" + layout.DATA_FILE))
    first = raw_days[0] if raw_days else None
    validated, rejected, missing = [], [], []
    for ds in days:
        raw = layout.partition(cfg.prefix(), layout.RAW, ds)
        marker = _marker(cfg, ds)
        if raw in raw_etags and marker in validation and store.read_json(marker).get("raw_etag") == raw_etags[raw]:
            validated.append(ds)
        elif layout.partition(cfg.prefix(), layout.VALIDATION, ds, layout.RESULT_FILE) in validation and (
            raw in raw_etags
        ):
            rejected.append(ds)  # validated and failed (a passed day has its marker)
        elif first is not None and ds > first:
            missing.append(ds)
    return History(validated, rejected, missing)


def require(store: ObjectStore, cfg: Pipeline, ds: str, days: list[str], *, needed_by: str) -> History:
    """``status`` of ``days``, raising ``IncompleteHistory`` when any is missing."""
    found = status(store, cfg, days)
    if found.missing:
        raise IncompleteHistory(
            f"{cfg.name} ds={ds}: {needed_by} needs the earlier day(s) {', '.join(found.missing)}, which are not "
            "validated yet (not extracted, or validation has not run).",
            found.missing,
        )
    return found
