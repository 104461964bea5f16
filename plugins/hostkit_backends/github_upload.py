"""``hostkit upload FILE github:OWNER/REPO/PATH [--branch BRANCH]``: one commit per file.

Through the contents API: the branch's head commit (``GET .../commits/heads/BRANCH``),
the file there (``GET .../contents/PATH?ref=COMMIT``: its git blob sha), then
``PUT .../contents/PATH`` with the file base64-encoded (streamed, not held in
memory) and, when replacing, the old blob sha (GitHub refuses a PUT whose sha
is not the file's current one: nothing is overwritten unseen). The answer's
commit pins the result: ``{raw_url}/OWNER/REPO/COMMIT/PATH``.

Identical bytes already there (the same git blob sha1, ``sha1(b"blob N\\0" +
data)``) are a no-op pinned at the commit that holds them. Files over GitHub's
100 MiB limit are refused before anything is sent. A token is required.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import logging
import re
from pathlib import Path
from urllib.parse import quote

from hostkit.errors import (
    AlreadyExists,
    BackendError,
    CredentialsNeeded,
    HostkitError,
    NotAFile,
    SourceChanged,
    UsageError,
)
from hostkit.remote import Uploader, UploadResult, upload_source_size

from .github_api import GitHub, is_name, is_ref, quote_path

log = logging.getLogger("hostkit.github")

#: GitHub refuses files over 100 MiB in a repository (Git LFS aside).
MAX_FILE = 100 << 20
#: Bytes read (and base64-encoded) at a time: a multiple of 3, so the pieces join up.
_PIECE = 3 << 20
_FORM = "github:owner/repo/path/to/file --branch BRANCH (or github:owner/repo@BRANCH/path)"


def parse_destination(ref) -> tuple[str, str, str | None, str]:
    """``github:OWNER/REPO[@BRANCH]/PATH`` -> (owner, repo, branch or None, path).

    A PATH that is empty or ends in ``/`` is a folder: the file's name (or, with
    ``--content-addressed``, its sha256) is added.
    """
    match = re.match(r"^([^/@?#]+)/([^/@?#]+)(?:@([^/?#]+))?/([^?#]*)$", ref.rest, re.S)
    if not match or not (is_name(match.group(1)) and is_name(match.group(2))) \
            or (match.group(3) is not None and not is_ref(match.group(3))):
        raise UsageError(f"{ref.display!r} is not a github: upload destination",
                         hint=f"write {_FORM}", identifier=ref.display)
    owner, repo, branch, path = match.groups()
    if any(s in (".", "..") for s in path.split("/")) or "//" in path \
            or path.startswith("/") or re.search(r"\\|%2f|%5c", path, re.I):
        raise UsageError(f"{ref.display!r}: the path must name a file inside the repository",
                         hint=f"write {_FORM}", identifier=ref.display)
    if branch is not None and re.fullmatch(r"[0-9a-f]{40}", branch):
        raise UsageError(f"{ref.display!r} names a commit: an upload commits to a branch",
                         hint=f"write {_FORM}", identifier=ref.display)
    return owner, repo, branch, path


def _digests(source: Path, size: int) -> dict[str, str]:
    """sha256 and the git blob sha1 of ``source`` in one pass (blocking: a worker thread)."""
    sha256, blob = hashlib.sha256(), hashlib.sha1(b"blob %d\0" % size)
    read = 0
    with open(source, "rb") as f:
        while chunk := f.read(1 << 20):
            sha256.update(chunk)
            blob.update(chunk)
            read += len(chunk)
    if read != size:
        raise SourceChanged(f"{source} changed while it was being read",
                            hint="upload it again once nothing writes to it")
    return {"sha256": sha256.hexdigest(), "git": blob.hexdigest()}


class GitHubUploader(Uploader):
    """Commits a local file to a branch of a repository."""

    def __init__(self, owner: str, repo: str, branch: str | None, path: str, gh: GitHub,
                 display: str):
        if branch is not None and not is_ref(branch):
            raise UsageError(f"--branch {branch!r} is not a branch name", hint="name an "
                             "existing branch (`git branch -r` lists them)", identifier=display)
        self.owner, self.repo, self.branch, self.path = owner, repo, branch, path
        self.gh = gh
        self.display = display

    def raw_url(self, commit: str, path: str) -> str:
        """The pinned raw URL of ``path`` at ``commit``."""
        return f"{self.gh.config.raw}/{self.owner}/{self.repo}/{commit}/{path}"

    async def upload(self, source: Path, *, overwrite: bool = False,
                     content_addressed: bool = False, progress=None) -> UploadResult:
        """Commit ``source``; return its pinned raw URL and sha256 (created=False: the
        same bytes were there already, nothing committed)."""
        source = Path(source)
        size = upload_source_size(source)
        if size > MAX_FILE:
            raise UsageError(
                f"{source} is {size} bytes: over GitHub's limit of 100 MiB ({MAX_FILE} bytes) "
                "for a file in a repository",
                hint="upload it to a backend made for large files (s3://, gs://, az://, "
                     "synapse:) and publish that identifier, or commit it with Git LFS",
                identifier=self.display)
        config = self.gh.config
        if config.token is None:
            raise CredentialsNeeded(
                f"uploading to {self.display} needs a GitHub token",
                hint="set GH_TOKEN or GITHUB_TOKEN to a token that may write the repository "
                     "(`gh auth token` prints yours; a fine-grained token needs Contents: "
                     "read and write)", identifier=self.display)
        digests = await asyncio.to_thread(_digests, source, size)
        path = self.path
        if content_addressed:
            path = (path if not path or path.endswith("/") else path + "/") + digests["sha256"]
        elif not path or path.endswith("/"):
            path = path + quote(source.name)
        shown = f"github:{self.owner}/{self.repo}/{path}"
        branch = self.branch or await self.gh.default_branch(self.owner, self.repo, shown)
        head = await self.gh.commit_for(self.owner, self.repo, f"heads/{branch}", shown)
        existing = await self._existing(path, head, shown)
        if existing == digests["git"]:
            log.info("%s already holds these bytes at %s; nothing committed", shown, head)
            url = self.raw_url(head, path)
            return UploadResult(url, digests["sha256"], size, created=False, url=url)
        if existing is not None and not overwrite:
            raise AlreadyExists(
                f"{shown} already exists on branch {branch!r} and holds different bytes",
                hint="pass --overwrite to commit the new version (the old one stays at its "
                     "commits), upload under another path, or use --content-addressed",
                identifier=shown)
        if progress is not None:
            progress.start(shown, size, 0)
        try:
            commit = await self._put(source, size, path, branch, existing, digests, shown,
                                     progress)
        finally:
            if progress is not None:
                progress.close()
        url = self.raw_url(commit, path)
        return UploadResult(url, digests["sha256"], size, created=True, url=url)

    async def _existing(self, path: str, commit: str, shown: str) -> str | None:
        """The git blob sha of ``path`` at ``commit``; None when there is no such file."""
        url = self.gh.repo_url(self.owner, self.repo,
                               f"/contents/{quote_path(path)}?ref={commit}")
        answer = await self.gh.call("GET", url, display=shown)
        if answer.status == 404:
            return None
        if answer.status != 200:
            raise self.gh.refused(answer, shown)
        data = answer.json(shown)
        if not isinstance(data, dict) or data.get("type") != "file":
            kind = "folder" if isinstance(data, list) else str((data or {}).get("type"))
            raise NotAFile(f"{shown} is a {kind} in the repository, not a file",
                           hint="name a file path, or end the path with / to upload into "
                                "that folder", identifier=shown)
        sha = data.get("sha")
        return sha if isinstance(sha, str) else None

    async def _put(self, source: Path, size: int, path: str, branch: str,
                   existing: str | None, digests: dict[str, str], shown: str,
                   progress) -> str:
        """``PUT .../contents/PATH``; returns the new commit."""
        fields = {"message": f"Upload {path} (sha256:{digests['sha256']}) with hostkit",
                  "branch": branch, **({"sha": existing} if existing else {})}
        prefix = json.dumps(fields)[:-1].encode() + b', "content": "'
        suffix = b'"}'
        length = len(prefix) + 4 * -(-size // 3) + len(suffix)

        async def body():
            yield prefix
            sent = 0
            with open(source, "rb") as f:
                while piece := await asyncio.to_thread(f.read, _PIECE):
                    sent += len(piece)
                    if sent > size:
                        break
                    yield base64.b64encode(piece)
                    if progress is not None:
                        progress.advance(len(piece))
            if sent != size:
                raise SourceChanged(f"{source} changed while it was being uploaded",
                                    hint="upload it again once nothing writes to it")
            yield suffix

        url = self.gh.repo_url(self.owner, self.repo, f"/contents/{quote_path(path)}")
        try:
            answer = await self.gh.call("PUT", url, display=shown, body=body(), retry=False,
                                        length=length)
        except HostkitError:
            if source.stat().st_size != size:
                raise SourceChanged(f"{source} changed while it was being uploaded",
                                    hint="upload it again once nothing writes to it") from None
            raise
        if answer.status == 404:
            raise self.gh.no_repo(self.owner, self.repo, shown, "write to")
        if answer.status == 409:
            raise BackendError(f"{shown}: branch {branch!r} moved while uploading ("
                               f"{answer.message() or 'conflict'})",
                               hint="run the upload again", identifier=shown)
        if answer.status not in (200, 201):
            if answer.status in (401, 403):
                raise self.gh.refused(answer, shown, "write to")
            raise BackendError(f"{shown}: GitHub refused the commit ({answer.status}: "
                               f"{answer.message() or 'no reason given'})",
                               hint="check the branch (protected branches refuse direct "
                                    "commits) and the path", identifier=shown)
        data = answer.json(shown)
        content = data.get("content") if isinstance(data, dict) else None
        commit = (data.get("commit") or {}).get("sha") if isinstance(data, dict) else None
        if not isinstance(commit, str) or not re.fullmatch(r"[0-9a-f]{40}", commit):
            raise BackendError(f"{shown}: GitHub's answer names no commit",
                               hint="check the api_url setting", identifier=shown)
        stored = content.get("sha") if isinstance(content, dict) else None
        if stored != digests["git"]:
            raise SourceChanged(f"{source} changed while it was being uploaded (GitHub holds "
                                f"blob {stored}, hashed {digests['git']})",
                                hint="upload it again once nothing writes to it")
        log.info("%s committed to %s as %s", shown, branch, commit)
        return commit
