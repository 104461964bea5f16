"""The daemon's own refusals, answered as JSON like every HostkitError."""

from __future__ import annotations

from hostkit.errors import HostkitError


class ApiError(HostkitError):
    """A refused request: HTTP status, stable ``kind``, what went wrong, what to do.

    ``headers`` go out with the answer (``Retry-After`` on a 429).
    """

    def __init__(self, status: int, kind: str, message: str, hint: str | None = None, *,
                 headers: dict[str, str] | None = None):
        super().__init__(message, hint=hint)
        self.http_status = status
        self.kind = kind
        self.headers = headers or {}
