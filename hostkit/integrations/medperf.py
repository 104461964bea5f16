"""A drop-in for MedPerf's ``download_resource``, backed by hostkit's cache.

Put it into a MedPerf client with one line::

    import medperf.comms.entity_resources.utils as utils
    import hostkit.integrations.medperf
    utils.download_resource = hostkit.integrations.medperf.download_resource

or call it directly. Same signature and return value as
``medperf.comms.entity_resources.utils.download_resource``; what differs is
listed on :func:`download_resource`.
"""

from __future__ import annotations

import importlib
import re
from pathlib import Path

from .. import errors

_SHA256_HEX = re.compile(r"[0-9a-fA-F]{64}")

#: hostkit's error classes -> the ``medperf.exceptions`` class that MedPerf's code catches.
#: Checked in order: the first class the error is an instance of wins.
_MEDPERF_KINDS: tuple[tuple[type[errors.HostkitError], str], ...] = (
    (errors.UsageError, "InvalidArgumentError"),
    (errors.HashMismatch, "InvalidEntityError"),
    (errors.CredentialsNeeded, "CommunicationAuthenticationError"),
    (errors.CredentialsRefused, "CommunicationAuthenticationError"),
    (errors.HostkitError, "CommunicationRetrievalError"),
)

_classes: dict[tuple[type, type], type] = {}


def download_resource(resource: str, output_path: str, expected_hash: str | None = None) -> str:
    """Put the verified bytes ``resource`` names at ``output_path``; return their sha256.

    The drop-in for MedPerf's ``comms.entity_resources.utils.download_resource``:

    - ``resource``: what MedPerf accepts (an ``http(s)`` URL, the same
      prefixed with ``direct:``, ``synapse:synN``) and every other hostkit
      identifier (``s3://``, ``gs://``, ``github:``, ...).
    - ``expected_hash``: the file's sha256 as bare hex, MedPerf's form;
      ``None`` or ``""`` (MedPerf's "no hash") means none. hostkit also
      accepts uppercase hex and a ``sha256:`` prefix: they name the same
      digest, so they are checked as such, never loosened. Anything that is
      not a sha256 (another algorithm, 40-hex SHA-1 from MedPerf releases
      before August 2023, stray spaces) is refused as an invalid argument
      before any download, rather than reported as a mismatch later.
    - Returns the sha256 of the file as bare lowercase hex, as MedPerf does.

    Stricter than MedPerf: an identifier that is not valid is refused before
    any request; a truncated body or an HTML page is refused; there are
    timeouts, and connection errors are retried (resuming); a resource
    resolved before with this hash is answered from the cache with no
    request; ``output_path`` never holds a partial file: it is placed from the
    cache only once verified (:func:`hostkit.place.place`: a hard link on the
    cache's file system, else a copy, renamed into place), so a wrong hash or
    any failure leaves it as it was; parent folders are created and an
    existing file is replaced, across file systems too. The placed file is
    read-only (a hard link is the cache's own blob; MedPerf only reads it, and
    may delete it). It goes through the machine's hostkit daemon when one
    runs, else resolves in this process (:func:`hostkit.api.resolve_info`).

    Errors: when ``medperf.exceptions`` is importable, each error is an
    instance of both hostkit's class and MedPerf's, so MedPerf's own
    ``except`` clauses keep working: ``InvalidArgumentError`` for a bad
    identifier, hash or path; ``InvalidEntityError`` for a hash mismatch (its
    message starts ``Hash mismatch: <resource>``);
    ``CommunicationAuthenticationError`` for missing or refused credentials
    (Synapse); ``CommunicationRetrievalError`` for anything else that kept the
    file from arriving (not found, unreachable, web page, truncated, full
    disk). Without MedPerf installed, hostkit's own
    :class:`~hostkit.errors.HostkitError` subclasses are raised.
    """
    try:
        return _download(resource, output_path, expected_hash)
    except errors.HostkitError as exc:
        raise _as_medperf(exc) from None


def _download(resource: str, output_path: str, expected_hash: str | None) -> str:
    from ..api import check_output, place_resolved, resolve_info

    expected = _expected(expected_hash)
    if not isinstance(resource, str) or not resource:
        raise errors.UsageError(f"invalid resource {resource!r}: expected an identifier string",
                                hint="pass a URL, direct:URL or synapse:synN")
    if not output_path:
        raise errors.UsageError("no output path given", hint="pass the file to write")
    check_output(output_path)
    target = Path(output_path)
    if target.is_dir():
        raise errors.UsageError(f"cannot place the file at {target}: it is a folder",
                                hint="name the file to create")
    resolved = resolve_info(resource, expected)
    place_resolved(resolved, target, resource)
    return resolved.sha256


def _expected(expected_hash: str | None) -> str | None:
    """``sha256:<lowercase hex>`` for hostkit, or None; refuse what is not a sha256."""
    if expected_hash is None or expected_hash == "":
        return None
    text = expected_hash if isinstance(expected_hash, str) else ""
    if text[:7].lower() == "sha256:":
        text = text[7:]
    if not _SHA256_HEX.fullmatch(text):
        raise errors.BadHash(
            f"expected_hash {expected_hash!r} is not a sha256: give the file's sha256 as 64 "
            "hex digits, as MedPerf stores it",
            hint="hostkit hash FILE prints it; SHA-1 hashes from MedPerf releases before "
                 "August 2023 must be replaced by the file's sha256")
    return f"sha256:{text.lower()}"


def _medperf_exceptions():
    try:
        return importlib.import_module("medperf.exceptions")
    except ImportError:
        return None


def _as_medperf(exc: errors.HostkitError) -> errors.HostkitError:
    """``exc`` as an instance of its own class and MedPerf's, when MedPerf is importable."""
    module = _medperf_exceptions()
    if module is None:
        return exc
    name = next(name for cls, name in _MEDPERF_KINDS if isinstance(exc, cls))
    medperf_class = getattr(module, name, None)
    if not isinstance(medperf_class, type) or not issubclass(medperf_class, Exception):
        return exc
    cls = _both(type(exc), medperf_class)
    converted = cls.__new__(cls, *exc.args)
    converted.__dict__.update(exc.__dict__)
    converted.args = exc.args
    if isinstance(exc, errors.HashMismatch):  # MedPerf's own wording first, then the details
        converted.message = (f"Hash mismatch: {exc.identifier}: expected {exc.expected}, "
                             f"found {exc.found}; the output was not written")
        converted.args = (converted.message,)
    converted.__traceback__ = exc.__traceback__
    return converted


def _both(hostkit_class: type, medperf_class: type) -> type:
    """A class that is both ``hostkit_class`` and ``medperf_class`` (made once per pair)."""
    key = (hostkit_class, medperf_class)
    cls = _classes.get(key)
    if cls is None:
        cls = _classes[key] = type(hostkit_class.__name__, (hostkit_class, medperf_class), {
            "__module__": __name__,
            "__doc__": f"{hostkit_class.__doc__}\n\nAlso medperf.exceptions."
                       f"{medperf_class.__name__}, for MedPerf's own except clauses.",
        })
    return cls
