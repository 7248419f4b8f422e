"""The one exception the gateway turns into an HTTP error: a status and a message naming the problem."""

from __future__ import annotations


class RequestError(Exception):
    """A request the gateway refuses (4xx) or cannot answer (5xx); ``message`` goes to the client as
    ``{"error": message}``."""

    def __init__(self, status: int, message: str, *, kind: str = "invalid", headers: dict | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.kind = kind  # metrics label: invalid | auth | unavailable | model | too_large
        self.headers = headers or {}
