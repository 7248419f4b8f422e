"""The traffic generator against the real gateway: open-loop rate, labels posted back, stoppable."""

from __future__ import annotations

import threading
import time

import pandas as pd
import pytest

from tests.serving.conftest import TOKEN, admin

pytestmark = pytest.mark.timeout(300)


def test_replay_sends_at_the_rate_and_posts_the_labels(http, stack, store, world):
    from ml_ops.local.traffic import replay

    # feedback needs the gateway token by default (serving.feedback_requires_token)
    stats = replay(world.cfg, store, stack.gateway_url, rate=20, duration=3, label_delay=1, days=1, token=TOKEN)
    assert stats.sent == 60 and stats.ok == 60 and stats.failed == 0, stats
    assert dict(stats.by_route) == {"champion": 60} and dict(stats.by_version) == {1: 60}
    assert stats.labels_sent == 60 and stats.labels_dropped == 0
    assert 2.9 <= stats.elapsed < 6 and stats.percentile(50) > 0

    written = http.post("/admin/flush", headers=admin()).json()["written"]
    feedback = pd.concat([store.read_parquet(u) for u in written["feedback"]], ignore_index=True)
    assert set(stats.request_ids) <= set(feedback["request_id"])
    logs = pd.concat([store.read_parquet(u) for u in written["predictions"]], ignore_index=True)
    sent = logs[logs["request_id"].isin(stats.request_ids)]
    assert len(sent) == 60
    # the routing key came from the raw partition (features lack it) and was used for routing
    assert sent["customer_id"].notna().all() and (sent["routing_key"] == sent["customer_id"]).all()
    assert sent["transaction_id"].notna().all() and "is_fraud" not in sent.columns


def test_replay_stops_when_told(stack, store, world):
    from ml_ops.local.traffic import replay

    stop, out = threading.Event(), []
    thread = threading.Thread(
        target=lambda: out.append(
            replay(world.cfg, store, stack.gateway_url, rate=20, duration=120, label_delay=30, stop_event=stop, days=1)
        )
    )
    thread.start()
    time.sleep(2.5)
    stop.set()
    thread.join(timeout=20)
    assert not thread.is_alive()
    (stats,) = out
    assert 10 <= stats.sent <= 80 and stats.failed == 0, stats
    assert stats.labels_dropped == stats.ok  # their 30 s delay had not passed
