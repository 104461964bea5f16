"""Routes and thin handlers. State lives on the app (:mod:`.state`), every route is
behind the front door (:mod:`.frontdoor`); the Resolver does the work."""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from dataclasses import asdict

from aiohttp import hdrs, web

from hostkit.client import NDJSON, event_to_dict
from hostkit.errors import (
    BadHash,
    CacheError,
    HostkitError,
    MissingExtra,
    NotAFile,
    NotDirectLink,
    NotPermanent,
    Stalled,
    UnknownScheme,
    UsageError,
)
from hostkit.events import Event
from hostkit.hashes import parse_hash
from hostkit.resolver import Resolver

from . import access, logs
from .access import Policy
from .blobs import send_verified, verify_blob
from .downloads import stop as _stop
from .errors import (
    ApiError,
    BadDigest,
    BadJson,
    BadRequest,
    BlobCorrupt,
    BlobNotFound,
    CredentialsNotAccepted,
    CredentialsNotLent,
    Forbidden,
    InternalError,
    NotInCache,
    PreconditionFailed,
    QueueFull,
    ShuttingDown,
    TooLarge,
    UnknownJob,
)
from .frontdoor import (
    MAX_BODY,
    MAX_ITEMS,
    TOO_LARGE_HINT,
    behind_frontdoor,
    require_guarded,
    unrouted,
)
from .jobs import Item, Jobs
from .metrics import CONTENT_TYPE as METRICS_CONTENT_TYPE
from .metrics import Metrics
from .openapi import IDENT, RESOLVER_ERRORS, ROUTES, document, json_answer, path_parameter, route
from .scrub import Scrubber
from .state import CALLER, LOG, STATE, DaemonState
from .warm import WarmHits

#: Longest identifier accepted (characters).
MAX_IDENTIFIER = 8192

_DIGEST = re.compile(r"^[0-9a-fA-F]{64}$")
#: A JSON escape of a UTF-16 surrogate: the body may hold a lone one (not encodable text).
_SURROGATE_ESCAPE = re.compile(rb"\\u[dD][89a-fA-F]")
_JOB_ID = re.compile(r"^[0-9a-f]{16}$")
_RESOLVE_FIELDS = {"identifier", "hash", "wait", "offline", "require_hash", "require_same",
                   "progress"}
#: Seconds between two batches of a streamed resolve's events (progress is coalesced).
STREAM_EVERY = 0.1
_IMMUTABLE = "public, max-age=31536000, immutable"


def create_app(settings=None, *, token: str | None = None, resolver: Resolver | None = None,
               listen: str | None = None, policy: Policy | None = None,
               scrub_rate: int = 0, **job_options) -> web.Application:
    """The daemon's aiohttp application on ``resolver`` (or a new one for ``settings``).

    With ``token``, every route but ``/healthz`` requires ``Authorization: Bearer <token>``.
    ``policy`` says which callers are trusted with the daemon's credentials and which
    extra ``Host`` names are accepted (:mod:`.access`). ``scrub_rate`` (bytes/s, 0: off)
    paces the background re-hashing of blobs (:mod:`.scrub`); ``job_options`` are
    :class:`~.jobs.Jobs`' limits (``concurrency``, ``max_pending``, ``stall_seconds``).
    """
    owns = resolver is None
    state = DaemonState(resolver or Resolver(settings), token=token or None, listen=listen,
                        owns_resolver=owns, policy=policy or Policy(), scrub_rate=scrub_rate)
    state.downloads.attach(state.resolver)
    state.jobs = Jobs(state.resolver, state.downloads, state.observe, **job_options)
    state.warm = WarmHits(state.resolver)
    app = web.Application(client_max_size=MAX_BODY)
    app[STATE] = state
    for r in ROUTES:  # exactly the declared routes (a GET answers HEAD too)
        if r.method == "GET":
            app.router.add_get(r.path, behind_frontdoor(r.handler, r.path))
        else:
            app.router.add_route(r.method, r.path, behind_frontdoor(r.handler, r.path))
    # anything else is a JSON 404 or 405, behind the same door (token first)
    app.router.add_route("*", "/{path:.*}", behind_frontdoor(unrouted, "unmatched"))
    app.on_startup.append(_startup)
    app.on_cleanup.append(_cleanup)
    return app


async def _startup(app: web.Application) -> None:
    require_guarded(app)
    state = app[STATE]
    if state.scrub_rate > 0:
        state.scrubber = Scrubber(
            state.resolver.cache, state.scrub_rate, state.verified,
            lambda sha256, reason: state.quarantine(sha256, reason, "scrub"))
        state.scrub_task = asyncio.ensure_future(state.scrubber.run())


def stop_scrub(state: DaemonState) -> None:
    """Tell the scrub to stop: its worker thread returns within one read (shutdown)."""
    if state.scrubber is not None:
        state.scrubber.stop()


async def _cleanup(app: web.Application) -> None:
    state = app[STATE]
    stop_scrub(state)
    if state.scrub_task is not None:
        await asyncio.gather(state.scrub_task, return_exceptions=True)  # returns promptly
    state.jobs.stop()
    for task in state.jobs.tasks():
        task.cancel()
    state.warm.close()
    state.downloads.detach()
    if state.owns_resolver:
        await state.resolver.aclose()


# -- request bodies ------------------------------------------------------------------


async def _json_object(request: web.Request) -> dict:
    return _parsed(await _raw_body(request))


async def _raw_body(request: web.Request) -> bytes:
    length = request.content_length
    if length is not None and length > MAX_BODY:
        raise TooLarge(f"request body of {length} bytes is over the "
                       f"{MAX_BODY} byte limit", hint=TOO_LARGE_HINT)
    payload = request.content
    if length is not None and payload.is_eof():
        return payload.read_nowait()  # the usual small body, already buffered: no await
    return await request.read()  # enforces client_max_size while reading


def _parsed(raw: bytes) -> dict:
    """The request body as a JSON object (BadJson, BadRequest otherwise)."""
    try:
        data = json.loads(raw.decode())  # str: skips json's encoding detection
        if _SURROGATE_ESCAPE.search(raw):  # rare: only then re-encode to find a lone one
            json.dumps(data, ensure_ascii=False).encode()
    except (ValueError, UnicodeError) as exc:
        raise BadJson(f"the body is not valid JSON ({_short(exc)})",
                      hint='send a JSON object of UTF-8 text, e.g. {"identifier": '
                           '"https://host/file"}') from None
    except RecursionError:
        raise BadJson("the body's JSON is nested too deeply",
                      hint='send a flat JSON object, e.g. {"identifier": "https://host/file"}'
                      ) from None
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object",
                         hint='send e.g. {"identifier": "https://host/file"}')
    return data


def _short(exc: Exception) -> str:
    """An exception's message, without the bytes it may quote at length."""
    return str(exc)[:200].encode("utf-8", "backslashreplace").decode()


def _field(data: dict, name: str, kind: type[str] | type[bool], *, where: str = "",
           required: bool = False):
    value = data.get(name)
    if value is None:
        if required:
            raise BadRequest(f"{where}{name!r} is required",
                             hint='send e.g. {"identifier": "https://host/file", '
                                  '"hash": "sha256:<64 hex>"}')
        return None
    if not isinstance(value, kind):
        raise BadRequest(f"{where}{name!r} must be {kind.__name__}, "
                         f"not {type(value).__name__}", hint="fix the field's type")
    return value


def _identifier(data: dict, where: str = "") -> str:
    identifier = _field(data, "identifier", str, where=where, required=True)
    if not identifier.strip() or len(identifier) > MAX_IDENTIFIER:
        raise BadRequest(f"{where}'identifier' must be 1 to {MAX_IDENTIFIER} characters",
                         hint="send the identifier as written, e.g. synapse:syn123")
    return identifier


def _item(resolver: Resolver, identifier: str, expected: str | None, **options) -> Item:
    """Validate an identifier and hash without I/O (UsageError subclasses -> 400)."""
    if expected is not None:
        parse_hash(expected)
    remote = resolver.remote_for(identifier)
    return Item(identifier, expected, remote.display, remote.cache_key, options=options)


# -- handlers ------------------------------------------------------------------------


@route("GET", "/healthz", "liveness", public=True, answers={
    200: json_answer({"type": "object"}, "serving"),
    503: json_answer({"type": "object"}, "draining: shutting down")})
async def healthz(request: web.Request) -> web.Response:
    """``GET /healthz``: 200 ``{"status": "ok"}`` while serving, 503 while draining."""
    if request.app[STATE].draining:
        return web.json_response({"status": "draining"}, status=503)
    return web.json_response({"status": "ok"})


@route("POST", "/v1/resolve", "identifier (+ hash) -> verified local file",
       request="ResolveRequest", answers={
           200: {**json_answer("Resolved", "resolved; streamed (progress) answers are NDJSON: "
                                           "events, then {event: resolved|error, ...} last"),
                 "content": {"application/json": {"schema": {
                     "$ref": "#/components/schemas/Resolved"}},
                     NDJSON: {"schema": {"type": "object"}}}},
           202: json_answer({"type": "object", "properties": {
               "job": {"type": "string"}, "href": {"type": "string"}}},
               "wait=false: poll the job")},
       raises=(*RESOLVER_ERRORS, CredentialsNotLent, CredentialsNotAccepted, QueueFull))
async def resolve(request: web.Request) -> web.Response:
    """``POST /v1/resolve``: identifier (+ hash) -> verified path, or a job with wait=false."""
    state = request.app[STATE]
    started = time.monotonic()
    raw = await _raw_body(request)
    streamed = NDJSON in request.headers.get(hdrs.ACCEPT, "")
    caller = request[CALLER]
    if not streamed and (warm := state.warm.get_body(caller, raw)) is not None:
        # the same bytes this caller sent before, answered from memory then: the same
        # checks passed and the same answer holds (the blob is still there)
        state.metrics.observe_resolve(time.monotonic() - started, "hit")
        request[LOG].update(identifier=warm[2], outcome="hit", bytes=warm[1])
        return web.Response(body=warm[0], content_type="application/json")
    data = _parsed(raw)
    unknown = set(data) - _RESOLVE_FIELDS
    if unknown:
        raise BadRequest(f"unknown fields: {', '.join(sorted(unknown))}",
                         hint=f"known fields: {', '.join(sorted(_RESOLVE_FIELDS))}")
    identifier = _identifier(data)
    request[LOG]["identifier"] = identifier
    access.require_lendable(request[CALLER], identifier, state.resolver)
    expected = _field(data, "hash", str)
    wait = _field(data, "wait", bool)
    offline = _field(data, "offline", bool)
    require_hash = _field(data, "require_hash", bool)
    require_same = _field(data, "require_same", bool)
    resolver = state.resolver
    if wait is False:
        item = _item(resolver, identifier, expected, offline=offline,
                     require_hash=require_hash, require_same=require_same)
        job = state.jobs.submit("resolve", [item], request[CALLER].key)
        request[LOG]["job"] = job.id
        return web.json_response({"job": job.id, "state": job.state, "href": f"/v1/jobs/{job.id}"},
                                 status=202)
    streamed = _field(data, "progress", bool) or streamed
    if not streamed and expected is not None and (
            warm := state.warm.get(identifier, expected)) is not None:
        state.metrics.observe_resolve(time.monotonic() - started, "hit")
        request[LOG].update(outcome="hit", bytes=warm[1])
        state.warm.remember_body(caller, raw, identifier, expected)
        return web.Response(body=warm[0], content_type="application/json")
    try:
        key = resolver.remote_for(identifier).cache_key  # the download's name, if one runs
    except HostkitError:
        if streamed:  # refused before anything runs: a plain error answer, with its status
            state.metrics.observe_resolve(time.monotonic() - started, "error")
            request[LOG]["outcome"] = "error"
            raise
        key = None  # the resolver raises it again
    # a task of its own: awaited through asyncio.wait, its cancellation (the download was
    # cancelled) is told apart from this request's (the client hung up)
    resolving = asyncio.ensure_future(resolver.resolve(
        identifier, expected, offline=offline, require_hash=require_hash,
        require_same=require_same))
    if streamed:
        return await _stream(request, resolving, key, identifier, expected, started)
    with state.downloads.waiting(key):  # a stalled job item never cancels it under us
        try:
            await asyncio.wait({resolving})
        except asyncio.CancelledError:
            _stop(resolving)  # the download goes on for others (the resolver shields it)
            raise
    return web.json_response(_answer(request, resolving, identifier, expected, started))


def _answer(request: web.Request, resolving: asyncio.Future, identifier: str,
            expected: str | None, started: float) -> dict:
    """The finished resolve's JSON answer, counted and logged; raises its error."""
    state = request.app[STATE]
    try:
        resolved = _outcome(state, resolving)
    except HostkitError:
        state.metrics.observe_resolve(time.monotonic() - started, "error")
        request[LOG]["outcome"] = "error"
        raise
    outcome = "hit" if resolved.cached else "miss"
    state.metrics.observe_resolve(time.monotonic() - started, outcome)
    request[LOG].update(outcome=outcome, bytes=resolved.size)
    if expected is not None and resolved.verified:
        state.warm.remember(identifier, expected, resolved)
    body = resolved.to_dict()
    body["blob"] = f"/v1/blobs/{resolved.sha256}"
    return body


async def _stream(request: web.Request, resolving: asyncio.Future, key: str | None,
                  identifier: str, expected: str | None,
                  started: float) -> web.StreamResponse:
    """Answer a resolve as NDJSON: its download's events as they come, then the answer.

    One line per event (:func:`hostkit.client.event_to_dict`: no cache key), sent every
    :data:`STREAM_EVERY` seconds with progress coalesced to its latest count; the last
    line is ``{"event": "resolved", ...}`` or ``{"event": "error", "status", ...}``.
    The status is 200 once streaming started: the last line says how it ended.
    """
    state = request.app[STATE]
    pending: list[dict] = []

    def on_event(event: Event) -> None:
        line = event_to_dict(event)
        if pending and line["event"] == pending[-1]["event"] == "Progressed":
            pending[-1] = line  # the latest count says it all
        else:
            pending.append(line)

    unsubscribe = state.resolver.events.subscribe(on_event, key=key) if key else None
    response = web.StreamResponse(headers={hdrs.CONTENT_TYPE: NDJSON,
                                           hdrs.CACHE_CONTROL: "no-store"})
    try:
        with state.downloads.waiting(key):
            await response.prepare(request)
            while True:
                await asyncio.wait({resolving}, timeout=STREAM_EVERY)
                if pending:
                    lines = b"".join(_ndjson(line) for line in pending)
                    pending.clear()
                    await response.write(lines)
                if resolving.done():
                    break
    except asyncio.CancelledError:
        _stop(resolving)  # the client went away; the download goes on for others
        raise
    except ConnectionError:  # a write found the client gone: the same, as the front door sees it
        _stop(resolving)
        raise asyncio.CancelledError from None
    finally:
        if unsubscribe is not None:
            unsubscribe()
    try:
        last = {"event": "resolved", **_answer(request, resolving, identifier, expected, started)}
    except Exception as exc:
        if not isinstance(exc, HostkitError):  # a bug: logged as the front door would
            logs.event("internal_error", route="/v1/resolve", message=repr(exc))
            exc = InternalError("internal error",
                                hint="this is a bug in hostkit; see the daemon log")
        request[LOG]["error_kind"] = exc.kind
        state.metrics.errors[exc.kind] += 1  # answered 200: the request line does not count it
        last = {"event": "error", "status": exc.http_status, **exc.to_dict()}
    await response.write(_ndjson(last))
    await response.write_eof()
    return response


def _ndjson(data: dict) -> bytes:
    return json.dumps(data, default=str).encode() + b"\n"


def _outcome(state: DaemonState, resolving: asyncio.Future):
    """The resolve's answer; a cancelled download is a 503 (stopping, or stalled)."""
    if resolving.cancelled():
        # the download itself was cancelled: at the end of the shutdown grace period,
        # or (a narrow race) abandoned by a stalled job item just as we joined it
        if state.draining:
            raise ShuttingDown("the daemon stopped before the download "
                               "finished", hint="run again: the download resumes where it stopped")
        raise Stalled("the download was stopped: it made no progress",
                      hint="run again: the download resumes where it stopped")
    return resolving.result()


@route("GET", "/v1/blobs/{sha256}", "the bytes of a cached blob (Range, HEAD, ETag = sha256, "
       "If-None-Match); a range or HEAD only for a blob hashed whole",
       parameters=[path_parameter("sha256", "the blob's sha256", "^[0-9a-fA-F]{64}$")],
       answers={200: {"description": "the bytes", "content": {"application/octet-stream": {
                    "schema": {"type": "string", "format": "binary"}}}},
                206: {"description": "a byte range"},
                304: {"description": "If-None-Match matched"},
                416: {"description": "range not satisfiable"}},
       raises=(BadDigest, BlobNotFound, BlobCorrupt, PreconditionFailed))
async def blob(request: web.Request) -> web.StreamResponse:
    """``GET /v1/blobs/{sha256}``: the bytes, with Range, ETag = digest, If-None-Match."""
    state = request.app[STATE]
    digest = request.match_info["sha256"]
    if not _DIGEST.match(digest):
        raise BadDigest("a blob is named by its sha256: 64 hex digits",
                        hint="GET /v1/blobs/<sha256 hex> as returned by /v1/resolve")
    digest = digest.lower()
    cache = state.resolver.cache
    found = await asyncio.to_thread(cache.blob, digest)  # SQLite waits off the loop
    if found is None or not (request[CALLER].trusted or await asyncio.to_thread(
            access.blob_is_public, cache, digest)):
        # a blob only credentials gave is, for anyone else, as good as absent
        raise BlobNotFound(f"no blob sha256:{digest} in the cache",
                           hint="POST /v1/resolve the identifier first")
    request[LOG]["sha256"] = digest
    etag = f'"{digest}"'
    headers = {hdrs.ETAG: etag, hdrs.CACHE_CONTROL: _IMMUTABLE}
    if (inm := request.headers.get(hdrs.IF_NONE_MATCH)) and _etag_listed(inm, digest):
        return web.Response(status=304, headers=headers)
    if (im := request.headers.get(hdrs.IF_MATCH)) and not _etag_listed(im, digest):
        raise PreconditionFailed("If-Match does not name this blob",
                                 hint=f"the blob's ETag is {etag}")
    await asyncio.to_thread(cache.touch, digest)

    async def corrupt() -> None:
        reason = f"the bytes read while serving do not hash to {digest}"
        await asyncio.to_thread(state.resolver.cache.quarantine, digest, reason)
        state.quarantine(digest, reason, "serve")

    if request.method == hdrs.METH_HEAD or hdrs.RANGE in request.headers:
        # part of the bytes (or none) under ETag = the digest: only for a blob hashed whole
        good = await verify_blob(found.path, digest, found.size, state.verified)
        if good is None:
            raise BlobNotFound(f"no blob sha256:{digest} in the cache",
                               hint="POST /v1/resolve the identifier first")
        if not good:
            await corrupt()
            raise BlobCorrupt(f"the stored bytes of sha256:{digest} no longer match it; the blob "
                              "was quarantined", hint="POST /v1/resolve the identifier again to "
                              "download it, then retry")
        return BlobResponse(found.path, digest, state.metrics)  # sendfile, Range, HEAD

    def count(n: int) -> None:
        state.metrics.bytes_served += n

    return await send_verified(request, found.path, digest, found.size, headers,
                               on_sent=count, on_corrupt=corrupt, memo=state.verified)


def _etag_listed(header: str, digest: str) -> bool:
    for tag in header.split(","):
        tag = tag.strip()
        if tag == "*" or tag.removeprefix("W/").strip('"') == digest:
            return True
    return False


class _EtagsAnswered:
    """The request as FileResponse's own (mtime-based) checks should see it.

    The handler already answered If-None-Match / If-Match against the digest;
    hiding them keeps FileResponse from comparing them with its mtime ETag.
    """

    __slots__ = ("_request",)
    if_match = None
    if_none_match = None

    def __init__(self, request):
        self._request = request

    @property
    def if_modified_since(self):
        r = self._request
        return None if hdrs.IF_NONE_MATCH in r.headers else r.if_modified_since

    @property
    def if_unmodified_since(self):
        r = self._request
        return None if hdrs.IF_MATCH in r.headers else r.if_unmodified_since

    def __getattr__(self, name):
        return getattr(self._request, name)


class BlobResponse(web.FileResponse):
    """FileResponse (sendfile, Range) whose ETag is the blob's sha256; counts bytes served."""

    def __init__(self, path, digest: str, metrics: Metrics):
        super().__init__(path, headers={hdrs.CONTENT_TYPE: "application/octet-stream",
                                        hdrs.CACHE_CONTROL: _IMMUTABLE})
        self._digest = digest
        self._metrics = metrics
        self._headers[hdrs.ETAG] = f'"{digest}"'

    @property
    def etag(self):
        return super().etag

    @etag.setter
    def etag(self, value) -> None:  # FileResponse sets an mtime ETag; the digest wins
        self._headers[hdrs.ETAG] = f'"{self._digest}"'

    def _make_response(self, request, accept_encoding):
        return super()._make_response(_EtagsAnswered(request), accept_encoding)

    async def prepare(self, request):
        writer = await super().prepare(request)
        if self.status in (200, 206) and request.method != hdrs.METH_HEAD:
            self._metrics.bytes_served += self.content_length or 0
        return writer


@route("POST", "/v1/prefetch", "resolve many identifiers in the background",
       request="PrefetchRequest", answers={202: json_answer("Job", "job started")},
       raises=(UsageError, UnknownScheme, BadHash, MissingExtra, NotPermanent, NotDirectLink,
               NotAFile, CredentialsNotLent, CredentialsNotAccepted, QueueFull))
async def prefetch(request: web.Request) -> web.Response:
    """``POST /v1/prefetch`` ``{"items": [{"identifier", "hash"?} | "identifier", ...]}``."""
    state = request.app[STATE]
    data = await _json_object(request)
    unknown = set(data) - {"items"}
    items = data.get("items")
    if unknown or not isinstance(items, list) or not 1 <= len(items) <= MAX_ITEMS:
        raise BadRequest(f"send {{\"items\": [...]}} with 1 to {MAX_ITEMS} items",
                         hint='items are identifiers or {"identifier": ..., "hash": ...} objects')
    parsed = []
    for n, raw in enumerate(items):
        where = f"items[{n}]: "
        entry = {"identifier": raw} if isinstance(raw, str) else raw
        if not isinstance(entry, dict) or set(entry) - {"identifier", "hash"}:
            raise BadRequest(f"{where}must be a string or an object with "
                             "'identifier' and optional 'hash'", hint="fix that item")
        identifier = _identifier(entry, where)
        expected = _field(entry, "hash", str, where=where)
        try:
            access.require_lendable(request[CALLER], identifier, state.resolver)
            parsed.append(_item(state.resolver, identifier, expected))
        except HostkitError as exc:
            exc.message = f"{where}{exc.message}"
            raise
    job = state.jobs.submit("prefetch", parsed, request[CALLER].key)
    request[LOG].update(job=job.id, items=len(parsed))
    return web.json_response({**job.to_dict(state.downloads), "href": f"/v1/jobs/{job.id}"},
                             status=202)


@route("GET", "/v1/jobs/{job_id}", "state of a job",
       parameters=[path_parameter("job_id", "as POST /v1/prefetch answered")],
       answers={200: json_answer("Job", "the job")}, raises=(UnknownJob,))
async def job(request: web.Request) -> web.Response:
    """``GET /v1/jobs/{id}``: state, bytes done / total, result or error per item."""
    state = request.app[STATE]
    job_id = request.match_info["job_id"]
    found = state.jobs.get(job_id) if _JOB_ID.match(job_id) else None
    if found is None:
        raise UnknownJob(f"no job {job_id[:40]!r}",
                         hint="job ids come from POST /v1/prefetch or /v1/resolve with "
                              '"wait": false; finished jobs are kept for an hour')
    return web.json_response(found.to_dict(state.downloads))


def _entry_dict(entry) -> dict:
    d = asdict(entry)
    del d["key"]  # a backend's cache key may embed a presigned URL
    return d


def _blob_dict(b) -> dict:
    d = asdict(b)
    d["path"] = str(b.path)
    return d


@route("GET", "/v1/cache", "entries and blobs",
       answers={200: json_answer({"type": "object"}, "listing")}, raises=(Forbidden,))
async def cache_list(request: web.Request) -> web.Response:
    """``GET /v1/cache``: every entry and blob, most recently used first."""
    access.require_trusted(request[CALLER], "listing the cache")
    cache = request.app[STATE].resolver.cache

    def listing() -> dict:
        return {"root": str(cache.root), "total_bytes": cache.total_size(),
                "entries": [_entry_dict(e) for e in cache.entries()],
                "blobs": [_blob_dict(b) for b in cache.blobs()]}

    return web.json_response(await asyncio.to_thread(listing))


def _ident(request: web.Request) -> str:
    access.require_trusted(request[CALLER], "the cache routes")
    ident = request.match_info["ident"]
    request[LOG]["identifier"] = ident
    if not ident.strip() or len(ident) > MAX_IDENTIFIER:
        raise BadRequest("empty or overlong identifier",
                         hint="percent-encode the identifier or digest into the path")
    return ident


def _not_in_cache(ident: str) -> ApiError:
    return NotInCache(f"nothing in the cache matches {logs.redact_identifier(ident)[:200]!r}",
                      hint="GET /v1/cache lists identifiers and digests; percent-encode "
                           "'/', '?' and '#' of an identifier in the path")


@route("GET", "/v1/cache/{ident}", "entries and blobs matching", parameters=[IDENT],
       answers={200: json_answer({"type": "object"}, "found")},
       raises=(Forbidden, BadRequest, NotInCache))
async def cache_info(request: web.Request) -> web.Response:
    """``GET /v1/cache/{identifier or digest}``: matching entries and blobs."""
    ident = _ident(request)
    entries, blobs = await asyncio.to_thread(request.app[STATE].resolver.cache.lookup, ident)
    if not entries and not blobs:
        raise _not_in_cache(ident)
    return web.json_response({"entries": [_entry_dict(e) for e in entries],
                              "blobs": [_blob_dict(b) for b in blobs]})


@route("DELETE", "/v1/cache/{ident}", "remove entries (and blobs no longer used)",
       parameters=[IDENT], answers={200: json_answer({"type": "object"}, "removed")},
       raises=(Forbidden, BadRequest, NotInCache, CacheError))
async def cache_remove(request: web.Request) -> web.Response:
    """``DELETE /v1/cache/{identifier or digest}``: drop entries and unused blobs."""
    ident = _ident(request)
    state = request.app[STATE]
    entries, blobs = await asyncio.to_thread(state.resolver.cache.remove, ident)
    state.warm.forget()
    if not entries and not blobs:
        raise _not_in_cache(ident)
    return web.json_response({"removed_entries": [e.identifier for e in entries],
                              "removed_blobs": [b.sha256 for b in blobs],
                              "freed_bytes": sum(b.size for b in blobs)})


@route("POST", "/v1/cache/{ident}/pin", "pin (survives prune)", parameters=[IDENT],
       answers={200: json_answer({"type": "object"}, "pinned")},
       raises=(Forbidden, BadRequest, NotInCache, CacheError))
async def pin(request: web.Request) -> web.Response:
    """``POST /v1/cache/{identifier or digest}/pin``: keep it through prune."""
    return await _set_pinned(request, True)


@route("DELETE", "/v1/cache/{ident}/pin", "unpin", parameters=[IDENT],
       answers={200: json_answer({"type": "object"}, "unpinned")},
       raises=(Forbidden, BadRequest, NotInCache, CacheError))
async def unpin(request: web.Request) -> web.Response:
    """``DELETE /v1/cache/{identifier or digest}/pin``: allow pruning again."""
    return await _set_pinned(request, False)


async def _set_pinned(request: web.Request, pinned: bool) -> web.Response:
    ident = _ident(request)
    entries = await asyncio.to_thread(request.app[STATE].resolver.cache.set_pinned, ident,
                                      pinned)
    if not entries:
        raise _not_in_cache(ident)
    return web.json_response({"pinned" if pinned else "unpinned":
                              [e.identifier for e in entries]})


@route("GET", "/v1/status", "version, cache summary, downloads in flight",
       answers={200: json_answer({"type": "object"}, "status")})
async def status(request: web.Request) -> web.Response:
    """``GET /v1/status``: version, listen address, cache summary, what is in flight."""
    from hostkit import __version__

    state = request.app[STATE]
    resolver = state.resolver
    cache = resolver.cache
    (entries, blobs), total = await asyncio.to_thread(lambda: (cache.counts(),
                                                               cache.total_size()))
    return web.json_response({
        "version": __version__, "pid": os.getpid(), "listen": state.listen,
        "started": state.started, "uptime": round(time.time() - state.started, 3),
        "auth": state.token is not None, "draining": state.draining,
        "cache": {"root": str(cache.root), "total_bytes": total,
                  "entries": entries, "blobs": blobs},
        "in_flight": [d.to_dict() for d in state.downloads.active.values()],
        "in_flight_count": len(resolver.in_flight()),
        "jobs": {"active": state.jobs.active(), "known": len(state.jobs)},
        "stats": state.stats(),
    })


@route("GET", "/metrics", "Prometheus text format", answers={
    200: {"description": "metrics", "content": {"text/plain": {"schema": {"type": "string"}}}}})
async def metrics(request: web.Request) -> web.Response:
    """``GET /metrics``: Prometheus text format."""
    state = request.app[STATE]
    cache = state.resolver.cache
    size, (entries, _) = await asyncio.to_thread(lambda: (cache.total_size(), cache.counts()))
    text = state.metrics.render(
        stats=state.stats(), in_flight=len(state.resolver.in_flight()),
        cache_bytes=size, cache_entries=entries,
        jobs_active=state.jobs.active(), downloads=state.downloads.finished,
        scrubbed_bytes=state.scrubber.bytes_read if state.scrubber is not None else 0)
    return web.Response(body=text.encode(), headers={hdrs.CONTENT_TYPE: METRICS_CONTENT_TYPE})


@route("GET", "/v1/openapi.json", "this document",
       answers={200: json_answer({}, "OpenAPI 3.1")})
async def openapi(request: web.Request) -> web.Response:
    """``GET /v1/openapi.json``: this API, described."""
    return web.json_response(document())
