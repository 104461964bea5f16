"""Safe extraction of tar archives, and the cache of extracted trees (``trees/<sha256>/``).

An archive from the network is hostile until proven otherwise. :func:`safe_extract`
follows the semantics of Python's ``tarfile`` *data* filter (PEP 706) on every
Python hostkit supports, and is stricter where hostkit's callers need it:

- absolute member names and any ``..`` component are refused (the data filter
  strips a leading ``/``; hostkit refuses it);
- symbolic links must be relative and stay inside the target; hard links are
  refused outright; devices, FIFOs and other special files are refused;
- modes lose setuid/setgid/sticky and group/other write bits; owners are not kept;
- more than ``max_members`` members or ``max_bytes`` of content is a tar bomb,
  refused before those bytes are written.

Where the running Python has ``tarfile.data_filter`` (3.11.4+) every member also
goes through it, so hostkit never accepts what the standard filter refuses.

:func:`cached_tree` extracts an archive once into ``tmp/`` and renames the whole
tree into ``trees/<sha256>/``: a tree is either complete or absent.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tarfile
from pathlib import Path, PurePosixPath

from ..errors import CacheError, UsageError, register
from .layout import Layout

#: Default caps: beyond either, an archive is a tar bomb.
MAX_MEMBERS = 100_000
MAX_BYTES = 64 * 1024**3


@register
class UnsafeArchive(UsageError):
    """An archive holds a member hostkit will not extract (or is too large: a tar bomb)."""

    kind = "unsafe_archive"
    exit_code = 2
    http_status = 422


def _refuse(archive: str, message: str) -> UnsafeArchive:
    return UnsafeArchive(f"unsafe archive {archive}: {message}; nothing was extracted",
                         hint="ask the publisher for an archive of plain files and folders")


def _member_path(archive: str, name: str) -> PurePosixPath | None:
    """The member's relative path, None for the archive's root (``.``); refuse the unsafe."""
    if name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":"):
        raise _refuse(archive, f"member {name!r} has an absolute path")
    parts = [p for p in name.replace("\\", "/").split("/") if p not in ("", ".")]
    if ".." in parts:
        raise _refuse(archive, f"member {name!r} climbs out with '..'")
    if any("\x00" in p for p in parts):
        raise _refuse(archive, f"member {name!r} has a NUL byte in its name")
    return PurePosixPath(*parts) if parts else None


def _inside(root: Path, candidate: str) -> bool:
    root_real = os.path.realpath(root)
    real = os.path.realpath(candidate)
    return real == root_real or real.startswith(root_real + os.sep)


def _check(archive: str, member: tarfile.TarInfo, dest: Path) -> PurePosixPath | None:
    rel = _member_path(archive, member.name)
    if member.islnk():
        raise _refuse(archive, f"member {member.name!r} is a hard link")
    if not (member.isfile() or member.isdir() or member.issym()):
        what = ("a device" if member.ischr() or member.isblk()
                else "a FIFO" if member.isfifo() else "a special file")
        raise _refuse(archive, f"member {member.name!r} is {what}")
    if rel is None:
        if not member.isdir():
            raise _refuse(archive, f"member {member.name!r} names the archive's root")
        return None
    if member.issym():
        target = member.linkname
        if not target or target.startswith(("/", "\\")):
            raise _refuse(archive, f"symlink {member.name!r} points to an absolute path "
                                   f"{target!r}")
        joined = os.path.join(dest, *rel.parent.parts, target)
        if not _inside(dest, joined):
            raise _refuse(archive, f"symlink {member.name!r} points outside the archive "
                                   f"({target!r})")
    data_filter = getattr(tarfile, "data_filter", None)
    if data_filter is not None:
        try:
            data_filter(member, str(dest))
        except tarfile.FilterError as exc:
            raise _refuse(archive, str(exc)) from None
    return rel


def safe_extract(archive: Path | str, dest: Path | str, *, max_members: int = MAX_MEMBERS,
                 max_bytes: int = MAX_BYTES, label: str | None = None) -> int:
    """Extract the tar archive (any compression) ``archive`` into the empty folder ``dest``.

    Returns the number of members extracted. Raises :class:`UnsafeArchive` for
    a member the rules above refuse, or for an archive over ``max_members``
    members or ``max_bytes`` of content; ``dest`` may then hold part of the
    tree, so callers extract into a temporary folder and remove it on failure.
    """
    dest = Path(dest)
    name = label or str(archive)
    dest.mkdir(parents=True, exist_ok=True)
    count = 0
    total = 0
    try:
        tar = tarfile.open(archive, mode="r:*")  # noqa: SIM115 (closed by the with below)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise _refuse(name, f"not a readable tar archive ({exc})") from None
    with tar:
        try:
            for member in tar:
                count += 1
                if count > max_members:
                    raise _refuse(name, f"more than {max_members} members (a tar bomb?)")
                rel = _check(name, member, dest)
                if member.isfile():
                    total += member.size
                    if total > max_bytes:
                        raise _refuse(name, f"content over {max_bytes} bytes (a tar bomb?)")
                if rel is None:
                    continue
                _write(tar, member, dest, rel, name)
        except (tarfile.TarError, EOFError, OSError) as exc:
            if isinstance(exc, UnsafeArchive):
                raise
            raise _refuse(name, f"corrupt or truncated archive ({exc})") from None
    return count


def _write(tar: tarfile.TarFile, member: tarfile.TarInfo, dest: Path, rel: PurePosixPath,
           archive: str) -> None:
    target = dest.joinpath(*rel.parts)
    parent = target.parent
    parent.mkdir(parents=True, exist_ok=True)
    if not _inside(dest, str(parent)):  # a parent reached through a symlink that leads away
        raise _refuse(archive, f"member {member.name!r} is written through a link")
    if member.isdir():
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            raise _refuse(archive, f"member {member.name!r} replaces another member")
        target.mkdir(exist_ok=True)
        return
    if os.path.lexists(target):
        raise _refuse(archive, f"member {member.name!r} appears twice")
    if member.issym():
        os.symlink(member.linkname, target)
        return
    source = tar.extractfile(member)
    if source is None:
        raise _refuse(archive, f"member {member.name!r} has no content")
    mode = 0o755 if member.mode & 0o111 else 0o644
    fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "wb") as out, source:
        written = 0
        while chunk := source.read(1 << 20):
            written += len(chunk)
            out.write(chunk)
        if written != member.size:
            raise _refuse(archive, f"member {member.name!r} is truncated")
    os.chmod(target, mode)


def _freeze(root: Path) -> None:
    """Make every file of a cached tree read-only (links handed out share its inodes)."""
    for here, _dirs, files in os.walk(root):
        for name in files:
            path = os.path.join(here, name)
            st = os.lstat(path)
            if stat.S_ISREG(st.st_mode):
                os.chmod(path, stat.S_IMODE(st.st_mode) & 0o555)


def cached_tree(layout: Layout, archive: Path, sha256: str, *, max_members: int = MAX_MEMBERS,
                max_bytes: int = MAX_BYTES, label: str | None = None) -> tuple[Path, bool]:
    """The extracted tree of ``archive`` (whose sha256 is ``sha256``), and whether it was cached.

    The first call extracts safely into ``tmp/`` and renames the finished tree to
    ``trees/<sha256>/``; later calls (and other processes) reuse it with no
    re-extraction. A failed extraction leaves nothing behind.
    """
    final = layout.tree_path(sha256)
    if final.is_dir():
        return final, True
    try:
        layout.tmp_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
        layout.tree_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
    except OSError as exc:
        raise CacheError(f"cannot create {layout.tree_dir}: {exc.strerror}") from None
    tmp = layout.new_tree_tmp(sha256)
    try:
        safe_extract(archive, tmp, max_members=max_members, max_bytes=max_bytes, label=label)
        _freeze(tmp)
        try:
            os.rename(tmp, final)
        except OSError:
            if not final.is_dir():  # another process won the race: use its tree
                raise
    except OSError as exc:
        if isinstance(exc, UsageError):
            raise
        raise CacheError(f"cannot extract {label or archive}: {exc}") from None
    finally:
        with contextlib.suppress(OSError):
            if tmp.exists():
                _make_writable(tmp)
                shutil.rmtree(tmp)
    return final, False


def _make_writable(root: Path) -> None:
    for here, dirs, _files in os.walk(root):
        for name in dirs:
            with contextlib.suppress(OSError):
                os.chmod(os.path.join(here, name), 0o700)


def drop_tree(layout: Layout, sha256: str) -> None:
    """Delete the extracted tree of an archive (when its blob leaves the cache)."""
    root = layout.tree_path(sha256)
    if root.is_dir():
        _make_writable(root)
        shutil.rmtree(root, ignore_errors=True)
