"""The traffic generator against the real gateway: fresh events (days after the world's extracted days), at
an open-loop rate, their labels posted back after the simulator's delay, stoppable."""

from __future__ import annotations

import threading
import time
from datetime import date, timedelta

import numpy as np
import pandas as pd
import pytest

from tests.serving.conftest import TOKEN, admin

pytestmark = pytest.mark.timeout(300)


def _world():
    """The simulated world of tests.serving.helpers.build_world (its seed, customers and volume)."""
    from ml_ops.local.traffic import World

    return World(seed=11, n_customers=400, rows_per_day=1200)


def test_sends_fresh_raw_events_at_the_rate_and_posts_their_labels(http, stack, store, world):
    """Raw events (the default): the gateway computes each event's inputs from its online store, and they
    equal what the batch features step computes for the same events."""
    from ml_ops.local.traffic import FreshEvents, send_traffic

    # feedback needs the gateway token by default (serving.feedback_requires_token); a 2-day label delay
    # (fraud.yaml) at 0.3 s per simulated day arrives within a second
    stats = send_traffic(
        world.cfg, store, stack.gateway_url, rate=20, duration=3, label_delay=0.3, token=TOKEN, world=_world()
    )
    assert stats.sent == 60 and stats.ok == 60 and stats.failed == 0, stats
    assert dict(stats.by_route) == {"champion": 60} and dict(stats.by_version) == {1: 60}
    assert stats.labels_sent == 60 and stats.labels_dropped == 0
    assert 2.9 <= stats.elapsed < 6 and stats.percentile(50) > 0
    # a day after every day the world's model was trained or evaluated on
    after = (date.fromisoformat(world.days[-1]) + timedelta(days=1)).isoformat()
    assert stats.days == [after]

    written = http.post("/admin/flush", headers=admin()).json()["written"]
    feedback = pd.concat([store.read_parquet(u) for u in written["feedback"]], ignore_index=True)
    assert set(stats.request_ids) <= set(feedback["request_id"])
    logs = pd.concat([store.read_parquet(u) for u in written["predictions"]], ignore_index=True)
    sent = logs[logs["request_id"].isin(stats.request_ids)].set_index("transaction_id")
    assert len(sent) == 60
    # events of that day, none of the rows the model saw; the routing key (a raw column) routed them
    assert sent.index.str.startswith(f"t{after.replace('-', '')}-").all()
    assert not set(sent.index) & set(world.features["transaction_id"])
    assert sent["customer_id"].notna().all() and (sent["routing_key"] == sent["customer_id"]).all()
    assert "is_fraud" not in sent.columns
    assert (sent["input_mode"] == "raw").all()
    # the inputs served are the features of those events (equal to the features step's: tests/unit/local)
    fresh = FreshEvents(world.cfg, store, _world()).next_day().features.set_index("transaction_id")
    for column in world.inputs:
        expected = fresh.loc[sent.index, column]
        if column in world.numeric:
            # counts exact, means to float rounding (the online sum is accumulated in another order)
            np.testing.assert_allclose(
                sent[column].to_numpy(float), expected.to_numpy(float), rtol=1e-9, err_msg=column
            )
        else:
            assert (sent[column].astype(str) == expected.astype(str)).all(), column
    # the labels posted are the events' own
    labels = feedback.set_index("request_id").loc[stats.request_ids, "label"].to_numpy()
    truth = fresh.loc[stats.event_ids, "is_fraud"].to_numpy()
    assert (labels == truth).all()


def test_stops_when_told(stack, store, world):
    from ml_ops.local.traffic import send_traffic

    stop, out = threading.Event(), []
    thread = threading.Thread(
        target=lambda: out.append(
            send_traffic(
                world.cfg,
                store,
                stack.gateway_url,
                rate=20,
                duration=120,
                label_delay=30,
                stop_event=stop,
                world=_world(),
                inputs="model",  # a client sending the model's inputs it computed itself
            )
        )
    )
    thread.start()
    time.sleep(2.5)
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    (stats,) = out
    assert 10 <= stats.sent <= 80 and stats.failed == 0, stats
    assert stats.labels_dropped == stats.ok  # their 60 s delay had not passed
