"""The production online store: Redis, shared by every gateway replica (``redis://host:port/db``).

Keys (``<ns>`` is the namespace, default ``mlops``; ``<entity>`` the entity's key, a keyed hash when the entity
column is personal, so no raw id sits in Redis)::

    <ns>:online:<pipeline>:e:<entity>    HASH  event id -> "<ts ns> <amount>"  the entity's recent events
    <ns>:online:<pipeline>:g:<bucket>    HASH  s -> sum, n -> count            non-null amounts of one UTC hour
    <ns>:online:<pipeline>:w:<bucket>    HASH  s, n, v                         memo: the sums of the 168 hours
                                                                               before <bucket> but the last 3,
                                                                               valid at version v
    <ns>:online:<pipeline>:gm            HASH  max -> newest memo's bucket, v -> memo version

One Lua script per call does, atomically (Redis runs a script alone), for each of its events in order: find the
entity's newest event, add the event with HSETNX (a no-op for an id already there: a retried request, or the
same event materialised and served), add its amount to its hour's bucket only when it was new, drop the
entity's events older than the horizon (newest - 7 days - lateness; "newest" at most a day past the clock, so
one event stamped far in the future does not push the entity's other events out), refresh the keys' TTL (an
idle entity and an old bucket expire by themselves), and, for ``observe``, return the entity's events and the
sums of the event's global window. The HASH of an entity is the "seen" set of its event ids; an id older than
the horizon is not recorded at all.

The global window of an event is the 168 hours before its own hour, so every event of one hour reads the same
sums: the script keeps all but its last 3 hours in a memo per hour (``w:``) and reads only those 3 buckets per
event, instead of 168 (which cost ~0.2 ms of Redis CPU an event). An amount landing in a memoised hour (an event
more than 3 hours late, or materialisation beside live traffic) bumps the memo version, so no stale sum is ever
read.

The script touches keys it builds itself, so the store is for a single Redis server (or a primary with
replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

import numpy as np

from ml_ops.features.store import EntityState, Event, OnlineStore, StoreUnavailable

# KEYS[i]: the entity hash of event i. ARGV: keep ns, ttl s, key prefix, read back (1) or not (0), latest time
# the horizon may be measured from (ns), the hours read live (_LIVE_HOURS), then per event: id, ts, amount
# ("nan": none), bucket, first bucket.
_SCRIPT = """
local keep, ttl, prefix, read = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[3], ARGV[4] == '1'
local cap, live = tonumber(ARGV[5]), tonumber(ARGV[6])
local meta = prefix .. 'gm'
local m = redis.call('HMGET', meta, 'max', 'v')
local wmax, ver = tonumber(m[1]) or -1, m[2] or '0'
local function add_buckets(from, to, s, n)  -- s, n plus the sums of the hourly buckets from..to
  for b = from, to do
    local v = redis.call('HMGET', prefix .. 'g:' .. b, 's', 'n')
    if v[1] then
      s = s + tonumber(v[1])
      n = n + tonumber(v[2])
    end
  end
  return s, n
end
local results = {}
for i = 1, #KEYS do
  local a = 6 + (i - 1) * 5
  local key, id, ts, amt = KEYS[i], ARGV[a + 1], ARGV[a + 2], ARGV[a + 3]
  local tsn, bucket, first = tonumber(ts), tonumber(ARGV[a + 4]), tonumber(ARGV[a + 5])
  local values = redis.call('HGETALL', key)
  local newest, times = tsn, {}
  for j = 2, #values, 2 do
    local t = tonumber(string.sub(values[j], 1, string.find(values[j], ' ', 1, true) - 1))
    times[j] = t
    if t > newest then newest = t end
  end
  if newest > cap then newest = cap end
  local horizon = newest - keep
  local recorded = 0
  if tsn >= horizon and redis.call('HSETNX', key, id, ts .. ' ' .. amt) == 1 then
    recorded = 1
    values[#values + 1] = id
    values[#values + 1] = ts .. ' ' .. amt
    times[#values] = tsn
    if amt ~= 'nan' then
      local gk = prefix .. 'g:' .. bucket
      redis.call('HINCRBYFLOAT', gk, 's', amt)
      redis.call('HINCRBY', gk, 'n', 1)
      redis.call('EXPIRE', gk, ttl)
      if bucket < wmax - live then  -- inside a memoised part of a window: every memo is stale now
        ver = tostring(redis.call('HINCRBY', meta, 'v', 1))
        redis.call('EXPIRE', meta, ttl)
      end
    end
  end
  local out = {}
  for j = 1, #values, 2 do
    if times[j + 1] < horizon then
      redis.call('HDEL', key, values[j])
    elseif read then
      out[#out + 1] = values[j + 1]
    end
  end
  if #values > 0 then redis.call('EXPIRE', key, ttl) end
  if read then
    local wk = prefix .. 'w:' .. bucket
    local memo = redis.call('HMGET', wk, 's', 'n', 'v')
    local s, n = tonumber(memo[1]), tonumber(memo[2])
    if memo[3] ~= ver then
      s, n = add_buckets(first, bucket - live - 1, 0, 0)
      redis.call('HSET', wk, 's', string.format('%.17g', s), 'n', n, 'v', ver)
      redis.call('EXPIRE', wk, ttl)
      if bucket > wmax then
        wmax = bucket
        redis.call('HSET', meta, 'max', bucket)
      end
      redis.call('EXPIRE', meta, ttl)  -- the version outlives every memo made under it
    end
    s, n = add_buckets(bucket - live, bucket - 1, s, n)  -- the last hours, where late events still land: live
    local gs, gn = string.format('%.17g', s), n
    results[i] = {recorded, table.concat(out, ' '), gs, gn}  -- one reply string: "<ts> <amount> <ts> ..."
  else
    results[i] = recorded
  end
end
return results
"""
_LIVE_HOURS = 3  # the last hours of a global window are read at every event, the rest kept in a memo
_CHUNK = 200  # events per script call when ingesting: a call holds Redis alone for a few ms at most


def _amount(value: float) -> str:
    return "nan" if math.isnan(value) else repr(float(value))


class RedisStore(OnlineStore):
    kind = "redis"

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
        """The script's results for ``events``, one call per ``_CHUNK`` events (pipelined in one round trip)."""
        prefix = self._prefix(pipeline)
        head = (self.keep_ns, self.ttl_seconds, prefix, "1" if read else "0", str(self.horizon_cap()), _LIVE_HOURS)
        calls = []
        for i in range(0, len(events), _CHUNK):
            chunk = events[i : i + _CHUNK]
            keys = [f"{prefix}e:{e.entity}" for e in chunk]
            argv = [v for e in chunk for v in (e.event_id, str(int(e.ts)), _amount(e.amount), e.bucket, e.first_bucket)]
            calls.append((len(keys), *keys, *head, *argv))
        try:
            try:
                return self._run(calls)
            except self._no_script:  # a restarted or flushed Redis: load the script once, then run again
                self._sha = self.client.script_load(_SCRIPT)
                return self._run(calls)
        except self._errors as exc:
            raise StoreUnavailable(f"online store {self.label}: {type(exc).__name__}: {exc}") from None

    def _run(self, calls: list[tuple]) -> list:
        """The calls' results, joined: one call without a pipeline (one round trip; redis-py's pipelined
        scripts would first ask SCRIPT EXISTS), several in one pipelined round trip."""
        if len(calls) == 1:
            return self.client.evalsha(self._sha, *calls[0])
        pipe = self.client.pipeline(transaction=False)
        for call in calls:
            pipe.evalsha(self._sha, *call)
        return [r for results in pipe.execute() for r in results]

    def observe(self, pipeline: str, events: Sequence[Event]) -> list[EntityState]:
        out = []
        for recorded, values, gsum, gn in self._call(pipeline, events, read=True) if events else []:
            parts = values.split(" ") if values else []
            ts = np.array(list(map(int, parts[0::2])), np.int64)
            amount = np.array(list(map(float, parts[1::2])), np.float64)
            out.append(EntityState(ts, amount, float(gsum), int(gn), bool(recorded)))
        return out

    def ingest(self, pipeline: str, events: Sequence[Event]) -> int:
        return sum(self._call(pipeline, events, read=False)) if events else 0

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
