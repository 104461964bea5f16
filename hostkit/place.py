"""Place a cached blob at a path the caller chose (``hostkit resolve ... -o PATH``).

:func:`place` puts the bytes of a verified cache blob at ``target``:

- a **hard link** to the blob when ``target`` is on the cache's file system
  (no bytes copied, no space used);
- else a **reflink** (``ioctl FICLONE``: copy-on-write, on btrfs, XFS, ...) when
  the file system offers one, best effort;
- else a **copy**.

Always atomically: the link or copy is made under a temporary name in
``target``'s own folder, fsynced, then renamed over ``target`` (and the folder
fsynced). ``target`` therefore holds either its old content (or nothing) or the
whole verified file, never a partial one; an existing file is replaced, missing
parent folders are created, and the cache entry is kept.

**The placed file is read-only.** A hard link *is* the cache's blob (one inode,
mode 0400): writing to it would change the bytes the cache serves under their
hash. So every placed file is read-only, a copy too (mode 0400, like the blob),
whichever way it was made: what is at ``target`` behaves the same on one file
system or two. MedPerf's code only reads what it downloads. To edit a placed
file, copy it first (``cp --no-preserve=mode``); ``hostkit cache verify`` finds
and quarantines a blob whose bytes were changed anyway (root ignores modes).
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import secrets
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

from .errors import CacheError, UsageError
from .failpoints import failpoint
from .store.files import READ_ONLY, link_or_copy, sync_folder
from .store.layout import pid_alive

#: The mode of a placed file: read-only, like the cache's blobs.
PLACED_MODE = READ_ONLY


def place(blob_path: Path, target: Path) -> Path:
    """Put the bytes of ``blob_path`` (a cache blob) at ``target``, atomically; return ``target``.

    A hard link when both are on one file system, else a reflink or a copy,
    made under a temporary name next to ``target`` and renamed over it, so
    ``target`` never holds a partial file. Parent folders are created and an
    existing file is replaced; the placed file is read-only (see the module's
    docstring). Raises :class:`~hostkit.errors.UsageError` when ``target`` is
    an existing folder, :class:`~hostkit.errors.CacheError` (exit 6) when the
    file cannot be written (disk full, permissions); ``target`` is then left
    as it was.
    """
    blob_path, target = Path(blob_path), Path(os.path.abspath(target))
    if target.is_dir():
        raise UsageError(f"cannot place the file at {target}: it is a folder",
                         hint=f"name the file to create, e.g. {target}/FILE")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failed(target, exc) from None
    temp = target.parent / f".{target.name[:200]}.hostkit-{secrets.token_hex(6)}.tmp"
    try:
        link_or_copy(blob_path, temp)
        if _same_inode(temp, target):
            # rename(2) of two links to one inode does nothing: target already is the blob
            os.unlink(temp)
            return target
        os.replace(temp, target)
        sync_folder(target.parent)
    except OSError as exc:
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise _failed(target, exc) from None
    except BaseException:  # KeyboardInterrupt mid-copy: no temporary file left behind
        with contextlib.suppress(OSError):
            os.unlink(temp)
        raise
    return target


def place_tree(snapshot: Path, target: Path) -> Path:
    """Put a folder's snapshot at ``target`` (``hostkit resolve s3://b/prefix/ -o DIR``).

    Each file is placed as :func:`place` places one (a hard link to the cache's
    blob, else a reflink or a copy; read-only); folders are ordinary writable
    folders, so DIR can be deleted. Atomically: the folder is built next to
    ``target`` (``.DIR.hostkit-<random>.tmp``) and renamed in, so ``target`` is
    never half-built. An existing ``target`` is replaced, like ``-o`` replaces a
    file, when it is an empty folder or looks like a folder hostkit placed
    (regular read-only files and folders only); any other folder (one holding a
    link, or another volume mounted inside), a file or a link there is refused
    (:class:`~hostkit.errors.UsageError`) and left as it was. The swap is one
    ``renameat2(RENAME_EXCHANGE)`` where Linux offers it (DIR holds the old tree
    or the new one at every instant), else the old folder is renamed aside first.
    Raises :class:`~hostkit.errors.CacheError` when the folder cannot be written;
    ``target`` is then left as it was.

    A ``target`` that cannot be renamed, a mount point (a container's volume, as
    Kubernetes mounts an ``emptyDir`` an init container fills), is filled in place
    instead (:func:`_fill_in_place`): the whole folder is built in a hidden folder
    inside it first, then what was there goes and the new entries are moved in one
    by one, one fill at a time. Whole at the end, never mixed with a failed run's
    files, but a reader looking meanwhile can see it part-way: fill it before the
    service starts.
    """
    snapshot, target = Path(snapshot), Path(os.path.abspath(target))
    _check_tree_target(target)
    if os.path.isdir(target) and os.path.ismount(target):
        return _fill_in_place(snapshot, target)
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _failed(target, exc, "folder") from None
    for leftover in target.parent.glob(f".{target.name[:200]}.hostkit-*.tmp"):
        if leftover.is_dir() and _stale(leftover):
            _remove_tree(leftover)
    temp = target.parent / (f".{target.name[:200]}.hostkit-{os.getpid()}-"
                            f"{secrets.token_hex(6)}.tmp")
    with _removed_on_failure(temp, target):
        temp.mkdir()
        _build(snapshot, temp)
        failpoint("tree-swap")  # tests kill here: built next to it, not yet in place
        if os.path.lexists(target):
            _check_tree_target(target)  # again: it may have appeared meanwhile
            try:
                swapped = _exchange(temp, target)
            except OSError as exc:
                if exc.errno not in (errno.EBUSY, errno.EXDEV):
                    raise
                # a mount point os.path.ismount cannot see (a bind mount on its own
                # file system): it cannot be renamed, so it is filled where it is
                _remove_tree(temp)
                return _fill_in_place(snapshot, target)
            if swapped:
                sync_folder(target.parent)
                _remove_tree(temp)  # now the old tree
                return target
            aside = target.parent / f".{target.name[:200]}.hostkit-{os.getpid()}-old.tmp"
            os.rename(target, aside)
            os.rename(temp, target)
            sync_folder(target.parent)
            _remove_tree(aside)
            return target
        os.rename(temp, target)
        sync_folder(target.parent)
    return target


#: The temporary folders this process is building right now (see :func:`_stale`).
_BUILDING: set[str] = set()


@contextlib.contextmanager
def _removed_on_failure(temp: Path, target: Path) -> Iterator[None]:
    """Remove the folder ``temp`` if the block fails (a kill too); an OSError becomes
    the CacheError for placing a folder at ``target``, which is left as it was. While
    the block runs, ``temp`` is this process's own, never a dead run's leftover."""
    _BUILDING.add(str(temp))
    try:
        yield
    except CacheError:  # (an OSError too) already says what happened to ``target``
        _remove_tree(temp)
        raise
    except OSError as exc:
        _remove_tree(temp)
        raise _failed(target, exc, "folder") from None
    except BaseException:
        _remove_tree(temp)
        raise
    finally:
        _BUILDING.discard(str(temp))


def _build(snapshot: Path, into: Path) -> None:
    """Place every file of ``snapshot`` under ``into`` (an empty folder), then fsync each
    folder made, deepest first (entries durable before the folder is moved in)."""
    made = [into]
    for here, dirs, names in os.walk(snapshot):
        rel = Path(here).relative_to(snapshot)
        for name in dirs:
            (into / rel / name).mkdir()
            made.append(into / rel / name)
        for name in names:
            link_or_copy(Path(here) / name, into / rel / name)
    for folder in reversed(made):
        sync_folder(folder)


#: The hidden folder a fill in place builds in, inside the target (pid, 12 hex digits).
_STAGE = re.compile(r"\.hostkit-[0-9]+-[0-9a-f]{12}\.tmp")


def _fill_in_place(snapshot: Path, target: Path) -> Path:
    """Fill ``target``, a folder that cannot be renamed (a mount point), with the snapshot.

    Built whole in ``target/.hostkit-<pid>-<random>.tmp`` first (on the target's own
    file system: copies when that is not the cache's), so a failure before the end
    leaves ``target`` as it was; then ``target`` is checked again (empty, or hostkit
    placed what it holds: nothing of the user's came meanwhile), the entries there
    are removed and the new ones renamed in. One fill at a time: each holds a lock on
    ``target`` (``flock``, across containers sharing the volume too), so every hidden
    folder found under it was left by a killed run, whatever its pid (a restarted
    init container runs as the same pid 1), and is removed.
    """
    for name in os.listdir(snapshot):
        if _STAGE.fullmatch(name):
            raise UsageError(
                f"cannot fill the mount point {target} with this folder: it names {name!r}, "
                "the name of hostkit's hidden folder there; it was left as it was",
                hint=f"place it in a folder inside the mount point: -o {target}/NAME")
    with _locked(target) as locked:
        for leftover in os.listdir(target):
            path = target / leftover
            if _STAGE.fullmatch(leftover) and path.is_dir() and not path.is_symlink() \
                    and (locked or _stale(path)):
                _remove_tree(path)
        stage = target / f".hostkit-{os.getpid()}-{secrets.token_hex(6)}.tmp"
        with _removed_on_failure(stage, target):
            stage.mkdir()
            _build(snapshot, stage)
            failpoint("tree-swap")
            _check_tree_target(target, skip=stage.name)  # again: the build took a while
            try:
                for old in os.listdir(target):
                    if not _STAGE.fullmatch(old):
                        path = target / old
                        if path.is_dir() and not path.is_symlink():
                            _remove_tree(path)
                        else:
                            path.unlink()
                for name in os.listdir(stage):
                    os.rename(stage / name, target / name)
            except OSError as exc:  # past the point of leaving it as it was
                raise _failed(target, exc, "folder", left="now holds part of the folder; "
                              "run the same command again to finish it") from None
            stage.rmdir()
            sync_folder(target)
    return target


@contextlib.contextmanager
def _locked(folder: Path) -> Iterator[bool]:
    """Hold an exclusive ``flock`` on ``folder`` (waiting for another holder); yields
    whether it is held (False where the file system has no such locks, e.g. NFS)."""
    import fcntl

    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as exc:
        raise _failed(folder, exc, "folder") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:
            yield False
        else:
            yield True
    finally:
        os.close(fd)  # releases the lock


def _check_tree_target(target: Path, skip: str | None = None) -> None:
    """UsageError unless ``target`` is absent, an empty folder or a folder hostkit placed
    (read-only regular files and folders: no link, no other mount inside); ``skip``
    names an entry of ``target`` not looked at (the fill's own hidden folder)."""
    if not os.path.lexists(target):
        return
    if target.is_symlink() or not target.is_dir():
        raise UsageError(f"cannot place the folder at {target}: it exists and is not a folder",
                         hint="choose another -o path, or remove it first")
    mounts = _mount_points_under(target)
    for here, dirs, names in os.walk(target):
        if here == str(target) and skip in dirs:
            dirs.remove(skip)
        for name in dirs:
            path = os.path.join(here, name)
            if os.path.islink(path):
                _refuse(target, path)
            if os.path.ismount(path) if mounts is None else path in mounts:
                raise UsageError(
                    f"cannot place the folder at {target}: {path} is a mount point (another "
                    "volume), which hostkit would have to empty; it was left as it was",
                    hint="choose another -o path, or unmount it first")
        for name in names:
            path = os.path.join(here, name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue  # removed meanwhile (another run placing the same folder)
            if not stat.S_ISREG(st.st_mode) or st.st_mode & 0o222:
                _refuse(target, path)


def _refuse(target: Path, path: str) -> NoReturn:
    raise UsageError(
        f"cannot place the folder at {target}: it holds {path}, which hostkit did not "
        "place (hostkit places read-only files only); it was left as it was",
        hint="choose another -o path, or empty or remove that folder first")


def _mount_points_under(folder: Path) -> set[str] | None:
    """The mount points strictly inside ``folder``, as ``folder`` spells them (bind mounts
    on its own file system too, which os.path.ismount misses); None without
    ``/proc/self/mountinfo``."""
    try:
        with open("/proc/self/mountinfo", "rb") as fh:
            lines = fh.read().decode("utf-8", "surrogateescape").splitlines()
    except OSError:
        return None
    real = os.path.realpath(folder).rstrip("/")
    found = set()
    for line in lines:
        fields = line.split(" ")
        if len(fields) < 5:
            continue
        point = re.sub(r"\\([0-7]{3})", lambda m: chr(int(m.group(1), 8)), fields[4])
        if point.startswith(real + "/"):
            found.add(str(folder) + point[len(real):])
    return found


#: ``renameat2`` flag: swap two paths atomically (Linux 3.15+).
RENAME_EXCHANGE = 2


def _exchange(a: Path, b: Path) -> bool:
    """Swap ``a`` and ``b`` atomically; False where the system cannot (the caller falls back)."""
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    result = renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), RENAME_EXCHANGE)
    if result == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.EINVAL, errno.ENOSYS, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False  # the file system (or kernel) has no exchange
    raise OSError(code, os.strerror(code), str(b))


def _stale(leftover: Path) -> bool:
    """Whether a temporary folder next to a target was left by a process that is gone.

    One named with this process's pid and not being built here was left by an earlier
    process with the same pid: a restarted container's init runs as pid 1 every time.
    """
    try:
        pid = int(leftover.name.rsplit(".hostkit-", 1)[1].split("-")[0])
    except (IndexError, ValueError):
        return False
    if pid == os.getpid():
        return str(leftover) not in _BUILDING
    return not pid_alive(pid)


def _remove_tree(root: Path) -> None:
    import shutil

    shutil.rmtree(root, ignore_errors=True)


def _same_inode(a: Path, b: Path) -> bool:
    """Whether ``a`` and ``b`` are links to one file (a symbolic link is never followed)."""
    try:
        sa, sb = os.lstat(a), os.lstat(b)
    except FileNotFoundError:
        return False
    return (sa.st_dev, sa.st_ino) == (sb.st_dev, sb.st_ino)


def _failed(target: Path, exc: OSError, what: str = "file",
            left: str = "was left as it was") -> CacheError:
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        reason, hint = "disk full", "free space or choose another path"
    elif exc.errno == errno.EBUSY:  # rename(2) onto a mount point: a volume mounted as a file
        reason = "it is a mount point (a volume mounted there), which cannot be replaced"
        hint = (f"place the {what} inside a mounted folder instead (-o DIR/NAME), or "
                "unmount it first")
    else:
        reason, hint = exc.strerror or str(exc), "check the folder exists and is writable"
    return CacheError(f"cannot place the {what} at {target}: {reason}; {target} {left}",
                      hint=hint)


