"""``hostkit tier status|ls|prune``: the site's shared tier, seen and pruned from any node.

The commands talk to the tier directly (the ``tier`` setting, the s3
backend's endpoint and credentials), in this process. ``status`` adds this
node's counters when a daemon answers (hits, bytes the tier saved the origin,
rejections), since those are kept per daemon; ``/metrics`` of every node
summed gives the site's.
"""

from __future__ import annotations

import asyncio
import re
import sys
import time

from hostkit.errors import HostkitError, UsageError
from hostkit.formatting import (
    add_actions,
    add_plan_flags,
    confirm,
    format_age,
    format_size,
    format_table,
    help_formatter,
    parse_size,
    plural,
    print_json,
)

#: Exit code when a prune was declined at the prompt (as ``hostkit cache prune``).
DECLINED = 1

TIER_EPILOG = """\
examples:
  hostkit tier status
  hostkit tier ls --json | jq '.blobs[].sha256'
  hostkit tier prune --older-than 30d --max-size 2T --dry-run
the tier is the setting tier (HOSTKIT_TIER), e.g. s3://bucket/prefix or
minio://host:9000/bucket/prefix; see docs/cluster.md
"""

_ACTIONS = {
    "status": ("what the tier holds, and this node's tier counters",
               "Count the tier's blobs (bytes, oldest, newest), refs and leases (held, "
               "released), and show this node's daemon counters: tier hits and misses, "
               "bytes the tier saved the origin, blobs published and rejected.",
               "  hostkit tier status\n  hostkit tier status --json"),
    "ls": ("the tier's blobs and the identifiers pointing at them",
           "List every blob of the tier, newest first: sha256, size, age and the "
           "identifiers whose refs name it (secret-free, as resolved).",
           "  hostkit tier ls\n  hostkit tier ls --json"),
    "prune": ("evict blobs by age or size",
              "Delete blobs written longer ago than --older-than, then the oldest until the "
              "rest fit in --max-size (object stores record no reads, so eviction is by write "
              "time), with the refs left without their blob and leases released over an hour "
              "ago. Plans first: --dry-run shows it, a terminal is asked.",
              "  hostkit tier prune --max-size 500G --dry-run\n"
              "  hostkit tier prune --older-than 30d -y"),
}


def add_tier_command(sub, common) -> None:
    """Add ``tier`` and its actions to the ``hostkit`` subparsers."""
    raw = help_formatter()
    t = sub.add_parser("tier", help="the site's shared tier: status, ls, prune",
                       description="Inspect and prune the shared tier a site's nodes use "
                                   "between their local caches and the origins (the tier "
                                   "setting).", epilog=TIER_EPILOG, formatter_class=raw)
    parsers = add_actions(t, "tier_command", common, _ACTIONS)
    for parser in parsers.values():
        parser.set_defaults(handler=run_tier_command)
    prune = parsers["prune"]
    prune.add_argument("--max-size", metavar="SIZE",
                       help="keep at most this much: 500G, 2T, 0 (powers of 1024)")
    prune.add_argument("--older-than", metavar="AGE",
                       help="delete blobs written longer ago than this: 30d, 12h, 90m, 3600s")
    add_plan_flags(prune)


def parse_age(text: str) -> float:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``3600`` -> seconds; UsageError otherwise."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", text.lower())
    if not match:
        raise UsageError(f"--older-than {text!r} is not an age",
                         hint="write e.g. 30d, 12h, 90m or 3600s")
    unit = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}[match.group(2)]
    return float(match.group(1)) * unit


def run_tier_command(args, settings) -> int:
    """Run one ``hostkit tier`` action; return the exit code."""
    budget = age = None
    if settings.offline:
        raise UsageError("the tier is on the network and offline mode is on",
                         hint="drop --offline (or unset HOSTKIT_OFFLINE)")
    if args.tier_command == "prune":
        if args.max_size is None and args.older_than is None:
            raise UsageError("prune needs --max-size or --older-than (or both)",
                             hint="e.g. hostkit tier prune --older-than 30d --dry-run")
        if args.max_size is not None:
            try:
                budget = parse_size(args.max_size)
            except ValueError as exc:
                raise UsageError(str(exc), hint="write e.g. 500G, 2T or 0") from None
            if budget < 0:
                raise UsageError(f"--max-size {args.max_size} is negative",
                                 hint="write e.g. 500G")
        if args.older_than is not None:
            age = parse_age(args.older_than)
    return asyncio.run(_run(args, settings, budget, age))


async def _run(args, settings, budget: int | None, age: float | None) -> int:
    from hostkit.resolver import Resolver
    from hostkit.tier import survey

    resolver = Resolver(settings)
    try:
        tier = resolver.shared_tier()
        if tier is None:
            raise UsageError("no shared tier is set",
                             hint='set tier = "s3://bucket/prefix" in config.toml or '
                                  "HOSTKIT_TIER (see docs/cluster.md)")
        found = await survey(tier.store, refs=args.tier_command != "status")
        if args.tier_command == "status":
            return _status(args, settings, found)
        if args.tier_command == "ls":
            return _ls(args, found)
        return await _prune(args, tier.store, found, budget, age)
    finally:
        await resolver.aclose()


def _status(args, settings, found) -> int:
    now = time.time()
    held = [(o, s) for o, s in found.leases if not s.released and s.expires >= now]
    times = [b.modified for b in found.blobs if b.modified is not None]
    node, refused = _node_stats(settings)
    if args.json:
        print_json({"tier": found.url, "blobs": len(found.blobs), "bytes": found.total_size,
                    "oldest": min(times, default=None), "newest": max(times, default=None),
                    "refs": found.ref_count,
                    "leases": {"held": len(held), "other": len(found.leases) - len(held)},
                    "held": [{"node": s.node, "pid": s.pid, "expires": s.expires}
                             for _, s in held],
                    "node": node, "node_error": refused})
        return 0
    span = f", oldest {format_age(min(times))}, newest {format_age(max(times))}" if times else ""
    print(f"tier       {found.url}")
    print(f"blobs      {len(found.blobs)} ({format_size(found.total_size)}){span}")
    print(f"refs       {found.ref_count}")
    print(f"leases     {len(held)} held, {len(found.leases) - len(held)} released or expired")
    for _, s in held:
        print(f"  node {s.node} pid {s.pid} fetching, lease good for "
              f"{max(s.expires - now, 0):.0f}s")
    if refused is not None:
        print(f"this node  the daemon refused its counters: {refused}")
    elif node is None:
        print("this node  no daemon answers: tier counters are kept by each node's daemon")
    else:
        print(f"this node  {node.get('tier_hits', 0)} tier hits, "
              f"{node.get('tier_misses', 0)} misses; "
              f"{format_size(node.get('tier_bytes', 0))} from the tier (origin bytes saved), "
              f"{format_size(node.get('bytes_from_origin', 0))} from origins; "
              f"{node.get('tier_published', 0)} published, {node.get('tier_rejected', 0)} "
              f"rejected, {node.get('tier_errors', 0)} tier errors")
    return 0


def _node_stats(settings) -> tuple[dict | None, str | None]:
    """(this node's daemon counters, None), (None, None) when no daemon answers, or
    (None, why) when it refused (a wrong token): the tier's own status is shown anyway."""
    from hostkit.client import DaemonUnavailable, client_for, daemon_url, default_socket

    url = daemon_url(settings) or f"unix:{default_socket(settings)}"
    try:
        return client_for(settings, url).status().get("stats") or {}, None
    except DaemonUnavailable:
        return None, None
    except HostkitError as exc:
        return None, exc.message


def _ls(args, found) -> int:
    if args.json:
        print_json({"tier": found.url, "total_bytes": found.total_size,
                    "blobs": [{"sha256": b.sha256, "size": b.size, "modified": b.modified,
                               "identifiers": b.identifiers} for b in found.blobs]})
        return 0
    if not found.blobs:
        print(f"the tier {found.url} holds no blobs")
        return 0
    rows = [[b.sha256[:12], format_size(b.size),
             format_age(b.modified) if b.modified else "?", ", ".join(b.identifiers) or "-"]
            for b in found.blobs]
    print(format_table(["sha256", "size", "written", "identifiers"], rows, right=(1, 2)))
    print(f"{plural(len(found.blobs), 'blob')}, {format_size(found.total_size)}")
    return 0


async def _prune(args, store, found, budget: int | None, age: float | None) -> int:
    from hostkit.tier import execute_prune, plan_prune

    plan = plan_prune(found, max_size=budget, older_than=age)
    empty = not (plan.blobs or plan.refs or plan.leases)
    summary = (f"{plural(len(plan.blobs), 'blob')} ({format_size(plan.freed)}), "
               f"{plural(len(plan.refs), 'ref')}, {plural(len(plan.leases), 'old lease')}")
    if not args.json and not empty:
        print("would delete:" if args.dry_run else "to delete:")
        if plan.blobs:
            print(format_table(["sha256", "size", "written", "identifiers"],
                               [[b.sha256[:12], format_size(b.size),
                                 format_age(b.modified) if b.modified else "?",
                                 ", ".join(b.identifiers) or "-"] for b in plan.blobs],
                               right=(1, 2)))
    if not args.dry_run and not empty:
        if not confirm(f"{summary}: delete from {found.url}? [y/N] ", assume_yes=args.yes):
            print("nothing deleted", file=sys.stderr)
            return DECLINED
        await execute_prune(store, plan)
    if args.json:
        print_json({"tier": found.url, "dry_run": args.dry_run,
                    "evicted": [b.sha256 for b in plan.blobs], "freed_bytes": plan.freed,
                    "refs_removed": len(plan.refs), "leases_removed": len(plan.leases),
                    "total_bytes": plan.total_after, "max_bytes": budget})
    elif empty:
        print(f"nothing to prune: {format_size(plan.total_before)} in the tier")
    else:
        verb = "would free" if args.dry_run else "freed"
        print(f"{'dry run: ' if args.dry_run else ''}{summary}; {verb} "
              f"{format_size(plan.freed)}; {format_size(plan.total_after)} left in the tier")
    return 0
