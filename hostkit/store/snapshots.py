"""Folders (trees): their manifests, the path rules for listed names, and snapshot folders.

A tree is a set of files, each named by a relative path. Its **manifest** is
one line per file, sorted by path, in UTF-8::

    <sha256 hex of the file> <size in bytes> <relative path>\\n

Paths use ``/`` between folders, never start with ``/``, and hold no empty,
``.`` or ``..`` segment, no backslash and no control character (so a line
ends at its ``\\n``, and the path is everything after the second space).
Sorting is by code point, which for UTF-8 is byte order (``LC_ALL=C sort``).
There is no header and nothing else. **The sha256 of the manifest is the
tree's digest**: pin a tree with it, exactly like a file. Anyone can recompute
it from a folder, e.g.::

    cd DIR && find . -type f -printf '%P\\n' | LC_ALL=C sort | while IFS= read -r p; do
      printf '%s %s %s\\n' "$(sha256sum < "$p" | cut -c1-64)" "$(stat -c %s "$p")" "$p"
    done | sha256sum

or in Python: ``hostkit.store.snapshots.manifest_bytes`` over ``(path, size, sha256)``.

A **snapshot** is ``snapshots/<digest>/``: the tree's files at their paths,
each a hard link to its blob (a copy where a link is impossible), read-only,
with the manifest beside it as ``snapshots/<digest>.manifest``. It is built
under ``tmp/`` and renamed into place, so a snapshot is complete or absent.

Listings come from servers and are hostile until checked:
:class:`ListingCheck` refuses what could escape the folder or name two files
as one (the rules of :mod:`hostkit.store.trees`' safe extraction, stricter:
empty and ``.`` segments are refused, not dropped), names that collide after
Unicode normalisation (NFC: ``é`` composed and decomposed are one name on
some file systems), and a name that is both a file and a folder.
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import stat
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from ..errors import CacheError, UsageError, register
from .files import link_or_copy, sync_folder
from .layout import Layout, pid_alive

#: Longest path and path segment (bytes of UTF-8) a listing may name: Linux's limits.
MAX_PATH_BYTES = 4095
MAX_NAME_BYTES = 255


@register
class UnsafeTree(UsageError):
    """A folder's listing names a file hostkit will not create, or is too large."""

    kind = "unsafe_tree"
    exit_code = 2
    http_status = 422


def unsafe(tree: str, message: str) -> UnsafeTree:
    """The error for a listing of ``tree`` refused because of ``message``."""
    return UnsafeTree(f"unsafe listing of {tree}: {message}; nothing was placed",
                      hint="ask the publisher to rename or remove it; hostkit does not "
                           "resolve folders whose names could escape or clash",
                      identifier=tree)


@dataclass(frozen=True)
class TreeFile:
    """One line of a manifest."""

    path: str
    size: int
    sha256: str


def check_path(tree: str, raw: object) -> str:
    """``raw`` as a manifest path, or :class:`UnsafeTree` naming what is wrong with it."""
    if not isinstance(raw, str) or not raw:
        raise unsafe(tree, f"an empty or missing name ({raw!r})")
    shown = repr(raw[:200])
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        raise unsafe(tree, f"the name {shown} holds a control character")
    if "\\" in raw:
        raise unsafe(tree, f"the name {shown} holds a backslash")
    if raw.startswith("/"):
        raise unsafe(tree, f"the name {shown} is an absolute path")
    try:
        size = len(raw.encode("utf-8"))
    except UnicodeEncodeError:
        raise unsafe(tree, f"the name {shown} is not valid Unicode") from None
    if size > MAX_PATH_BYTES:
        raise unsafe(tree, f"the name {shown}... is longer than {MAX_PATH_BYTES} bytes")
    for segment in raw.split("/"):
        if segment == "..":
            raise unsafe(tree, f"the name {shown} climbs out with '..'")
        if segment in ("", "."):
            raise unsafe(tree, f"the name {shown} has an empty or '.' segment")
        if len(segment.encode("utf-8")) > MAX_NAME_BYTES:
            raise unsafe(tree, f"the name {shown} has a segment longer than {MAX_NAME_BYTES} "
                               "bytes")
    return raw


class ListingCheck:
    """Checks a listing's names one by one, then as a whole (:meth:`finish`).

    Refuses a name twice, two names equal after NFC normalisation, and a name
    that is a file and also a folder of other names.
    """

    def __init__(self, tree: str):
        self.tree = tree
        self._seen: dict[str, str] = {}  # NFC form -> the name as listed

    def add(self, raw: object) -> str:
        """Check one listed name; return it."""
        path = check_path(self.tree, raw)
        norm = unicodedata.normalize("NFC", path)
        other = self._seen.get(norm)
        if other is not None:
            if other == path:
                raise unsafe(self.tree, f"{path!r} is listed twice")
            raise unsafe(self.tree, f"{other!r} and {path!r} are one name after Unicode "
                                    "normalisation")
        self._seen[norm] = path
        return path

    def finish(self) -> None:
        """Refuse a name that is both a file and the folder of another name."""
        folders: set[str] = set()
        for norm in self._seen:
            parts = norm.split("/")
            folders.update("/".join(parts[:n]) for n in range(1, len(parts)))
        for norm, path in self._seen.items():
            if norm in folders:
                raise unsafe(self.tree, f"{path!r} is a file and also a folder of other files")


def manifest_bytes(files: Iterable[TreeFile]) -> bytes:
    """The canonical manifest of ``files`` (see the module's docstring)."""
    lines = sorted(files, key=lambda f: f.path)
    return "".join(f"{f.sha256} {f.size} {f.path}\n" for f in lines).encode("utf-8")


def parse_manifest(data: bytes) -> list[TreeFile]:
    """The files of a manifest (ValueError when it is not one in canonical form)."""
    files = []
    text = data.decode("utf-8")
    if text and not text.endswith("\n"):
        raise ValueError("a manifest ends with a newline")
    for line in text.splitlines():
        sha, size, path = line.split(" ", 2)
        if len(sha) != 64 or any(c not in "0123456789abcdef" for c in sha) \
                or not size.isdigit():
            raise ValueError(f"not a manifest line: {line[:100]!r}")
        files.append(TreeFile(check_path("the manifest", path), int(size), sha))
    if manifest_bytes(files) != data:
        raise ValueError("not in canonical form (sorted, one line per file)")
    return files


# -- snapshots -----------------------------------------------------------------------


def snapshot_ready(layout: Layout, sha256: str) -> Path | None:
    """The snapshot of manifest ``sha256`` when it is complete (it exists), else None."""
    path = layout.snapshot_path(sha256)
    return path if path.is_dir() and layout.snapshot_manifest(sha256).is_file() else None


def build_snapshot(layout: Layout, sha256: str, files: list[TreeFile], blob_path,
                   manifest_blob: Path) -> Path:
    """Build ``snapshots/<sha256>/`` from blobs, atomically; return it.

    ``blob_path(sha)`` names each file's blob. Each file is a hard link to its
    blob (a copy when the file system refuses a link, e.g. too many links to one
    inode), folders are made read-only, the manifest is linked beside it. Built
    under ``tmp/`` and renamed in: another process building the same snapshot
    meanwhile wins, and its (identical) snapshot is used.
    """
    final = layout.snapshot_path(sha256)
    if snapshot_ready(layout, sha256):
        return final
    try:
        layout.snapshot_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CacheError(f"cannot create {layout.snapshot_dir}: {exc.strerror}") from None
    remove_stale(layout)
    tmp = layout.new_snapshot_tmp(sha256)
    try:
        tmp.mkdir(mode=0o700)
        folders = {tmp}
        for f in files:
            target = tmp.joinpath(*f.path.split("/"))
            if target.parent not in folders:
                target.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                # only the snapshot's own folders: never tmp/, the cache or anything above
                folders.update(p for p in target.parents if tmp in p.parents)
            link_or_copy(blob_path(f.sha256), target)
        manifest = layout.snapshot_manifest(sha256)
        if not manifest.is_file():
            side = tmp.with_suffix(".manifest")
            link_or_copy(manifest_blob, side)
            os.replace(side, manifest)
        for folder in sorted(folders, key=lambda p: len(p.parts), reverse=True):
            sync_folder(folder)  # deepest first: every entry durable before the rename
        for folder in folders - {tmp}:
            os.chmod(folder, 0o500)
        try:
            # (a folder moved to another parent must be writable: its '..' changes)
            os.rename(tmp, final)
        except OSError as exc:
            if exc.errno not in (errno.ENOTEMPTY, errno.EEXIST) or not final.is_dir():
                raise
        else:
            os.chmod(final, 0o500)
            sync_folder(layout.snapshot_dir)
    except OSError as exc:
        raise CacheError(f"cannot build the snapshot {final}: {exc.strerror or exc}",
                         hint="free disk space (or inodes), or point HOSTKIT_CACHE_DIR "
                              "elsewhere") from None
    finally:
        if tmp.exists():
            _remove(tmp)
    return final


def drop_snapshot(layout: Layout, sha256: str) -> None:
    """Delete the snapshot of manifest ``sha256`` and the manifest beside it (if any)."""
    path = layout.snapshot_path(sha256)
    if path.is_dir():
        # renamed away first: a reader never sees a half-deleted snapshot as complete
        doomed = layout.new_snapshot_tmp(sha256)
        with contextlib.suppress(OSError):
            layout.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            os.chmod(path, 0o700)
            os.rename(path, doomed)
            path = doomed
        _remove(path)
    layout.snapshot_manifest(sha256).unlink(missing_ok=True)


def snapshot_names(layout: Layout) -> list[str]:
    """The manifest digests that have a snapshot folder now."""
    if not layout.snapshot_dir.is_dir():
        return []
    return [p.name for p in layout.snapshot_dir.iterdir()
            if p.is_dir() and len(p.name) == 64]


def remove_stale(layout: Layout) -> None:
    """Remove snapshot folders that killed processes left half-built under ``tmp/``."""
    if not layout.tmp_dir.is_dir():
        return
    for leftover in layout.tmp_dir.glob("snap-*.d"):
        owner = Layout.partial_owner(leftover)
        if owner is not None and owner != os.getpid() and not pid_alive(owner):
            _remove(leftover)


def _remove(root: Path) -> None:
    """Delete a folder whose subfolders were made read-only."""
    for here, dirs, _files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(here, name))
                if stat.S_ISDIR(st.st_mode):
                    os.chmod(os.path.join(here, name), 0o700)
    with contextlib.suppress(OSError):
        os.chmod(root, 0o700)
    shutil.rmtree(root, ignore_errors=True)
