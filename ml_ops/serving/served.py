"""The request ids this gateway process answered, per pipeline: feedback labels only those.

Labels decide canaries (the judge joins them to the logged predictions by request id and row, and keeps the
last label per id), so the feedback route accepts a label only for a (request id, row) this process served
with a 200. The index is bounded and time-limited: at most ``MLOPS_GATEWAY_FEEDBACK_IDS`` ids per pipeline
(the oldest are forgotten first; about 25 MB per 100,000 ids) and each for ``MLOPS_GATEWAY_FEEDBACK_SECONDS``
after it was served. A label for an id that was never served, has expired or was evicted is refused with a
422 naming it and counted (``mlops_gateway_feedback_unknown_total``).

It lives in memory only. Across a gateway restart (or on another replica behind the same load balancer)
the index starts empty: labels for requests answered before the restart are refused as unknown. Nothing is
lost from the record: those predictions are in the serving logs, and labels that reach the labels database
are joined to them by the daily labels step. The gateway's feedback route is for labels that arrive while
the request is fresh (the traffic generator's delayed labels, a canary step's quick labels).
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict


class ServedIndex:
    """request id -> rows of the request, for ids served in the last ``seconds`` (at most ``max_ids``)."""

    def __init__(self, max_ids: int, seconds: float, clock=time.monotonic):
        self.max_ids, self.seconds, self._clock = max_ids, seconds, clock
        self._ids: OrderedDict[str, tuple[float, int]] = OrderedDict()  # id -> (expiry, rows), oldest first
        self._lock = threading.Lock()
        self.evicted = 0  # forgotten because the index was full (not expired)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, request_id: str, rows: int) -> None:
        now = self._clock()
        with self._lock:
            previous = self._ids.pop(request_id, None)  # a client may reuse its X-Request-ID: keep the widest
            if previous is not None and previous[0] > now:
                rows = max(rows, previous[1])
            self._ids[request_id] = (now + self.seconds, rows)
            self._expire(now)
            while len(self._ids) > self.max_ids:
                self._ids.popitem(last=False)
                self.evicted += 1

    def rows(self, request_id: str) -> int | None:
        """Rows the request had, or None when it was not served (or is forgotten)."""
        found = self._ids.get(request_id)
        if found is None or found[0] <= self._clock():
            return None
        return found[1]

    def _expire(self, now: float) -> None:
        ids = self._ids
        while ids:
            oldest = next(iter(ids))
            if ids[oldest][0] > now:
                return
            del ids[oldest]
