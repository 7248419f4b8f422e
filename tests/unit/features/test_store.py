"""The online store, on real SQLite and real Redis: idempotent by event id, atomic under concurrent clients,
kept across a restart, tolerant of out-of-order events, bounded in time."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from ml_ops.features.definition import DAY_NS, HOUR_NS
from ml_ops.features.online import make_events
from ml_ops.features.store import open_store

T0 = 1_780_000_000 * 1_000_000_000 // HOUR_NS * HOUR_NS  # a whole UTC hour (2026)
P = "fraud"


def ev(entity, event_id, ts, amount=10.0):
    return make_events([entity], [event_id], np.array([ts], np.int64), np.array([amount]))[0]


def test_a_retried_event_is_not_counted_twice(online_store):
    first = online_store.observe(P, [ev("a", "t1", T0, 20.0)])[0]
    again = online_store.observe(P, [ev("a", "t1", T0, 20.0)])[0]
    assert first.recorded and not again.recorded
    assert online_store.entity_events(P, "a") == {"t1": (T0, 20.0)}
    # the hour's global sums counted it once: a cold entity an hour later sees n = 1
    later = online_store.observe(P, [ev("b", "t2", T0 + HOUR_NS, 5.0)])[0]
    assert (later.global_n, later.global_sum) == (1, 20.0)
    assert online_store.ingest(P, [ev("a", "t1", T0, 20.0), ev("b", "t2", T0 + HOUR_NS, 5.0)]) == 0


def test_out_of_order_events_take_their_place_and_too_late_ones_are_not_kept(online_store):
    online_store.observe(P, [ev("a", "late-ok", T0 + 30 * 60 * 10**9)])
    state = online_store.observe(P, [ev("a", "earlier", T0)])[0]  # arrives after a later event
    assert state.recorded and sorted(state.ts.tolist()) == [T0, T0 + 30 * 60 * 10**9]
    # nine days ahead: the two are older than the horizon (7 days + 1 day lateness) and are dropped
    far = T0 + 9 * DAY_NS
    state = online_store.observe(P, [ev("a", "new", far)])[0]
    assert state.ts.tolist() == [far]
    too_late = online_store.observe(P, [ev("a", "ancient", T0 + HOUR_NS)])[0]
    assert not too_late.recorded and set(online_store.entity_events(P, "a")) == {"new"}


def test_an_event_far_in_the_future_does_not_push_the_others_out(online_store):
    import time

    now = time.time_ns() // HOUR_NS * HOUR_NS
    online_store.observe(P, [ev("a", "now", now)])
    online_store.observe(P, [ev("a", "year-2099", now + 30_000 * DAY_NS)])
    state = online_store.observe(P, [ev("a", "later", now + HOUR_NS)])[0]
    assert state.recorded and len(state.ts) == 3


def test_null_amounts_are_kept_as_events_but_not_summed(online_store):
    online_store.observe(P, [ev("a", "x", T0, float("nan")), ev("a", "y", T0 + 1, 7.0)])
    state = online_store.observe(P, [ev("c", "z", T0 + HOUR_NS)])[0]
    assert (state.global_n, state.global_sum) == (1, 7.0)
    events = online_store.entity_events(P, "a")
    assert np.isnan(events["x"][1]) and events["y"] == (T0 + 1, 7.0)


def test_the_global_sums_of_an_hour_stay_exact_when_late_amounts_land_in_its_window(online_store):
    """Every event of one hour reads the same 168-hour window (Redis keeps it as a memo): a late amount, an
    ingest beside live traffic, and a later hour all see exactly the recorded sums."""
    online_store.observe(P, [ev("a", "x", T0, 5.0)])
    first = online_store.observe(P, [ev("b", "y", T0 + 2 * HOUR_NS, 1.0)])[0]
    assert (first.global_n, first.global_sum) == (1, 5.0)
    online_store.observe(P, [ev("c", "late", T0 + HOUR_NS, 7.0)])  # inside the window already read
    online_store.ingest(P, [ev("d", "old", T0 - 3 * HOUR_NS, 100.0)])  # materialised beside live traffic
    again = online_store.observe(P, [ev("e", "z", T0 + 2 * HOUR_NS + 1, 1.0)])[0]
    assert (again.global_n, again.global_sum) == (3, 112.0)
    next_hour = online_store.observe(P, [ev("f", "w", T0 + 3 * HOUR_NS)])[0]  # now with y and z's hour
    assert (next_hour.global_n, next_hour.global_sum) == (5, 114.0)
    window_end = online_store.observe(P, [ev("g", "v", T0 + 168 * HOUR_NS)])[0]  # T0's hour is the first one
    assert (window_end.global_n, window_end.global_sum) == (5, 24.0)  # x, late, y, z, w (10)
    past_it = online_store.observe(P, [ev("g", "u", T0 + 169 * HOUR_NS)])[0]  # x has left it, v (10) came in
    assert (past_it.global_n, past_it.global_sum) == (5, 29.0)


def test_pipelines_are_apart_and_clear_forgets_one(online_store):
    online_store.observe(P, [ev("a", "t1", T0)])
    online_store.observe("tumors", [ev("a", "t1", T0)])
    assert online_store.clear(P) > 0
    assert online_store.entity_events(P, "a") == {}
    assert set(online_store.entity_events("tumors", "a")) == {"t1"}
    online_store.clear("tumors")


def test_forget_removes_one_entity(online_store):
    online_store.observe(P, [ev("a", "t1", T0), ev("a", "t2", T0 + 1), ev("b", "t3", T0)])
    assert online_store.forget(P, "a") == 2
    assert online_store.entity_events(P, "a") == {} and set(online_store.entity_events(P, "b")) == {"t3"}


def test_state_survives_a_restart(store_url):
    url, ns = store_url
    store = open_store(url, namespace=ns)
    store.observe(P, [ev("a", "t1", T0), ev("a", "t2", T0 + 60 * 10**9)])
    store.close()
    reopened = open_store(url, namespace=ns)
    state = reopened.observe(P, [ev("a", "t3", T0 + 120 * 10**9)])[0]
    assert len(state.ts) == 3
    reopened.close()


def test_two_clients_share_one_state_under_concurrent_updates_and_retries(store_url):
    """Two clients (each its own connection, like two gateway replicas) record 200 events of one entity at
    once, each also retrying the other's events: every event is recorded exactly once."""
    url, ns = store_url
    clients = [open_store(url, namespace=ns), open_store(url, namespace=ns)]
    events = [ev("hot", f"e{i}", T0 + i * 10**9, 1.0) for i in range(200)]
    recorded = [[], []]

    def run(k: int) -> None:
        mine = events[k::2]
        theirs = events[1 - k :: 2]
        for a, b in zip(mine, theirs, strict=False):
            recorded[k] += [s.recorded for s in clients[k].observe(P, [a, b])]

    threads = [threading.Thread(target=run, args=(k,)) for k in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sum(recorded[0]) + sum(recorded[1]) == 200
    assert len(clients[0].entity_events(P, "hot")) == 200
    state = clients[1].observe(P, [ev("cold", "c", T0 + HOUR_NS)])[0]
    assert state.global_n == 200  # the hour's bucket counted each event once
    for c in clients:
        c.close()


def test_a_bad_url_names_what_is_expected():
    with pytest.raises(ValueError, match="redis://host:port/db"):
        open_store("postgres://x")


def test_redis_loads_its_script_when_the_server_does_not_have_it(redis_namespace, monkeypatch):
    import hashlib
    import uuid

    from ml_ops.features import redis_store
    from tests.unit.features.conftest import redis_url

    fresh = redis_store._SCRIPT + f"\n-- {uuid.uuid4().hex}\n"  # a text this server has never seen
    monkeypatch.setattr(redis_store, "_SCRIPT", fresh)
    store = open_store(redis_url(), namespace=redis_namespace)
    store._sha = hashlib.sha1(fresh.encode()).hexdigest()
    assert store.observe(P, [ev("a", "t1", T0)])[0].recorded
    assert store.client.script_exists(store._sha) == [True]
    store.close()
