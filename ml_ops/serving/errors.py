"""The one exception the gateway turns into an HTTP error: a status and a message naming the problem."""

from __future__ import annotations

# metrics label ``kind`` of mlops_gateway_errors_total, by what went wrong
KINDS = (
    "invalid",  # 400/422: a body or header the gateway cannot use
    "auth",  # 401/403
    "not_found",  # 404: unknown pipeline or route
    "method",  # 405
    "timeout",  # 408: the body did not arrive in time
    "too_large",  # 413
    "media_type",  # 415
    "unknown_request_id",  # 422 on feedback: labels for request ids this gateway did not serve
    "disconnected",  # the client went away before its body arrived
    "unavailable",  # 503: no champion (yet), not resolved, the store refused a flush
    "model",  # 500: the model raised
    "internal",  # 500: anything else (a bug)
)


class RequestError(Exception):
    """A request the gateway refuses (4xx) or cannot answer (5xx); ``message`` goes to the client as
    ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid", headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # metrics label, one of KINDS
        self.headers = headers or {}
        self.counted = False  # True once mlops_gateway_errors_total has it (so it is counted exactly once)
