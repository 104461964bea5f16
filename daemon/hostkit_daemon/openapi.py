"""The OpenAPI 3.1 document served at ``GET /v1/openapi.json``.

Written by hand next to the handlers it describes (:mod:`hostkit_daemon.app`);
``tests/test_daemon.py`` checks that every route the app serves is described.
"""

from __future__ import annotations


def _json(schema: dict | str, description: str) -> dict:
    if isinstance(schema, str):
        schema = {"$ref": f"#/components/schemas/{schema}"}
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json("Error", description)


_IDENT = {"name": "ident", "in": "path", "required": True,
          "description": "an identifier (percent-encoded: '/' as %2F, '?' as %3F), "
                         "a sha256 or a sha256 prefix of at least 6 hex digits",
          "schema": {"type": "string"}}

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


def document() -> dict:
    """The OpenAPI description of the daemon's HTTP API."""
    from hostkit import __version__

    return {
        "openapi": "3.1.0",
        "info": {"title": "hostkit daemon", "version": __version__,
                 "description": "Resolve ML asset identifiers into verified, cached local "
                                "files. Errors are JSON {error, message, hint}."},
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer",
                                           "description": "required when the daemon was "
                                                          "started with a token"}}},
        "security": [{}, {"bearer": []}],
        "paths": {
            "/healthz": {"get": {"summary": "liveness", "security": [], "responses": {
                "200": _json({"type": "object"}, "serving"),
                "503": _json({"type": "object"}, "shutting down")}}},
            "/metrics": {"get": {"summary": "Prometheus text format", "responses": {
                "200": {"description": "metrics",
                        "content": {"text/plain": {"schema": {"type": "string"}}}}}}},
            "/v1/openapi.json": {"get": {"summary": "this document",
                                         "responses": {"200": _json({}, "OpenAPI 3.1")}}},
            "/v1/status": {"get": {"summary": "version, cache summary, downloads in flight",
                                   "responses": {"200": _json({"type": "object"}, "status")}}},
            "/v1/resolve": {"post": {
                "summary": "identifier (+ hash) -> verified local file",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/ResolveRequest"}}}},
                "responses": {
                    "200": _json("Resolved", "resolved"),
                    "202": _json({"type": "object", "properties": {
                        "job": {"type": "string"}, "href": {"type": "string"}}},
                        "wait=false: poll the job"),
                    "400": _error("bad JSON, bad identifier, unknown scheme, bad hash"),
                    "401": _error("token missing or wrong"),
                    "403": _error("credentials_not_lent / credentials_not_accepted: a shared "
                                  "daemon fetches nothing with credentials for untrusted "
                                  "callers (neither its own nor theirs)"),
                    "404": _error("not found at the origin, or offline and not cached"),
                    "413": _error("body too large"),
                    "502": _error("hash mismatch or backend failure"),
                    "503": _error("origin unreachable / transient / stalled, or daemon "
                                  "shutting down")}}},
            "/v1/blobs/{sha256}": {"get": {
                "summary": "the bytes of a cached blob (Range, HEAD, ETag = sha256, "
                           "If-None-Match); a range or HEAD only for a blob hashed whole",
                "parameters": [{"name": "sha256", "in": "path", "required": True,
                                "schema": {"type": "string", "pattern": "^[0-9a-fA-F]{64}$"}}],
                "responses": {
                    "200": {"description": "the bytes", "content": {
                        "application/octet-stream": {"schema": {"type": "string",
                                                                "format": "binary"}}}},
                    "206": {"description": "a byte range"},
                    "304": {"description": "If-None-Match matched"},
                    "400": _error("not a 64-hex sha256"),
                    "404": _error("no such blob (blob_not_found), or its bytes no longer "
                                  "match and it was quarantined (blob_corrupt)"),
                    "412": _error("If-Match did not match"),
                    "416": {"description": "range not satisfiable"}}}},
            "/v1/prefetch": {"post": {
                "summary": "resolve many identifiers in the background",
                "requestBody": {"required": True, "content": {"application/json": {
                    "schema": {"$ref": "#/components/schemas/PrefetchRequest"}}}},
                "responses": {"202": _json("Job", "job started"),
                              "400": _error("bad item (index in the message)")}}},
            "/v1/jobs/{job_id}": {"get": {
                "summary": "state of a job",
                "parameters": [{"name": "job_id", "in": "path", "required": True,
                                "schema": {"type": "string"}}],
                "responses": {"200": _json("Job", "the job"),
                              "404": _error("unknown or expired job")}}},
            "/v1/cache": {"get": {"summary": "entries and blobs",
                                  "responses": {"200": _json({"type": "object"}, "listing")}}},
            "/v1/cache/{ident}": {
                "get": {"summary": "entries and blobs matching", "parameters": [_IDENT],
                        "responses": {"200": _json({"type": "object"}, "found"),
                                      "404": _error("nothing matches")}},
                "delete": {"summary": "remove entries (and blobs no longer used)",
                           "parameters": [_IDENT],
                           "responses": {"200": _json({"type": "object"}, "removed"),
                                         "404": _error("nothing matches")}}},
            "/v1/cache/{ident}/pin": {
                "post": {"summary": "pin (survives prune)", "parameters": [_IDENT],
                         "responses": {"200": _json({"type": "object"}, "pinned"),
                                       "404": _error("nothing matches")}},
                "delete": {"summary": "unpin", "parameters": [_IDENT],
                           "responses": {"200": _json({"type": "object"}, "unpinned"),
                                         "404": _error("nothing matches")}}},
        },
    }
