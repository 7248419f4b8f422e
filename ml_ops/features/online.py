"""Online execution of the derived features (``ml_ops.features.definition``): one event at a time.

For each event the online store records it and hands back its entity's events and the global sums of its
window (``ml_ops.features.store``); the window aggregates are found among those few events and turned into
features by the definition's ``combine``, the function the batch execution (``build_features``) ends with.
Events of one call are recorded in time order (stable), so a batch of events gets what the batch code gives
the same events: an event sees exactly the events of its entity with a strictly earlier timestamp that the
store holds.

Entities are keyed in the store by ``entity_keyer``: when the entity column is personal
(``privacy.personal_columns``) by its keyed hash (HMAC-SHA256 under the pipeline's privacy key, the digest the
serving logs hold), so no raw id sits in Redis or in the SQLite file, and the nightly skew check can rebuild the
same history from the logs; otherwise by the id as text.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING

import numpy as np

from ml_ops.features.definition import (
    COUNT_WINDOWS_NS,
    MEAN_WINDOW_NS,
    PREV_WINDOW_NS,
    Aggregates,
    combine,
    global_buckets,
    time_part_values,
)
from ml_ops.features.store import EntityState, Event, OnlineStore

if TYPE_CHECKING:
    from ml_ops.config import Pipeline


def entity_keyer(cfg: Pipeline, key: bytes | None) -> Callable[[object], str]:
    """The entity's key in the online store: its keyed hash when the entity column is personal (``key``: the
    pipeline's HMAC key, ``ml_ops.privacy.read_key``), else its text. A personal entity column without a key is
    a ``PrivacyKeyMissing``: raw ids are never stored in its place."""
    entity = cfg.features.entity_column
    if entity is not None and entity in cfg.personal_columns:
        from ml_ops.privacy import PrivacyKeyMissing, Pseudonymizer

        if key is None:
            raise PrivacyKeyMissing(
                f"pipeline {cfg.name}: the online store keys entities by the keyed hash of {entity!r} (a personal "
                f"column), and no HMAC key is set ({cfg.privacy.key_name})"
            )
        return Pseudonymizer(cfg, key).value
    return lambda value: value if isinstance(value, str) else str(value)


def make_events(keys: Sequence[str], ids: Sequence[str], ts: np.ndarray, amounts: np.ndarray | None) -> list[Event]:
    """Store events for entity keys, event ids, timestamps (int64 ns) and amounts (NaN: none; None: no amount)."""
    first, end = global_buckets(np.asarray(ts, np.int64))
    amt = amounts if amounts is not None else np.full(len(ts), np.nan)
    return [
        Event(k, i, int(t), float(a), int(f), int(b))
        for k, i, t, a, f, b in zip(keys, ids, ts.tolist(), amt.tolist(), first.tolist(), end.tolist(), strict=True)
    ]


def aggregates(events: Sequence[Event], states: Sequence[EntityState], with_amount: bool) -> Aggregates:
    """Each event's window aggregates among its entity's events (strictly earlier ones only)."""
    n = len(events)
    counts = {name: np.zeros(n, np.int64) for name in COUNT_WINDOWS_NS}
    prev_gap = np.full(n, -1, np.int64)
    amount_n, amount_sum = np.zeros(n, np.int64), np.zeros(n)
    global_n, global_sum = np.zeros(n, np.int64), np.zeros(n)
    for i, (e, st) in enumerate(zip(events, states, strict=True)):
        t = e.ts
        earlier = st.ts < t
        if earlier.any():
            ts = st.ts[earlier]
            for name, w in COUNT_WINDOWS_NS.items():
                counts[name][i] = int(np.count_nonzero(ts >= t - w))
            within = ts >= t - PREV_WINDOW_NS
            if within.any():
                prev_gap[i] = t - int(ts[within].max())
            if with_amount:
                amt = st.amount[earlier]
                m = (ts >= t - MEAN_WINDOW_NS) & ~np.isnan(amt)
                amount_n[i] = int(np.count_nonzero(m))
                amount_sum[i] = float(amt[m].sum())
        global_n[i], global_sum[i] = st.global_n, st.global_sum
    agg = Aggregates(counts=counts, prev_gap=prev_gap)
    if with_amount:
        agg.amount = np.array([e.amount for e in events], np.float64)
        agg.amount_n, agg.amount_sum, agg.global_n, agg.global_sum = amount_n, amount_sum, global_n, global_sum
    return agg


class OnlineFeatures:
    """A pipeline's derived features for events arriving one request at a time, from ``store``."""

    def __init__(self, cfg: Pipeline, store: OnlineStore | None, key: Callable[[object], str] | None = None):
        self.cfg, self.store = cfg, store
        self.entity = cfg.features.entity_column
        self.with_amount = cfg.features.amount_column is not None
        self.time_parts = list(cfg.features.time_parts)
        self.columns = list(cfg.generated_features)
        self.key = key

    @property
    def needs_store(self) -> bool:
        return self.entity is not None

    def compute(
        self, entities: Sequence, ids: Sequence[str], ts: np.ndarray, amounts: np.ndarray | None
    ) -> tuple[dict[str, np.ndarray], list[bool]]:
        """The generated columns for these events (in their order) and, per event, whether the store recorded it
        now (False: a retry of an event already recorded, or one too late to keep). Records the events."""
        ts = np.asarray(ts, np.int64)
        out: dict[str, np.ndarray] = {}
        recorded = [False] * len(ts)
        if self.entity is not None:
            if self.store is None or self.key is None:
                raise RuntimeError(f"pipeline {self.cfg.name}: history features need an online store and a keyer")
            order = np.argsort(ts, kind="stable")
            keys = [self.key(entities[i]) for i in order.tolist()]
            events = make_events(
                keys, [ids[i] for i in order.tolist()], ts[order], None if amounts is None else amounts[order]
            )
            states = self.store.observe(self.cfg.name, events)
            feats = combine(aggregates(events, states, self.with_amount))
            back = np.empty_like(order)
            back[order] = np.arange(len(order))
            out = {c: v[back] for c, v in feats.items()}
            recorded = [states[j].recorded for j in back.tolist()]
        out.update(time_part_values(ts, self.time_parts))
        return {c: out[c] for c in self.columns}, recorded
