"""github-pinned backend: GitHub files addressed through a commit, never a branch.

Accepts ``https://raw.githubusercontent.com/OWNER/REPO/COMMIT/PATH`` and the
shorthand ``github:OWNER/REPO@COMMIT/PATH``. A 40-hex commit makes the
reference immutable, so a cached copy is served with no network call. A
branch or tag can move under the same name: refused, with the way to find the
commit. The ``raw_url`` setting (``HOSTKIT_GITHUB_RAW_URL``, or ``[backends.github]``)
points at another raw host (GitHub Enterprise, a mirror).
"""

from __future__ import annotations

import re

from hostkit.errors import NotPermanent, UsageError
from hostkit.hookspecs import hookimpl
from hostkit.remote import BackendInfo
from hostkit.settings import Option

from .http import HttpRemote

RAW_HOST = "https://raw.githubusercontent.com"
_COMMIT = re.compile(r"^[0-9a-f]{40}$")
_SHORTHAND = re.compile(r"^([\w.-]+)/([\w.-]+)@([^/]+)/(.+)$")


@hookimpl
def hostkit_backends():
    """The github-pinned backend."""
    return [BackendInfo(
        name="github", schemes=("github", "https"),
        summary="GitHub files pinned to a 40-hex commit (immutable); branches are refused",
        examples=("github:owner/repo@<commit>/path",
                  "https://raw.githubusercontent.com/owner/repo/<commit>/path"))]


@hookimpl
def hostkit_settings():
    """``raw_url``: the raw host (``HOSTKIT_GITHUB_RAW_URL``)."""
    return [Option("github", "raw_url", "str", RAW_HOST,
                   "where raw files are served (GitHub Enterprise, a mirror)")]


def _raw_base(context) -> str:
    return (context.option("github", "raw_url") or RAW_HOST).rstrip("/")


@hookimpl
def hostkit_resolve(ref, context):
    """Claim ``github:`` identifiers and raw.githubusercontent.com URLs."""
    base = _raw_base(context)
    if ref.scheme == "github":
        match = _SHORTHAND.match(ref.rest)
        if not match:
            raise UsageError(f"{ref.display!r} is not a github: identifier",
                             hint="write github:owner/repo@<40-hex commit>/path/to/file")
        owner, repo, gitref, path = match.groups()
    elif ref.identifier.startswith(base + "/") or ref.identifier.startswith(RAW_HOST + "/"):
        prefix = base if ref.identifier.startswith(base + "/") else RAW_HOST
        parts = ref.identifier[len(prefix) + 1:].split("/", 3)
        if len(parts) < 4:
            raise UsageError(f"{ref.display!r} does not name a file in a repository",
                             hint=f"{RAW_HOST}/owner/repo/<commit>/path")
        owner, repo, gitref, path = parts
    else:
        return None
    path, query = re.match(r"^([^?#]*)(.*)$", path, re.S).groups()
    if not _COMMIT.match(gitref):
        raise NotPermanent(
            f"{owner}/{repo}: {gitref!r} is a branch or tag, which can change later",
            hint=f"pin a commit: `git ls-remote https://github.com/{owner}/{repo} {gitref}` "
                 f"prints it; then use github:{owner}/{repo}@<commit>/{path}",
            identifier=ref.display)
    if any(s in ("", ".", "..") for s in (owner, repo, *path.split("/"))) \
            or re.search(r"\\|%2f|%5c", path, re.I):
        # the parser refused '.' and '..'; an empty segment (or a leading '/') is resolved
        # differently by raw hosts and could name another file than the pinned path
        raise UsageError(f"{ref.display!r}: the path must name a file inside the repository",
                         hint="write github:owner/repo@<40-hex commit>/path/to/file "
                              "(no empty, '.' or '..' segments, no encoded or back slashes)")
    # the query (a private repository's ?token=) is sent, and kept out of key and display
    remote = HttpRemote(f"{base}/{owner}/{repo}/{gitref}/{path}{query}", context,
                        anonymous=not ref.credentialed)
    remote.immutable = True
    return remote
