"""Prometheus metrics of the gateway (``GET /metrics``), in a registry of its own.

mlops_gateway_requests_total{pipeline,version,route,status}   prediction requests answered (per route group;
                                                               refused ones with version/route "none")
mlops_gateway_errors_total{pipeline,version,route,kind,endpoint}  every error response, by kind (see
                                                               ml_ops.serving.errors.KINDS) and endpoint
                                                               (invocations | feedback | admin | other);
                                                               pipeline "none" when no known pipeline was named
mlops_gateway_latency_seconds{pipeline,version,route}          model time of a request's rows
mlops_gateway_request_seconds{pipeline,status}                 whole request, parse to response
mlops_gateway_score{pipeline,version,route}                    predicted P(positive), per row
mlops_gateway_rows_total{pipeline,version,route}               rows predicted
mlops_gateway_canary_weight{pipeline}                          traffic share routed to the canary now
mlops_gateway_model_version{pipeline,route}                    version serving each route (0: none)
mlops_gateway_log_rows_written_total{log}                      rows written to S3 (log = predictions | feedback)
mlops_gateway_log_write_errors_total{log}                      failed part writes (rows kept for a retry)
mlops_gateway_log_dead_letter_rows_total{log}                  rows that could not be encoded as parquet, written
                                                               to the dead letter instead (ml_ops.layout.dead_letter_prefix)
mlops_gateway_log_buffered_rows{log}                           rows waiting to be written
mlops_gateway_log_buffer_limit_rows{log}                       most rows kept while the store is unreachable
mlops_gateway_log_dropped_rows_total{log}                      rows dropped because that limit was reached
mlops_gateway_feedback_total{pipeline}                         labels received
mlops_gateway_feedback_unknown_total{pipeline}                 labels refused: their request id was not served (or
                                                               is forgotten: ml_ops.serving.served)
mlops_gateway_served_ids{pipeline}                             request ids feedback can label now
"""

from __future__ import annotations

import math

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.exposition import CONTENT_TYPE_LATEST

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075, 0.1, 0.2, 0.5, 1, 2, 5)
SCORE_BUCKETS = tuple(round(0.05 * i, 2) for i in range(1, 20)) + (1.0,)
CONTENT_TYPE = CONTENT_TYPE_LATEST


class Metrics:
    def __init__(self) -> None:
        r = self.registry = CollectorRegistry()
        self.requests = Counter(
            "mlops_gateway_requests",
            "Requests answered, per route group",
            ["pipeline", "version", "route", "status"],
            registry=r,
        )
        self.errors = Counter(
            "mlops_gateway_errors",
            "Error responses by kind and endpoint",
            ["pipeline", "version", "route", "kind", "endpoint"],
            registry=r,
        )
        self.latency = Histogram(
            "mlops_gateway_latency_seconds",
            "Model time of a request's rows",
            ["pipeline", "version", "route"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.request_seconds = Histogram(
            "mlops_gateway_request_seconds",
            "Whole request time in the gateway",
            ["pipeline", "status"],
            buckets=LATENCY_BUCKETS,
            registry=r,
        )
        self.score = Histogram(
            "mlops_gateway_score",
            "Predicted score per row",
            ["pipeline", "version", "route"],
            buckets=SCORE_BUCKETS,
            registry=r,
        )
        self.rows = Counter("mlops_gateway_rows", "Rows predicted", ["pipeline", "version", "route"], registry=r)
        self.weight = Gauge(
            "mlops_gateway_canary_weight", "Share of traffic routed to the canary", ["pipeline"], registry=r
        )
        self.version = Gauge(
            "mlops_gateway_model_version", "Version serving each route (0: none)", ["pipeline", "route"], registry=r
        )
        self.log_rows = Counter(
            "mlops_gateway_log_rows_written", "Rows written to the object store", ["log"], registry=r
        )
        self.log_errors = Counter("mlops_gateway_log_write_errors", "Failed part writes", ["log"], registry=r)
        self.log_dead_letter = Counter(
            "mlops_gateway_log_dead_letter_rows",
            "Rows written to the dead letter instead of parquet",
            ["log"],
            registry=r,
        )
        self.log_buffered = Gauge("mlops_gateway_log_buffered_rows", "Rows waiting to be written", ["log"], registry=r)
        self.log_buffer_limit = Gauge(
            "mlops_gateway_log_buffer_limit_rows", "Most rows kept while the store is unreachable", ["log"], registry=r
        )
        self.log_dropped = Counter(
            "mlops_gateway_log_dropped_rows",
            "Rows dropped: buffer limit reached while the store failed",
            ["log"],
            registry=r,
        )
        self.feedback = Counter("mlops_gateway_feedback", "Labels received", ["pipeline"], registry=r)
        self.feedback_unknown = Counter(
            "mlops_gateway_feedback_unknown", "Labels refused for request ids not served", ["pipeline"], registry=r
        )
        self.served_ids = Gauge("mlops_gateway_served_ids", "Request ids feedback can label", ["pipeline"], registry=r)
        self._children: dict[tuple, tuple] = {}

    def _prediction_children(self, pipeline: str, version: str, route: str) -> tuple:
        key = (pipeline, version, route)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = (
                self.requests.labels(pipeline, version, route, "200"),
                self.latency.labels(*key),
                self.score.labels(*key),
                self.rows.labels(*key),
            )
        return found

    def predicted(self, pipeline: str, version: int, route: str, n: int, seconds: float, scores) -> None:
        requests, latency, score, rows = self._prediction_children(pipeline, str(version), route)
        requests.inc()
        latency.observe(seconds)
        rows.inc(n)
        for s in scores.tolist():
            if not math.isnan(s):
                score.observe(s)

    def failed(
        self,
        pipeline: str | None,
        version: int | None,
        route: str | None,
        kind: str,
        status: int,
        endpoint: str = "invocations",
    ) -> None:
        """One error response. Prediction requests count in requests_total too (its status label)."""
        p, v, r = pipeline or "none", str(version) if version is not None else "none", route or "none"
        self.errors.labels(p, v, r, kind, endpoint).inc()
        if endpoint == "invocations":
            self.requests.labels(p, v, r, str(status)).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
