"""A read-only copy of a stored file elsewhere: a hard link, else a reflink, else a copy.

For a snapshot folder's files (:mod:`.snapshots`) and for a blob placed at a path
the caller chose (:mod:`hostkit.place`). No bytes move when the target is on the
cache's file system; a copy (another file system, too many links to one blob, no
links at all) is fsynced before it is used. :func:`sync_folder` makes a folder's
entries durable before the folder is renamed into place.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

#: The mode of every stored or linked file: read-only to its owner, like a blob.
READ_ONLY = 0o400

#: ``ioctl(dst, FICLONE, src)``: share src's extents (Linux, btrfs/XFS/bcachefs/...).
FICLONE = 0x40049409

_CHUNK = 1 << 20


def link_or_copy(source: Path, target: Path) -> None:
    """A hard link to ``source`` at ``target`` (which must not exist), else a reflink or a
    fsynced copy (another file system, too many links, no links at all), mode 0400."""
    try:
        os.link(source, target)
    except OSError as exc:
        if exc.errno not in (errno.EXDEV, errno.EPERM, errno.EACCES, errno.EMLINK,
                             errno.ENOTSUP, errno.EOPNOTSUPP):
            raise
        _copy(source, target)


def _copy(source: Path, temp: Path) -> None:
    """Reflink ``source`` to ``temp`` if the file system can, else copy it; fsync; read-only."""
    fd_in = os.open(source, os.O_RDONLY)
    try:
        fd_out = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, READ_ONLY)
        try:
            if not _reflink(fd_in, fd_out):
                _copy_bytes(fd_in, fd_out)
            os.fsync(fd_out)
        finally:
            os.close(fd_out)
    finally:
        os.close(fd_in)


def _reflink(fd_in: int, fd_out: int) -> bool:
    try:
        import fcntl

        fcntl.ioctl(fd_out, FICLONE, fd_in)
        return True
    except (ImportError, OSError):  # not Linux, another file system, not supported
        return False


def _copy_bytes(fd_in: int, fd_out: int) -> None:
    size = os.fstat(fd_in).st_size
    done = 0
    try:  # in the kernel where it can (Linux): no bytes through Python
        while done < size:
            n = os.copy_file_range(fd_in, fd_out, size - done)
            if n == 0:
                break
            done += n
    except (AttributeError, OSError) as exc:
        if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT, errno.EIO):
            raise
    if done >= size:
        return
    os.lseek(fd_in, done, os.SEEK_SET)
    os.lseek(fd_out, done, os.SEEK_SET)
    while chunk := os.read(fd_in, _CHUNK):
        view = memoryview(chunk)
        while view:
            view = view[os.write(fd_out, view):]


def sync_folder(folder: Path) -> None:
    """fsync ``folder`` itself: its entries (links, subfolders) survive a power loss.

    Best effort: a file system that cannot sync a folder (some network ones) is no
    reason to fail a placement whose files are already durable.
    """
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
