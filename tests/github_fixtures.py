"""The GitHub stand-in (tests/standins/github.py) as fixtures, for every test module using it.

Import them as the modules using SeaweedFS do (``github_server, gh = ghfx.github_server,
ghfx.gh``): pytest finds a fixture by the module attribute that holds it.
"""

from __future__ import annotations

import pytest

from tests.standins.github import GitHubServer, GitHubStandin


@pytest.fixture(scope="module")
def github_server():
    """The stand-in (API, raw, LFS and a CDN host), one per test module."""
    server = GitHubServer()
    standin = server.start()
    yield standin
    server.stop()


@pytest.fixture
def gh(github_server, monkeypatch) -> GitHubStandin:
    """The stand-in, emptied, with the backend's hosts pointed at it and no token set
    (request it before ``resolver``: the settings are read when that is made)."""
    github_server.reset()
    for name in ("GH_TOKEN", "GITHUB_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HOSTKIT_GITHUB_API_URL", github_server.api_url)
    monkeypatch.setenv("HOSTKIT_GITHUB_RAW_URL", github_server.raw_url)
    monkeypatch.setenv("HOSTKIT_GITHUB_LFS_URL", github_server.lfs_url)
    return github_server
