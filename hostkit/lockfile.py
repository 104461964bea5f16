"""Lists of identifiers to resolve, and lock files that pin each one's bytes.

Two file forms, both read by ``hostkit resolve -r FILE``:

- **A list**: one ``IDENTIFIER [HASH]`` per line, whitespace between; ``#``
  starts a comment (at the start of a line or after whitespace: a URL's
  ``#fragment`` stays), blank lines are skipped.
- **A lock file** (``hostkit.lock``, written by ``hostkit lock``): TOML of this
  fixed shape, every entry with its sha256::

      version = 1

      [[file]]
      identifier = "https://example.org/w.bin"
      hash = "sha256:3f2a..."
      size = 1048576
      output = "weights.bin"      # optional: the name under `resolve -o DIR/`

A file named ``*.lock`` or ``*.toml`` is a lock file; any other is read as a
lock file when it is TOML with ``version`` or ``[[file]]``, else as a list.

Lock files are written atomically (a temporary file in the same folder,
fsynced, renamed over the old one) by a small writer for exactly this shape:
strings are TOML basic strings with every character TOML requires escaped
(``"``, ``\\``, control characters, DEL), and the text is read back with
:mod:`tomllib` before it replaces anything. The module only reads and writes
files: whether an identifier carries a credential (which no lock may hold) is
the command's to check (``hostkit lock`` refuses such identifiers).
"""

from __future__ import annotations

import os
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import UsageError

#: The lock format this module writes and reads.
LOCK_VERSION = 1
#: The default lock file name (``hostkit lock`` without ``-o``).
DEFAULT_LOCK = "hostkit.lock"
_ENTRY_KEYS = ("identifier", "hash", "size", "output")
_HEADER = ("# hostkit.lock: the bytes each identifier gave, by sha256 (`hostkit lock ID...`).\n"
           "# Resolve and verify them all with `hostkit resolve -r FILE`.\n")


@dataclass(frozen=True)
class Item:
    """One thing to resolve, as a list or lock file gives it; ``where`` names its line/entry."""

    identifier: str
    hash: str | None
    output: str | None
    where: str
    #: A line of a list (not a lock file entry): its identifier may still be ``ID=HASH``.
    listed: bool = False


@dataclass(frozen=True)
class LockEntry:
    """One ``[[file]]`` of a lock file."""

    identifier: str
    hash: str
    size: int | None = None
    output: str | None = None


def read_items(path: str | Path) -> list[Item]:
    """The items of a list or lock file (``-`` reads standard input: a lock file when it
    is TOML with ``version`` or ``[[file]]``, else a list).

    :raises UsageError: the file cannot be read or is malformed (naming the
        file and the line or entry).
    """
    if str(path) == "-":
        text, name = sys.stdin.read().removeprefix("\ufeff"), "<stdin>"
    else:
        text, name = _read(path), str(path)
        if Path(path).suffix in (".lock", ".toml"):
            return [_item(e, name, i) for i, e in enumerate(_parse_lock(text, name))]
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        doc = None
    if doc and ("version" in doc or "file" in doc):
        return [_item(e, name, i) for i, e in enumerate(_parse_lock(text, name))]
    return _parse_list(text, name)


def read_lock(path: str | Path) -> list[LockEntry]:
    """The entries of the lock file at ``path``; [] when there is none.

    :raises UsageError: a lock file that cannot be read or is malformed.
    """
    if not os.path.lexists(path):
        return []
    if os.path.isdir(path):
        target = Path(os.path.abspath(path))
        raise UsageError(f"the lock file {target} is a folder",
                         hint=f"name the file, e.g. -o {target / DEFAULT_LOCK}")
    return _parse_lock(_read(path), str(path))


def merge(entries: list[LockEntry], updates: list[LockEntry]) -> list[LockEntry]:
    """``entries`` with ``updates`` applied: an entry of the same identifier is replaced in
    place (keeping its output name unless the update has one), others are appended."""
    merged = list(entries)
    for new in updates:
        for i, old in enumerate(merged):
            if old.identifier == new.identifier:
                merged[i] = LockEntry(new.identifier, new.hash, new.size,
                                      new.output if new.output is not None else old.output)
                break
        else:
            merged.append(new)
    return merged


def dumps(entries: list[LockEntry]) -> str:
    """The TOML text of a lock file holding ``entries``."""
    lines = [_HEADER, f"version = {LOCK_VERSION}\n"]
    for entry in entries:
        lines.append("\n[[file]]\n")
        lines.append(f"identifier = {_string(entry.identifier)}\n")
        lines.append(f"hash = {_string(entry.hash)}\n")
        if entry.size is not None:
            lines.append(f"size = {int(entry.size)}\n")
        if entry.output is not None:
            lines.append(f"output = {_string(entry.output)}\n")
    return "".join(lines)


def write_lock(path: str | Path, entries: list[LockEntry]) -> None:
    """Write the lock file atomically: all of it or, on any failure, the old file untouched.

    :raises UsageError: the folder cannot be written (naming why).
    """
    import tempfile

    text = dumps(entries)
    if _parse_lock(text, str(path)) != entries:  # the writer's own check: never a bad lock
        raise AssertionError("the lock writer does not read back what it wrote")
    target = Path(os.path.abspath(path))
    if target.is_dir():
        raise UsageError(f"cannot write the lock file {target}: it is a folder",
                         hint=f"name the file, e.g. {target / DEFAULT_LOCK}")
    tmp = None
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # an ordinary file to commit, not mkstemp's 0600
        os.replace(tmp, target)
        tmp = None
        dir_fd = os.open(target.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
    except OSError as exc:
        raise UsageError(f"cannot write the lock file {target}: {exc.strerror or exc}",
                         hint="check the folder exists and is writable, or pass -o PATH"
                         ) from None
    finally:
        if tmp is not None:
            Path(tmp).unlink(missing_ok=True)


# -- reading -------------------------------------------------------------------------


def _read(path: str | Path) -> str:
    try:  # -sig: a byte order mark (Windows editors write one) is no part of the text
        return Path(path).read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise UsageError(f"cannot read {path}: it is not UTF-8 text",
                         hint="a list holds one IDENTIFIER [HASH] per line") from None
    except OSError as exc:
        raise UsageError(f"cannot read {path}: {exc.strerror or exc}",
                         hint="check the path (-r FILE)") from None


def _parse_list(text: str, name: str) -> list[Item]:
    items = []
    for number, line in enumerate(text.splitlines(), 1):
        words = []
        for word in line.split():
            if word.startswith("#"):
                break  # a comment: at the start, or after whitespace
            words.append(word)
        if not words:
            continue
        if len(words) > 2:
            raise UsageError(f"{name}:{number}: expected IDENTIFIER [HASH], found "
                             f"{len(words)} words",
                             hint="one identifier a line, optionally followed by its hash; "
                                  "# starts a comment")
        items.append(Item(words[0], words[1] if len(words) == 2 else None, None,
                          f"{name}:{number}", listed=True))
    return items


def _parse_lock(text: str, name: str) -> list[LockEntry]:
    try:
        doc = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise UsageError(f"{name}: not a valid lock file: {exc}",
                         hint="fix the TOML, or write it again with `hostkit lock`") from None
    unknown = sorted(set(doc) - {"version", "file"})
    version = doc.get("version")
    if type(version) is not int or version != LOCK_VERSION or unknown:  # True == 1 too
        raise UsageError(f"{name}: not a hostkit lock file (version {LOCK_VERSION}, [[file]] "
                         "entries" + (f"; unknown keys: {', '.join(unknown)}" if unknown else "")
                         + ")", hint="write it with `hostkit lock ID... -o FILE`")
    files = doc.get("file", [])
    if not isinstance(files, list):
        raise UsageError(f"{name}: 'file' must be a list of [[file]] tables",
                         hint="write it with `hostkit lock ID... -o FILE`")
    entries = []
    for number, table in enumerate(files, 1):
        where = f"{name}: [[file]] #{number}"
        if not isinstance(table, dict):
            raise UsageError(f"{where} is not a table", hint="write [[file]] tables")
        unknown = sorted(set(table) - set(_ENTRY_KEYS))
        if unknown:
            raise UsageError(f"{where}: unknown keys: {', '.join(unknown)}",
                             hint=f"an entry holds {', '.join(_ENTRY_KEYS)}")
        for key in ("identifier", "hash"):
            if not isinstance(table.get(key), str) or not table[key].strip():
                raise UsageError(f"{where}: '{key}' is missing or not a string",
                                 hint="every entry has identifier = \"...\" and "
                                      "hash = \"sha256:<hex>\"")
        size = table.get("size")
        if size is not None and (isinstance(size, bool) or not isinstance(size, int)
                                 or size < 0):
            raise UsageError(f"{where}: 'size' must be a whole number of bytes",
                             hint="size = 1048576, or leave it out")
        output = table.get("output")
        if output is not None and (not isinstance(output, str) or not output.strip()):
            raise UsageError(f"{where}: 'output' must be a file name",
                             hint="output = \"weights.bin\", or leave it out")
        entries.append(LockEntry(table["identifier"], table["hash"], size, output))
    return entries


def _item(entry: LockEntry, name: str, index: int) -> Item:
    return Item(entry.identifier, entry.hash, entry.output, f"{name}: [[file]] #{index + 1}")


# -- writing -------------------------------------------------------------------------

_ESCAPES = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\t": "\\t", "\n": "\\n", "\f": "\\f",
            "\r": "\\r"}


def _string(value: str) -> str:
    """``value`` as a TOML basic string (UsageError for text that is not Unicode scalars)."""
    out = []
    for char in value:
        code = ord(char)
        if char in _ESCAPES:
            out.append(_ESCAPES[char])
        elif code < 0x20 or code == 0x7F:
            out.append(f"\\u{code:04X}")
        elif 0xD800 <= code <= 0xDFFF:
            raise UsageError("a lock file value is not valid UTF-8 (a lone surrogate)",
                             hint="pass identifiers and names as UTF-8 text")
        else:
            out.append(char)
    return '"' + "".join(out) + '"'
