"""The retrain request, end to end without a scheduler: an alarm's request names its day (the Asset event's
extra), the monitoring DAG emits it, and the training run it starts processes that day, anew.

Airflow's own Task SDK types stand in for what the scheduler hands a task: TriggeringAssetEventsAccessor
(``context["triggering_asset_events"]``), OutletEventAccessors (``outlet_events``) and DagRunType
(``context["dag_run"].run_type``). The drift/quality side against a real store: test_step.py.
"""

from __future__ import annotations

from datetime import date, datetime, timezone
from types import SimpleNamespace

import pytest
from airflow.sdk.api.datamodels._generated import DagRunType
from airflow.sdk.execution_time.comms import AssetEventDagRunReferenceResult
from airflow.sdk.execution_time.context import OutletEventAccessors, TriggeringAssetEventsAccessor

from ml_ops.airflow.dag_factory import build_monitoring_dag, build_training_dag, retrain_asset
from ml_ops.airflow.operators import TrainOperator
from ml_ops.config import load_pipeline_by_name
from ml_ops.interval import DayInterval, interval_from_context
from ml_ops.monitoring.retrain import retrain_request

CFG = load_pipeline_by_name("fraud")


class MemoryStore:
    """The two ObjectStore calls the retrain policy makes, in memory."""

    def __init__(self):
        self.objects: dict[str, list[dict]] = {}

    def read_jsonl(self, uri: str) -> list[dict]:
        return list(self.objects.get(uri, []))

    def append_jsonl(self, uri: str, record: dict, key: str | None = None) -> bool:
        rows = self.objects.setdefault(uri, [])
        if key and any(r.get(key) == record[key] for r in rows):
            return False
        rows.append(record)
        return True


def result(ds: str, drift: bool, quality: bool) -> dict:
    return {"data_date": ds, "alarm": drift or quality, "drift_alarm": drift, "quality_alarm": quality}


def triggering_events(*extras: dict) -> TriggeringAssetEventsAccessor:
    """``context["triggering_asset_events"]`` of a run started by retrain Asset events with these extras."""
    asset = retrain_asset(CFG)
    return TriggeringAssetEventsAccessor.build(
        AssetEventDagRunReferenceResult(
            asset={"name": asset.name, "uri": asset.uri, "extra": {}},
            extra=extra,
            source_task_id="request_retrain",
            source_dag_id=f"{CFG.name}_monitoring",
            source_run_id=f"scheduled__{i}",
            source_map_index=-1,
            source_aliases=[],
            timestamp=datetime(2026, 3, 2, 2, 30 + i, tzinfo=timezone.utc),
        )
        for i, extra in enumerate(extras)
    )


def test_any_alarm_requests_a_retrain_of_its_day_once_per_cooldown():
    store = MemoryStore()
    assert retrain_request(store, CFG, result("2026-03-01", drift=False, quality=False)) is None
    quality_only = retrain_request(store, CFG, result("2026-03-01", drift=False, quality=True))
    assert quality_only["data_date"] == "2026-03-01" and quality_only["alarms"] == ["quality"]
    assert retrain_request(store, CFG, result("2026-03-01", drift=False, quality=True)) == quality_only  # a retry
    assert retrain_request(store, CFG, result("2026-03-03", drift=True, quality=False)) is None  # cooldown
    both = retrain_request(store, CFG, result("2026-03-09", drift=True, quality=True))
    assert both["data_date"] == "2026-03-09" and both["alarms"] == ["drift", "quality"]


def test_the_monitoring_dag_emits_the_request_as_the_events_extra():
    monitoring = build_monitoring_dag(CFG)
    emit = monitoring.get_task("request_retrain")
    assert [a.name for a in emit.outlets] == [retrain_asset(CFG).name]
    assert emit.upstream_task_ids == {"retrain_due"}
    assert monitoring.get_task("retrain_due").upstream_task_ids == {"drift_report"}
    request = retrain_request(MemoryStore(), CFG, result("2026-03-01", drift=False, quality=True))
    outlet_events = OutletEventAccessors()
    emit.python_callable(request, outlet_events=outlet_events)
    assert outlet_events[retrain_asset(CFG)].extra == request
    # and the training DAG listens to that Asset
    training = build_training_dag(CFG)
    assert [a.name for a in training.timetable.asset_condition.objects] == [retrain_asset(CFG).name]


def test_the_training_run_started_by_the_request_processes_its_day():
    request = retrain_request(MemoryStore(), CFG, result("2026-03-01", drift=False, quality=True))
    context = {
        "params": {"data_date": None, "force_retrain": False},
        "dag_run": SimpleNamespace(
            run_type=DagRunType.ASSET_TRIGGERED, run_after=datetime(2026, 3, 2, 3, tzinfo=timezone.utc)
        ),
        "triggering_asset_events": triggering_events(request),
        "logical_date": None,
    }
    assert interval_from_context(context).ds == "2026-03-01"  # not the day before the run was created
    # several requests queued before the run started: the newest day
    context["triggering_asset_events"] = triggering_events(request, {**request, "data_date": "2026-03-09"}, {})
    assert interval_from_context(context).ds == "2026-03-09"
    # a manual trigger's Param still wins
    context["params"] = {"data_date": "2026-02-20"}
    assert interval_from_context(context).ds == "2026-02-20"


@pytest.mark.parametrize(
    ("run_type", "forced"),
    [
        (DagRunType.ASSET_TRIGGERED, True),
        ("asset_triggered", True),  # the enum is a str enum: the wire value compares equal
        (DagRunType.SCHEDULED, False),
        (DagRunType.MANUAL, False),
        (DagRunType.ASSET_MATERIALIZATION, False),
        (None, False),
    ],
)
def test_an_asset_triggered_training_run_trains_anew(monkeypatch, run_type, forced):
    import ml_ops.pipeline.steps

    calls = []
    monkeypatch.setattr(
        ml_ops.pipeline.steps, "train_step", lambda cfg, store, interval, uri, *, run_id, force: calls.append(force)
    )
    op = TrainOperator(task_id="train", pipeline=CFG.name)
    monkeypatch.setattr(op, "store", lambda: None)
    monkeypatch.setattr(op, "tracking_uri", lambda: "http://mlflow:5000")
    context = {"params": {}, "run_id": "r", "dag_run": SimpleNamespace(run_type=run_type) if run_type else None}
    op.run_step(context, DayInterval.for_day(date(2026, 3, 1)))
    assert calls == [forced]
