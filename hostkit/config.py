"""Settings: defaults, then the TOML config file, then ``HOSTKIT_*`` env, then flags."""

from __future__ import annotations

import os
from dataclasses import dataclass, fields, replace
from pathlib import Path

from .errors import UsageError

_TRUE = {"1", "true", "yes", "on"}


@dataclass(frozen=True)
class Settings:
    """Everything tunable. Env names are ``HOSTKIT_<FIELD>`` upper-cased."""

    cache_dir: Path = None  # type: ignore[assignment]  # filled by load_settings
    offline: bool = False
    require_hash: bool = False
    daemon_url: str | None = None
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
    #: CPU), the same memory (parts waiting for their turn hold at most 56 MiB).
    part_size: int = 16 << 20
    concurrency: int = 4
    #: ``minio://`` hosts (``host`` or ``host:port``, comma-separated) spoken to over plain http.
    minio_insecure_hosts: str | None = None
    #: Send unsigned requests (public buckets) instead of looking for credentials.
    s3_anonymous: bool = False
    gcs_anonymous: bool = False
    azure_anonymous: bool = False

    def with_overrides(self, **values) -> Settings:
        """A copy with the non-None ``values`` applied."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})


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
    try:
        if kind in (bool, "bool"):
            return value if isinstance(value, bool) else str(value).strip().lower() in _TRUE
        if kind in (int, "int"):
            return int(value)
        if kind in (float, "float"):
            return float(value)
        if kind in (Path, "Path"):
            return Path(os.path.expanduser(str(value)))
        return str(value) if value not in ("", None) else None
    except (TypeError, ValueError):
        raise UsageError(f"{source}: {name} = {value!r} is not a valid {kind}",
                         hint=f"fix {name} in {source}") from None


def load_settings(env=None) -> Settings:
    """Build settings from defaults, the config file and the environment."""
    env = os.environ if env is None else env
    values: dict = {}
    path = config_path()
    if path.is_file():
        import tomllib

        try:
            data = tomllib.loads(path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UsageError(f"cannot read config {path}: {exc}",
                             hint="fix or remove the file") from None
        values.update(data.get("hostkit", data))
    for f in fields(Settings):
        kind = f.type if not isinstance(f.type, str) else f.type.split(" ")[0]
        key = f"HOSTKIT_{f.name.upper()}"
        if key in env:
            values[f.name] = env[key]
        if f.name in values:
            values[f.name] = _coerce(f.name, kind, values[f.name],
                                     key if key in env else str(path))
    unknown = set(values) - {f.name for f in fields(Settings)}
    if unknown:
        raise UsageError(f"unknown settings in {path}: {', '.join(sorted(unknown))}",
                         hint=f"known: {', '.join(f.name for f in fields(Settings))}")
    values.setdefault("cache_dir", default_cache_dir())
    return Settings(**values)
