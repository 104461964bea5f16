"""Loading backends: entry points in the ``hostkit`` group, each isolated."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING

import pluggy

from . import hookspecs
from .remote import BackendInfo
from .settings import Option

if TYPE_CHECKING:
    from importlib.metadata import Distribution

ENTRY_POINT_GROUP = "hostkit"
log = logging.getLogger("hostkit.plugins")


@dataclass
class LoadedPlugins:
    """The plugin manager plus what failed to load (name -> error text)."""

    manager: pluggy.PluginManager
    failures: dict[str, str] = field(default_factory=dict)
    #: plugin name -> the distribution that installed it (None: unknown)
    dists: dict[str, Distribution | None] = field(default_factory=dict)

    @property
    def sources(self) -> dict[str, str]:
        """Plugin name -> the name of the distribution that installed it.

        Read on demand: a distribution's name is in its METADATA file, parsed with
        the email package, which every command would otherwise pay for at start-up.
        """
        return {name: dist.name if dist else "?" for name, dist in self.dists.items()}

    def each(self, hook_name: str) -> list[tuple[str, list]]:
        """``(plugin name, its list)`` from every plugin implementing a list-returning hook.

        In registration order (stable). A plugin whose hook raises is recorded in
        :attr:`failures` and skipped: a broken plugin must not hide the others.
        """
        out = []
        for name, plugin in self.manager.list_name_plugin():
            impl = getattr(plugin, hook_name, None)
            if impl is None:
                continue
            try:
                out.append((name, list(impl() or [])))
            except Exception as exc:
                self.failures[name] = f"{hook_name}() raised {exc!r}"
        return out

    def backends(self) -> list[tuple[str, BackendInfo]]:
        """``(plugin name, info)`` for every backend, in registration order."""
        return [(name, info) for name, infos in self.each("hostkit_backends") for info in infos]

    def upload_schemes(self) -> list[str]:
        """Schemes of the backends whose plugin implements ``hostkit_upload``."""
        uploaders = {impl.plugin_name for impl in self.manager.hook.hostkit_upload.get_hookimpls()}
        return [f"{scheme}:" for name, info in self.backends() if name in uploaders
                for scheme in info.schemes]

    def options(self) -> dict[tuple[str, str], Option]:
        """Every option plugins declare (``hostkit_settings``), by ``(backend, key)``."""
        return {(option.backend, option.key): option
                for _, declared in self.each("hostkit_settings") for option in declared}

    def register_commands(self, subparsers, common) -> None:
        """Let every plugin add its subcommands (``hostkit_register_commands``)."""
        for impl in self.manager.hook.hostkit_register_commands.get_hookimpls():
            try:
                impl.function(subparsers=subparsers, common=common)
            except Exception as exc:
                self.failures[impl.plugin_name] = \
                    f"hostkit_register_commands() raised {_shown(exc)}"
                log.warning("hostkit plugin %r could not add its commands: %s",
                            impl.plugin_name, _shown(exc))

    def accepted_forms(self) -> str:
        """Human list of accepted identifier forms, for error messages."""
        forms = [ex for _, info in self.backends() for ex in info.examples]
        return ", ".join(forms) or "no backends are installed"


def new_manager() -> pluggy.PluginManager:
    """A plugin manager with hostkit's hook specifications and nothing registered."""
    pm = pluggy.PluginManager("hostkit")
    pm.add_hookspecs(hookspecs)
    return pm


@lru_cache(maxsize=1)
def load_plugins() -> LoadedPlugins:
    """Register every ``hostkit`` entry point; a failing one is recorded, not fatal."""
    from importlib.metadata import entry_points

    loaded = LoadedPlugins(new_manager())
    for ep in entry_points(group=ENTRY_POINT_GROUP):
        if loaded.manager.has_plugin(ep.name):
            continue
        try:
            module = ep.load()
            loaded.manager.register(module, name=ep.name)
        except Exception as exc:
            loaded.failures[ep.name] = _shown(exc)
            log.warning("hostkit plugin %r (%s) failed to load: %s", ep.name, ep.value,
                        _shown(exc))
            continue
        loaded.dists[ep.name] = ep.dist
    return loaded


def call_first(loaded: LoadedPlugins, hook_name: str, **kwargs):
    """Call a firstresult hook, isolating plugins that crash.

    A :class:`~hostkit.errors.HostkitError` is the plugin speaking (a
    malformed identifier of its scheme) and propagates. Any other exception
    marks that plugin broken, is logged by name, and the next plugin is asked.
    """
    from .errors import HostkitError

    caller = getattr(loaded.manager.hook, hook_name)
    for impl in reversed(caller.get_hookimpls()):
        try:
            result = impl.function(**{a: kwargs[a] for a in impl.argnames})
        except HostkitError:
            raise
        except Exception as exc:
            loaded.failures[impl.plugin_name] = f"{hook_name}() raised {_shown(exc)}"
            log.warning("hostkit plugin %r failed in %s: %s", impl.plugin_name, hook_name,
                        _shown(exc))
            continue
        if result is not None:
            return result
    return None


def _shown(exc: BaseException) -> str:
    """``Type: message`` of a plugin's exception, redacted: it may quote the identifier it
    was given, credentials and all (kept in ``failures``, logged, listed by ``plugins``)."""
    from .redact import redact_text

    return redact_text(f"{type(exc).__name__}: {exc}")
