"""The ``hostkit daemon`` and ``hostkit status`` commands (hostkit/cli.py dispatches here)."""

from __future__ import annotations

import json
import time

from . import DEFAULT_HOST, DEFAULT_PORT

#: Exit code of ``hostkit status`` when no daemon answers (as LSB ``status`` uses).
NOT_RUNNING = 3


def add_parsers(sub, common) -> None:
    """Add ``daemon`` and ``status`` to the CLI's subparsers."""
    d = sub.add_parser(
        "daemon", parents=[common], help="serve the resolver over HTTP (one cache, one download "
        "per file for every process on the machine)",
        description="Serve POST /v1/resolve, GET /v1/blobs/{sha256} and friends on "
                    f"{DEFAULT_HOST}:{DEFAULT_PORT} (or HOSTKIT_DAEMON_URL's address) until "
                    "SIGTERM/SIGINT. See daemon/README.md.")
    d.add_argument("--host", help=f"address to bind (default {DEFAULT_HOST}; anything but "
                   "loopback requires a token)")
    d.add_argument("--port", type=int, help=f"TCP port (default {DEFAULT_PORT})")
    d.add_argument("--socket", metavar="PATH", help="listen on a unix socket (created 0600)")
    d.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (prefer "
                   "--token-file or HOSTKIT_DAEMON_TOKEN: argv is visible to other users)")
    d.add_argument("--token-file", metavar="PATH", help="read the token from a file")
    d.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, let downloads in flight finish for this long (default 30)")
    sub.add_parser("status", parents=[common],
                   help="is a daemon running; its cache; what it is downloading")


def daemon_command(args, settings) -> int:
    """``hostkit daemon``: serve until a signal."""
    from .server import run_daemon

    return run_daemon(settings, host=args.host, port=args.port, socket_path=args.socket,
                      token=args.token, token_file=args.token_file, grace=args.grace,
                      verbose=args.verbose)


def status_command(args, settings) -> int:
    """``hostkit status``: 0 when a daemon answers, 3 when none does."""
    from .client import Address, DaemonClient, DaemonUnavailable

    url = settings.daemon_url or Address(host=DEFAULT_HOST, port=DEFAULT_PORT).url
    try:
        data = DaemonClient(url, connect_timeout=2.0).status()
    except DaemonUnavailable as exc:
        if args.json:
            print(json.dumps({"url": url, "running": False, "reason": str(exc)}, indent=2))
        else:
            print(f"no daemon: {exc}\nhostkit resolves in-process (cache "
                  f"{settings.cache_dir}); start one with `hostkit daemon`")
        return NOT_RUNNING
    if args.json:
        print(json.dumps({"url": url, "running": True, **data}, indent=2))
        return 0
    _print_status(url, data)
    return 0


def _print_status(url: str, d: dict) -> None:
    from hostkit.cli import format_size

    c, s = d["cache"], d["stats"]
    auth = ", token required" if d.get("auth") else ""
    state = " (shutting down)" if d.get("draining") else ""
    print(f"daemon     running at {url}{state} (pid {d['pid']}, up {_age(d['uptime'])}, "
          f"hostkit {d['version']}{auth})")
    print(f"cache      {c['root']}: {c['entries']} entries, {c['blobs']} blobs, "
          f"{format_size(c['total_bytes'])}")
    print(f"in flight  {d['in_flight_count']} download(s)")
    for p in d["in_flight"]:
        total = p["bytes_total"]
        of = f" of {format_size(total)} ({100 * p['bytes_done'] // max(total, 1)}%)" \
            if total else ""
        print(f"  {p['identifier']}  {format_size(p['bytes_done'])}{of}, {p['seconds']:.0f}s")
    print(f"jobs       {d['jobs']['active']} active")
    print(f"since start {s.get('hits', 0)} hits, {s.get('misses', 0)} misses, "
          f"{format_size(s.get('bytes_from_origin', 0))} downloaded")


def _age(seconds: float) -> str:
    from hostkit.cli import format_age

    return format_age(time.time() - seconds)
