"""Typed errors. Every error says what went wrong and what to do next.

Each class carries a stable ``kind`` (used in ``--json`` output, daemon responses
and metrics) and an ``exit_code`` for the CLI. Messages never contain
credentials: build them from :func:`hostkit.redact.redact_url`.
"""

from __future__ import annotations


class HostkitError(Exception):
    """Base class: a user-facing failure with a hint on how to fix it."""

    kind = "error"
    exit_code = 1
    #: HTTP status the daemon answers with for this error.
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None, identifier: str | None = None):
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.identifier = identifier

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict:
        """JSON form, as printed by ``--json`` and returned by the daemon."""
        return {"error": self.kind, "message": self.message, "hint": self.hint,
                "identifier": self.identifier}


class UsageError(HostkitError):
    """The caller asked for something malformed (bad identifier, bad hash syntax)."""

    kind = "usage"
    exit_code = 2
    http_status = 400


class UnknownScheme(UsageError):
    """No installed backend accepts this identifier."""

    kind = "unknown_scheme"


class BadHash(UsageError):
    """A hash string that is not ``alg:hex`` or bare sha256/sha1 hex."""

    kind = "bad_hash"


class HashRequired(UsageError):
    """Strict mode is on and no expected hash was given."""

    kind = "hash_required"


class HashMismatch(HostkitError):
    """The downloaded bytes do not match the expected digest. Nothing was cached."""

    kind = "hash_mismatch"
    exit_code = 3
    http_status = 502

    def __init__(self, identifier: str, expected: str, found: str, **kwargs):
        super().__init__(
            f"hash mismatch for {identifier}: expected {expected}, found {found}; "
            "the file was not cached",
            hint=kwargs.pop("hint", "check the hash you were given, or ask the publisher "
                            "whether the file changed; nothing was stored"),
            identifier=identifier, **kwargs)
        self.expected = expected
        self.found = found

    def to_dict(self) -> dict:
        return {**super().to_dict(), "expected": self.expected, "found": self.found}


class BackendError(HostkitError):
    """A failure talking to a storage backend."""

    kind = "backend"
    exit_code = 4
    http_status = 502


class NotFound(BackendError):
    """The object does not exist (404, no such key/bucket/entity)."""

    kind = "not_found"
    http_status = 404


class CredentialsNeeded(BackendError):
    """The backend needs credentials and none were found."""

    kind = "credentials_needed"
    http_status = 401


class CredentialsRefused(BackendError):
    """Credentials were sent and refused (401/403)."""

    kind = "credentials_refused"
    http_status = 403


class NotAFile(BackendError):
    """The identifier names a folder, project or listing rather than one file."""

    kind = "not_a_file"
    http_status = 422


class NotPermanent(BackendError):
    """The reference can change under the same name (a branch, not a commit)."""

    kind = "not_permanent"
    http_status = 422


class NotDirectLink(BackendError):
    """The server answered with a web page (share link, login page), not the file."""

    kind = "not_direct_link"
    http_status = 422


class TransientError(BackendError):
    """A failure worth retrying: connection reset, timeout, 5xx, 429, truncated body.

    ``retry_after`` (seconds) is honoured when the server said so.
    """

    kind = "transient"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class Unreachable(TransientError):
    """The endpoint could not be reached at all (DNS, refused, timeout)."""

    kind = "unreachable"


class TruncatedBody(TransientError):
    """The body ended before the announced length."""

    kind = "truncated"


class Stalled(TransientError):
    """The transfer went on below the minimum rate for a whole read timeout."""

    kind = "stalled"


class DeadlineExceeded(BackendError):
    """The resolve took longer than its total deadline; what was downloaded is kept."""

    kind = "deadline"
    http_status = 504


class OfflineMiss(HostkitError):
    """Offline mode is on and the identifier is not in the cache."""

    kind = "offline"
    exit_code = 5
    http_status = 404


class CacheError(HostkitError):
    """The local cache cannot store or find something (full disk, missing entry)."""

    kind = "cache"
    exit_code = 6
    http_status = 507


class PluginError(HostkitError):
    """A plugin failed to load or broke its contract."""

    kind = "plugin"
    exit_code = 7
