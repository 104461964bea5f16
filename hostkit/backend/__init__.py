"""The backend toolkit: what every backend needs once, so a backend file holds only its own.

- :mod:`.http`: requests through the resolver's pooled session and the one
  ranged GET (:func:`open_range`, :func:`ranged_get`) with its rule: a 206 is
  used only from the offset asked and under the validator expected;
- :mod:`.errors`: an HTTP status (:func:`status_error`,
  :func:`raise_for_status`) or a network failure (:func:`network_error`) to a
  :mod:`hostkit.errors` type, the backend passing only its texts; how long to wait
  before a retry (:func:`retry_delay`) and how many (:func:`retry_limit`);
- :mod:`.parts`: the parallel ordered parts reader (:func:`ordered_parts`);
- :mod:`.multipart`: the multipart uploader (:func:`send_file`).

It imports only hostkit's core and aiohttp/yarl, never a backend: the
built-in backends and a third-party one use it the same way.
"""

from __future__ import annotations

import importlib
from types import ModuleType

from hostkit.errors import MissingExtra

from .errors import (
    network_error,
    raise_for_status,
    retry_after,
    retry_delay,
    retry_limit,
    status_error,
    status_kind,
)
from .http import (
    IDENTITY,
    HttpStatus,
    ObjectChanged,
    Ranged,
    open_range,
    range_headers,
    ranged_get,
    read_body,
    request,
)
from .multipart import MultipartTarget, hash_file, send_file, upload_part_size
from .parts import ordered_parts, part_settings

__all__ = [
    "IDENTITY", "HttpStatus", "MultipartTarget", "ObjectChanged", "Ranged", "hash_file",
    "network_error", "open_range", "ordered_parts", "part_settings", "raise_for_status",
    "range_headers", "ranged_get", "read_body", "request", "require", "retry_after",
    "retry_delay", "retry_limit", "send_file", "status_error", "status_kind", "upload_part_size",
]


def require(module: str, extra: str, scheme: str) -> ModuleType:
    """Import a backend's client library ``module``, or say which pip extra installs it.

    :raises hostkit.errors.MissingExtra: it is not installed.
    """
    try:
        return importlib.import_module(module)
    except ImportError:
        raise MissingExtra(
            f"{scheme} identifiers need {module.split('.')[0]}, which is not installed: "
            f"pip install 'hostkit[{extra}]'",
            hint=f"pip install 'hostkit[{extra}]' (or 'hostkit[all]')") from None
