"""Blob tiers: where verified blobs are kept, behind one interface.

A tier stores whole blobs named by their sha256. The local directory
(:class:`LocalTier`, ``blobs/sha256/``) is the first tier; a shared tier
(an object store a site's nodes share) implements the same interface, and
the cache asks tiers in order: local first.

Every tier keeps the store's promise: a blob appears only whole and
verified (moved into place atomically), and a blob whose bytes no longer
match its name is never handed out once found.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Protocol

from .layout import Layout


class BlobTier(Protocol):
    """What the cache needs from a place that keeps blobs."""

    def path(self, sha256: str) -> Path:
        """The local file of a blob (it may not exist)."""
        ...

    def has(self, sha256: str, size: int) -> bool:
        """Whether a blob of this size is there."""
        ...

    def put(self, temp: Path, sha256: str) -> Path:
        """Move a fully written, fsynced, verified file in as ``sha256``; return its path."""
        ...

    def remove(self, sha256: str) -> None:
        """Delete a blob (missing is fine)."""
        ...

    def quarantine(self, sha256: str) -> Path | None:
        """Move a rotten blob aside (deleting it if it cannot be kept); None if missing."""
        ...

    def names(self) -> Iterator[str]:
        """The sha256 of every blob file there."""
        ...


class LocalTier:
    """The cache's own ``blobs/sha256/`` directory: files 0400, moved in by rename."""

    def __init__(self, layout: Layout):
        self.layout = layout

    def path(self, sha256: str) -> Path:
        """``blobs/sha256/<hex>``."""
        return self.layout.blob_path(sha256)

    def has(self, sha256: str, size: int) -> bool:
        """The file exists with the size the index records."""
        try:
            return self.path(sha256).stat().st_size == size
        except OSError:
            return False

    def put(self, temp: Path, sha256: str) -> Path:
        """Rename ``temp`` into place (atomic), unless the blob is there already.

        A blob already there (same name, same size) is kept and ``temp`` deleted:
        the hard links to it (snapshot folders, files placed with ``-o``) must stay
        links to the one stored copy, so identical files are stored once. Its bytes
        were verified when it was stored; rot is ``verify``'s to find.

        :raises OSError: the rename or the directory fsync failed.
        """
        final = self.path(sha256)
        with contextlib.suppress(OSError):
            if final.stat().st_size == temp.stat().st_size:
                temp.unlink()
                return final
        os.chmod(temp, 0o400)
        os.replace(temp, final)
        _fsync_dir(final.parent)
        return final

    def put_many(self, files: list[tuple[Path, str]]) -> list[Path]:
        """:meth:`put` for many ``(temp, sha256)``, with one directory fsync for all of them.

        :raises OSError: a rename or the directory fsync failed (files moved before it
            stay moved: the caller indexes or removes them).
        """
        finals = []
        for temp, sha256 in files:
            final = self.path(sha256)
            finals.append(final)
            os.chmod(temp, 0o400)
            # a link never replaces: another process storing the same bytes at the same
            # moment keeps its copy, and the snapshots linking it stay links to the one blob
            try:
                os.link(temp, final)
            except FileExistsError:
                with contextlib.suppress(OSError):
                    if final.stat().st_size == temp.stat().st_size:
                        temp.unlink()
                        continue
                os.replace(temp, final)  # a leftover of another size: replaced
                continue
            except OSError:  # a file system without hard links
                os.replace(temp, final)
                continue
            temp.unlink()
        if finals:
            _fsync_dir(self.layout.blob_dir)
        return finals

    def remove(self, sha256: str) -> None:
        """Delete the file."""
        self.path(sha256).unlink(missing_ok=True)

    def quarantine(self, sha256: str) -> Path | None:
        """Move the file to ``quarantine/``; delete it if that fails.

        :raises OSError: it can be neither moved nor deleted (a read-only cache).
        """
        path = self.path(sha256)
        if not path.exists():
            return None
        return self.quarantine_file(path, sha256)

    def quarantine_file(self, path: Path, sha256: str) -> Path | None:
        """Move ``path``, bytes that claimed to be ``sha256`` (a blob, or a download that
        failed its check), to ``quarantine/``; delete it if that fails.

        :raises OSError: it can be neither moved nor deleted (a read-only cache).
        """
        target = self.layout.quarantine_path(sha256, time.time())
        try:
            self.layout.quarantine_dir.mkdir(mode=0o700, exist_ok=True)
            os.replace(path, target)
            return target
        except FileNotFoundError:
            return None
        except OSError:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()  # cannot keep it: never serve it
            return None

    def names(self) -> Iterator[str]:
        """Every file name in ``blobs/sha256/``."""
        if self.layout.blob_dir.exists():
            for path in self.layout.blob_dir.iterdir():
                yield path.name


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
