"""hostkit: turn ML asset identifiers into verified, cached local files.

>>> import hostkit
>>> path = hostkit.resolve("https://example.org/w.bin", expected="sha256:...")  # doctest: +SKIP

Imports are lazy so ``hostkit resolve`` on a cache hit starts fast.
"""

from __future__ import annotations

__version__ = "0.1.0"
__all__ = ["resolve", "resolve_info", "Resolver", "Resolved", "HostkitError", "hookimpl"]


def __getattr__(name: str):
    if name in ("resolve", "resolve_info"):
        from . import api

        return getattr(api, name)
    if name == "Resolver":
        from .resolver import Resolver

        return Resolver
    if name == "Resolved":
        from .results import Resolved

        return Resolved
    if name == "HostkitError":
        from .errors import HostkitError

        return HostkitError
    if name == "hookimpl":
        from .hookspecs import hookimpl

        return hookimpl
    raise AttributeError(f"module 'hostkit' has no attribute {name!r}")
