"""The demo's scenario is built from the pipeline's own settings: its calendar puts the change where the
alarm's retrain can learn it, and its include/ copy changes only the canary's pace."""

from __future__ import annotations

from datetime import date, timedelta

import yaml

from ml_ops.config import load_pipeline, load_pipeline_by_name
from ml_ops.interval import DayInterval, training_window
from ml_ops.local import demo


def test_the_calendar_puts_the_change_where_the_retrain_can_learn_it_and_the_champion_cannot():
    cfg = load_pipeline_by_name("fraud")
    m = date(2026, 3, 31)
    cal = demo.Calendar(cfg, m)
    t = cfg.training

    def window(day):
        return training_window(DayInterval.for_day(day), cfg.target.label_delay_days, t.window_days, t.holdout_days)

    retrain, champion = window(m), window(cal.champion_day)
    after = [d for d in retrain.train_days if date.fromisoformat(d) >= cal.change]
    assert len(after) == demo.POST_CHANGE_TRAINING_DAYS
    assert all(date.fromisoformat(d) >= cal.change for d in retrain.holdout_days)
    assert all(date.fromisoformat(d) < cal.change for d in champion.train_days + champion.holdout_days)
    # every modelled day has features and a full lookback of extracted days before it
    assert champion.train_days[0] == cal.first.isoformat()
    assert cal.days[0] == cal.first - timedelta(days=cfg.features.lookback_days) and cal.days[-1] == m
    # the first monitored night's matured labels are from before the change: the quality chart has a "before"
    assert cal.monitor_from - timedelta(days=cfg.target.label_delay_days) < cal.change <= cal.last


def test_the_demo_include_changes_only_the_canary_pace(tmp_path):
    target = demo.demo_include(tmp_path)
    shipped = load_pipeline_by_name("fraud")
    copy = load_pipeline(target / "pipelines" / "fraud.yaml")
    assert copy.model_dump(exclude={"canary"}) == shipped.model_dump(exclude={"canary"})
    assert copy.canary.steps == [25, 50, 100] and copy.canary.step_minutes == 1
    assert (copy.canary.min_requests, copy.canary.min_labels, copy.canary.min_per_class) == (100, 60, 8)
    assert yaml.safe_load((target / "pipelines" / "fraud.yaml").read_text())["canary"]["max_extensions"] == 3
