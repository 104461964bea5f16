"""hostkit: turn ML asset identifiers into verified, cached local files.

>>> import hostkit
>>> path = hostkit.resolve("https://example.org/w.bin", expected="sha256:...")  # doctest: +SKIP

The names below load on first use, so ``hostkit resolve`` on a cache hit starts
fast; type checkers see them with their real signatures.
"""

from __future__ import annotations

from ._version import __version__

TYPE_CHECKING = False  # typing.TYPE_CHECKING would import typing on every CLI start
if TYPE_CHECKING:
    from .api import resolve, resolve_info, resolve_many, upload
    from .errors import HostkitError
    from .hookspecs import hookimpl
    from .resolver import Resolver
    from .results import Resolved

__all__ = ["HostkitError", "Resolved", "Resolver", "__version__", "hookimpl", "resolve",
           "resolve_info", "resolve_many", "upload"]

_LAZY = {"resolve": "api", "resolve_info": "api", "resolve_many": "api", "upload": "api",
         "Resolver": "resolver", "Resolved": "results", "HostkitError": "errors",
         "hookimpl": "hookspecs"}


def __getattr__(name: str):
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module 'hostkit' has no attribute {name!r}")
