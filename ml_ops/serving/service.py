"""One request's life in the gateway: choose the pipeline's deployment, parse and validate the rows,
route each row (sticky), predict per route, log every row, count it. HTTP-free (``app.py`` maps it).

Serving-log rows carry ``ml_ops.rollout.deployment.LOG_COLUMNS`` plus the model's input columns (typed as the
signature says) and the routing key / id columns when sent. Failed requests are logged too: a model
error as one row per input row (score NaN, ``error`` set); a request refused before a model was chosen
(bad body, no champion) as a single row with ``version``/``route`` null.

Personal columns (``privacy.personal_columns``, and ``routing_key`` when the routing key is one) are logged as
keyed hashes (``ml_ops.privacy.Pseudonymizer``); routing uses the raw value before anything is logged.

Raw events (``X-Input: raw``, or ``serving.input: raw``): ``ml_ops.serving.rawinput`` checks the source's
columns, ``ml_ops.serving.featurestore`` computes the derived features from the online store (after every check
has passed, so a refused request changes no state), then the rows go on as model-input rows; their log rows
also carry the raw columns that are not model inputs and ``input_mode``.

Feedback labels only requests this process served (``ml_ops.serving.served``: bounded, time-limited, in
memory; what that means across a restart is said there).
"""

from __future__ import annotations

import asyncio
import json
import logging
import math
import time
from datetime import datetime, timezone

import numpy as np

from ml_ops.config import Pipeline
from ml_ops.layout import CANARY, CHAMPION
from ml_ops.privacy import Pseudonymizer
from ml_ops.rollout.deployment import (
    FEEDBACK_COLUMNS,
    INPUT_MODE_COLUMN,
    LOG_COLUMNS,
    feedback_prefix,
    serving_logs_prefix,
)
from ml_ops.serving.errors import RequestError
from ml_ops.serving.featurestore import GatewayFeatures
from ml_ops.serving.logbuffer import PartitionedLog
from ml_ops.serving.metrics import Metrics
from ml_ops.serving.models import Deployment, LoadedModel, ModelResolver
from ml_ops.serving.rawinput import MODEL, RAW, RawColumns, RawEvents, parse_raw
from ml_ops.serving.routing import assign, routing_keys
from ml_ops.serving.schema import (
    INT64_MAX,
    Table,
    _short,
    check_columns,
    convert,
    parse_json,
    table_from_payload,
)
from ml_ops.serving.served import ServedIndex
from ml_ops.serving.settings import Settings

log = logging.getLogger("ml_ops.serving")

LOG_DTYPES = {
    "request_id": "object",
    "row": "int64",
    "ts": "datetime64[ns, UTC]",
    "version": "Int64",
    "route": "object",
    "routing_key": "object",
    "latency_ms": "float64",
    "model_cpu_ms": "float64",
    "score": "float64",
    "error": "object",
}
FEEDBACK_DTYPES = {"request_id": "object", "row": "int64", "label": "int64", "ts": "datetime64[ns, UTC]"}
assert tuple(LOG_DTYPES) == LOG_COLUMNS and tuple(FEEDBACK_DTYPES) == FEEDBACK_COLUMNS
MAX_LABELS = 10_000
_FEEDBACK_KEYS = {"request_id", "label", "row"}


def _text(values) -> list:
    return [None if v is None or (isinstance(v, float) and math.isnan(v)) else str(v) for v in values]


def _loggable(text: str) -> str:
    """Text as it can be stored (a lone surrogate becomes its escape); the common case costs one check."""
    return text if text.isascii() else text.encode("utf-8", "backslashreplace").decode("utf-8")


class Gateway:
    def __init__(self, settings: Settings, store=None, resolver: ModelResolver | None = None):
        if store is None:
            from ml_ops.storage import store_from_env

            store = store_from_env()
        self.settings, self.store = settings, store
        self.metrics = Metrics()
        self.resolver = resolver or ModelResolver(settings, store)
        m = self.metrics
        common = {
            "flush_rows": settings.flush_rows,
            "flush_seconds": settings.flush_seconds,
            "max_rows": settings.buffer_rows,
        }
        self.logs = PartitionedLog(
            store,
            name="predictions",
            base_dtypes=LOG_DTYPES,
            **common,
            on_write=lambda uri, n: m.log_rows.labels("predictions").inc(n),
            on_error=lambda name, exc: m.log_errors.labels("predictions").inc(),
            on_dead_letter=lambda name, n, why: m.log_dead_letter.labels("predictions").inc(n),
            on_drop=lambda name, n: m.log_dropped.labels("predictions").inc(n),
        )
        self.labels = PartitionedLog(
            store,
            name="feedback",
            base_dtypes=FEEDBACK_DTYPES,
            **common,
            on_write=lambda uri, n: m.log_rows.labels("feedback").inc(n),
            on_error=lambda name, exc: m.log_errors.labels("feedback").inc(),
            on_dead_letter=lambda name, n, why: m.log_dead_letter.labels("feedback").inc(n),
            on_drop=lambda name, n: m.log_dropped.labels("feedback").inc(n),
        )
        self._served: dict[str, ServedIndex] = {}
        self._pseudonymizers: dict[tuple, Pseudonymizer] = {}
        self.features = GatewayFeatures(settings, store, self.resolver)
        self._raw_columns: dict[str, tuple[Pipeline, RawColumns]] = {}

    def raw_columns(self, cfg: Pipeline) -> RawColumns:
        found = self._raw_columns.get(cfg.name)
        if found is None or found[0] is not cfg:
            found = self._raw_columns[cfg.name] = (cfg, RawColumns.of(cfg))
        return found[1]

    def pseudonymizer(self, dep: Deployment) -> Pseudonymizer:
        """The pipeline's keyed hashing of personal columns (the key is read once per configuration)."""
        cfg = dep.cfg
        ident = (cfg.name, tuple(cfg.personal_columns), cfg.privacy.key_name, cfg.routing_key)
        found = self._pseudonymizers.get(ident)
        if found is None:
            found = self._pseudonymizers[ident] = Pseudonymizer.for_pipeline(cfg)
        return found

    # ---- lifecycle ------------------------------------------------------------------------------------
    def start(self) -> None:
        self.resolver.start()
        self.logs.start()
        self.labels.start()
        self.features.start()

    def close(self) -> dict[str, list[str]]:
        """Stop polling and write every buffered row (shutdown)."""
        self.resolver.stop()
        self.features.stop()
        self.logs.stop()
        self.labels.stop()
        report = self.flush()
        written = report["written"]
        log.info(
            "gateway stopped; final flush wrote %d prediction and %d feedback part(s)%s",
            len(written["predictions"]),
            len(written["feedback"]),
            f"; NOT written (lost): {report['failed']}" if report["failed"] else "",
        )
        return written

    def flush(self) -> dict:
        """Write every buffered row now: ``{"written": {log: [uri]}, "dead_letter": {log: [...]},
        "failed": {log: [...]}}`` (``ml_ops.serving.logbuffer.FlushReport``; empty logs left out of the last
        two)."""
        reports = {"predictions": self.logs.flush_report(), "feedback": self.labels.flush_report()}
        return {
            "written": {name: r.written for name, r in reports.items()},
            "dead_letter": {name: r.dead_letter for name, r in reports.items() if r.dead_letter},
            "failed": {name: r.failed for name, r in reports.items() if r.failed},
        }

    def served(self, pipeline: str) -> ServedIndex:
        found = self._served.get(pipeline)
        if found is None:
            found = self._served.setdefault(
                pipeline, ServedIndex(self.settings.feedback_ids, self.settings.feedback_seconds)
            )
        return found

    # ---- which pipeline -------------------------------------------------------------------------------
    def pipeline_name(self, given: str | None) -> str:
        names = self.resolver.names
        if given:
            return given
        if self.settings.default_pipeline:
            return self.settings.default_pipeline
        if len(names) == 1:
            return names[0]
        raise RequestError(
            400,
            f"no pipeline chosen: send header X-Pipeline, ?pipeline= or POST "
            f"/pipelines/<name>/invocations (known: {names})",
        )

    def deployment(self, name: str) -> Deployment:
        found = self.resolver.get(name)
        if found is not None:
            return found
        if self.resolver.polls == 0:
            raise RequestError(503, "the gateway is starting: pipelines are not resolved yet", kind="unavailable")
        raise RequestError(
            404, f"unknown pipeline {_short(name)}; known pipelines: {self.resolver.names}", kind="not_found"
        )

    # ---- predictions ----------------------------------------------------------------------------------
    async def invoke(
        self, dep: Deployment, body: bytes, *, request_id: str, routing_header: str | None, mode: str = MODEL
    ) -> dict:
        """Predictions for one request (``mode``: model inputs or raw events, ``ml_ops.serving.rawinput``);
        raises ``RequestError`` (logged and counted) when it fails."""
        ts = datetime.now(timezone.utc)
        t0 = time.perf_counter()
        name, cfg = dep.name, dep.cfg
        try:
            payload = parse_json(body, self.settings.max_json_depth)
            if dep.champion is None:
                if not dep.resolved:
                    why = f"pipeline {name!r} is not available yet: {'; '.join(dep.errors)}"
                elif dep.champion_version is None:
                    why = (
                        f"pipeline {name!r} has no champion model yet: no version of registered model "
                        f"{name!r} holds the alias {CHAMPION!r}"
                    )
                else:
                    why = f"pipeline {name!r}: champion v{dep.champion_version} is not loaded ({'; '.join(dep.errors) or 'loading'})"
                raise RequestError(503, why, kind="unavailable")
            table = table_from_payload(payload)
            if table.n == 0:
                raise RequestError(422, "empty batch: the request has no rows")
            limit = cfg.serving.max_batch_rows
            if table.n > limit:
                raise RequestError(
                    413,
                    f"{table.n} rows in one request; pipeline {name!r} takes at most {limit} (serving.max_batch_rows)",
                    kind="too_large",
                )
            schemas = dep.schemas
            raw = None
            typed_by_schema: dict[int, dict[str, np.ndarray]] = {}
            if mode == RAW:  # checked and converted there, before the online store records anything
                raw, table, typed_by_schema = await self._raw_to_model_inputs(dep, table, schemas)
            elif schemas:
                check_columns(table, schemas, dep.extra_columns, f"{name} v{dep.champion.version}")
            key_column = table.data.get(cfg.routing_key) if cfg.routing_key else None
            keys = routing_keys(table.n, header=routing_header, column=key_column, request_id=request_id)
            routes = assign(name, keys, dep.weight)
            groups: dict[str, list[int]] = {}
            for i, r in enumerate(routes):
                groups.setdefault(r, []).append(i)
            plan = []
            for route, rows in groups.items():
                model = dep.model(route)
                typed = typed_by_schema.get(id(model.schema))
                if typed is None:
                    typed = typed_by_schema[id(model.schema)] = convert(table, model.schema, dep.extra_columns)
                if len(rows) != table.n:
                    idx = np.asarray(rows)
                    typed = {c: a[idx] for c, a in typed.items()}
                plan.append((route, rows, model, typed))
        except RequestError as err:
            self._log_refused(dep, ts, request_id, err, routing_header)
            self.metrics.request_seconds.labels(name, str(err.status)).observe(time.perf_counter() - t0)
            raise
        except Exception as exc:  # a bug in the checks above: still one logged, counted 500
            err = RequestError(500, f"internal error: {type(exc).__name__}: {exc}", kind="internal")
            log.exception("request %s failed", request_id)
            self._log_refused(dep, ts, request_id, err, routing_header)
            self.metrics.request_seconds.labels(name, "500").observe(time.perf_counter() - t0)
            raise err from exc

        outcomes = await asyncio.gather(
            *(m.runner.predict(typed, len(rows)) for _, rows, m, typed in plan), return_exceptions=True
        )
        n = table.n
        scores = np.full(n, np.nan)
        versions: list[int | None] = [None] * n
        failure: tuple[str, LoadedModel, BaseException] | None = None
        for (route, rows, model, typed), outcome in zip(plan, outcomes, strict=False):
            idx = np.asarray(rows)
            for i in rows:
                versions[i] = model.version
            if isinstance(outcome, BaseException):
                if not isinstance(outcome, Exception):
                    raise outcome  # cancellation and the like: not the model's fault
                error = f"{type(outcome).__name__}: {outcome}"
                log.warning("%s v%s (%s) failed on request %s: %s", name, model.version, route, request_id, error)
                failure = failure or (route, model, outcome)
                self.metrics.failed(name, model.version, route, "model", 500)
                self._log_rows(
                    dep, ts, request_id, rows, model, route, keys, typed, table, None, None, None, error, raw
                )
                continue
            group_scores, seconds, cpu_seconds = outcome
            scores[idx] = group_scores
            self.metrics.predicted(name, model.version, route, len(rows), seconds, group_scores)
            self._log_rows(
                dep,
                ts,
                request_id,
                rows,
                model,
                route,
                keys,
                typed,
                table,
                group_scores,
                seconds * 1000.0,
                cpu_seconds * 1000.0,
                None,
                raw,
            )
        status = 500 if failure else 200
        self.metrics.request_seconds.labels(name, str(status)).observe(time.perf_counter() - t0)
        if failure:
            route, model, exc = failure
            err = RequestError(
                500, f"model {name} v{model.version} ({route}) failed: {type(exc).__name__}: {exc}", kind="model"
            )
            err.counted = True  # per failed route group above
            raise err
        self.served(name).add(request_id, n)
        predictions = [None if math.isnan(s) else s for s in scores.tolist()]  # NaN is not JSON
        return {"predictions": predictions, "versions": versions, "routes": routes, "request_id": request_id}

    async def _raw_to_model_inputs(
        self, dep: Deployment, table: Table, schemas
    ) -> tuple[RawEvents, Table, dict[int, dict[str, np.ndarray]]]:
        """A raw request's events (checked), its model-input table with the derived columns computed online, and
        its typed inputs per signature (``id(schema)``). Every check runs before the online store records
        anything: the raw columns, then the signature's, on the table with the derived columns still zero."""
        cfg = dep.cfg
        inputs = [n for s in schemas or [dep.fallback_schema] for n in s.names]
        raw = parse_raw(table, cfg, self.raw_columns(cfg), inputs)
        derived = self.raw_columns(cfg).derived
        zeros = [0] * table.n
        checked = Table([*raw.table.columns, *derived], {**raw.table.data, **dict.fromkeys(derived, zeros)}, table.n)
        typed_by_schema = {}
        if schemas:
            label = f"{dep.name} v{dep.champion.version}"
            check_columns(checked, schemas, dep.extra_columns, label)
            for schema in schemas:
                typed_by_schema[id(schema)] = convert(checked, schema, dep.extra_columns)
        computed = await self.features.compute(cfg, raw)
        data = {**raw.table.data, **{c: computed[c].tolist() for c in derived}}
        table = Table([*raw.table.columns, *derived], data, table.n)
        for schema in schemas or []:  # the zeros replaced by the computed values, typed as the signature says
            typed_by_schema[id(schema)].update(convert(table, schema, dep.extra_columns, only=derived))
        return raw, table, typed_by_schema

    def _log_rows(
        self,
        dep: Deployment,
        ts: datetime,
        request_id: str,
        rows: list[int],
        model: LoadedModel,
        route: str,
        keys: list[str],
        typed: dict,
        table,
        scores,
        latency_ms,
        cpu_ms,
        error,
        raw: RawEvents | None = None,
    ) -> None:
        n = len(rows)
        whole = n == table.n
        columns = {
            "request_id": request_id,
            "row": rows,
            "ts": ts,
            "version": model.version,
            "route": route,
            "routing_key": keys if whole else [keys[i] for i in rows],
            "latency_ms": latency_ms if latency_ms is not None else np.nan,
            "model_cpu_ms": cpu_ms if cpu_ms is not None else np.nan,
            "score": scores if scores is not None else np.nan,
            "error": error,
        }
        columns.update(typed)
        for c in dep.extra_columns:
            values = table.data.get(c)
            if values is not None and c not in typed:
                columns[c] = _text(values if whole else [values[i] for i in rows])
        dtypes = dep.log_dtypes
        columns[INPUT_MODE_COLUMN] = MODEL
        if raw is not None:
            columns[INPUT_MODE_COLUMN] = RAW
            for c, values in raw.logged.items():
                columns[c] = values if whole else [values[i] for i in rows]
            dtypes = {**dtypes, **raw.logged_dtypes}
        self.pseudonymizer(dep).apply(columns)
        self.logs.append(serving_logs_prefix(dep.cfg), ts, n, columns, dtypes)

    def _log_refused(
        self, dep: Deployment, ts: datetime, request_id: str, err: RequestError, routing_header: str | None
    ) -> None:
        self.metrics.failed(dep.name, None, None, err.kind, err.status)
        err.counted = True
        columns = {
            "request_id": request_id,
            "row": 0,
            "ts": ts,
            "version": None,
            "route": None,
            "routing_key": routing_header or request_id,
            "latency_ms": np.nan,
            "model_cpu_ms": np.nan,
            "score": np.nan,
            "error": _loggable(f"{err.status}: {err.message}"),
        }
        self.pseudonymizer(dep).apply(columns)
        self.logs.append(serving_logs_prefix(dep.cfg), ts, 1, columns, dep.log_dtypes)

    # ---- feedback -------------------------------------------------------------------------------------
    def feedback(self, dep: Deployment, body: bytes) -> dict:
        """Labels for served rows; all or nothing (a batch with one bad label is refused whole)."""
        payload = parse_json(body, self.settings.max_json_depth)
        if "labels" in payload:
            if set(payload) != {"labels"}:
                raise RequestError(422, f"with 'labels', no other key is allowed; got {sorted(payload)}")
            items, where = payload["labels"], "labels"
            if not isinstance(items, list) or not items:
                raise RequestError(422, "'labels' must be a non-empty list of {request_id, label, row}")
        else:
            items, where = [payload], None
        if len(items) > MAX_LABELS:
            raise RequestError(413, f"{len(items)} labels in one request; at most {MAX_LABELS}", kind="too_large")
        served = self.served(dep.name)
        ids, rows, labels, unknown = [], [], [], {}
        for i, item in enumerate(items):
            at = f"{where}[{i}]" if where else "the body"
            prefix = f"{at}." if where else ""
            if not isinstance(item, dict):
                raise RequestError(422, f"{at} must be an object {{request_id, label, row}}")
            extra = sorted(set(item) - _FEEDBACK_KEYS)
            if extra:
                raise RequestError(422, f"{at}: unknown key(s) {extra}; expected request_id, label, row")
            rid, label, row = item.get("request_id"), item.get("label"), item.get("row", 0)
            if not isinstance(rid, str) or not 0 < len(rid) <= 128:
                raise RequestError(
                    422, f"{prefix}request_id must be the request id (1-128 characters), got {_short(rid)}"
                )
            if type(label) not in (int, float, bool) or label not in (0, 1):
                raise RequestError(422, f"{prefix}label must be 0 or 1, got {_short(label)}")
            if type(row) is not int or not 0 <= row <= INT64_MAX:
                raise RequestError(422, f"{prefix}row must be a row index >= 0, got {_short(row)}")
            n = served.rows(rid)
            if n is None:
                unknown.setdefault(rid, None)
            elif row >= n:
                raise RequestError(
                    422, f"{prefix}row {row} of request {_short(rid)}: that request had {n} row(s) (0-{n - 1})"
                )
            ids.append(rid)
            rows.append(row)
            labels.append(int(label))
        if unknown:
            self.metrics.feedback_unknown.labels(dep.name).inc(len(unknown))
            shown = [_short(u) for u in list(unknown)[:5]]
            more = f" and {len(unknown) - 5} more" if len(unknown) > 5 else ""
            raise RequestError(
                422,
                f"unknown request id(s) {', '.join(shown)}{more}: this gateway did not answer them for pipeline "
                f"{dep.name!r} in the last {self.settings.feedback_seconds:g} s (MLOPS_GATEWAY_FEEDBACK_SECONDS; "
                "ids are kept in memory, so not across a restart); no label of this request was recorded",
                kind="unknown_request_id",
            )
        ts = datetime.now(timezone.utc)
        self.labels.append(
            feedback_prefix(dep.cfg), ts, len(ids), {"request_id": ids, "row": rows, "label": labels, "ts": ts}
        )
        self.metrics.feedback.labels(dep.name).inc(len(ids))
        return {"accepted": len(ids), "pipeline": dep.name}

    # ---- status ---------------------------------------------------------------------------------------
    def render_metrics(self) -> bytes:
        m = self.metrics
        for name, d in self.resolver.status().items():
            m.weight.labels(name).set(d["effective_weight"])
            m.version.labels(name, CHAMPION).set(d[CHAMPION]["serving"] or 0)
            m.version.labels(name, CANARY).set((d[CANARY]["serving"] or 0) if d["effective_weight"] > 0 else 0)
        for log_name, buffer in (("predictions", self.logs), ("feedback", self.labels)):
            m.log_buffered.labels(log_name).set(buffer.pending_rows)
            m.log_buffer_limit.labels(log_name).set(buffer.max_rows)
        for name, served in list(self._served.items()):
            m.served_ids.labels(name).set(len(served))
        return m.render()


def dumps(obj) -> bytes:
    return json.dumps(obj, separators=(",", ":"), allow_nan=False, default=str).encode()
