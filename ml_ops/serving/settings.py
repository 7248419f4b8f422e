"""Gateway settings from the environment (read once at start).

MLOPS_GATEWAY_HOST              bind address (default 127.0.0.1; 0.0.0.0 in a container)
MLOPS_GATEWAY_PORT              port (default 8000)
MLOPS_GATEWAY_TOKEN             bearer token of the admin routes and of pipelines with serving.require_token
                                (unset: admin routes refuse every call)
MLOPS_GATEWAY_POLL_SECONDS      how often aliases and deployment state are re-read (default 5)
MLOPS_GATEWAY_FLUSH_ROWS        buffered log rows that trigger a write (default 5000)
MLOPS_GATEWAY_FLUSH_SECONDS     longest time a logged row waits before it is written (default 10)
MLOPS_GATEWAY_BUFFER_ROWS       most log rows kept in memory per log while the object store is unreachable
                                (default 100000; beyond it the oldest are dropped, counted in /metrics)
MLOPS_GATEWAY_MAX_BODY_BYTES    largest request body (default 1 MiB; more gets 413)
MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS  longest time a request body may take to arrive once the route has
                                started reading it (default 10; a stalled body gets 408, connection closed)
MLOPS_GATEWAY_MAX_JSON_DEPTH    deepest nesting of a JSON body (default 32; deeper gets 400)
MLOPS_GATEWAY_FEEDBACK_IDS      request ids per pipeline the feedback route accepts labels for (default 100000;
                                the oldest are forgotten first; ml_ops.serving.served)
MLOPS_GATEWAY_FEEDBACK_SECONDS  how long after it was served a request id accepts labels (default 3600)
MLOPS_GATEWAY_DEFAULT_PIPELINE  pipeline of /invocations without X-Pipeline or ?pipeline= (default: the only one)
MLOPS_GATEWAY_MODEL_THREADS     BLAS/OpenMP threads per prediction (default 1: one-row predictions only lose
                                from thread fan-out, and the gateway shares its cores)
MLOPS_GATEWAY_BATCH_ROWS        most rows of concurrent requests one model call may join (default 256)
MLOPS_GATEWAY_CACHE_VERSIONS    loaded versions kept per pipeline besides the ones in use (default 2)
MLOPS_GATEWAY_PREDICT           thread (default: each model version predicts in its own thread, batching
                                concurrent requests) | inline (on the event loop: no hand-off, but a slow
                                model then stalls every request)
MLOPS_GATEWAY_SWITCH_INTERVAL_MS  GIL switch interval of the process (default 0.5; Python's is 5)
MLOPS_GATEWAY_ACCESS_LOG        1 = uvicorn access log (default off: it costs ~10% at high rates)
MLOPS_ONLINE_STORE              the online feature store of raw-event requests (ml_ops.features.store):
                                redis://host:port/db (production: shared by replicas) or sqlite:///<path> (the
                                embedded stack's default, under $MLOPS_HOME); unset: raw events of pipelines
                                with history features get 503
MLOPS_ONLINE_NAMESPACE          key prefix in Redis (default mlops: keys mlops:online:<pipeline>:...)
MLOPS_ONLINE_MATERIALIZE_SECONDS  how often the gateway looks for a newer validated raw day to materialise
                                into the online store (default 600; 0: only when a champion or canary is
                                loaded, which always materialises; ml_ops.features.materialize)
MLFLOW_TRACKING_URI             where aliases and models come from
MLOPS_S3_ENDPOINT, AWS_*        object store of the deployment state and the logs (ml_ops.storage.store_from_env)
MLOPS_BUCKET, MLOPS_INCLUDE_DIR as for the pipelines (which YAMLs exist, which bucket they use)
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass


def _number(env: Mapping[str, str], name: str, default: float, cast=float, minimum: float = 0):
    raw = env.get(name)
    if raw in (None, ""):
        return cast(default)
    try:
        value = cast(raw)
    except ValueError:
        raise ValueError(f"{name}={raw!r} is not a {'whole ' if cast is int else ''}number") from None
    if value < minimum:
        raise ValueError(f"{name}={raw!r} must be >= {minimum}")
    return value


@dataclass(frozen=True)
class Settings:
    host: str = "127.0.0.1"
    port: int = 8000
    token: str | None = None
    poll_seconds: float = 5.0
    flush_rows: int = 5000
    flush_seconds: float = 10.0
    buffer_rows: int = 100_000
    max_body_bytes: int = 1 << 20
    body_timeout_seconds: float = 10.0
    max_json_depth: int = 32
    feedback_ids: int = 100_000
    feedback_seconds: float = 3600.0
    default_pipeline: str | None = None
    model_threads: int = 1
    batch_rows: int = 256
    cache_versions: int = 2
    predict_inline: bool = False
    fast_path: bool = True
    access_log: bool = False
    tracking_uri: str | None = None
    online_store: str | None = None
    online_namespace: str = "mlops"
    online_materialize_seconds: float = 600.0

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        env = os.environ if env is None else env
        return cls(
            host=env.get("MLOPS_GATEWAY_HOST") or "127.0.0.1",
            port=_number(env, "MLOPS_GATEWAY_PORT", 8000, int, 0),
            token=env.get("MLOPS_GATEWAY_TOKEN") or None,
            poll_seconds=_number(env, "MLOPS_GATEWAY_POLL_SECONDS", 5.0, float, 0.05),
            flush_rows=_number(env, "MLOPS_GATEWAY_FLUSH_ROWS", 5000, int, 1),
            flush_seconds=_number(env, "MLOPS_GATEWAY_FLUSH_SECONDS", 10.0, float, 0.05),
            buffer_rows=_number(env, "MLOPS_GATEWAY_BUFFER_ROWS", 100_000, int, 1),
            max_body_bytes=_number(env, "MLOPS_GATEWAY_MAX_BODY_BYTES", 1 << 20, int, 64),
            body_timeout_seconds=_number(env, "MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS", 10.0, float, 0.1),
            max_json_depth=_number(env, "MLOPS_GATEWAY_MAX_JSON_DEPTH", 32, int, 2),
            feedback_ids=_number(env, "MLOPS_GATEWAY_FEEDBACK_IDS", 100_000, int, 1),
            feedback_seconds=_number(env, "MLOPS_GATEWAY_FEEDBACK_SECONDS", 3600.0, float, 1),
            default_pipeline=env.get("MLOPS_GATEWAY_DEFAULT_PIPELINE") or None,
            model_threads=_number(env, "MLOPS_GATEWAY_MODEL_THREADS", 1, int, 1),
            batch_rows=_number(env, "MLOPS_GATEWAY_BATCH_ROWS", 256, int, 1),
            cache_versions=_number(env, "MLOPS_GATEWAY_CACHE_VERSIONS", 2, int, 0),
            predict_inline=(env.get("MLOPS_GATEWAY_PREDICT") or "thread").lower() == "inline",
            fast_path=(env.get("MLOPS_GATEWAY_FAST_PATH") or "1").lower() not in ("0", "false", "no"),
            access_log=(env.get("MLOPS_GATEWAY_ACCESS_LOG") or "0").lower() in ("1", "true", "yes"),
            tracking_uri=env.get("MLFLOW_TRACKING_URI") or None,
            online_store=env.get("MLOPS_ONLINE_STORE") or None,
            online_namespace=env.get("MLOPS_ONLINE_NAMESPACE") or "mlops",
            online_materialize_seconds=_number(env, "MLOPS_ONLINE_MATERIALIZE_SECONDS", 600.0, float, 0),
        )
