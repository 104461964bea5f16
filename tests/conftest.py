"""Shared fixtures: an isolated cache and config per test, a fault-injecting origin."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

# gcsfs reads this once, at import: without it every open() against the emulator
# waits about a minute on a gRPC storage-layout call (see ../shared/notes/test-servers.md)
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

from tests.origin import OriginServer  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def isolated_env(tmp_path, monkeypatch):
    """Every test gets its own cache dir and config; no HOSTKIT_* leaks in from the shell."""
    for key in list(os.environ):
        if key.startswith("HOSTKIT_"):
            monkeypatch.delenv(key)
    monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("HOSTKIT_CONFIG", str(tmp_path / "config.toml"))
    monkeypatch.setenv("HOSTKIT_BACKOFF", "0.01")
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "xdg-config"))
    # the daemon's default socket and token files then live in the test's own cache dir
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    return tmp_path


@pytest.fixture(scope="session")
def origin_server():
    server = OriginServer()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def origin(origin_server):
    """The test origin, with an empty request log for this test."""
    origin_server.origin.hits.clear()
    return origin_server.origin


@pytest.fixture
def settings(isolated_env):
    """Settings read from the isolated environment."""
    from hostkit.settings import load_settings

    return load_settings()


@pytest.fixture
def resolver(settings):
    """A fresh in-process Resolver on the test's cache."""
    from hostkit.resolver import Resolver

    return Resolver(settings)


def run_cli(*args, env=None, timeout=120, check=False) -> subprocess.CompletedProcess:
    """Run ``hostkit ARGS`` in a subprocess with the test's environment."""
    # stdin is no terminal, as in CI: `cache rm` and `prune` would ask on one
    proc = subprocess.run([sys.executable, "-m", "hostkit.cli", *map(str, args)],
                          stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})
    if check and proc.returncode != 0:
        raise AssertionError(f"hostkit {args} failed ({proc.returncode}):\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def gated():
    """An origin that holds, refuses or serves files on the test's command (daemon tests)."""
    from tests.daemon_fixtures import GatedOrigin

    origin = GatedOrigin().start()
    yield origin
    origin.stop()


@pytest.fixture
def daemon(tmp_path):
    """A daemon on the test's own cache, served from a thread of this process."""
    from tests.daemon_fixtures import DaemonThread

    d = DaemonThread(tmp_path / "dcache").start()
    yield d
    d.stop()
