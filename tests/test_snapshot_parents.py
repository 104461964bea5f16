"""Building a snapshot folder makes only its own folders read-only, never a parent.

As root, chmod succeeds anywhere: a snapshot that chmodded every ancestor of a nested
file made ``/`` itself 0500, locking every other user out of the machine.
"""

from __future__ import annotations

import hashlib
import os
import stat
from pathlib import Path

from hostkit.store.layout import Layout
from hostkit.store.snapshots import TreeFile, build_snapshot, manifest_bytes


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_a_nested_snapshot_leaves_every_parent_folder_as_it_was(tmp_path):
    layout = Layout(tmp_path / "cache")
    blobs = tmp_path / "cache" / "blobs"
    blobs.mkdir(parents=True)
    files = []
    for path, data in (("top.txt", b"t"), ("a/b/c/deep.bin", b"deep"), ("a/x.txt", b"x")):
        sha = hashlib.sha256(data).hexdigest()
        (blobs / sha).write_bytes(data)
        files.append(TreeFile(path, len(data), sha))
    manifest = manifest_bytes(files)
    digest = hashlib.sha256(manifest).hexdigest()
    (blobs / digest).write_bytes(manifest)
    layout.tmp_dir.mkdir(mode=0o700, parents=True)
    watched = [*Path(tmp_path).parents, tmp_path, layout.root, layout.tmp_dir]
    before = {p: _mode(p) for p in watched}
    snapshot = build_snapshot(layout, digest, files, lambda sha: blobs / sha, blobs / digest)
    assert (snapshot / "a/b/c/deep.bin").read_bytes() == b"deep"
    assert {p: _mode(p) for p in watched} == before
    for folder in (snapshot, snapshot / "a", snapshot / "a/b", snapshot / "a/b/c"):
        assert not _mode(folder) & 0o222, folder  # the snapshot's own folders: read-only
