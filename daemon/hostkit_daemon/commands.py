"""The ``hostkit daemon`` and ``hostkit status`` commands, added through the plugin hook.

Each parser sets ``handler``; the CLI runs ``handler(args, settings)`` (see
:func:`hostkit.hookspecs.hostkit_register_commands`).
"""

from __future__ import annotations

import time

from hostkit.formatting import format_age, format_size, help_formatter, print_json

from . import DEFAULT_HOST, DEFAULT_PORT, defaults

#: Exit code of ``hostkit status`` when no daemon answers (as LSB ``status`` uses).
NOT_RUNNING = 3

DAEMON_EPILOG = """\
examples:
  hostkit daemon                                   # this user's socket, until Ctrl-C
  hostkit daemon --group ml --allow-user alice     # one daemon shared by a group
  hostkit daemon --host 127.0.0.1 --port 8765 --token-file ~/.hostkit-token
`hostkit resolve` and the Python API use a daemon on this user's default socket; for
another one set HOSTKIT_DAEMON_URL (unix:PATH or http://HOST:PORT)
"""

STATUS_EPILOG = """\
examples:
  hostkit status
  hostkit status --json | jq '.in_flight'
  HOSTKIT_DAEMON_URL=http://127.0.0.1:8765 hostkit status
"""


def add_parsers(sub, common) -> None:
    """Add ``daemon`` and ``status`` to the CLI's subparsers."""
    raw = help_formatter()
    d = sub.add_parser(
        "daemon", parents=[common], help="serve the resolver over HTTP (one cache, one download "
        "per file for every process on the machine)",
        description="Serve POST /v1/resolve, GET /v1/blobs/{sha256} and friends on "
                    "$XDG_RUNTIME_DIR/hostkit/daemon.sock (or --socket, --host/--port, or "
                    "HOSTKIT_DAEMON_URL's address) until SIGTERM/SIGINT. See daemon/README.md.",
        epilog=DAEMON_EPILOG, formatter_class=raw)
    d.add_argument("--host", help=f"TCP address to bind (default {DEFAULT_HOST} when --port is "
                   "given; anything but loopback requires --token)")
    d.add_argument("--port", type=int, help=f"TCP port (default {DEFAULT_PORT} when --host is "
                   "given); a token is generated when none is given")
    d.add_argument("--socket", metavar="PATH", help="listen on this unix socket (created 0600)")
    d.add_argument("--group", metavar="NAME", help="shared mode: the socket is 0660 and owned "
                   "by this group; callers are identified by uid")
    d.add_argument("--allow-user", action="append", metavar="USER", help="a user (name or uid) "
                   "the daemon resolves credentialed sources for besides its own (repeatable)")
    d.add_argument("--allow-host", action="append", metavar="NAME", help="accept this Host "
                   "header name too (behind a proxy; repeatable)")
    d.add_argument("--token", help="require 'Authorization: Bearer TOKEN' (prefer "
                   "--token-file or HOSTKIT_DAEMON_TOKEN: argv is visible to other users)")
    d.add_argument("--token-file", metavar="PATH", help="read the token from a file")
    d.add_argument("--jobs", type=int, default=defaults.CONCURRENCY, metavar="N",
                   help=f"prefetch items resolved at a time (default {defaults.CONCURRENCY})")
    d.add_argument("--max-queued", type=int, default=defaults.MAX_PENDING, metavar="N",
                   help="prefetch items one caller may have waiting or running; more is "
                        f"answered 429 (default {defaults.MAX_PENDING})")
    d.add_argument("--stall", type=float, default=defaults.STALL_SECONDS, metavar="SECONDS",
                   help="a prefetch item without progress this long gives its slot back "
                        f"(default {defaults.STALL_SECONDS:g})")
    d.add_argument("--scrub-rate", type=int, default=defaults.SCRUB_RATE, metavar="BYTES",
                   help="re-hash stored blobs in the background at this many bytes/s; "
                        f"0 turns it off (default {defaults.SCRUB_RATE >> 20} MiB/s)")
    d.add_argument("--grace", type=float, default=30.0, metavar="SECONDS",
                   help="on SIGTERM, let downloads in flight finish for this long (default 30)")
    d.set_defaults(handler=daemon_command)
    status = sub.add_parser("status", parents=[common],
                            help="is a daemon running; its cache; what it is downloading",
                            description="Ask the daemon (HOSTKIT_DAEMON_URL, else the default "
                                        "socket) how it is: its address, pid, uptime and "
                                        "version, its cache, downloads in flight, jobs and "
                                        "hits since start. Exit code 0 when a daemon answers, "
                                        f"{NOT_RUNNING} when none does.",
                            epilog=STATUS_EPILOG, formatter_class=raw)
    status.set_defaults(handler=status_command)


def daemon_command(args, settings) -> int:
    """``hostkit daemon``: serve until a signal."""
    from hostkit.errors import UsageError

    from .server import run_daemon

    if args.jobs < 1 or args.max_queued < 1 or args.stall <= 0 or args.scrub_rate < 0:
        raise UsageError("--jobs and --max-queued must be at least 1, --stall above 0, "
                         "--scrub-rate at least 0", hint="see hostkit daemon --help")

    return run_daemon(settings, host=args.host, port=args.port, socket_path=args.socket,
                      token=args.token, token_file=args.token_file, grace=args.grace,
                      verbose=args.verbose, group=args.group, allow_users=args.allow_user,
                      allow_hosts=args.allow_host, scrub_rate=args.scrub_rate,
                      concurrency=args.jobs, max_pending=args.max_queued,
                      stall_seconds=args.stall)


def status_command(args, settings) -> int:
    """``hostkit status``: 0 when a daemon answers, 3 when none does."""
    from hostkit.client import DaemonUnavailable, client_for, daemon_url, default_socket

    url = daemon_url(settings) or f"unix:{default_socket(settings)}"
    try:
        data = client_for(settings, url).status()
    except DaemonUnavailable as exc:
        if args.json:
            print_json({"url": url, "running": False, "reason": str(exc)})
        else:
            print(f"no daemon: {exc}\nhostkit resolves in-process (cache "
                  f"{settings.cache_dir}); start one with `hostkit daemon`")
        return NOT_RUNNING
    if args.json:
        print_json({"url": url, "running": True, **data})
        return 0
    _print_status(url, data)
    return 0


def _print_status(url: str, d: dict) -> None:
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
    if "tier_hits" in s:  # a shared tier is set (and was used since start)
        print(f"tier       {s['tier_hits']} hits, {s.get('tier_misses', 0)} misses, "
              f"{format_size(s.get('tier_bytes', 0))} from the tier instead of origins, "
              f"{s.get('tier_published', 0)} published, {s.get('tier_rejected', 0)} rejected")


def _age(seconds: float) -> str:
    return format_age(time.time() - seconds)
