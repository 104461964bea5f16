"""The OpenAPI 3.1 document at ``GET /v1/openapi.json``, generated from the routes' declarations.

Each handler in :mod:`hostkit_daemon.app` is declared with :func:`route`: its
method, path, summary, request body schema, the answers it gives when it works,
and the :class:`~hostkit.errors.HostkitError` classes it raises. The app adds
exactly the declared routes, and :func:`document` describes them: each error
status comes from the raised classes' ``http_status`` (with their kinds listed),
plus what the front door answers on every route (:data:`FRONT_DOOR`) and for
every body (:data:`BODY_ERRORS`). ``tests/test_openapi.py`` drives every route
and checks each status it answered is declared.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from hostkit.errors import (
    BackendError,
    BadHash,
    BucketNotFound,
    CacheError,
    ContentChanged,
    CredentialsNeeded,
    CredentialsRefused,
    DeadlineExceeded,
    HashMismatch,
    HashRequired,
    HostkitError,
    MissingExtra,
    NotAFile,
    NotDirectLink,
    NotFound,
    NotPermanent,
    OfflineMiss,
    PluginError,
    Stalled,
    TransientError,
    TruncatedBody,
    UnknownScheme,
    Unreachable,
    UsageError,
)

from .errors import (
    BadJson,
    BadRequest,
    ForbiddenHost,
    ForbiddenOrigin,
    InternalError,
    ShuttingDown,
    TooLarge,
    Unauthorized,
)

#: What the front door may answer on any route but the public ones (before the handler).
FRONT_DOOR: tuple[type[HostkitError], ...] = (
    Unauthorized, ForbiddenHost, ForbiddenOrigin, ShuttingDown, InternalError)
#: What reading a JSON body may answer.
BODY_ERRORS: tuple[type[HostkitError], ...] = (BadJson, BadRequest, TooLarge)
#: What a resolve may raise: every error of the resolver and the backends it asks.
RESOLVER_ERRORS: tuple[type[HostkitError], ...] = (
    UsageError, UnknownScheme, BadHash, HashRequired, MissingExtra, HashMismatch, ContentChanged,
    BackendError,
    NotFound, BucketNotFound, CredentialsNeeded, CredentialsRefused, NotAFile, NotPermanent,
    NotDirectLink, TransientError, Unreachable, TruncatedBody, Stalled, DeadlineExceeded,
    OfflineMiss, CacheError, PluginError)


@dataclass(frozen=True)
class Route:
    """One route: what the app serves and what the document says of it."""

    method: str
    path: str
    handler: Callable
    summary: str
    #: Statuses answered when it works -> OpenAPI response objects.
    answers: dict[int, dict]
    raises: tuple[type[HostkitError], ...] = ()
    #: Schema name (``components/schemas``) of the JSON body it reads, if any.
    request: str | None = None
    parameters: tuple[dict, ...] = ()
    #: Open without a token and before the address checks (``/healthz``).
    public: bool = False
    errors: tuple[type[HostkitError], ...] = field(init=False)

    def __post_init__(self) -> None:
        found = (*self.raises, *(BODY_ERRORS if self.request else ()),
                 *((InternalError,) if self.public else FRONT_DOOR))
        object.__setattr__(self, "errors", tuple(dict.fromkeys(found)))


#: Every declared route, in declaration order (the app adds exactly these).
ROUTES: list[Route] = []


def route(method: str, path: str, summary: str, *, answers: dict[int, dict],
          raises: Iterable[type[HostkitError]] = (), request: str | None = None,
          parameters: Iterable[dict] = (), public: bool = False) -> Callable:
    """Declare the decorated handler as the route ``method path`` (see :class:`Route`)."""
    def declare(handler: Callable) -> Callable:
        ROUTES.append(Route(method.upper(), path, handler, summary, answers, tuple(raises),
                            request, tuple(parameters), public))
        return handler

    return declare


def json_answer(schema: dict | str, description: str) -> dict:
    """A JSON response object (``schema`` a schema, or the name of one in components)."""
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def path_parameter(name: str, description: str, pattern: str | None = None) -> dict:
    """A required string parameter of the path."""
    schema = {"type": "string", **({"pattern": pattern} if pattern else {})}
    return {"name": name, "in": "path", "required": True, "description": description,
            "schema": schema}


IDENT = path_parameter("ident", "an identifier (percent-encoded: '/' as %2F, '?' as %3F), "
                                "a sha256 or a sha256 prefix of at least 6 hex digits")


def _error_answers(errors: Iterable[type[HostkitError]]) -> dict[str, dict]:
    by_status: dict[int, list[type[HostkitError]]] = {}
    for cls in errors:
        by_status.setdefault(cls.http_status, []).append(cls)
    out = {}
    for status in sorted(by_status):
        classes = by_status[status]
        kinds = sorted({c.kind for c in classes})
        text = "; ".join(f"{c.kind}: {(c.__doc__ or '').strip().splitlines()[0].rstrip('.')}"
                         for c in sorted(classes, key=lambda c: c.kind))
        out[str(status)] = {"description": text, "content": {"application/json": {"schema": {
            "allOf": [{"$ref": "#/components/schemas/Error"},
                      {"properties": {"error": {"enum": kinds}}}]}}}}
    return out


def _operation(r: Route) -> dict:
    op: dict = {"summary": r.summary, "operationId": r.handler.__name__}
    if r.handler.__doc__:
        op["description"] = r.handler.__doc__.strip()
    if r.public:
        op["security"] = []
    if r.parameters:
        op["parameters"] = list(r.parameters)
    if r.request:
        op["requestBody"] = {"required": True, "content": {"application/json": {
            "schema": {"$ref": f"#/components/schemas/{r.request}"}}}}
    op["responses"] = {**{str(s): a for s, a in sorted(r.answers.items())},
                       **_error_answers(r.errors)}
    return op


_SCHEMAS = {
    "Error": {
        "type": "object", "required": ["error", "message"],
        "properties": {
            "error": {"type": "string", "description": "stable kind, e.g. bad_json, "
                      "unknown_scheme, bad_hash, not_found, hash_mismatch, unknown_job"},
            "message": {"type": "string"},
            "hint": {"type": ["string", "null"], "description": "what to do about it"},
            "identifier": {"type": ["string", "null"]},
        }},
    "ResolveRequest": {
        "type": "object", "required": ["identifier"], "additionalProperties": False,
        "properties": {
            "identifier": {"type": "string", "examples": ["https://host/file",
                                                          "synapse:syn123", "s3://b/k"]},
            "hash": {"type": ["string", "null"], "description": "alg:hex or bare sha256 hex"},
            "wait": {"type": "boolean", "default": True,
                     "description": "false: answer 202 with a job id at once"},
            "offline": {"type": ["boolean", "null"]},
            "require_hash": {"type": ["boolean", "null"]},
            "require_same": {"type": ["boolean", "null"],
                             "description": "true: other bytes than recorded on first use "
                                            "(no hash given) are a 409 content_changed, and "
                                            "the cache keeps the old ones"},
            "progress": {"type": ["boolean", "null"],
                         "description": "true (or Accept: application/x-ndjson): stream the "
                                        "download's events as NDJSON, the answer last"},
        }},
    "Resolved": {
        "type": "object",
        "required": ["path", "sha256", "size", "cached", "identifier", "verified"],
        "properties": {
            "path": {"type": "string", "description": "local path on the daemon's host"},
            "sha256": {"type": "string"}, "size": {"type": "integer"},
            "cached": {"type": "boolean", "description": "false when this call downloaded"},
            "identifier": {"type": "string"},
            "verified": {"type": "boolean",
                         "description": "false: trust on first use (no hash given)"},
            "digests": {"type": "object", "additionalProperties": {"type": "string"}},
            "blob": {"type": "string", "description": "URL path of the bytes on this daemon"},
            "changed_from": {"type": "object", "description": "resolved without a hash, "
                             "the identifier gave other bytes than before: the old ones",
                             "properties": {"sha256": {"type": "string"},
                                            "recorded_at": {"type": "string"}}},
            "tree": {"type": "boolean", "description": "a folder (only when true): path is "
                     "its read-only snapshot folder, sha256 its manifest's, size the bytes "
                     "of its files"},
            "files": {"type": "integer", "description": "how many files the folder has"},
        }},
    "PrefetchRequest": {
        "type": "object", "required": ["items"],
        "properties": {"items": {"type": "array", "minItems": 1, "maxItems": 1000, "items": {
            "oneOf": [{"type": "string"}, {
                "type": "object", "required": ["identifier"],
                "properties": {"identifier": {"type": "string"},
                               "hash": {"type": ["string", "null"]}}}]}}}},
    "Job": {
        "type": "object",
        "properties": {
            "id": {"type": "string"}, "kind": {"enum": ["prefetch", "resolve"]},
            "state": {"enum": ["queued", "running", "done", "failed", "cancelled"]},
            "bytes_done": {"type": "integer"}, "bytes_total": {"type": "integer"},
            "errors": {"type": "integer"},
            "items": {"type": "array", "items": {"type": "object", "properties": {
                "identifier": {"type": "string"}, "hash": {"type": ["string", "null"]},
                "state": {"type": "string"}, "bytes_done": {"type": "integer"},
                "bytes_total": {"type": ["integer", "null"]},
                "result": {"$ref": "#/components/schemas/Resolved"},
                "error": {"$ref": "#/components/schemas/Error"}}}},
        }},
}


def document(routes: Iterable[Route] = ()) -> dict:
    """The OpenAPI description of the daemon's HTTP API: ``routes``, or every declared one."""
    from hostkit import __version__

    paths: dict[str, dict] = {}
    for r in routes or ROUTES:
        paths.setdefault(r.path, {})[r.method.lower()] = _operation(r)
    return {
        "openapi": "3.1.0",
        "info": {"title": "hostkit daemon", "version": __version__,
                 "description": "Resolve ML asset identifiers into verified, cached local "
                                "files. Errors are JSON {error, message, hint}. Any path "
                                "answers 404 no_route when there is no such route, and 405 "
                                "method_not_allowed (with Allow) for a method it lacks."},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "required when the daemon was "
                                                          "started with a token"}}},
        "security": [{}, {"bearer": []}],
        "paths": paths,
    }
