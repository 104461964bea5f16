"""The front door every route is behind: draining, address and token checks, errors
as JSON, metrics and the request's log line.

Every route answers JSON (``/metrics`` and blob bytes aside). A client mistake is a
4xx ``{"error": kind, "message", "hint"}``; only a bug in the daemon is a 500, and the
daemon keeps serving after it.
"""

from __future__ import annotations

import asyncio
import hmac
import time
import traceback

from aiohttp import hdrs, web

from hostkit.errors import HostkitError

from . import logs
from .errors import (
    ApiError,
    HttpError,
    InternalError,
    MethodNotAllowed,
    NoRoute,
    ShuttingDown,
    TooLarge,
    Unauthorized,
)
from .state import CALLER, LOG, STATE, DaemonState

#: Largest request body accepted (bytes).
MAX_BODY = 1 << 20
#: Most items in one prefetch.
MAX_ITEMS = 1000
#: Routes open without a token (load balancers and systemd probes).
PUBLIC_ROUTES = frozenset({"/healthz"})
#: The catch-all (``/{path:.*}``) answering every path no route declares (404, or 405 for a
#: known path): not an API route. Its canonical form.
UNROUTED = "/{path}"
#: What to do about a body over :data:`MAX_BODY`.
TOO_LARGE_HINT = (f"send at most {MAX_BODY} bytes; split a prefetch into batches of at "
                  f"most {MAX_ITEMS} items")
_ROUTES_HINT = "see GET /v1/openapi.json for each route's method"


def behind_frontdoor(handler, route: str):
    """``handler`` (of the declared ``route``) behind :func:`frontdoor`.

    Each route's handler is wrapped once, here, rather than the door being an
    aiohttp middleware: a middleware costs every request aiohttp's chain of
    wrappers (about 7 µs of the 60 µs a bare handler takes), and the warm
    resolve is answered in not much more than that. A route added without it
    stops the daemon from starting (:func:`require_guarded`), so none is served unguarded.
    """
    async def door(request: web.Request) -> web.StreamResponse:
        return await frontdoor(request, handler, route)

    door.__name__ = door.__qualname__ = getattr(handler, "__name__", "door")
    door.__doc__ = handler.__doc__
    door.behind_frontdoor = True  # type: ignore[attr-defined]  # checked at start-up
    return door


def require_guarded(app: web.Application) -> None:
    """Refuse to start (RuntimeError) with a route added without :func:`behind_frontdoor`:
    no middleware guards a route added some other way."""
    if unguarded := [f"{r.method} {r.resource.canonical}" for r in app.router.routes()
                     if not getattr(r.handler, "behind_frontdoor", False)]:
        raise RuntimeError(f"routes not behind the front door (register them with "
                           f"behind_frontdoor): {', '.join(unguarded)}")


async def unrouted(request: web.Request) -> web.StreamResponse:
    """No declared route has this path (404), or none has it with this method (405)."""
    allowed = set()
    for resource in request.app.router.resources():
        info = resource.get_info()
        pattern = info.get("pattern")
        if (info.get("path") == request.path or pattern is not None
                and pattern.fullmatch(request.path)) and resource.canonical != UNROUTED:
            allowed.update(r.method for r in resource)
    if allowed:
        raise web.HTTPMethodNotAllowed(request.method, sorted(allowed))
    raise web.HTTPNotFound()


async def frontdoor(request: web.Request, handler, route: str):
    """Refuse while draining, check the token, turn errors into JSON, log one line."""
    state = request.app[STATE]
    started = time.monotonic()
    info: dict = {}
    request[LOG] = info
    state.metrics.in_progress += 1
    try:
        if route not in PUBLIC_ROUTES:
            if state.draining:
                raise ShuttingDown("the daemon is shutting down",
                                   hint="retry in a moment, or resolve in-process")
            state.policy.check_address(request)
            if state.token is not None:
                _check_token(request, state.token)
            request[CALLER] = state.policy.caller(request)
        response = await handler(request)
    except HostkitError as exc:
        response = _error_response(exc, info)
    except web.HTTPException as exc:  # aiohttp's own: no route, wrong method, body too large
        response = exc if exc.status < 400 else _error_response(_http_error(exc, request), info)
    except asyncio.CancelledError:
        # the client went away; a download it waited for goes on (the resolver shields it)
        _log_request(state, request, route, 499, started, info)
        raise
    except Exception as exc:
        logs.event("internal_error", route=route, message=repr(exc),
                   traceback=traceback.format_exc(limit=20))
        response = _error_response(
            InternalError("internal error", hint="this is a bug in hostkit; see the daemon log"),
            info)
    finally:
        state.metrics.in_progress -= 1
    _log_request(state, request, route, response.status, started, info)
    return response


def _check_token(request: web.Request, token: str) -> None:
    """401 unless ``Authorization: Bearer <token>`` (compared as bytes, in constant time).

    Header values arrive decoded with ``surrogateescape``: bytes that are not UTF-8
    come back as the bytes sent, and simply do not match (never a 500).
    """
    given = request.headers.get(hdrs.AUTHORIZATION, "")
    scheme, _, value = given.partition(" ")
    sent = value.strip().encode("utf-8", "surrogateescape")
    if scheme.lower() != "bearer" or not hmac.compare_digest(sent, token.encode()):
        raise Unauthorized("this daemon requires a token" if not given else "wrong token",
                           hint="send 'Authorization: Bearer <token>' (the CLI reads "
                                "HOSTKIT_DAEMON_TOKEN)")


def _error_response(exc: HostkitError, info: dict) -> web.Response:
    """The JSON answer for an error (``HostkitError.to_dict``), its kind noted for the log."""
    info["error_kind"] = exc.kind
    return web.json_response(exc.to_dict(), status=exc.http_status,
                             headers=exc.headers if isinstance(exc, ApiError) else None)


def _http_error(exc: web.HTTPException, request: web.Request) -> ApiError:
    """The daemon's error for a refusal of aiohttp's own (no route, method, body size)."""
    message = f"{request.method} {logs.redact_identifier(request.path)[:200]}: {exc.reason}"
    if exc.status == 404:
        return NoRoute(message, hint="no such route; see GET /v1/openapi.json")
    if exc.status == 405:
        return MethodNotAllowed(message, hint=_ROUTES_HINT, allow=exc.headers.get(hdrs.ALLOW))
    if exc.status == 413:
        return TooLarge(message, hint=TOO_LARGE_HINT)
    return HttpError(message, status=exc.status)


def _log_request(state: DaemonState, request: web.Request, route: str, status: int,
                 started: float, info: dict) -> None:
    seconds = time.monotonic() - started
    state.metrics.requests[(route, request.method, status)] += 1
    if status >= 400 and (kind := info.get("error_kind")):
        state.metrics.errors[kind] += 1
    logs.request(request.method, route, status, seconds, info)
