"""``hostkit resolve ... -o PATH`` and ``hostkit.place``: a verified file put where asked.

Same file system: a read-only hard link sharing the blob's inode. Another file
system (a tmpfs mounted in the test): a copy, atomically; a full disk is a
clean exit 6 with nothing half-written at PATH.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess

import pytest

from tests.conftest import run_cli
from tests.test_resolve import data


def _require_root():
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")


@pytest.fixture
def tmpfs(tmp_path):
    """A 4 MiB tmpfs: another file system than the cache's."""
    _require_root()
    mount = tmp_path / "other-fs"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=4m", "tmpfs", str(mount)], check=True)
    yield mount
    subprocess.run(["umount", "-l", str(mount)], check=False)


def _blob(settings, sha):
    return settings.cache_dir / "blobs" / "sha256" / sha


def test_same_file_system_is_a_read_only_hard_link(origin, settings, tmp_path):
    sha = origin.add("placed.bin", data(50_000, 1))
    target = tmp_path / "out" / "deep" / "weights.bin"  # parents created
    proc = run_cli("resolve", f"{origin.url}/f/placed.bin", sha, "-o", target, check=True)
    assert proc.stdout.strip() == str(target)
    blob = _blob(settings, sha)
    assert os.stat(target).st_ino == os.stat(blob).st_ino  # one inode, no bytes copied
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o400
    assert target.read_bytes() == data(50_000, 1)
    assert [p.name for p in target.parent.iterdir()] == ["weights.bin"]  # no temp left
    # placing again over itself (rename of two links to one inode) keeps one name
    again = json.loads(run_cli("resolve", f"{origin.url}/f/placed.bin", sha, "-o", target,
                               "--json", check=True).stdout)
    assert again["placed"] == str(target) and again["path"] == str(blob)
    assert again["cached"] is True
    assert [p.name for p in target.parent.iterdir()] == ["weights.bin"]
    assert blob.exists()  # the cache entry is kept


def test_another_file_system_gets_a_read_only_copy(origin, settings, tmpfs):
    sha = origin.add("cross.bin", data(300_000, 2))
    target = tmpfs / "a" / "cross.bin"
    out = json.loads(run_cli("resolve", f"{origin.url}/f/cross.bin", sha, "-o", target,
                             "--json", check=True).stdout)
    assert out["placed"] == str(target) and out["sha256"] == sha
    assert os.stat(target).st_dev != os.stat(_blob(settings, sha)).st_dev
    assert target.read_bytes() == data(300_000, 2)
    assert stat.S_IMODE(os.stat(target).st_mode) == 0o400
    assert os.listdir(target.parent) == ["cross.bin"]


def test_an_existing_file_is_replaced(origin, tmp_path, tmpfs):
    sha = origin.add("new.bin", data(20_000, 3))
    for target in (tmp_path / "old.bin", tmpfs / "old.bin"):  # link and copy
        target.write_bytes(b"old content")
        run_cli("resolve", f"{origin.url}/f/new.bin", sha, "-o", target, check=True)
        assert target.read_bytes() == data(20_000, 3)
        assert not [n for n in os.listdir(target.parent) if n.endswith(".tmp")]


def test_a_full_disk_leaves_the_old_file_and_no_partial(origin, tmpfs):
    sha = origin.add("big.bin", data(3 << 20, 4))  # 3 MiB into a 4 MiB tmpfs holding 2 MiB
    target = tmpfs / "big.bin"
    target.write_bytes(b"old" * 1000)
    (tmpfs / "filler").write_bytes(b"\0" * (2 << 20))
    proc = run_cli("resolve", f"{origin.url}/f/big.bin", sha, "-o", target)
    assert proc.returncode == 6, proc.stderr
    assert "disk full" in proc.stderr and "Traceback" not in proc.stderr
    assert target.read_bytes() == b"old" * 1000
    assert sorted(os.listdir(tmpfs)) == ["big.bin", "filler"]  # the temporary copy is gone
    (tmpfs / "filler").unlink()
    target.unlink()
    proc = run_cli("resolve", f"{origin.url}/f/big.bin", sha, "-o", target, "--json")
    assert proc.returncode == 0, proc.stderr  # the cache kept the blob: a hit, then the copy
    assert json.loads(proc.stdout)["cached"] is True
    assert target.read_bytes() == data(3 << 20, 4)


def test_a_hash_mismatch_leaves_path_untouched(origin, tmp_path):
    origin.add("bad.bin", data(10_000, 5))
    target = tmp_path / "bad.bin"
    target.write_bytes(b"previous")
    proc = run_cli("resolve", f"{origin.url}/f/bad.bin", "0" * 64, "-o", target)
    assert proc.returncode == 3, proc.stderr
    assert target.read_bytes() == b"previous"
    assert os.listdir(tmp_path).count("bad.bin") == 1
    missing = tmp_path / "never" / "x.bin"
    assert run_cli("resolve", f"{origin.url}/f/bad.bin", "0" * 64, "-o", missing).returncode == 3
    assert not missing.exists()


def test_a_folder_as_target_is_refused(origin, tmp_path):
    sha = origin.add("dir.bin", data(1000, 6))
    proc = run_cli("resolve", f"{origin.url}/f/dir.bin", sha, "-o", tmp_path, "--json")
    assert proc.returncode == 2
    assert json.loads(proc.stdout)["error"] == "usage"


def test_a_failing_copy_leaves_no_temporary_file(tmp_path, monkeypatch):
    """An error mid-copy (here: the write fails) removes the temp name; PATH stays as it was."""
    from hostkit import place as place_module
    from hostkit.errors import CacheError
    from hostkit.store import files as files_module

    blob = tmp_path / "blob"
    blob.write_bytes(data(100_000, 7))
    target = tmp_path / "dest" / "file.bin"
    target.parent.mkdir()
    target.write_bytes(b"old")

    def no_link(*_):
        raise OSError(18, "Invalid cross-device link")  # EXDEV: take the copy path

    def broken(fd_in, fd_out):
        os.write(fd_out, b"half")
        raise OSError(5, "Input/output error")

    monkeypatch.setattr(files_module.os, "link", no_link)
    monkeypatch.setattr(files_module, "_copy_bytes", broken)
    monkeypatch.setattr(files_module, "_reflink", lambda *_: False)
    with pytest.raises(CacheError):
        place_module.place(blob, target)
    assert target.read_bytes() == b"old"
    assert os.listdir(target.parent) == ["file.bin"]


def test_python_api_output(origin, tmp_path):
    import hostkit

    sha = origin.add("api.bin", data(5000, 8))
    target = tmp_path / "api" / "w.bin"
    path = hostkit.resolve(f"{origin.url}/f/api.bin", sha, output=target)
    assert path == target and target.read_bytes() == data(5000, 8)
    info = hostkit.resolve_info(f"{origin.url}/f/api.bin", sha, output=str(target))
    assert info.path == target and info.cached and info.sha256 == sha


def test_a_symlink_at_path_is_replaced_not_followed(origin, settings, tmp_path):
    sha = origin.add("sym.bin", data(3000, 9))
    victim = tmp_path / "victim.txt"
    victim.write_bytes(b"not yours")
    link = tmp_path / "link.bin"
    link.symlink_to(victim)
    run_cli("resolve", f"{origin.url}/f/sym.bin", sha, "-o", link, check=True)
    assert not link.is_symlink() and link.read_bytes() == data(3000, 9)
    assert victim.read_bytes() == b"not yours"
    blob = _blob(settings, sha)
    link.unlink()
    link.symlink_to(blob)  # a symbolic link to the blob itself becomes a hard link
    run_cli("resolve", f"{origin.url}/f/sym.bin", sha, "-o", link, check=True)
    assert not link.is_symlink() and os.stat(link).st_ino == os.stat(blob).st_ino


def _snapshot(root, files):
    """A folder as the cache's snapshot holds one: read-only files."""
    for rel, content in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)
        path.chmod(0o400)
    return root


def test_a_folder_holding_a_link_to_a_folder_is_not_replaced(tmp_path):
    """``-o DIR`` replaces only what hostkit placed: a link in DIR is refused, a link to a
    folder too (os.walk lists it with the folders; before, it was deleted silently)."""
    from hostkit.errors import UsageError
    from hostkit.place import place_tree

    snapshot = _snapshot(tmp_path / "snap", {"w.bin": b"weights"})
    (tmp_path / "mine").mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "link").symlink_to(tmp_path / "mine")
    with pytest.raises(UsageError, match="link, which hostkit did not place"):
        place_tree(snapshot, out)
    assert [p.name for p in out.iterdir()] == ["link"] and (out / "link").is_symlink()


@pytest.mark.parametrize("mount", ["tmpfs", "bind"])
def test_a_mount_inside_the_output_folder_is_refused_not_emptied(tmp_path, mount):
    """Another volume mounted inside ``-o DIR`` is not hostkit's to empty, even when it
    holds read-only files only. Before: its files were deleted and, DIR being a mount
    point, the fill failed half-done ('Device or resource busy ... left as it was')."""
    from hostkit.errors import UsageError
    from hostkit.place import place_tree

    _require_root()
    snapshot = _snapshot(tmp_path / "snap", {"w.bin": b"weights", "sub/b.bin": b"b"})
    out = tmp_path / "out"
    (out / "sub").mkdir(parents=True)
    volume = _snapshot(tmp_path / "volume", {"theirs.bin": b"another volume's"})
    try:
        if mount == "tmpfs":  # DIR a mount point (filled in place), a tmpfs inside it
            subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(out)],
                           check=True)
            (out / "sub").mkdir()
        # a bind mount on the same file system: os.path.ismount cannot see it
        subprocess.run(["mount", "--bind", str(volume), str(out / "sub")], check=True)
        with pytest.raises(UsageError, match="sub is a mount point"):
            place_tree(snapshot, out)
        assert (volume / "theirs.bin").read_bytes() == b"another volume's"
        assert [p.name for p in out.iterdir()] == ["sub"]
    finally:  # where they are now (a swap could take one along: it did before)
        with open("/proc/self/mountinfo") as f:
            points = [line.split()[4] for line in f]
        for point in sorted((p for p in points if p.startswith(f"{tmp_path}/")), reverse=True):
            subprocess.run(["umount", "-l", point], check=False)


def test_a_file_gone_while_the_output_folder_is_checked_is_no_traceback(
        tmp_path, monkeypatch):
    """Two runs placing one folder: a file the other run removes between the listing and
    its lstat was an uncaught FileNotFoundError (a traceback, exit 1)."""
    from hostkit.place import place_tree

    snapshot = _snapshot(tmp_path / "snap", {"w.bin": b"weights"})
    out = tmp_path / "out"
    out.mkdir()
    walk = os.walk

    def racing_walk(top, *args, **kwargs):
        for here, dirs, names in walk(top, *args, **kwargs):
            yield here, dirs, [*names, "removed-meanwhile"] if here == str(out) else names
    monkeypatch.setattr(os, "walk", racing_walk)
    assert place_tree(snapshot, out) == out
    monkeypatch.undo()
    assert [p.name for p in out.iterdir()] == ["w.bin"]


def test_a_file_mounted_at_the_target_is_refused_with_a_reason(origin, tmp_path):
    """``-o FILE`` where FILE is a volume mounted as a file (a Kubernetes subPath): it
    cannot be replaced; the error says so and what to do, and FILE keeps its bytes."""
    _require_root()
    sha = origin.add("sub.bin", data(10_000, 7))
    volume, target = tmp_path / "volume.bin", tmp_path / "app" / "model.bin"
    volume.write_bytes(b"mounted")
    target.parent.mkdir()
    target.write_bytes(b"")
    subprocess.run(["mount", "--bind", str(volume), str(target)], check=True)
    try:
        proc = run_cli("resolve", f"{origin.url}/f/sub.bin", sha, "-o", target)
        assert proc.returncode == 6, proc.stderr
        assert "mount point" in proc.stderr and "-o DIR/NAME" in proc.stderr
        assert target.read_bytes() == b"mounted"
        assert [p.name for p in target.parent.iterdir()] == ["model.bin"]  # no temp left
    finally:
        subprocess.run(["umount", "-l", str(target)], check=False)



def test_a_leftover_named_with_this_process_pid_is_removed(tmp_path):
    """A restarted container's init runs as the same pid (1) every time: the folder its
    killed predecessor was building next to DIR carries this process's pid, and must not
    stay for good as if this process were building it."""
    from hostkit.place import place_tree

    snapshot = tmp_path / "snap"
    (snapshot / "m").mkdir(parents=True)
    (snapshot / "m" / "w.bin").write_bytes(b"weights")
    (snapshot / "m" / "w.bin").chmod(0o400)
    leftover = tmp_path / f".model.hostkit-{os.getpid()}-0123456789ab.tmp"
    (leftover / "m").mkdir(parents=True)
    (leftover / "m" / "w.bin").write_bytes(b"half")
    target = place_tree(snapshot, tmp_path / "model")
    assert (target / "m" / "w.bin").read_bytes() == b"weights"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model", "snap"]


def test_every_folder_of_a_placed_tree_is_synced_before_it_is_moved_in(tmp_path, monkeypatch):
    """A power loss after the rename must not lose a subfolder's entries: each folder
    built (deepest first) is fsynced before the tree is swapped in."""
    import hostkit.place as place

    synced: list[str] = []
    monkeypatch.setattr(place, "sync_folder", lambda folder: synced.append(str(folder)))
    snapshot = tmp_path / "snap"
    (snapshot / "a" / "b").mkdir(parents=True)
    for rel in ("top.bin", "a/mid.bin", "a/b/deep.bin"):
        (snapshot / rel).write_bytes(rel.encode())
        (snapshot / rel).chmod(0o400)
    place.place_tree(snapshot, tmp_path / "out" / "model")
    built = [s for s in synced if ".model.hostkit-" in s]
    assert [s.split(".tmp", 1)[1] for s in built] == ["/a/b", "/a", ""]
    assert synced[-1] == str(tmp_path / "out")  # then the rename into the parent


def test_a_fill_in_place_failing_during_the_moves_says_so(tmp_path, monkeypatch):
    """Once the old entries of a mount point are gone, a failure (an I/O error on the
    second move) must not claim the folder was left as it was: it says what it holds
    and that the same command finishes it, which it then does."""
    import errno

    import hostkit.place as place
    from hostkit.errors import CacheError

    snapshot = tmp_path / "snap"
    snapshot.mkdir()
    for name in ("a.bin", "b.bin", "c.bin"):
        (snapshot / name).write_bytes(name.encode())
        (snapshot / name).chmod(0o400)
    target = tmp_path / "volume"
    target.mkdir()
    (target / "old.bin").write_bytes(b"old")
    (target / "old.bin").chmod(0o400)
    real_rename, calls = os.rename, []

    def failing_rename(src, dst, *args, **kwargs):
        if os.path.dirname(dst) == str(target):  # a move into the mount point
            calls.append(dst)
            if len(calls) == 2:
                raise OSError(errno.EIO, "Input/output error")
        return real_rename(src, dst, *args, **kwargs)

    monkeypatch.setattr(os, "rename", failing_rename)
    with pytest.raises(CacheError) as failed:
        place._fill_in_place(snapshot, target)
    assert "now holds part of the folder" in str(failed.value)
    assert "left as it was" not in str(failed.value)
    monkeypatch.setattr(os, "rename", real_rename)
    place._fill_in_place(snapshot, target)
    assert sorted(p.name for p in target.iterdir()) == ["a.bin", "b.bin", "c.bin"]
