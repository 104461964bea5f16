"""From what a server or the network said to a :mod:`hostkit.errors` type, in one place.

:func:`status_error` is huggingface_hub's ``hf_raise_for_status`` for
hostkit: the class follows from the status alone (404/410 not found, 401/403
credentials, 412 changed, 429/5xx worth retrying, anything else a backend
error); the backend supplies only its particulars, the texts a user needs
(which setting to check, which command lists what is there).
:func:`network_error` does the same for failures below HTTP: refused
connections, timeouts, bodies cut short.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HostkitError,
    NotFound,
    TransientError,
    TruncatedBody,
    Unreachable,
)

#: The default ``(message, hint)`` of each kind of answer; ``{status}`` and ``{reason}``
#: in a message are filled in (nothing else: texts may quote what a server said), and
#: the message follows ``"<identifier>: "``.
DEFAULT_TEXTS: Mapping[str, tuple[str, str]] = {
    "not_found": ("not found ({status})",
                  "check the identifier; the file may have moved or been deleted"),
    "credentials": ("access refused ({status})",
                    "check your credentials and that they may read this file"),
    "changed": ("the object changed during the download", "run again to fetch the new version"),
    "busy": ("the server answered {status}", "the server is busy or failing; try again later"),
    "other": ("the server answered {status} {reason}", "run with -v for details"),
}


def status_kind(status: int) -> str:
    """Which kind of error ``status`` is: a key of :data:`DEFAULT_TEXTS`.

    A success status here is ``other``: a server answering 200 where a part was
    asked for did not answer the question.
    """
    if status in (404, 410):
        return "not_found"
    if status in (401, 403):
        return "credentials"
    if status == 412:
        return "changed"
    if status == 429 or status >= 500:
        return "busy"
    return "other"


def status_error(status: int, display: str, *,
                 texts: Mapping[str, tuple[str, str]] | None = None,
                 credentials_sent: bool = False, reason: str = "",
                 retry_after: float | None = None) -> HostkitError:
    """The error for an HTTP ``status`` that is not a success.

    404/410 is :class:`NotFound`; 401/403 :class:`CredentialsNeeded` when no
    credentials were sent, else :class:`CredentialsRefused`; 412 (a
    conditional read whose object changed), 429 and 5xx
    :class:`TransientError` (with ``retry_after``, the resolver waits that
    long); anything else :class:`BackendError`.

    :param display: the identifier as shown (never one holding credentials).
    :param texts: the backend's ``(message, hint)`` per kind (see
        :data:`DEFAULT_TEXTS`), replacing the defaults it names.
    :param reason: the server's reason phrase or error text, for ``{reason}``.
    """
    kind = status_kind(status)
    text, hint = {**DEFAULT_TEXTS, **(texts or {})}[kind]
    text = text.replace("{status}", str(status)).replace("{reason}", reason or "")
    message = f"{display}: {text.strip()}"
    if kind == "not_found":
        return NotFound(message, hint=hint, identifier=display)
    if kind == "credentials":
        cls = CredentialsRefused if credentials_sent else CredentialsNeeded
        return cls(message, hint=hint, identifier=display)
    if kind in ("changed", "busy"):
        return TransientError(message, hint=hint, identifier=display,
                              retry_after=retry_after if kind == "busy" else None)
    return BackendError(message, hint=hint, identifier=display)


def retry_after(headers) -> float | None:
    """Seconds from a ``Retry-After: N`` header (at most 60), None without one."""
    value = headers.get("Retry-After", "").strip()
    # ASCII digits only: str.isdigit() also takes "²", which float() refuses
    return min(float(value), 60.0) if value.isascii() and value.isdigit() else None


def retry_limit(exc: TransientError, settings) -> int:
    """How many times a request that failed with ``exc`` is tried again: ``settings.retries``,
    at most 2 for a host that refuses connections (it rarely comes back within seconds)."""
    return min(settings.retries, 2) if isinstance(exc, Unreachable) else settings.retries


def retry_delay(exc: TransientError, attempt: int, settings) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...) of a request that failed with ``exc``.

    Exponential backoff from ``settings.backoff`` up to ``settings.max_backoff``,
    jittered downwards (0.5-1x) so that clients cut at once do not come back at once;
    a server's ``Retry-After`` (``exc.retry_after``) is the least it asked for, so it is
    jittered upwards (1-1.25x).
    """
    import random

    if exc.retry_after:
        return exc.retry_after * (1 + random.random() / 4)
    delay = min(settings.max_backoff, settings.backoff * 2 ** (attempt - 1))
    return delay * (0.5 + random.random() / 2)


def raise_for_status(resp, display: str, **particulars) -> None:
    """Raise :func:`status_error` for an aiohttp response that is not a 2xx; else nothing."""
    if not 200 <= resp.status < 300:
        raise status_error(resp.status, display, reason=resp.reason or "",
                           retry_after=retry_after(resp.headers), **particulars)


#: The default hint of each kind of network failure.
NETWORK_HINTS: Mapping[str, str] = {
    "truncated": "the connection dropped; run again to resume",
    "unreachable": "check the endpoint and your network; the server may be down or the "
                   "endpoint misconfigured",
    "timeout": "the server is slow or unreachable; raise HOSTKIT_READ_TIMEOUT or try again "
               "later",
    "redirects": "the link loops; ask the publisher for a direct link",
    "bad_redirect": "ask the publisher for a direct http(s) link",
    "failed": "try again; a rerun resumes",
}


def short(exc: BaseException) -> str:
    """An exception's text for a message: no credentials, no query strings, 200 characters."""
    from hostkit.redact import redact_text

    # signed URLs carry credentials in their query: cut every query out of the text
    return re.sub(r"\?\S*", "?...", redact_text(str(exc) or type(exc).__name__))[:200]


def network_error(exc: BaseException, display: str, where: str | None = None, *,
                  hints: Mapping[str, str] | None = None) -> HostkitError | None:
    """Map a failure below HTTP (aiohttp, OSError, timeouts) to a hostkit error.

    A body cut short is :class:`TruncatedBody`, a connection that could not
    be made :class:`Unreachable`, a timeout or any other connection failure a
    :class:`TransientError` (so the resolver retries and resumes); a redirect
    loop or a redirect to a URL no client may follow is a permanent
    :class:`BackendError`. Returns ``exc`` itself when it is a hostkit error
    already, None when it is none of these.

    :param where: the host or endpoint talked to, for the message (no secrets).
    :param hints: the backend's hints per kind, replacing :data:`NETWORK_HINTS`'.
    """
    import socket

    import aiohttp

    if isinstance(exc, HostkitError):
        return exc
    hint = {**NETWORK_HINTS, **(hints or {})}
    to = f" to {where}" if where else ""
    if isinstance(exc, aiohttp.ClientPayloadError):
        return TruncatedBody(f"{display}: the download{' from ' + where if where else ''} "
                             f"ended early ({short(exc)})", hint=hint["truncated"],
                             identifier=display)
    if isinstance(exc, aiohttp.TooManyRedirects):
        return BackendError(f"{display}: too many redirects{' from ' + where if where else ''}",
                            hint=hint["redirects"], identifier=display)
    if isinstance(exc, aiohttp.RedirectClientError):
        # file://, data:, or a URL without a host: a permanent answer, never retried
        return BackendError(f"{display}: the server redirected to a URL that is not an "
                            f"http(s) URL with a host ({short(exc)})",
                            hint=hint["bad_redirect"], identifier=display)
    if isinstance(exc, aiohttp.ClientConnectorError | aiohttp.ConnectionTimeoutError
                  | ConnectionRefusedError | socket.gaierror):
        return Unreachable(f"{display}: cannot connect{to} ({short(exc)})",
                           hint=hint["unreachable"], identifier=display)
    if isinstance(exc, TimeoutError):
        return TransientError(f"{display}: {where + ' ' if where else ''}timed out",
                              hint=hint["timeout"], identifier=display)
    if isinstance(exc, aiohttp.ClientError | OSError):
        return TransientError(f"{display}: the connection{to} failed ({short(exc)})",
                              hint=hint["failed"], identifier=display)
    return None
