"""The daemon's own refusals: each a class with its kind and HTTP status, registered.

Answered as JSON like every :class:`~hostkit.errors.HostkitError`. Each class is
registered with :func:`hostkit.errors.register`, so the core client
(:mod:`hostkit.client`) rebuilds the same class from a daemon's answer, and the
OpenAPI document (:mod:`.openapi`) lists, per route, the statuses and kinds of
the classes the route declares it raises.
"""

from __future__ import annotations

from hostkit.errors import HostkitError, UsageError, register


@register
class ApiError(HostkitError):
    """A request the daemon refuses. 4xx: the caller's to fix (CLI exit code 2)."""

    kind = "api"
    exit_code = 2
    http_status = 400

    @property
    def headers(self) -> dict[str, str]:
        """Headers that go out with the answer."""
        return {}


@register
class BadRequest(ApiError, UsageError):
    """The request is malformed: a wrong field, type or value."""

    kind = "bad_request"
    http_status = 400


@register
class BadJson(BadRequest):
    """The body is not a JSON object of UTF-8 text (or is nested absurdly deep)."""

    kind = "bad_json"


@register
class BadDigest(BadRequest):
    """A blob route was given something else than a 64-hex sha256."""

    kind = "bad_digest"


@register
class Unauthorized(ApiError, PermissionError):
    """No token, or a wrong one, where the daemon requires one."""

    kind = "unauthorized"
    http_status = 401


@register
class Forbidden(ApiError, PermissionError):
    """The caller may not use this route (the cache routes are for trusted callers)."""

    kind = "forbidden"
    http_status = 403


@register
class ForbiddenHost(Forbidden):
    """The ``Host`` header does not name this daemon (DNS rebinding)."""

    kind = "forbidden_host"


@register
class ForbiddenOrigin(Forbidden):
    """The ``Origin`` header is another site's (a cross-site request)."""

    kind = "forbidden_origin"


@register
class CredentialsNotLent(Forbidden):
    """An untrusted caller asked for a source only the daemon's credentials reach."""

    kind = "credentials_not_lent"


@register
class CredentialsNotAccepted(Forbidden):
    """An untrusted caller sent an identifier carrying credentials of its own."""

    kind = "credentials_not_accepted"


@register
class NoRoute(ApiError):
    """No such route."""

    kind = "no_route"
    http_status = 404


@register
class UnknownJob(ApiError):
    """No job with that id (or it expired)."""

    kind = "unknown_job"
    http_status = 404


@register
class NotInCache(ApiError):
    """Nothing in the cache matches the identifier or digest."""

    kind = "not_in_cache"
    http_status = 404


@register
class BlobNotFound(ApiError):
    """No such blob, or one this caller may not read."""

    kind = "blob_not_found"
    http_status = 404


@register
class BlobCorrupt(BlobNotFound):
    """The blob's bytes no longer match its sha256; it was quarantined."""

    kind = "blob_corrupt"


@register
class MethodNotAllowed(ApiError):
    """The route exists, with another method."""

    kind = "method_not_allowed"
    http_status = 405

    def __init__(self, message: str, *, allow: str | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.allow = allow

    @property
    def headers(self) -> dict[str, str]:
        """``Allow``: the methods the route has."""
        return {"Allow": self.allow} if self.allow else {}


@register
class PreconditionFailed(ApiError):
    """``If-Match`` does not name the blob."""

    kind = "precondition_failed"
    http_status = 412


@register
class TooLarge(ApiError):
    """The request body is over the limit."""

    kind = "too_large"
    http_status = 413


@register
class QueueFull(ApiError):
    """The caller (or the daemon) has as many job items waiting as allowed."""

    kind = "queue_full"
    http_status = 429

    def __init__(self, message: str, *, retry_after: int, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after

    @property
    def headers(self) -> dict[str, str]:
        """``Retry-After``: seconds to wait before asking again."""
        return {"Retry-After": str(self.retry_after)}


@register
class HttpError(ApiError):
    """Any other refusal by the HTTP layer, with its own status."""

    kind = "http_error"

    def __init__(self, message: str, *, status: int = 400, **kwargs):
        super().__init__(message, **kwargs)
        self.http_status = status


@register
class ShuttingDown(ApiError):
    """The daemon is stopping: resolve in-process (the client does so by itself)."""

    kind = "shutting_down"
    exit_code = 1
    http_status = 503


@register
class InternalError(ApiError):
    """A bug in the daemon; it keeps serving."""

    kind = "internal"
    exit_code = 1
    http_status = 500
