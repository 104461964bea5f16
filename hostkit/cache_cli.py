"""``hostkit cache ls | info | verify | rm | prune | pin | unpin``."""

from __future__ import annotations

import json
import sys
from dataclasses import asdict

from .errors import UsageError
from .formatting import format_age, format_size, parse_size, print_json
from .redact import redact_url
from .store.cache import Cache


def run_cache_command(args, settings) -> int:
    """Run one ``hostkit cache`` action; return the exit code."""
    cache = Cache(settings.cache_dir)
    action = args.cache_command
    if getattr(args, "id", None):
        args.id = _as_stored(cache, args.id)
    if action == "ls":
        return _ls(cache, args)
    if action == "info":
        entries, blobs = cache.lookup(args.id)
        _require(entries or blobs, args.id)
        return _emit(args, {"entries": [_entry_dict(e) for e in entries],
                            "blobs": [_blob_dict(b) for b in blobs]})
    if action in ("pin", "unpin"):
        entries = cache.set_pinned(args.id, action == "pin")
        _require(entries, args.id)
        return _emit(args, {"pinned" if action == "pin" else "unpinned":
                            [redact_url(e.identifier) for e in entries]})
    if action == "rm":
        entries, blobs = cache.remove(args.id)
        _require(entries or blobs, args.id)
        return _emit(args, {"removed_entries": [redact_url(e.identifier) for e in entries],
                            "removed_blobs": [b.sha256 for b in blobs],
                            "freed_bytes": sum(b.size for b in blobs)})
    if action == "prune":
        try:
            budget = parse_size(args.max_size)
        except ValueError as exc:
            raise UsageError(str(exc), hint="write e.g. 10G, 500M or 0") from None
        evicted = cache.prune(budget)
        return _emit(args, {"evicted": [b.sha256 for b in evicted],
                            "freed_bytes": sum(b.size for b in evicted),
                            "total_bytes": cache.total_size(), "max_bytes": budget})
    if action == "verify":
        checked = len(cache.lookup(args.id)[1]) if args.id else cache.counts()[1]
        problems = cache.verify(args.id, repair=not args.report_only)
        report = {"checked": checked,
                  "problems": [{"sha256": b.sha256, "problem": p,
                                "removed": not args.report_only} for b, p in problems]}
        _emit(args, report)
        return 8 if problems else 0
    raise AssertionError(action)


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


def _require(found, ident: str) -> None:
    if not found:
        raise UsageError(f"nothing in the cache matches {redact_url(ident)!r}",
                         hint="`hostkit cache ls` lists identifiers and digests")


def _entry_dict(entry) -> dict:
    # new entries hold no secrets; an index written by an older hostkit may (its keys were
    # the URLs as given), so what is shown goes through the one redaction function anyway
    d = asdict(entry)
    d["key"], d["identifier"] = redact_url(entry.key), redact_url(entry.identifier)
    return d


def _blob_dict(blob) -> dict:
    d = asdict(blob)
    d["path"] = str(blob.path)
    return d


def _ls(cache: Cache, args) -> int:
    entries, blobs = cache.entries(), cache.blobs()
    if args.json:
        print_json({"root": str(cache.root), "total_bytes": cache.total_size(),
                    "entries": [_entry_dict(e) for e in entries],
                    "blobs": [_blob_dict(b) for b in blobs]})
        return 0
    print(f"{'SHA256':<14}{'SIZE':>11}  {'USED':>5}  {'':<3} IDENTIFIER")
    referenced = set()
    for e in entries:
        referenced.add(e.sha256)
        flags = ("P" if e.pinned else "-") + ("V" if e.verified else "T") + \
                ("I" if e.immutable else "-")
        print(f"{e.sha256[:12]:<14}{format_size(e.size):>11}  {format_age(e.accessed):>5}  "
              f"{flags:<3} {redact_url(e.identifier)}")
    for b in blobs:
        if b.sha256 not in referenced:
            print(f"{b.sha256[:12]:<14}{format_size(b.size):>11}  {format_age(b.accessed):>5}  "
                  f"{'-':<3} (blob only)")
    print(f"\n{len(blobs)} blobs, {format_size(cache.total_size())} in {cache.root}"
          "\nflags: P pinned, V verified against a given hash / T trust on first use, "
          "I immutable reference", file=sys.stderr)
    return 0


def _emit(args, data: dict) -> int:
    if args.json:
        print_json(data)
    else:
        for key, value in data.items():
            if isinstance(value, list):
                print(f"{key}: {len(value)}")
                for item in value:
                    print(f"  {json.dumps(item, default=str) if isinstance(item, dict) else item}")
            else:
                print(f"{key}: {value}")
    return 0
