"""Settings: defaults, then ``config.toml``, then ``HOSTKIT_*`` in the environment, then flags.

The core's own settings are the fields of :class:`Settings` (env
``HOSTKIT_<FIELD>``, TOML top level or a ``[hostkit]`` table). A plugin
declares its own as :class:`Option` records through the ``hostkit_settings``
hook; each is read from ``[backends.<backend>]`` in ``config.toml`` and from
``HOSTKIT_<BACKEND>_<KEY>`` in the environment, and read back with
:meth:`Settings.option`. Every value is checked against its type: one that
does not parse is a :class:`~hostkit.errors.UsageError` naming the variable
or key (``HOSTKIT_OFFLINE=ture`` is an error, not "online").
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from .errors import UsageError

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off", ""}
#: Type names an :class:`Option` may have, and what a value of each becomes.
TYPES = ("bool", "int", "float", "str", "path")


@dataclass(frozen=True)
class Option:
    """A setting a plugin declares (see the ``hostkit_settings`` hook).

    ``backend`` names the ``[backends.<backend>]`` table and the
    ``HOSTKIT_<BACKEND>_`` prefix; ``type`` is one of :data:`TYPES`;
    ``aliases`` are older environment names still read (after the main one).
    """

    backend: str
    key: str
    type: str
    default: Any
    help: str
    aliases: tuple[str, ...] = ()

    @property
    def env(self) -> str:
        """The environment variable: ``HOSTKIT_<BACKEND>_<KEY>``."""
        return f"HOSTKIT_{self.backend}_{self.key}".upper().replace("-", "_")


@dataclass(frozen=True)
class Settings:
    """Everything tunable. Env names are ``HOSTKIT_<FIELD>`` upper-cased."""

    cache_dir: Path = None  # type: ignore[assignment]  # filled by load_settings
    offline: bool = False
    require_hash: bool = False
    #: Trust on first use, strictly: an identifier resolved without a hash that now gives
    #: other bytes than recorded is an error (``ContentChanged``), not a warning, and the
    #: cache keeps the old bytes (``--require-same``).
    require_same: bool = False
    daemon_url: str | None = None
    #: ``host:port:addr[:port],...``: connect to ``addr`` for ``host:port`` (curl's
    #: ``--resolve``), for tests and air-gapped mirrors; see :mod:`hostkit.hostmap`.
    resolve: str | None = None
    connect_timeout: float = 10.0
    read_timeout: float = 60.0
    #: Bytes/s a download must average over each ``read_timeout`` window; slower is a
    #: stall, retried (resuming) like a dropped connection. 0 turns the check off.
    min_rate: int = 1024
    #: Seconds one resolve may take in all, retries included (0: no limit).
    deadline: float = 0.0
    #: Re-hash a cached blob on every hit (catches bit rot at once, costs a read per hit).
    verify_on_hit: bool = False
    retries: int = 5
    backoff: float = 0.5
    max_backoff: float = 20.0
    quiet: bool = False
    #: Reverify a cached mutable reference (no hash, no version pin) with a cheap HEAD.
    revalidate: bool = True
    #: Bytes a download must reach before a progress bar is shown.
    progress_min_bytes: int = 8 << 20
    #: Object stores (s3, minio, gs, az): bytes per ranged part, and parts in flight.
    #: 16 MiB x 4: a quarter of the requests 8 MiB parts take (each costs the server
    #: CPU), the same memory (parts waiting for their turn hold at most 4 MiB together:
    #: ``hostkit.backend.parts.READ_AHEAD``).
    part_size: int = 16 << 20
    concurrency: int = 4
    #: Folders (trees): files fetched at once, and the caps on one listing (a listing of
    #: more files, or more bytes, is refused before anything is fetched past the cap).
    tree_jobs: int = 8
    tree_max_files: int = 100_000
    tree_max_bytes: int = 1 << 40
    #: Resolve a movable reference (a github branch or tag) by pinning it to what it names
    #: now, recorded under the pinned identifier, instead of refusing it (``--pin``).
    pin: bool = False
    #: A bucket the site's nodes share (``s3://bucket/prefix``, ``minio://host:port/bucket/
    #: prefix``): a resolve asks it after the local cache, before the origin, and one node
    #: fetches for all (:mod:`hostkit.tier`, docs/cluster.md).
    tier: str | None = None
    #: Seconds a tier request may take (and a tier download may go without bytes) before
    #: the resolve goes to the origin instead.
    tier_timeout: float = 5.0
    #: The site's nodes and users are one trust domain: resolutions made with credentials
    #: are shared through the tier too (by default only anonymous or hash-pinned ones).
    tier_private: bool = False
    #: Seconds a node's lease on an origin download lasts unrenewed before another node
    #: takes it over (its holder died).
    tier_lease: float = 15.0
    #: Where each core value came from: ``default``, the config file, ``HOSTKIT_X``, a flag.
    sources: Mapping[str, str] = field(default_factory=dict, compare=False, repr=False,
                                       hash=False)
    #: The ``[backends]`` tables of the config file and the ``HOSTKIT_*`` environment, for
    #: plugins' options (read through :meth:`option`).
    backend_tables: Mapping[str, Mapping[str, Any]] = field(default_factory=dict, repr=False,
                                                            hash=False)
    environment: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    config_file: Path | None = field(default=None, compare=False, repr=False)
    #: Plugins' options set by command-line flags (``hostkit upload --branch``), by
    #: ``(backend, key)``: they win over the environment and the config file.
    option_flags: Mapping[tuple[str, str], Any] = field(default_factory=dict, repr=False,
                                                        hash=False)

    def with_overrides(self, **values) -> Settings:
        """A copy with the non-None ``values`` applied (command-line flags)."""
        given = {k: v for k, v in values.items() if v is not None}
        return replace(self, **given, sources={**self.sources, **dict.fromkeys(given, "flag")})

    def with_option(self, backend: str, key: str, value: Any) -> Settings:
        """A copy with a plugin's option set by a command-line flag (None: unchanged)."""
        if value is None:
            return self
        return replace(self, option_flags={**self.option_flags, (backend, key): value})

    def option(self, option: Option) -> Any:
        """A plugin's option: its value from the environment, the config file or its default."""
        return self.option_source(option)[0]

    def option_source(self, option: Option) -> tuple[Any, str]:
        """``(value, where it came from)`` of a plugin's option; UsageError if it does not parse."""
        if (option.backend, option.key) in self.option_flags:
            value = self.option_flags[(option.backend, option.key)]
            return _coerce(option.key, option.type, value, "a flag"), "flag"
        for name in (option.env, *option.aliases):
            if name in self.environment:
                return _coerce(option.key, option.type, self.environment[name], name), name
        table = self.backend_tables.get(option.backend, {})
        if option.key in table:
            where = f"{self.config_file} [backends.{option.backend}] {option.key}"
            return _coerce(option.key, option.type, table[option.key], where), where
        return option.default, "default"


def default_cache_dir() -> Path:
    """The platform's user cache dir for hostkit (``~/.cache/hostkit`` on Linux)."""
    from platformdirs import user_cache_path

    return user_cache_path("hostkit", appauthor=False)


def config_path() -> Path:
    """``HOSTKIT_CONFIG`` or ``config.toml`` in the platform's user config dir."""
    if env := os.environ.get("HOSTKIT_CONFIG"):
        return Path(env)
    from platformdirs import user_config_path

    return user_config_path("hostkit", appauthor=False) / "config.toml"


def _coerce(name: str, kind, value, source: str):
    """``value`` (a string from the environment, or a TOML value) as ``kind``."""
    kind = {bool: "bool", int: "int", float: "float", Path: "path", str: "str"}.get(kind, kind)
    kind = str(kind).lower()
    try:
        if kind == "bool":
            if isinstance(value, bool):
                return value
            text = str(value).strip().lower()
            if text in _TRUE or text in _FALSE:
                return text in _TRUE
            raise ValueError(value)
        if kind == "int":
            if isinstance(value, bool) or (isinstance(value, float) and not value.is_integer()):
                raise ValueError(value)
            whole = int(str(value).strip()) if isinstance(value, str) else int(value)
            if whole < 0:  # counts, sizes, rates: none is negative
                raise ValueError(value)
            return whole
        if kind == "float":
            if isinstance(value, bool):
                raise ValueError(value)
            number = float(value)
            if number != number or number in (float("inf"), float("-inf")) or number < 0:
                raise ValueError(value)
            return number
        if kind == "path":
            return Path(os.path.expanduser(str(value))) if str(value).strip() else None
        if isinstance(value, dict | list):
            raise ValueError(value)
        return str(value) if value not in ("", None) else None
    except (TypeError, ValueError):
        expected = {"bool": "true or false (1/0, yes/no, on/off)",
                    "int": "a whole number (0 or more)", "float": "a number (0 or more)",
                    "path": "a path", "str": "a string"}.get(kind, kind)
        raise UsageError(f"{source}: {name} = {value!r} is not {expected}",
                         hint=f"fix {name} in {source}") from None


def load_settings(env=None) -> Settings:
    """Build settings from defaults, the config file and the environment.

    :raises UsageError: a value that does not parse, naming where it was set;
        an unknown core key in the config file.
    """
    env = os.environ if env is None else env
    values: dict = {}
    sources: dict[str, str] = {}
    backends: dict = {}
    path = config_path()
    if path.is_file():
        import tomllib

        try:
            data = tomllib.loads(path.read_text())
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}",
                             hint="fix or remove the file") from None
        backends = data.pop("backends", {})
        if not isinstance(backends, dict) or not all(isinstance(t, dict)
                                                      for t in backends.values()):
            raise UsageError(f"{path}: [backends] must hold one table per backend",
                             hint="write [backends.NAME] tables, e.g. [backends.s3]")
        core = data.get("hostkit", data)
        for key, (backend, option) in _MOVED.items():
            # backends' settings once sat at the top level: read them where they are now
            if key in core:
                backends.setdefault(backend, {}).setdefault(option, core.pop(key))
        values.update(core)
        sources.update(dict.fromkeys(core, str(path)))
    known = {f.name: f for f in fields(Settings) if f.name not in _NOT_SETTINGS}
    unknown = set(values) - set(known) - {"hostkit"}
    if unknown:
        raise UsageError(f"unknown settings in {path}: {', '.join(sorted(unknown))}",
                         hint=f"known: {', '.join(known)}; a plugin's settings go in a "
                              "[backends.NAME] table")
    values.pop("hostkit", None)
    for name, f in known.items():
        kind = f.type if not isinstance(f.type, str) else f.type.split(" ")[0]
        key = f"HOSTKIT_{name.upper()}"
        if key in env:
            values[name], sources[name] = env[key], key
        if name in values:
            values[name] = _coerce(name, kind, values[name], sources[name])
    if values.get("cache_dir") is None:
        values["cache_dir"] = default_cache_dir()
    return Settings(**values, sources=sources, backend_tables=backends,
                    environment={k: v for k, v in env.items() if k.startswith("HOSTKIT_")},
                    config_file=path)


#: Top-level keys older config files used for what backends now declare themselves:
#: key -> ([backends.NAME], key there).
_MOVED = {"minio_insecure_hosts": ("minio", "insecure_hosts"),
          "s3_anonymous": ("s3", "anonymous"), "gcs_anonymous": ("gcs", "anonymous"),
          "azure_anonymous": ("azure", "anonymous")}

def check_options(settings: Settings, declared: Mapping[tuple[str, str], Option]) -> None:
    """Check every plugin option at once, not only when its backend is used.

    :raises UsageError: a value that does not parse (naming the variable or
        key), or a key in a ``[backends.NAME]`` table that backend does not
        declare (a typo would otherwise be ignored). Tables of backends that are
        not installed are left alone.
    """
    for option in declared.values():
        settings.option(option)
    backends = {backend for backend, _ in declared}
    for backend, table in settings.backend_tables.items():
        if backend not in backends:
            continue
        unknown = sorted(set(table) - {key for b, key in declared if b == backend})
        if unknown:
            known = sorted(key for b, key in declared if b == backend)
            raise UsageError(f"{settings.config_file}: unknown settings in [backends.{backend}]: "
                             f"{', '.join(unknown)}",
                             hint=f"known: {', '.join(known)}; `hostkit config` lists them")


#: Fields of :class:`Settings` that are bookkeeping, not settings.
_NOT_SETTINGS = frozenset({"sources", "backend_tables", "environment", "config_file",
                           "option_flags"})


def core_settings(settings: Settings) -> list[tuple[str, Any, str]]:
    """``(name, value, source)`` of every core setting (for ``hostkit config``)."""
    return [(f.name, getattr(settings, f.name), settings.sources.get(f.name, "default"))
            for f in fields(Settings) if f.name not in _NOT_SETTINGS]
