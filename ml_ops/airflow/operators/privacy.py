"""Thin operators over ``ml_ops.privacy``: the nightly retention of a pipeline's prefixes, and the erasure of
one entity (manual trigger of ``<pipeline>_erasure``)."""

from __future__ import annotations

from ml_ops.airflow.operators.pipeline import PipelineOperator, triggered_by


def run_type(context) -> str:
    run = context.get("dag_run")
    kind = getattr(run, "run_type", None)
    return str(getattr(kind, "value", kind) or "")


class RetentionOperator(PipelineOperator):
    """Deletes day partitions older than ``privacy.retention_days`` (counted back from the run's day); one audit
    line in ``privacy/retention_log.jsonl``. XCom: objects deleted per prefix.

    Only the scheduled (nightly) run enforces it; a manual, backfill or Asset-triggered run is skipped here: its
    day may be any day (a manual run's is the trigger's moment), and replayed or simulated history must not be
    expired by a report someone asked for."""

    def run_step(self, context, interval):
        from datetime import date

        from ml_ops.pipeline.steps import SkipStep
        from ml_ops.privacy import enforce_retention

        if run_type(context) != "scheduled":
            raise SkipStep(f"retention runs on the scheduled nightly run only (this is a {run_type(context)} run)")

        return enforce_retention(
            self.cfg,
            self.store(),
            date.fromisoformat(interval.ds),
            run_id=f"{context['run_id']}#{context['ti'].try_number}",
            by=triggered_by(context),
        )


class EraseEntityOperator(PipelineOperator):
    """Removes every row of Params ``entity_id`` from raw, features, labels, serving logs and feedback; the audit
    record (who: the triggering user or run; why: Params ``reason``; objects and row counts) goes to
    ``privacy/erasure_log.jsonl``. XCom: the record without the object list (small)."""

    per_day = False

    def run_step(self, context, interval):
        from ml_ops.privacy import erase_entity, read_key

        params = context.get("params") or {}
        entity_id, reason = params.get("entity_id"), params.get("reason")
        if not entity_id or not str(entity_id).strip():
            from ml_ops.config import ConfigError

            raise ConfigError("Params entity_id is required: the id of the person to erase")
        key = read_key(self.cfg.privacy.key_name, airflow=True) if self.cfg.personal_columns else None
        online = _online_store()
        try:
            record = erase_entity(
                self.cfg,
                self.store(),
                str(entity_id),
                key=key,
                by=triggered_by(context),
                reason=str(reason or ""),
                run_id=f"{context['run_id']}#{context['ti'].try_number}",
                online_store=online,
            )
        finally:
            if online is not None:
                online.close()
        return {k: v for k, v in record.items() if k != "objects"} | {"objects": len(record["objects"])}


def _online_store():
    """The gateway's online feature store (MLOPS_ONLINE_STORE, as the gateway reads it), or None without one."""
    import os

    url = os.environ.get("MLOPS_ONLINE_STORE")
    if not url:
        return None
    from ml_ops.features.store import open_store

    return open_store(url, namespace=os.environ.get("MLOPS_ONLINE_NAMESPACE") or "mlops")
