"""Typed errors: every class hostkit raises, and the registry that rebuilds them.

Each class carries a stable ``kind`` (used in ``--json`` output, daemon responses
and metrics), an ``exit_code`` for the CLI and the ``http_status`` the daemon
answers with. Where a standard-library exception fits, it is a base too, so
``except FileNotFoundError`` catches :class:`NotFound` and :class:`OfflineMiss`
and ``except ValueError`` catches :class:`UsageError`.

:func:`register` adds a class to the registry of kinds (the daemon client
rebuilds the error a daemon answered with through :func:`error_class`); every
class here is registered, and a plugin registers its own the same way.
Messages never contain credentials: build them from the parsed identifier's
``display`` (:mod:`hostkit.identifiers`).
"""

from __future__ import annotations

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing costs a warm CLI hit 5 ms
if TYPE_CHECKING:
    from typing import TypeVar

    _E = TypeVar("_E", bound=type["HostkitError"])
_KINDS: dict[str, type[HostkitError]] = {}
#: What a message may not bring to a terminal, written as an escape instead: C0 and C1
#: controls but tab and newline, DEL, and the bidirectional overrides.
_UNPRINTABLE = {c: f"\\x{c:02x}" for c in (*range(0x09), *range(0x0b, 0x20), *range(0x7f, 0xa0))}
_UNPRINTABLE.update({c: f"\\u{c:04x}" for c in (*range(0x202a, 0x202f), *range(0x2066, 0x206a))})


def printable(text: str) -> str:
    """``text`` with control characters written as escapes (``\\x1b``).

    Messages quote servers (a reason phrase, an API's ``message``, a content type),
    and a hostile one could otherwise clear the screen, retitle the window or fake
    a line of output with escape sequences.
    """
    return text.translate(_UNPRINTABLE)


def register(cls: _E) -> _E:
    """Class decorator: make ``cls.kind`` rebuild as ``cls`` (see :func:`error_class`)."""
    known = _KINDS.get(cls.kind)
    if known is not None and known is not cls:
        raise ValueError(f"error kind {cls.kind!r} is taken by {known.__qualname__}")
    _KINDS[cls.kind] = cls
    return cls


def error_class(kind: str) -> type[HostkitError]:
    """The class registered for ``kind``; :class:`HostkitError` for a kind nobody knows."""
    return _KINDS.get(kind, HostkitError)


@register
class HostkitError(Exception):
    """Base class: a user-facing failure with a hint on how to fix it."""

    kind = "error"
    exit_code = 1
    #: HTTP status the daemon answers with for this error.
    http_status = 500

    def __init__(self, message: str, *, hint: str | None = None, identifier: str | None = None,
                 suggestion: str | None = None):
        message = printable(message) if isinstance(message, str) else message
        hint = printable(hint) if isinstance(hint, str) else hint
        super().__init__(message)
        self.message = message
        self.hint = hint
        self.identifier = identifier
        #: An identifier to use instead (a share link's direct form, a branch's pinned
        #: URL), when there is exactly one; ``hostkit check --fix`` prints it.
        self.suggestion = suggestion

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message

    def to_dict(self) -> dict:
        """JSON form, as printed by ``--json`` and returned by the daemon."""
        data = {"error": self.kind, "message": self.message, "hint": self.hint,
                "identifier": self.identifier}
        if self.suggestion is not None:
            # a backend suggests from what it was given, which may carry a token: the
            # message and hint are redacted where they are written, the suggestion here
            from .redact import redact_url

            data["suggestion"] = redact_url(self.suggestion)
        return data


@register
class UsageError(HostkitError, ValueError):
    """The caller asked for something malformed (bad identifier, bad hash syntax)."""

    kind = "usage"
    exit_code = 2
    http_status = 400


@register
class UnknownScheme(UsageError):
    """No installed backend accepts this identifier."""

    kind = "unknown_scheme"


@register
class BadHash(UsageError):
    """A hash string that is not ``alg:hex`` or bare sha256/sha1 hex."""

    kind = "bad_hash"


@register
class HashRequired(UsageError):
    """Strict mode is on and no expected hash was given."""

    kind = "hash_required"


@register
class HashMismatch(HostkitError, ValueError):
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


@register
class ContentChanged(HashMismatch):
    """Strict trust on first use: an identifier resolved without a hash now gives other bytes.

    Raised when ``require_same`` (``--require-same``, ``HOSTKIT_REQUIRE_SAME=1``) is on;
    the cache entry still points at the old bytes. ``expected`` is the sha256 recorded
    on first use (``sha256:<hex>``), ``found`` the new one, ``recorded_at`` when the old
    one was recorded (ISO-8601 UTC).
    """

    kind = "content_changed"
    http_status = 409

    def __init__(self, identifier: str, expected: str, found: str, recorded_at: str, **kwargs):
        HostkitError.__init__(
            self, f"{identifier} changed: {expected}, recorded {recorded_at}, is now {found}; "
            "the old bytes were kept (strict mode)",
            hint=kwargs.pop("hint", None), identifier=identifier, **kwargs)
        self.expected = expected
        self.found = found
        self.recorded_at = recorded_at

    def to_dict(self) -> dict:
        return {**super().to_dict(), "recorded_at": self.recorded_at}


class ContentChangedWarning(UserWarning):
    """The Python API's warning: an identifier resolved without a hash gave other bytes than
    it did before, and the cache now holds the new ones (``Resolved.changed_from``)."""


@register
class BackendError(HostkitError):
    """A failure talking to a storage backend."""

    kind = "backend"
    exit_code = 4
    http_status = 502


@register
class NotFound(BackendError, FileNotFoundError):
    """The object does not exist (404, no such key/bucket/entity)."""

    kind = "not_found"
    http_status = 404


@register
class CredentialsNeeded(BackendError, PermissionError):
    """The backend needs credentials and none were found."""

    kind = "credentials_needed"
    http_status = 401


@register
class CredentialsRefused(BackendError, PermissionError):
    """Credentials were sent and refused (401/403)."""

    kind = "credentials_refused"
    http_status = 403


@register
class NotAFile(BackendError):
    """The identifier names a folder, project or listing rather than one file."""

    kind = "not_a_file"
    http_status = 422


@register
class NotPermanent(BackendError):
    """The reference can change under the same name (a branch, not a commit)."""

    kind = "not_permanent"
    http_status = 422


@register
class NotDirectLink(BackendError):
    """The server answered with a web page (share link, login page), not the file."""

    kind = "not_direct_link"
    http_status = 422


@register
class TransientError(BackendError, ConnectionError):
    """A failure worth retrying: connection reset, timeout, 5xx, 429, truncated body.

    ``retry_after`` (seconds) is honoured when the server said so.
    """

    kind = "transient"
    http_status = 503

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs):
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


@register
class Unreachable(TransientError):
    """The endpoint could not be reached at all (DNS, refused, timeout)."""

    kind = "unreachable"


@register
class TruncatedBody(TransientError):
    """The body ended before the announced length."""

    kind = "truncated"


@register
class Stalled(TransientError, TimeoutError):
    """The transfer went on below the minimum rate for a whole read timeout."""

    kind = "stalled"


@register
class DeadlineExceeded(BackendError, TimeoutError):
    """The resolve took longer than its total deadline; what was downloaded is kept."""

    kind = "deadline"
    http_status = 504


@register
class OfflineMiss(HostkitError, FileNotFoundError):
    """Offline mode is on and the identifier is not in the cache."""

    kind = "offline"
    exit_code = 5
    http_status = 404


@register
class CacheError(HostkitError, OSError):
    """The local cache cannot store or find something (full disk, missing entry)."""

    kind = "cache"
    exit_code = 6
    http_status = 507


@register
class PluginError(HostkitError):
    """A plugin failed to load or broke its contract."""

    kind = "plugin"
    exit_code = 7


@register
class ItemsRefused(UsageError):
    """Some items of a list (``hostkit resolve ID ID...``, ``-r FILE``) were refused before
    anything was resolved: malformed, unknown scheme, bad hash, clashing output names.

    ``refused`` holds ``(index, error)`` for each refused item, in list order;
    ``total`` is how many items the list had. Nothing was downloaded.
    """

    kind = "items_refused"

    def __init__(self, refused: list, total: int, **kwargs):
        super().__init__(f"{len(refused)} of {total} items refused; nothing was resolved",
                         hint=kwargs.pop("hint", "fix the items named above and run again"),
                         **kwargs)
        self.refused = refused
        self.total = total

    def to_dict(self) -> dict:
        return {**super().to_dict(),
                "refused": [{"index": i, **e.to_dict()} for i, e in self.refused]}


@register
class MissingExtra(UsageError):
    """The backend's client library is not installed (``pip install 'hostkit[EXTRA]'``)."""

    kind = "missing_extra"


@register
class AlreadyExists(UsageError):
    """An upload would replace a different object; pass --overwrite to allow it."""

    kind = "exists"
    http_status = 409


@register
class SourceChanged(HostkitError):
    """The local file changed (size or bytes) while it was being uploaded."""

    kind = "source_changed"
    exit_code = 2
    http_status = 409


@register
class BucketNotFound(NotFound):
    """The bucket (container) itself does not exist, not just the key."""

    kind = "bucket_not_found"
