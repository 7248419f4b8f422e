"""HTTP routes of the gateway. Thin: every decision is in ``service.Gateway``.

    POST /invocations                        MLflow scoring JSON; pipeline from header X-Pipeline, ?pipeline=,
                                             MLOPS_GATEWAY_DEFAULT_PIPELINE or the only pipeline
    POST /pipelines/{pipeline}/invocations   the same for a named pipeline
    POST /endpoints/{pipeline}/invocations   the same, for mlflow.deployments.get_deploy_client(url).predict(endpoint=...)
    POST /pipelines/{pipeline}/feedback      {"request_id", "label": 0|1, "row": 0} or {"labels": [...]}; bearer
                                             token unless serving.feedback_requires_token is false; only request
                                             ids this process served (ml_ops.serving.served)
    GET  /pipelines                          champion/canary versions, weights, inputs, errors per pipeline
    GET  /health  /ping                      the process is up
    GET  /ready                              200 once every pipeline with a champion has it loaded, else 503 + reason
    GET  /metrics                            Prometheus
    GET  /openapi.json                       the routes above with their request, response and error schemas
    POST /admin/reload                       re-resolve aliases and state now (bearer token)
    POST /admin/flush                        write buffered logs and feedback now (bearer token): the URIs written,
                                             rows sent to the dead letter and why; 503 when a write failed

Prediction headers: X-Input (``model``: the model's inputs; ``raw``: the source's raw event columns, the
gateway computes the derived features from its online store, ``ml_ops.serving.rawinput``; default: the
pipeline's ``serving.input``), X-Request-ID (else one is generated; returned in the reply header either way; 1-128
printable ASCII characters) and X-Routing-Key (honoured only for a pipeline with
``serving.client_routing_key``; else the row's routing-key column, else the request id). Bodies must be
``Content-Type: application/json`` (UTF-8; else 415), arrive within MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS (else
408) and fit MLOPS_GATEWAY_MAX_BODY_BYTES (else 413). Errors are ``{"error": "..."}``, and every error
response is counted in ``mlops_gateway_errors_total`` by kind and endpoint.

The three invocation routes are served by a plain ASGI front (``InvocationFront``) ahead of FastAPI: at a
few hundred requests a second Starlette's request object, router and middleware stack cost about 1 ms of
the single GIL per request, as much as a fifth of a one-row prediction. Everything else is FastAPI. The
invocation routes are declared to FastAPI too, only so that /openapi.json documents them.
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import re
import uuid
from contextlib import asynccontextmanager
from typing import Literal
from urllib.parse import parse_qs

from fastapi import FastAPI, Header, Query, Request
from fastapi.exceptions import RequestValidationError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import PlainTextResponse, Response

from ml_ops.serving import api
from ml_ops.serving.errors import RequestError
from ml_ops.serving.metrics import CONTENT_TYPE
from ml_ops.serving.rawinput import INPUT_MODES, input_mode
from ml_ops.serving.schema import _short
from ml_ops.serving.service import Gateway, dumps
from ml_ops.serving.settings import Settings

log = logging.getLogger("ml_ops.serving")
JSON = "application/json"
_INVOCATIONS = re.compile(r"^/(?:(?:pipelines|endpoints)/(?P<pipeline>[^/]+)/)?invocations/?$")
_HEADER_TEXT = re.compile(r"[\x20-\x7e]+")  # printable ASCII: what an id or key header may hold
_timeout_at = getattr(asyncio, "timeout_at", None)  # Python 3.11+
InputMode = Literal[INPUT_MODES]  # type: ignore[valid-type]
INPUT_DOC = (
    "what the rows are: 'model' = the model's inputs (as /pipelines lists them), computed by the client; 'raw' = "
    "the source's raw event (the pipeline's extract columns without the label: event id, ISO 8601 timestamp, "
    "entity id, amount and the model's own inputs), from which the gateway computes the derived features with "
    "its online store. Default: the pipeline's serving.input (model unless configured)"
)
INPUT_HEADER = Header(None, alias="X-Input", description=INPUT_DOC)
REQUEST_ID_HEADER = Header(
    None,
    alias="X-Request-ID",
    max_length=128,
    pattern=r"^[\x20-\x7e]{1,128}$",
    description="the request's id in the prediction log and for feedback: 1-128 printable ASCII characters "
    "(else 400); generated when absent, returned in the reply header either way",
)


def check_token(settings: Settings, authorization: str | None, what: str) -> None:
    if not settings.token:
        raise RequestError(
            403, f"{what} needs a bearer token, and this gateway has none (set MLOPS_GATEWAY_TOKEN)", kind="auth"
        )
    if not authorization:
        raise RequestError(
            401,
            f"{what} needs the header 'Authorization: Bearer <MLOPS_GATEWAY_TOKEN>'",
            kind="auth",
            headers={"WWW-Authenticate": "Bearer"},
        )
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(token.strip().encode(), settings.token.encode()):
        raise RequestError(403, f"{what}: invalid bearer token", kind="auth")


def check_content_type(value: str | None) -> None:
    """JSON bodies only: ``application/json``, with no charset or UTF-8 (RFC 8259)."""
    media, _, params = (value or "").partition(";")
    if media.strip().lower() != JSON:
        got = _short(value) if value else "none"
        raise RequestError(415, f"Content-Type must be {JSON}; got {got}", kind="media_type")
    for param in params.split(";"):
        key, _, val = param.partition("=")
        charset = val.strip().strip('"').lower()
        if key.strip().lower() == "charset" and charset not in ("utf-8", "utf8"):
            raise RequestError(
                415, f"JSON bodies must be UTF-8; Content-Type says charset={_short(charset)}", kind="media_type"
            )


def _error_body(err: RequestError, request_id: str | None) -> tuple[bytes, dict]:
    body = {"error": err.message}
    headers = dict(err.headers)
    if request_id:
        body["request_id"] = request_id
        headers["X-Request-ID"] = request_id
    return dumps(body), headers


def _too_large(limit: int, declared: str | None = None) -> RequestError:
    size = f"body of {declared} bytes exceeds" if declared else "body exceeds"
    return RequestError(
        413,
        f"{size} the limit of {limit} bytes (MLOPS_GATEWAY_MAX_BODY_BYTES)",
        kind="too_large",
        headers={"Connection": "close"},  # the rest of the body is not read: the connection cannot be reused
    )


async def _collect(receive, limit: int, deadline: float | None) -> bytes:
    chunks, size = [], 0
    loop = asyncio.get_running_loop()
    while True:
        if deadline is None:
            message = await receive()
        else:  # Python 3.10: no asyncio.timeout_at
            message = await asyncio.wait_for(receive(), max(0.0, deadline - loop.time()))
        if message["type"] == "http.disconnect":
            raise RequestError(400, "the client disconnected before sending the whole body", kind="disconnected")
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
        if not message.get("more_body"):
            return b"".join(chunks)


async def read_body(receive, declared: str | None, settings: Settings) -> bytes:
    """The whole body, within MLOPS_GATEWAY_MAX_BODY_BYTES and MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS."""
    limit, timeout = settings.max_body_bytes, settings.body_timeout_seconds
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, declared)
    deadline = asyncio.get_running_loop().time() + timeout
    try:
        if _timeout_at is not None:
            async with _timeout_at(deadline):
                return await _collect(receive, limit, None)
        return await _collect(receive, limit, deadline)
    except (asyncio.TimeoutError, TimeoutError):
        raise RequestError(
            408,
            f"the request body did not arrive within {timeout:g} s (MLOPS_GATEWAY_BODY_TIMEOUT_SECONDS)",
            kind="timeout",
            headers={"Connection": "close"},
        ) from None


def _header_text(value: str, name: str, longest: int) -> str:
    if not 0 < len(value) <= longest or not _HEADER_TEXT.fullmatch(value):
        raise RequestError(400, f"{name} must be 1 to {longest} printable ASCII characters")
    return value


def _pipeline_label(g: Gateway, name: str | None) -> str:
    """A known pipeline's name, else "none" (a client must not mint metric series)."""
    return name if name and g.resolver.get(name) is not None else "none"


def _endpoint(path: str) -> str:
    if path.startswith("/admin/"):
        return "admin"
    if path.endswith("/feedback"):
        return "feedback"
    return "invocations" if _INVOCATIONS.match(path) else "other"


class InvocationFront:
    """ASGI app: the invocation routes directly, everything else (and the lifespan) to FastAPI."""

    def __init__(self, app: FastAPI, settings: Settings):
        self.app, self.settings = app, settings

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            match = _INVOCATIONS.match(scope["path"])
            if match:
                return await self._invocations(scope, receive, send, match.group("pipeline"))
        return await self.app(scope, receive, send)

    @staticmethod
    async def _respond(send, status: int, body: bytes, headers: dict) -> None:
        raw = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
        raw += [(k.lower().encode(), v.encode()) for k, v in headers.items()]
        await send({"type": "http.response.start", "status": status, "headers": raw})
        await send({"type": "http.response.body", "body": body})

    async def _invocations(self, scope, receive, send, pipeline: str | None) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        g: Gateway = self.app.state.gateway
        name = None
        try:
            if request_id is None:
                request_id = uuid.uuid4().hex
            elif not 0 < len(request_id) <= 128 or not _HEADER_TEXT.fullmatch(request_id):
                request_id = None
                raise RequestError(400, "X-Request-ID must be 1 to 128 printable ASCII characters")
            if scope["method"] != "POST":
                raise RequestError(405, f"method {scope['method']} not allowed: POST {scope['path']}", kind="method")
            if pipeline is None:
                pipeline = headers.get("x-pipeline")
                if not pipeline and scope.get("query_string"):
                    pipeline = (parse_qs(scope["query_string"].decode("latin-1")).get("pipeline") or [None])[0]
            dep = g.deployment(g.pipeline_name(pipeline))
            name = dep.name
            serving = dep.cfg.serving
            if serving.require_token:
                check_token(self.settings, headers.get("authorization"), f"pipeline {name!r} (serving.require_token)")
            mode = input_mode(headers.get("x-input"), serving.input)
            check_content_type(headers.get("content-type"))
            body = await read_body(receive, headers.get("content-length"), self.settings)
            routing_header = None
            if serving.client_routing_key:  # else ignored: a caller must not choose its side of a canary
                routing_header = headers.get("x-routing-key") or None
                if routing_header is not None:
                    _header_text(routing_header, "X-Routing-Key", 256)
            result = await g.invoke(dep, body, request_id=request_id, routing_header=routing_header, mode=mode)
        except RequestError as err:
            if not err.counted:
                g.metrics.failed(name, None, None, err.kind, err.status)
            body, extra = _error_body(err, request_id)
            return await self._respond(send, err.status, body, extra)
        except Exception as exc:  # never crash on a request
            log.exception("request %s failed", request_id)
            g.metrics.failed(name, None, None, "internal", 500)
            err = RequestError(500, f"internal error: {type(exc).__name__}: {exc}", kind="internal")
            body, extra = _error_body(err, request_id)
            return await self._respond(send, 500, body, extra)
        await self._respond(send, 200, dumps(result), {"X-Request-ID": request_id})


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type=JSON, headers=headers)


def create_app(settings: Settings | None = None, gateway: Gateway | None = None) -> InvocationFront:
    settings = settings or Settings.from_env()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        gw = gateway or Gateway(settings)
        gw.start()
        app.state.gateway = gw
        log.info(
            "gateway up on %s:%s (poll %.1fs, flush %d rows / %.1fs)",
            settings.host,
            settings.port,
            settings.poll_seconds,
            settings.flush_rows,
            settings.flush_seconds,
        )
        try:
            yield
        finally:
            await run_in_threadpool(gw.close)  # SIGTERM lands here after in-flight requests: flush the buffers

    app = FastAPI(title="airflow-mlops serving gateway", lifespan=lifespan, docs_url=None, redoc_url=None)

    def gw(request: Request) -> Gateway:
        return request.app.state.gateway

    def count(request: Request, kind: str, status: int) -> None:
        g = gw(request)
        path = request.url.path
        name = path.split("/")[2] if path.startswith("/pipelines/") and path.count("/") >= 3 else None
        g.metrics.failed(_pipeline_label(g, name), None, None, kind, status, endpoint=_endpoint(path))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # 404/405 of unknown routes
        kind = {404: "not_found", 405: "method"}.get(exc.status_code, "invalid")
        count(request, kind, exc.status_code)
        return _json({"error": f"{exc.detail}: {request.method} {_short(request.url.path)}"}, exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError):
        count(request, "invalid", 422)
        return _json({"error": f"invalid request: {exc.errors()}"}, 422)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        if not exc.counted:
            count(request, exc.kind, exc.status)
        body, headers = _error_body(exc, None)
        return Response(body, status_code=exc.status, media_type=JSON, headers=headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # never a bare 500 page
        log.exception("%s %s failed", request.method, request.url.path)
        count(request, "internal", 500)
        return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    # ---- predictions (served by InvocationFront; declared here for the OpenAPI document) ---------------
    invocation_doc = {
        "response_model": api.InvocationResponse,
        "responses": api.INVOCATION_ERRORS,
        "openapi_extra": api.INVOCATION_BODY,
        "tags": ["predictions"],
    }

    async def _served_by_front(*_args, **_kwargs):  # pragma: no cover - InvocationFront answers these paths
        raise RequestError(500, "invocation routes are served by InvocationFront", kind="internal")

    @app.post("/invocations", summary="Predict (pipeline from X-Pipeline, ?pipeline= or the default)", **invocation_doc)
    async def invocations(
        pipeline: str | None = Query(None, description="pipeline (else X-Pipeline, else the default)"),
        x_pipeline: str | None = Header(None, alias="X-Pipeline"),
        x_input: InputMode | None = INPUT_HEADER,
        x_request_id: str | None = REQUEST_ID_HEADER,
        x_routing_key: str | None = Header(
            None, alias="X-Routing-Key", max_length=256, description="only with serving.client_routing_key"
        ),
    ):
        return await _served_by_front()

    for prefix in ("pipelines", "endpoints"):

        @app.post(f"/{prefix}/{{pipeline}}/invocations", summary="Predict with a named pipeline", **invocation_doc)
        async def named_invocations(
            pipeline: str,
            x_input: InputMode | None = INPUT_HEADER,
            x_request_id: str | None = REQUEST_ID_HEADER,
            x_routing_key: str | None = Header(
                None, alias="X-Routing-Key", max_length=256, description="only with serving.client_routing_key"
            ),
        ):
            return await _served_by_front()

    # ---- feedback -----------------------------------------------------------------------------------
    @app.post(
        "/pipelines/{pipeline}/feedback",
        summary="Labels for served predictions",
        response_model=api.FeedbackResponse,
        responses=api.FEEDBACK_ERRORS,
        openapi_extra=api.FEEDBACK_BODY,
        tags=["predictions"],
    )
    async def feedback(pipeline: str, request: Request):
        g = gw(request)
        dep = g.deployment(pipeline)
        serving = dep.cfg.serving
        if serving.require_token or serving.feedback_requires_token:
            why = "serving.require_token" if serving.require_token else "serving.feedback_requires_token"
            check_token(settings, request.headers.get("authorization"), f"feedback of pipeline {dep.name!r} ({why})")
        check_content_type(request.headers.get("content-type"))
        body = await read_body(request.receive, request.headers.get("content-length"), settings)
        return _json(g.feedback(dep, body))

    # ---- status -------------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return _json({"status": "ok"})

    @app.get("/ping", response_class=PlainTextResponse)
    async def ping():
        return Response(b"\n", media_type="text/plain")

    @app.get(
        "/ready",
        responses={
            503: {
                "description": "not ready: a champion is not loaded, or a pipeline's online store is not yet "
                "materialised (raw events); `error` says which"
            }
        },
    )
    async def ready(request: Request):
        ok, why = gw(request).resolver.ready()
        if ok:  # raw events need their entities' history online
            ok, why = gw(request).features.ready()
        return _json({"ready": True} if ok else {"ready": False, "error": why}, 200 if ok else 503)

    @app.get("/pipelines")
    async def pipelines(request: Request):
        g = gw(request)
        found = g.resolver.status()
        for name, status in found.items():
            dep = g.resolver.get(name)
            if dep is not None:
                status["input"] = dep.cfg.serving.input
                status["raw_columns"] = list(g.raw_columns(dep.cfg).required) + list(g.raw_columns(dep.cfg).optional)
                status["online"] = g.features.status(name, dep.cfg)
        return _json({"pipelines": found})

    @app.get("/metrics", response_class=PlainTextResponse, description="Prometheus text exposition format")
    async def metrics(request: Request):
        return Response(gw(request).render_metrics(), media_type=CONTENT_TYPE)

    # ---- admin --------------------------------------------------------------------------------------
    @app.post("/admin/reload", responses=api.ADMIN_ERRORS)
    async def reload(request: Request):
        check_token(settings, request.headers.get("authorization"), "POST /admin/reload")
        return _json({"pipelines": await run_in_threadpool(gw(request).resolver.poll_once)})

    @app.post(
        "/admin/flush",
        response_model=api.FlushResponse,
        responses={
            **api.ADMIN_ERRORS,
            503: {"model": api.FlushResponse, "description": "a write failed; its rows are kept for a retry"},
        },
    )
    async def flush(request: Request):
        check_token(settings, request.headers.get("authorization"), "POST /admin/flush")
        report = await run_in_threadpool(gw(request).flush)
        if report["failed"]:
            failed = [
                f"{log_name}: {f['rows']} rows ({f['error']})" for log_name, fs in report["failed"].items() for f in fs
            ]
            count(request, "unavailable", 503)
            return _json({"error": f"not written, kept for the next flush: {'; '.join(failed)}", **report}, 503)
        return _json(report)

    base_openapi = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = base_openapi()
            schema.setdefault("components", {}).setdefault("schemas", {}).update(api.COMPONENTS)
            app.openapi_schema = schema
        return app.openapi_schema

    app.openapi = openapi
    return InvocationFront(app, settings)
