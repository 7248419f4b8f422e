"""Which day a run works on, from what Airflow knows about the run.

Partitions are daily (``ds=YYYY-MM-DD``). In order of precedence:
1. the ``data_date`` Param of a manual trigger;
2. the ``data_date`` in the extra of the Asset events that started the run (the monitoring DAG's retrain
   request names the day it is for; the newest, if several requests were queued);
3. the run's data interval, when it spans time (CronDataIntervalTimetable: [D, D+1) runs after D ends);
4. the logical date's day (trigger-style timetables and REST triggers with a logical date);
5. no logical date at all (asset-triggered or logical_date=None runs): the last full day before the
   run was created, so the key is still a date and re-running the run picks the same partition.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, time, timedelta, timezone


@dataclass(frozen=True)
class DayInterval:
    ds: str
    start: datetime
    end: datetime

    @classmethod
    def for_day(cls, day: date) -> DayInterval:
        start = datetime.combine(day, time(0), tzinfo=timezone.utc)
        return cls(ds=day.isoformat(), start=start, end=start + timedelta(days=1))

    @property
    def day(self) -> date:
        return date.fromisoformat(self.ds)

    def previous_days(self, n: int) -> list[str]:
        """The ``n`` days before this one, oldest first."""
        return [(self.day - timedelta(days=i)).isoformat() for i in range(n, 0, -1)]


def resolve_interval(
    *,
    data_date: str | None = None,
    data_interval_start: datetime | None = None,
    data_interval_end: datetime | None = None,
    logical_date: datetime | None = None,
    run_after: datetime | None = None,
) -> DayInterval:
    if data_date:
        try:
            return DayInterval.for_day(date.fromisoformat(str(data_date)[:10]))
        except (ValueError, OverflowError):  # 9999-12-31 is a date, but its interval's end is not
            raise ValueError(f"Param data_date={data_date!r} is not a day a run can process (YYYY-MM-DD)") from None
    if data_interval_start and data_interval_end and data_interval_end > data_interval_start:
        return DayInterval.for_day(data_interval_start.astimezone(timezone.utc).date())
    if logical_date:
        return DayInterval.for_day(logical_date.astimezone(timezone.utc).date())
    created = (run_after or datetime.now(timezone.utc)).astimezone(timezone.utc)
    return DayInterval.for_day(created.date() - timedelta(days=1))


DATA_DATE = "data_date"  # the Param, and the key of an Asset event's extra, that names the day to process


def asset_event_day(triggering_asset_events) -> str | None:
    """The newest ``data_date`` named in the extra of a run's triggering Asset events (Airflow 3 Task SDK:
    ``context["triggering_asset_events"]``, a mapping of Asset to its events), or None."""
    days = [
        str(day)[:10]
        for asset in triggering_asset_events or {}
        for event in triggering_asset_events[asset]
        if (day := (getattr(event, "extra", None) or {}).get(DATA_DATE))
    ]
    return max(days) if days else None


def interval_from_context(context) -> DayInterval:
    params = context.get("params") or {}
    dag_run = context.get("dag_run")
    return resolve_interval(
        data_date=params.get(DATA_DATE) or asset_event_day(context.get("triggering_asset_events")),
        data_interval_start=context.get("data_interval_start"),
        data_interval_end=context.get("data_interval_end"),
        logical_date=context.get("logical_date"),
        run_after=getattr(dag_run, "run_after", None),
    )


@dataclass(frozen=True)
class TrainingWindow:
    train_days: list[str]
    holdout_days: list[str]
    labels_known_at: datetime  # rows whose label arrived later are not used

    @property
    def label(self) -> str:
        return f"{self.train_days[0]}..{self.train_days[-1]} holdout {self.holdout_days[0]}..{self.holdout_days[-1]}"


def training_window(
    interval: DayInterval, label_delay_days: int, window_days: int, holdout_days: int
) -> TrainingWindow:
    """The most recent ``holdout_days`` labelled days are the holdout, the ``window_days`` before them
    are trained on. A day is labelled once ``label_delay_days`` have passed since it ended."""
    last_labelled = interval.day - timedelta(days=label_delay_days)
    days = [(last_labelled - timedelta(days=i)).isoformat() for i in range(window_days + holdout_days - 1, -1, -1)]
    return TrainingWindow(days[:window_days], days[window_days:], interval.end)
