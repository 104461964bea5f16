"""``hostkit cache ls | info | verify | rm | prune | pin | unpin``.

People get tables (identifier, sha256, size, last use, pinned); ``--json`` is
for scripts (sizes in bytes, times both as Unix seconds and as ISO-8601 UTC
under ``*_at``). ``rm`` and ``prune`` plan first and then execute that same
plan (:class:`hostkit.store.cache.DeletionPlan`), so ``--dry-run`` shows
exactly what the real run deletes. On a terminal they ask before deleting
(``-y`` skips the question); with standard input not a terminal (a script, a
pipe, cron) they do not ask and go ahead, as they always did.

Every command here reads an existing cache and never creates one: pointing
``--cache-dir`` at a folder that holds no cache is an error naming it.
"""

from __future__ import annotations

import sys
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import CacheError, UsageError
from .formatting import (
    add_actions,
    add_plan_flags,
    confirm,
    format_age,
    format_size,
    format_table,
    help_formatter,
    iso_time,
    parse_size,
    plural,
    print_json,
)
from .redact import redact_url
from .store.layout import MIN_SHA256_PREFIX

if TYPE_CHECKING:  # the store (SQLite, asyncio) loads only when a cache command runs
    from .store.cache import Cache, DeletionPlan

#: Exit code of ``rm`` / ``prune`` when the person at the terminal says no.
DECLINED = 1
#: Exit code of ``verify`` when a blob's bytes no longer match.
CORRUPT = 8

ID_HELP = ("an identifier as resolved (e.g. https://host/f.bin, synapse:syn123), its cache key, "
           f"or a sha256 (sha256:HEX, HEX, or a prefix of at least {MIN_SHA256_PREFIX} hex "
           "digits)")

CACHE_EPILOG = """\
examples:
  hostkit cache ls                                  # what is cached, most recently used first
  hostkit cache info sha256:3f2a9c                  # one entry: hashes, path, times
  hostkit cache pin https://example.org/w.bin       # keep it through prune
  hostkit cache prune --max-size 10G --dry-run      # what a prune would evict
  hostkit cache rm 3f2a9c -y                        # remove without asking
  hostkit cache verify                              # re-hash every blob
IDs: an identifier as resolved, its cache key, or a sha256 / sha256 prefix (>= 6 hex digits).
rm and prune ask before deleting when standard input is a terminal (-y: don't ask); from a
script or pipe they do not ask. --json prints sizes in bytes and times as Unix seconds plus
ISO-8601 UTC (*_at). The cache is HOSTKIT_CACHE_DIR, cache_dir in config.toml or --cache-dir.
"""

_ACTIONS = {
    "ls": ("list cached identifiers and blobs",
           "List every cached identifier with its blob (sha256 prefix, size, last use, pinned, "
           "whether its hash was given or trusted on first use), most recently used first, "
           "then blobs no identifier points at.",
           "  hostkit cache ls\n  hostkit cache ls --json | jq '.entries[].identifier'\n"
           "  hostkit --cache-dir /shared/hostkit cache ls"),
    "info": ("show one entry: hashes, path, times",
             "Show everything known about the entries and blobs ID names: identifier, cache "
             "key, sha256 and other digests, size, path, pin, how it was verified, when it was "
             "stored, last used and last checked against its origin.",
             "  hostkit cache info https://example.org/w.bin\n  hostkit cache info 3f2a9c\n"
             "  hostkit cache info sha256:3f2a9c... --json"),
    "rm": ("remove an entry (and its blob if unused) or a blob by digest",
           "Remove what ID names. Given an identifier or key: that entry, and its blob when no "
           "other entry uses it. Given a sha256 (or prefix): the blob and every entry pointing "
           "at it. Shows what goes and the space freed; asks first on a terminal.",
           "  hostkit cache rm https://example.org/w.bin\n  hostkit cache rm 3f2a9c --dry-run\n"
           "  hostkit cache rm sha256:3f2a9c... -y --json"),
    "pin": ("keep an entry through prune",
            "Pin the entries ID names: prune never evicts their blobs (rm still removes them).",
            "  hostkit cache pin https://example.org/w.bin\n  hostkit cache pin 3f2a9c"),
    "unpin": ("allow pruning again",
              "Unpin the entries ID names, so prune may evict their blobs again.",
              "  hostkit cache unpin https://example.org/w.bin"),
    "verify": ("re-hash blobs; quarantine corrupt ones (--report-only to keep them)",
               "Re-hash every blob (or those ID names) and compare with every digest recorded. "
               "A blob whose bytes changed is moved to quarantine/ and its entries dropped, so "
               "the next resolve downloads it again; with --report-only nothing is changed. "
               "Exit code 8 when a problem was found.",
               "  hostkit cache verify\n  hostkit cache verify 3f2a9c --report-only\n"
               "  hostkit cache verify --json"),
    "prune": ("evict least recently used blobs to fit a size budget",
              "Evict the least recently used blobs that no pinned entry holds until the cache "
              "fits --max-size, and delete partial downloads abandoned for over a day. Shows "
              "what goes (by identifier) and the space freed; asks first on a terminal; warns "
              "when pinned entries alone exceed the budget.",
              "  hostkit cache prune --max-size 10G --dry-run\n"
              "  hostkit cache prune --max-size 500M -y\n  hostkit cache prune --max-size 0"),
}


def add_cache_command(sub, common) -> None:
    """Add ``cache`` and its actions to the ``hostkit`` subparsers."""
    raw = help_formatter()
    c = sub.add_parser("cache", help="inspect and manage the cache", formatter_class=raw,
                       description="Inspect and manage the local cache: list, show, pin, "
                                   "verify, remove and prune entries and blobs.",
                       epilog=CACHE_EPILOG)
    parsers = add_actions(c, "cache_command", common, _ACTIONS)
    ids = [parsers[name].add_argument("id", metavar="ID", help=ID_HELP)
           for name in ("info", "rm", "pin", "unpin")]
    ids.append(parsers["verify"].add_argument(
        "id", metavar="ID", nargs="?", help=f"only the blobs this names (default: all); {ID_HELP}"))
    for action in ids:
        action.completer = complete_ids  # type: ignore[attr-defined]  # read by argcomplete
    parsers["verify"].add_argument(
        "--report-only", action="store_true",
        help="only report problems: leave corrupt blobs and their entries in place")
    parsers["prune"].add_argument("--max-size", required=True, metavar="SIZE",
                                  help="the budget: 10G, 500M, 1.5GiB, 0 (powers of 1024)")
    for name in ("rm", "prune"):
        add_plan_flags(parsers[name])


def complete_ids(prefix: str, parsed_args, **_) -> list[str]:
    """Shell completion of ID: the cached identifiers and sha256 prefixes starting with
    ``prefix`` (none when there is no cache: completing never creates one)."""
    from .settings import load_settings

    try:
        root = getattr(parsed_args, "cache_dir", None) or load_settings().cache_dir
        cache = open_existing(Path(root).expanduser())
        try:
            entries = cache.entries()
        finally:
            cache.close()
    except Exception:  # a shell's TAB must never print a traceback
        return []
    found = {redact_url(e.identifier) for e in entries} | {e.sha256[:12] for e in entries}
    return sorted(i for i in found if i.startswith(prefix))


def run_cache_command(args, settings) -> int:
    """Run one ``hostkit cache`` action; return the exit code."""
    cache = open_existing(settings.cache_dir)
    action = args.cache_command
    if getattr(args, "id", None):
        args.id = _as_stored(cache, args.id)
    if action == "ls":
        return _ls(cache, args)
    if action == "info":
        entries, blobs = cache.lookup(args.id)
        _require(cache, entries or blobs, args.id)
        return _info(args, entries, blobs)
    if action in ("pin", "unpin"):
        entries = cache.set_pinned(args.id, action == "pin")
        _require(cache, entries, args.id)
        return _pinned(args, action, entries)
    if action == "rm":
        plan = cache.plan_remove(args.id)
        _require(cache, plan.entries or plan.blobs, args.id)
        return _delete(cache, plan, args)
    if action == "prune":
        try:
            budget = parse_size(args.max_size)
        except ValueError as exc:
            raise UsageError(str(exc), hint="write e.g. 10G, 500M or 0") from None
        if budget < 0:
            raise UsageError(f"--max-size {args.max_size} is negative", hint="write e.g. 10G")
        return _delete(cache, cache.plan_prune(budget), args, budget)
    if action == "verify":
        return _verify(cache, args)
    raise AssertionError(action)


def open_existing(root: Path) -> Cache:
    """The cache at ``root``; CacheError when there is none (it is not created)."""
    from .store.cache import Cache

    cache = Cache(root)
    if cache.layout.index_path.is_file():
        return cache
    why = "the folder does not exist" if not cache.root.exists() else \
        "it is a file, not a folder" if not cache.root.is_dir() else \
        "the folder holds no hostkit index (index.db)"
    raise CacheError(f"no cache at {cache.root}: {why}",
                     hint="the first `hostkit resolve` creates it; to use another cache pass "
                          "--cache-dir DIR or set HOSTKIT_CACHE_DIR (or cache_dir in "
                          "config.toml; `hostkit config` shows which applies)")


def _as_stored(cache: Cache, ident: str) -> str:
    """``ident`` as the index stores it: an identifier given with its credentials (a
    presigned URL as received) names the entry under its secret-free key."""
    from .identifiers import parse_identifier

    if cache.lookup(ident)[0]:
        return ident
    try:
        key = parse_identifier(ident).key
    except UsageError:
        return ident
    return key if cache.lookup(key)[0] else ident


def _require(cache: Cache, found, ident: str) -> None:
    if found:
        return
    if cache.short_prefix(ident):
        raise UsageError(f"{ident.strip()!r} is too short to name a blob: a sha256 prefix needs "
                         f"at least {MIN_SHA256_PREFIX} hex digits",
                         hint="give more digits (`hostkit cache ls` shows the first 12)")
    raise UsageError(f"nothing in the cache matches {redact_url(ident)!r}",
                     hint="`hostkit cache ls` lists identifiers and digests")


# -- JSON shapes --------------------------------------------------------------------------


def _entry_dict(entry) -> dict:
    # new entries hold no secrets; an index written by an older hostkit may (its keys were
    # the URLs as given), so what is shown goes through the one redaction function anyway
    d = asdict(entry)
    d["key"], d["identifier"] = redact_url(entry.key), redact_url(entry.identifier)
    return _with_times(d, ("created", "accessed", "checked"))


def _blob_dict(blob, identifiers: list[str] | None = None) -> dict:
    d = asdict(blob)
    d["path"] = str(blob.path)
    if identifiers is not None:
        d["identifiers"] = [redact_url(i) for i in identifiers]
    return _with_times(d, ("created", "accessed"))


def _with_times(d: dict, fields: tuple[str, ...]) -> dict:
    for name in fields:
        d[f"{name}_at"] = iso_time(d[name])
    return d


# -- human output ---------------------------------------------------------------------------

_HEADERS = ["SHA256", "SIZE", "LAST USED", "PINNED", "IDENTIFIER"]


def _rows(entries, blobs, *, hash_column: bool = False) -> list[list[str]]:
    """One row per entry, then one per blob no listed entry points at."""
    rows, named = [], set()
    for e in entries:
        named.add(e.sha256)
        trust = ["given" if e.verified else "first use"] if hash_column else []
        rows.append([e.sha256[:12], format_size(e.size), f"{format_age(e.accessed)} ago",
                     "yes" if e.pinned else "no", *trust, redact_url(e.identifier)
                     + (f" (folder, {plural(e.files or 0, 'file')})" if e.tree else "")])
    for b in blobs:
        if b.sha256 not in named:
            rows.append([b.sha256[:12], format_size(b.size), f"{format_age(b.accessed)} ago",
                         "no", *(["-"] if hash_column else []), "(no identifier)"])
    return rows


def _table(entries, blobs) -> str:
    return format_table(_HEADERS, _rows(entries, blobs), right=(1, 2))


def _ls(cache: Cache, args) -> int:
    entries, blobs = cache.entries(), cache.blobs()
    if args.json:
        print_json({"root": str(cache.root), "total_bytes": cache.total_size(),
                    "entries": [_entry_dict(e) for e in entries],
                    "blobs": [_blob_dict(b) for b in blobs]})
        return 0
    if not entries and not blobs:
        print(f"the cache at {cache.root} is empty")
        return 0
    headers = [*_HEADERS[:4], "HASH", _HEADERS[4]]
    print(format_table(headers, _rows(entries, blobs, hash_column=True), right=(1, 2)))
    print(f"\n{plural(len(entries), 'entry')}, {plural(len(blobs), 'blob')}, "
          f"{format_size(cache.total_size())} in {cache.root}")
    print("HASH: given = matched a hash passed to resolve; first use = recorded on the first "
          "download (trust on first use)")
    return 0


def _info(args, entries, blobs) -> int:
    if args.json:
        print_json({"entries": [_entry_dict(e) for e in entries],
                    "blobs": [_blob_dict(b, [e.identifier for e in entries
                                             if e.sha256 == b.sha256]) for b in blobs]})
        return 0
    by_sha = {b.sha256: b for b in blobs}
    blocks = []
    for e in entries:
        lines = [("identifier", redact_url(e.identifier))]
        if e.key != e.identifier:
            lines.append(("cache key", redact_url(e.key)))
        if e.tree:
            lines.append(("folder", f"{plural(e.files or 0, 'file')}; sha256 is its manifest's, "
                                    "size the bytes of its files"))
        lines += [("sha256", e.sha256), ("size", _size_bytes(e.size)),
                  ("pinned", "yes" if e.pinned else "no"),
                  ("hash", "given: matched a hash passed to resolve" if e.verified
                   else "first use: recorded on first download, never given"),
                  ("reference", "immutable (never rechecked)" if e.immutable
                   else f"mutable (validator {e.validator or 'none'})"),
                  ("stored", _when(e.created)), ("last used", _when(e.accessed)),
                  ("last checked", _when(e.checked))]
        lines += _blob_lines(by_sha.get(e.sha256))
        blocks.append(lines)
    for b in blobs:
        if not any(e.sha256 == b.sha256 for e in entries):
            blocks.append([("identifier", "(none: a blob no identifier points at)"),
                           ("sha256", b.sha256), ("size", _size_bytes(b.size)),
                           ("stored", _when(b.created)), ("last used", _when(b.accessed)),
                           *_blob_lines(b)])
    print("\n\n".join("\n".join(f"{k:<14}{v}" for k, v in block) for block in blocks))
    return 0


def _blob_lines(blob) -> list[tuple[str, str]]:
    if blob is None:
        return [("path", "(blob missing: the next resolve downloads it)")]
    digests = ", ".join(f"{alg}:{hexd}" for alg, hexd in sorted(blob.digests.items())
                        if alg != "sha256")
    return [("path", str(blob.path)), *([("digests", digests)] if digests else [])]


def _size_bytes(n: int) -> str:
    return f"{format_size(n)} ({n} bytes)"


def _when(ts: float) -> str:
    return f"{iso_time(ts)} ({format_age(ts)} ago)"


def _pinned(args, action: str, entries) -> int:
    shown = [redact_url(e.identifier) for e in entries]
    key = "pinned" if action == "pin" else "unpinned"
    if args.json:
        print_json({key: shown})
    else:
        for ident in shown:
            print(f"{key} {ident}")
    return 0


# -- rm and prune: plan, show, ask, execute ---------------------------------------------------


def _delete(cache: Cache, plan: DeletionPlan, args, budget: int | None = None) -> int:
    """Show ``plan``, ask on a terminal, execute it unless ``--dry-run``."""
    pinned_over = budget is not None and plan.pinned_bytes > budget
    if pinned_over:
        print(f"warning: pinned entries alone hold {format_size(plan.pinned_bytes)}, more than "
              f"--max-size {format_size(budget or 0)}; prune keeps them (`hostkit cache unpin "
              "ID` lets it evict one)", file=sys.stderr)
    empty = not (plan.entries or plan.blobs or plan.partials)
    if not args.json and not empty:
        print("would delete:" if args.dry_run else "to delete:")
        if plan.entries or plan.blobs:
            print(_table(plan.entries, plan.blobs))
        if plan.partials:
            print(f"{plural(len(plan.partials), 'abandoned partial download')} "
                  f"({format_size(plan.partial_bytes)})")
    done = plan
    if not args.dry_run and not empty:
        if not confirm(f"{_summary(plan)}: delete? [y/N] ", assume_yes=args.yes):
            print("nothing deleted", file=sys.stderr)
            return DECLINED
        done = cache.execute(plan)
    if args.json:
        print_json(_deletion_dict(cache, done, args.dry_run, budget, pinned_over))
    elif empty:
        print(f"nothing to prune: {format_size(plan.total_before)} held, within "
              f"{format_size(budget or 0)}" if budget is not None else "nothing to delete")
    else:
        verb = "would free" if args.dry_run else "freed"
        kept = [b for b in plan.blobs if b not in done.blobs]
        print(f"{'dry run: ' if args.dry_run else ''}{_summary(done)}; {verb} "
              f"{format_size(done.expected_freed_size)}; "
              f"{format_size(done.total_after)} left in the cache")
        if kept:
            print(f"kept {plural(len(kept), 'blob')} pinned or used by another identifier "
                  "since the plan was made")
        if plan.action == "remove" and (shared := _shared(plan)):
            print(f"{plural(shared, 'blob')} kept: other identifiers still use it")
    return 0


def _shared(plan: DeletionPlan) -> int:
    return len({e.sha256 for e in plan.entries} - {b.sha256 for b in plan.blobs})


def _summary(plan: DeletionPlan) -> str:
    parts = [plural(len(plan.entries), "entry"), plural(len(plan.blobs), "blob")]
    if plan.partials:
        parts.append(plural(len(plan.partials), "partial download"))
    return ", ".join(parts)


def _deletion_dict(cache: Cache, plan: DeletionPlan, dry_run: bool, budget: int | None,
                   pinned_over: bool) -> dict:
    blobs = [_blob_dict(b, plan.identifiers_of(b.sha256)) for b in plan.blobs]
    common = {"dry_run": dry_run, "freed_bytes": plan.expected_freed_size,
              "entries": [_entry_dict(e) for e in plan.entries], "blobs": blobs}
    if plan.action == "remove":
        return {"removed_entries": [redact_url(e.identifier) for e in plan.entries],
                "removed_blobs": [b.sha256 for b in plan.blobs], **common}
    return {"evicted": [b.sha256 for b in plan.blobs], **common,
            "partials_removed": len(plan.partials), "total_bytes": plan.total_after,
            "max_bytes": budget, "pinned_bytes": plan.pinned_bytes,
            "pinned_over_budget": pinned_over}


# -- verify -----------------------------------------------------------------------------------


def _verify(cache: Cache, args) -> int:
    blobs = cache.lookup(args.id)[1] if args.id else cache.blobs()
    if args.id:
        _require(cache, blobs, args.id)
    names: dict[str, list[str]] = {}
    for e in cache.entries():
        names.setdefault(e.sha256, []).append(e.identifier)
    problems = cache.verify(args.id, repair=not args.report_only)
    removed = not args.report_only
    if args.json:
        print_json({"checked": len(blobs), "checked_bytes": sum(b.size for b in blobs),
                    "problems": [{"sha256": b.sha256, "size": b.size, "problem": p,
                                  "identifiers": [redact_url(i) for i in names.get(b.sha256, [])],
                                  "removed": removed} for b, p in problems]})
        return CORRUPT if problems else 0
    checked = f"checked {plural(len(blobs), 'blob')} ({format_size(sum(b.size for b in blobs))})"
    if not problems:
        print(f"{checked}: every one matches its hashes")
        return 0
    rows = [[b.sha256[:12], format_size(b.size), p,
             ", ".join(redact_url(i) for i in names.get(b.sha256, [])) or "(no identifier)"]
            for b, p in problems]
    print(format_table(["SHA256", "SIZE", "PROBLEM", "IDENTIFIER"], rows, right=(1,)))
    print(f"{checked}: {plural(len(problems), 'problem')}; " +
          ("quarantined (the next resolve downloads them again)" if removed
           else "left in place (--report-only); run without it to quarantine them"))
    return CORRUPT
