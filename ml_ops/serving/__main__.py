"""``python -m ml_ops.serving``: the gateway under uvicorn (one worker; SIGTERM drains requests, then
the shutdown writes every buffered log row). Settings: ``ml_ops.serving.settings``."""

from __future__ import annotations

import logging
import os
import sys


def main() -> int:
    # Before numpy/scikit-learn load: one-row predictions only lose from BLAS/OpenMP thread fan-out.
    threads = os.environ.get("MLOPS_GATEWAY_MODEL_THREADS") or "1"
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, threads)
    # MLflow's client retries a dead server for minutes by default; the poller just tries again later.
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "2")
    os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "30")
    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")

    import uvicorn

    from ml_ops.serving.app import create_app
    from ml_ops.serving.settings import Settings

    # The event loop and the model threads share the GIL: hand it over every 0.5 ms rather than every 5 ms,
    # so a request is read and answered while a model thread computes (bench/RESULTS_gateway.md: lower p99).
    sys.setswitchinterval(float(os.environ.get("MLOPS_GATEWAY_SWITCH_INTERVAL_MS") or 0.5) / 1000)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        settings = Settings.from_env()
    except ValueError as exc:
        print(f"ml_ops.serving: {exc}", file=sys.stderr)
        return 2
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=settings.access_log,
        log_level="info",
        lifespan="on",
        timeout_graceful_shutdown=20,
        proxy_headers=False,
    )  # nothing here uses the client address: skip rewriting it per request
    return 0


if __name__ == "__main__":
    sys.exit(main())
