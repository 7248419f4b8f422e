"""Sticky routing: a stable hash of (pipeline, routing key) puts every key in a bucket in [0, 1); the
key goes to the canary iff its bucket is below the canary's weight.

So at a given weight one customer always sees the same model, raising the weight only moves keys from
the champion to the canary (never back), and the share of canary keys is the weight. The hash is SHA-1
(stable across processes and Python versions, unlike ``hash()``); the pipeline name salts it, so two
pipelines' canaries do not pick the same customers.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence

from ml_ops.layout import CANARY, CHAMPION

_SCALE = float(1 << 64)


def bucket(pipeline: str, key: str) -> float:
    # surrogatepass: the same bytes as plain UTF-8 for every valid string, and no exception for a key holding
    # a lone surrogate (the request parser refuses those; this keeps the router total anyway)
    digest = hashlib.sha1(f"{pipeline}\x00{key}".encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "big") / _SCALE


def route(pipeline: str, key: str, weight: float) -> str:
    return CANARY if weight > 0 and bucket(pipeline, key) < weight else CHAMPION


def routing_keys(n: int, *, header: str | None, column: Sequence | None, request_id: str) -> list[str]:
    """One key per row: the ``X-Routing-Key`` header for all rows (passed only when the pipeline has
    ``serving.client_routing_key``: otherwise a caller could pick its side of a canary), else the row's
    routing-key value, else the request id (a row without a key value falls back to the request id too)."""
    if header:
        return [header] * n
    if column is None:
        return [request_id] * n
    return [request_id if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in column]


def assign(pipeline: str, keys: Sequence[str], weight: float) -> list[str]:
    if weight <= 0:
        return [CHAMPION] * len(keys)
    if weight >= 1:
        return [CANARY] * len(keys)
    return [route(pipeline, k, weight) for k in keys]
