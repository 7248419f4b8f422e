"""HTTP routes of the gateway. Thin: every decision is in ``service.Gateway``.

    POST /invocations                        MLflow scoring JSON; pipeline from header X-Pipeline, ?pipeline=,
                                             MLOPS_GATEWAY_DEFAULT_PIPELINE or the only pipeline
    POST /pipelines/{pipeline}/invocations   the same for a named pipeline
    POST /endpoints/{pipeline}/invocations   the same, for mlflow.deployments.get_deploy_client(url).predict(endpoint=...)
    POST /pipelines/{pipeline}/feedback      {"request_id", "label": 0|1, "row": 0} or {"labels": [...]}
    GET  /pipelines                          champion/canary versions, weights, inputs, errors per pipeline
    GET  /health  /ping                      the process is up
    GET  /ready                              200 once every pipeline with a champion has it loaded, else 503 + reason
    GET  /metrics                            Prometheus
    POST /admin/reload                       re-resolve aliases and state now (bearer token)
    POST /admin/flush                        write buffered logs and feedback now, returns the URIs (bearer token)

Prediction headers: X-Request-ID (else one is generated; returned in the reply header either way) and
X-Routing-Key (else the row's routing-key column, else the request id). Errors are ``{"error": "..."}``.

The three invocation routes are served by a plain ASGI front (``InvocationFront``) ahead of FastAPI: at a
few hundred requests a second Starlette's request object, router and middleware stack cost about 1 ms of
the single GIL per request, as much as a fifth of a one-row prediction. Everything else is FastAPI.
"""

from __future__ import annotations

import hmac
import logging
import re
import uuid
from contextlib import asynccontextmanager
from urllib.parse import parse_qs

from fastapi import FastAPI, Request
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from ml_ops.serving.errors import RequestError
from ml_ops.serving.metrics import CONTENT_TYPE
from ml_ops.serving.service import Gateway, dumps
from ml_ops.serving.settings import Settings

log = logging.getLogger("ml_ops.serving")
JSON = "application/json"
_INVOCATIONS = re.compile(r"^/(?:(?:pipelines|endpoints)/(?P<pipeline>[^/]+)/)?invocations/?$")


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


def _error_body(err: RequestError, request_id: str | None) -> tuple[bytes, dict]:
    body = {"error": err.message}
    headers = dict(err.headers)
    if request_id:
        body["request_id"] = request_id
        headers["X-Request-ID"] = request_id
    return dumps(body), headers


def _too_large(limit: int, declared: str | None = None) -> RequestError:
    size = f"body of {declared} bytes exceeds" if declared else "body exceeds"
    return RequestError(413, f"{size} the limit of {limit} bytes (MLOPS_GATEWAY_MAX_BODY_BYTES)", kind="too_large")


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

    async def _body(self, receive, declared: str | None) -> bytes:
        limit = self.settings.max_body_bytes
        if declared and declared.isdigit() and int(declared) > limit:
            raise _too_large(limit, declared)
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise RequestError(400, "the client disconnected before sending the whole body")
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise _too_large(limit)
            chunks.append(chunk)
            if not message.get("more_body"):
                return b"".join(chunks)

    async def _invocations(self, scope, receive, send, pipeline: str | None) -> None:
        headers = {k.decode("latin-1"): v.decode("latin-1") for k, v in scope["headers"]}
        request_id = headers.get("x-request-id")
        try:
            if request_id is None:
                request_id = uuid.uuid4().hex
            elif not 0 < len(request_id) <= 128:
                request_id = None
                raise RequestError(400, "X-Request-ID must be 1 to 128 characters")
            if scope["method"] != "POST":
                raise RequestError(405, f"method {scope['method']} not allowed: POST {scope['path']}")
            if pipeline is None:
                pipeline = headers.get("x-pipeline")
                if not pipeline and scope.get("query_string"):
                    pipeline = (parse_qs(scope["query_string"].decode("latin-1")).get("pipeline") or [None])[0]
            g: Gateway = self.app.state.gateway
            dep = g.deployment(g.pipeline_name(pipeline))
            if dep.cfg.serving.require_token:
                check_token(
                    self.settings, headers.get("authorization"), f"pipeline {dep.name!r} (serving.require_token)"
                )
            body = await self._body(receive, headers.get("content-length"))
            routing_header = headers.get("x-routing-key") or None
            if routing_header and len(routing_header) > 256:
                raise RequestError(400, "X-Routing-Key must be at most 256 characters")
            result = await g.invoke(dep, body, request_id=request_id, routing_header=routing_header)
        except RequestError as err:
            body, extra = _error_body(err, request_id)
            return await self._respond(send, err.status, body, extra)
        except Exception as exc:  # never crash on a request
            log.exception("request %s failed", request_id)
            err = RequestError(500, f"internal error: {type(exc).__name__}: {exc}", kind="internal")
            body, extra = _error_body(err, request_id)
            return await self._respond(send, 500, body, extra)
        await self._respond(send, 200, dumps(result), {"X-Request-ID": request_id})


def _json(obj, status: int = 200, headers: dict | None = None) -> Response:
    return Response(dumps(obj), status_code=status, media_type=JSON, headers=headers)


async def _request_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(limit, declared)
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise _too_large(limit)
        chunks.append(chunk)
    return b"".join(chunks)


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

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException):  # 404/405 of unknown routes
        return _json({"error": f"{exc.detail}: {request.method} {request.url.path}"}, exc.status_code)

    @app.exception_handler(RequestError)
    async def _request_error(request: Request, exc: RequestError):
        body, headers = _error_body(exc, None)
        return Response(body, status_code=exc.status, media_type=JSON, headers=headers)

    @app.exception_handler(Exception)
    async def _internal_error(request: Request, exc: Exception):  # never a bare 500 page
        log.exception("%s %s failed", request.method, request.url.path)
        return _json({"error": f"internal error: {type(exc).__name__}: {exc}"}, 500)

    def gw(request: Request) -> Gateway:
        return request.app.state.gateway

    # ---- feedback -----------------------------------------------------------------------------------
    @app.post("/pipelines/{pipeline}/feedback")
    async def feedback(pipeline: str, request: Request):
        g = gw(request)
        dep = g.deployment(pipeline)
        if dep.cfg.serving.require_token:
            check_token(
                settings, request.headers.get("authorization"), f"pipeline {dep.name!r} (serving.require_token)"
            )
        body = await _request_body(request, settings.max_body_bytes)
        return _json(g.feedback(dep, body))

    # ---- status -------------------------------------------------------------------------------------
    @app.get("/health")
    async def health():
        return _json({"status": "ok"})

    @app.get("/ping")
    async def ping():
        return Response(b"\n", media_type="text/plain")

    @app.get("/ready")
    async def ready(request: Request):
        ok, why = gw(request).resolver.ready()
        return _json({"ready": True} if ok else {"ready": False, "error": why}, 200 if ok else 503)

    @app.get("/pipelines")
    async def pipelines(request: Request):
        return _json({"pipelines": gw(request).resolver.status()})

    @app.get("/metrics")
    async def metrics(request: Request):
        return Response(gw(request).render_metrics(), media_type=CONTENT_TYPE)

    # ---- admin --------------------------------------------------------------------------------------
    @app.post("/admin/reload")
    async def reload(request: Request):
        check_token(settings, request.headers.get("authorization"), "POST /admin/reload")
        return _json({"pipelines": await run_in_threadpool(gw(request).resolver.poll_once)})

    @app.post("/admin/flush")
    async def flush(request: Request):
        check_token(settings, request.headers.get("authorization"), "POST /admin/flush")
        return _json({"written": await run_in_threadpool(gw(request).flush)})

    return InvocationFront(app, settings)
