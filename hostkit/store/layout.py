"""Every path name in the cache, and nothing else: the one owner of the layout.

::

    blobs/sha256/<hex>                 whole, verified files, read-only to their owner
    tmp/<keyhash>.<pid>-<rand>.part    partial downloads, with a ``.json`` sidecar for resume
    locks/<keyhash>.lock               advisory locks that avoid duplicate downloads
    quarantine/<hex>.<time>            blobs whose bytes no longer match their name
    trees/<sha256>/                    archives safely extracted, by the archive's sha256
    snapshots/<sha256>/                folders (trees) resolved, by their manifest's sha256:
                                       the files, hard links to their blobs, read-only
    snapshots/<sha256>.manifest        beside it: the manifest (a hard link to its blob)
    index.db                           SQLite (WAL): entries (identifier -> blob) and blobs

The CLI's fast path, the store and the resolver all build paths here, so the
layout can change in one place. No I/O happens in this module, and it imports
almost nothing (the fast path loads it on every warm ``hostkit resolve``).
"""

from __future__ import annotations

import os
from pathlib import Path

#: The content address of every blob.
CONTENT_ALG = "sha256"
#: The fewest hex digits of a sha256 that :meth:`Cache.lookup` takes as a prefix
#: (fewer would name blobs by accident); the index's lookup applies the same number.
MIN_SHA256_PREFIX = 6


def key_hash(key: str) -> str:
    """Short stable file-name-safe name for a cache key (partials and lock files)."""
    import hashlib

    return hashlib.sha256(key.encode()).hexdigest()[:32]


class Layout:
    """The paths of one cache rooted at ``root``."""

    def __init__(self, root: Path | str):
        self.root = Path(root)
        self.blob_dir = self.root / "blobs" / CONTENT_ALG
        self.tmp_dir = self.root / "tmp"
        self.lock_dir = self.root / "locks"
        self.quarantine_dir = self.root / "quarantine"
        self.index_path = self.root / "index.db"
        self.tree_dir = self.root / "trees"
        self.snapshot_dir = self.root / "snapshots"

    def private_dirs(self) -> tuple[Path, ...]:
        """The directories a writable cache has, created 0700, parents first."""
        return (self.root / "blobs", self.blob_dir, self.tmp_dir, self.lock_dir)

    def blob_path(self, sha256: str) -> Path:
        """Where the blob with this sha256 lives (whether or not it exists)."""
        return self.blob_dir / sha256

    def tree_path(self, sha256: str) -> Path:
        """Where the extracted tree of the archive with this sha256 lives (if it exists)."""
        return self.tree_dir / sha256

    def new_tree_tmp(self, sha256: str) -> Path:
        """A fresh, unique folder under ``tmp/`` to extract an archive into before renaming."""
        import secrets

        return self.tmp_dir / f"tree-{sha256[:16]}.{os.getpid()}-{secrets.token_hex(4)}.d"

    def snapshot_path(self, sha256: str) -> Path:
        """Where the snapshot of the tree whose manifest has this sha256 lives (if it does)."""
        return self.snapshot_dir / sha256

    def snapshot_manifest(self, sha256: str) -> Path:
        """The manifest beside a snapshot: ``snapshots/<sha256>.manifest``."""
        return self.snapshot_dir / f"{sha256}.manifest"

    def new_snapshot_tmp(self, sha256: str) -> Path:
        """A fresh, unique folder under ``tmp/`` to build a snapshot in before renaming it."""
        import secrets

        return self.tmp_dir / f"snap-{sha256[:16]}.{os.getpid()}-{secrets.token_hex(4)}.d"

    def new_manifest_tmp(self, sha256: str) -> Path:
        """A fresh, unique file under ``tmp/`` to write a manifest in before storing it."""
        import secrets

        return self.tmp_dir / f"manifest-{sha256[:16]}.{os.getpid()}-{secrets.token_hex(4)}.tmp"

    def lock_path(self, key: str) -> Path:
        """The advisory lock file of a cache key."""
        return self.lock_dir / f"{key_hash(key)}.lock"

    def new_partial(self, key: str) -> Path:
        """A fresh, unique partial file name for ``key``, owned by this process."""
        import secrets

        return self.tmp_dir / f"{key_hash(key)}.{os.getpid()}-{secrets.token_hex(4)}.part"

    def partials_of(self, key: str) -> list[Path]:
        """The partial files of ``key`` that exist now (any owner)."""
        return list(self.tmp_dir.glob(f"{key_hash(key)}.*.part"))

    def sidecars_of(self, key: str) -> list[Path]:
        """The resume sidecars of ``key`` that exist now (any owner)."""
        return list(self.tmp_dir.glob(f"{key_hash(key)}.*.json"))

    def all_partials(self) -> list[Path]:
        """Every partial file under ``tmp/``."""
        return list(self.tmp_dir.glob("*.part")) if self.tmp_dir.exists() else []

    def all_sidecars(self) -> list[Path]:
        """Every sidecar under ``tmp/``."""
        return list(self.tmp_dir.glob("*.json")) if self.tmp_dir.exists() else []

    @staticmethod
    def sidecar(partial: Path) -> Path:
        """The resume sidecar of a partial file."""
        return partial.with_suffix(".json")

    @staticmethod
    def partial_of(sidecar: Path) -> Path:
        """The partial file a sidecar describes."""
        return sidecar.with_suffix(".part")

    @staticmethod
    def partial_owner(partial: Path) -> int | None:
        """The pid that named a partial file, or None for a name not made here."""
        try:
            return int(partial.name.split(".")[1].split("-")[0])
        except (ValueError, IndexError):
            return None

    def quarantine_path(self, sha256: str, when: float) -> Path:
        """Where a rotten blob is kept for inspection."""
        return self.quarantine_dir / f"{sha256}.{int(when)}"


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` exists (one we may not signal counts as alive): decides
    whether a partial, a half-built snapshot or a pull's folder was left by a dead run."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True
    return True
