"""The daemon as a hostkit plugin (entry point ``daemon`` in the ``hostkit`` group).

Importing it registers the daemon's error kinds (:mod:`.errors`), so the core
client rebuilds them; its hook adds ``hostkit daemon`` and ``hostkit status``.
The core never imports this package.
"""

from __future__ import annotations

from hostkit.hookspecs import hookimpl

from . import errors  # noqa: F401  (registers the daemon's error kinds)


@hookimpl
def hostkit_register_commands(subparsers, common) -> None:
    """Add ``hostkit daemon``, ``hostkit status`` and ``hostkit tier``."""
    from .commands import add_parsers
    from .tier_cli import add_tier_command

    add_parsers(subparsers, common)
    add_tier_command(subparsers, common)
