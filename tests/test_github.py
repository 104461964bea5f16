"""github-pinned: commits are immutable (no network once cached), branches are refused."""

from __future__ import annotations

import pytest

from hostkit import errors
from tests.test_resolve import data, resolve

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def raw_host(origin, monkeypatch):
    """The test origin stands in for raw.githubusercontent.com (set before the resolver
    fixture reads the settings: request it first)."""
    monkeypatch.setenv("HOSTKIT_GITHUB_RAW_URL", f"{origin.url}/f")
    return f"{origin.url}/f"


def test_pinned_commit_is_immutable_and_never_revalidated(raw_host, resolver, origin):
    sha = origin.add(f"o/r/{COMMIT}/mlcube.yaml", data(700, 70))
    ident = f"github:o/r@{COMMIT}/mlcube.yaml"
    remote = resolver.remote_for(ident)
    assert remote.immutable and remote.url == f"{raw_host}/o/r/{COMMIT}/mlcube.yaml"
    first = resolve(resolver, ident)
    assert first.sha256 == sha and not first.cached
    before = len(origin.hits)
    again = resolve(resolver, ident)  # no hash given, yet no HEAD: the commit pins it
    assert again.cached and len(origin.hits) == before


@pytest.mark.parametrize("ident", [
    "github:o/r@main/mlcube.yaml",
    "https://raw.githubusercontent.com/o/r/v1.0/mlcube.yaml",
])
def test_branches_and_tags_are_refused(resolver, ident):
    with pytest.raises(errors.NotPermanent) as info:
        resolve(resolver, ident)
    assert "git ls-remote https://github.com/o/r" in str(info.value)


def test_malformed_shorthand(resolver):
    with pytest.raises(errors.UsageError):
        resolve(resolver, "github:just-a-name")
