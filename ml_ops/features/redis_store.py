"""The production online store: Redis, shared by every gateway replica (``redis://host:port/db``).

Keys (``<ns>`` is the namespace, default ``mlops``; ``<entity>`` the entity's key, a keyed hash when the entity
column is personal, so no raw id sits in Redis)::

    <ns>:online:<pipeline>:e:<entity>    HASH  event id -> "<ts ns> <amount>"  the entity's recent events
    <ns>:online:<pipeline>:g:<bucket>    HASH  s -> sum, n -> count            non-null amounts of one UTC hour

One Lua script per event does, atomically (Redis runs a script alone): find the entity's newest event, add the
event with HSETNX (a no-op for an id already there: a retried request, or the same event materialised and
served), add its amount to its hour's bucket only when it was new, drop the entity's events older than the
horizon (newest - 7 days - lateness; "newest" at most a day past the clock, so one event stamped far in the
future does not push the entity's other events out), refresh the keys' TTL (an idle entity and an old bucket expire by
themselves), and, for ``observe``, return the entity's events and the sums of the event's global window. The
HASH of an entity is the "seen" set of its event ids; an id older than the horizon is not recorded at all.
A request's events go in one pipelined round trip.

The script touches bucket keys it builds itself, so the store is for a single Redis server (or a primary with
replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from ml_ops.features.store import EntityState, Event, OnlineStore, StoreUnavailable

# KEYS[1] entity hash; ARGV: event id, ts, amount ("nan": none), bucket, first bucket, keep ns, ttl s,
# bucket key prefix, read back (1) or not (0), latest time the horizon may be measured from (ns).
_SCRIPT = """
local key, id, ts, amt = KEYS[1], ARGV[1], ARGV[2], ARGV[3]
local tsn, bucket, first = tonumber(ts), tonumber(ARGV[4]), tonumber(ARGV[5])
local keep, ttl, gprefix, read = tonumber(ARGV[6]), tonumber(ARGV[7]), ARGV[8], ARGV[9] == '1'
local cap = tonumber(ARGV[10])
local values = redis.call('HGETALL', key)
local newest = tsn
for i = 2, #values, 2 do
  local t = tonumber(string.match(values[i], '^%S+'))
  if t > newest then newest = t end
end
if newest > cap then newest = cap end
local horizon = newest - keep
local recorded = 0
if tsn >= horizon and redis.call('HSETNX', key, id, ts .. ' ' .. amt) == 1 then
  recorded = 1
  values[#values + 1] = id
  values[#values + 1] = ts .. ' ' .. amt
  if amt ~= 'nan' then
    local gk = gprefix .. bucket
    redis.call('HINCRBYFLOAT', gk, 's', amt)
    redis.call('HINCRBY', gk, 'n', 1)
    redis.call('EXPIRE', gk, ttl)
  end
end
local out = {}
for i = 1, #values, 2 do
  if tonumber(string.match(values[i + 1], '^%S+')) < horizon then
    redis.call('HDEL', key, values[i])
  elseif read then
    out[#out + 1] = values[i + 1]
  end
end
if #values > 0 then redis.call('EXPIRE', key, ttl) end
if not read then return {recorded} end
local gs, gn = 0, 0
for b = first, bucket - 1 do
  local v = redis.call('HMGET', gprefix .. b, 's', 'n')
  if v[1] then
    gs = gs + tonumber(v[1])
    gn = gn + tonumber(v[2])
  end
end
return {recorded, out, string.format('%.17g', gs), gn}
"""
_CHUNK = 1000  # events per pipelined round trip when ingesting


def _amount(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


class RedisStore(OnlineStore):
    kind = "redis"
    workers = 4  # redis-py's connection pool serves concurrent threads

    def __init__(self, url: str, *, namespace: str = "mlops", **kwargs):
        super().__init__(url, **kwargs)
        import redis

        self.namespace = namespace
        self._errors = (redis.RedisError, OSError)
        self.client = redis.Redis.from_url(
            url, socket_timeout=5, socket_connect_timeout=3, health_check_interval=30, decode_responses=True
        )
        self._no_script = redis.exceptions.NoScriptError
        self._sha = hashlib.sha1(_SCRIPT.encode()).hexdigest()  # what SCRIPT LOAD answers; loaded on first NOSCRIPT

    def _prefix(self, pipeline: str) -> str:
        return f"{self.namespace}:online:{pipeline}:"

    def _call(self, pipeline: str, events: Sequence[Event], read: bool) -> list:
        prefix = self._prefix(pipeline)
        cap, flag, gprefix = str(self.horizon_cap()), "1" if read else "0", f"{prefix}g:"
        calls = [
            (
                f"{prefix}e:{e.entity}",
                e.event_id,
                str(int(e.ts)),
                _amount(e.amount),
                e.bucket,
                e.first_bucket,
                self.keep_ns,
                self.ttl_seconds,
                gprefix,
                flag,
                cap,
            )
            for e in events
        ]
        try:
            try:
                return self._run(calls)
            except self._no_script:  # a restarted or flushed Redis: load the script once, then run again
                self._sha = self.client.script_load(_SCRIPT)
                return self._run(calls)
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None

    def _run(self, calls: list[tuple]) -> list:
        """One EVALSHA per event: a single event without a pipeline (one round trip; redis-py's pipelined
        scripts would first ask SCRIPT EXISTS), several in one pipelined round trip."""
        if len(calls) == 1:
            return [self.client.evalsha(self._sha, 1, *calls[0])]
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._sha, 1, *call)
        return pipe.execute()

    def observe(self, pipeline: str, events: Sequence[Event]) -> list[EntityState]:
        out = []
        for recorded, values, gsum, gn in self._call(pipeline, events, read=True):
            ts = np.empty(len(values), np.int64)
            amount = np.empty(len(values), np.float64)
            for i, v in enumerate(values):
                t, a = v.split(" ", 1)
                ts[i], amount[i] = int(t), float(a)
            out.append(EntityState(ts, amount, float(gsum), int(gn), bool(recorded)))
        return out

    def ingest(self, pipeline: str, events: Sequence[Event]) -> int:
        new = 0
        for i in range(0, len(events), _CHUNK):
            new += sum(r[0] for r in self._call(pipeline, events[i : i + _CHUNK], read=False))
        return new

    def entity_events(self, pipeline: str, entity: str) -> dict[str, tuple[int, float]]:
        try:
            found = self.client.hgetall(f"{self._prefix(pipeline)}e:{entity}")
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None
        out = {}
        for event_id, v in found.items():
            t, a = v.split(" ", 1)
            out[event_id] = (int(t), float(a))
        return out

    def forget(self, pipeline: str, entity: str) -> int:
        key = f"{self._prefix(pipeline)}e:{entity}"
        try:
            pipe = self.client.pipeline(transaction=True)
            pipe.hlen(key)
            pipe.unlink(key)
            return int(pipe.execute()[0])
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None

    def clear(self, pipeline: str) -> int:
        removed = 0
        try:
            batch = []
            for key in self.client.scan_iter(match=f"{self._prefix(pipeline)}*", count=1000):
                batch.append(key)
                if len(batch) >= 1000:
                    removed += self.client.unlink(*batch)
                    batch = []
            if batch:
                removed += self.client.unlink(*batch)
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None
        return removed

    def ping(self) -> None:
        try:
            self.client.ping()
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None

    def close(self) -> None:
        self.client.close()
