"""``hostkit resolve``: identifiers to verified local paths on the command line."""

from __future__ import annotations

import os
import sys


def add_resolve_command(sub, common, epilog: str) -> None:
    """Add ``resolve`` to the ``hostkit`` subparsers."""
    import argparse

    r = sub.add_parser("resolve", parents=[common], help="download (once) and print a local path",
                       description="Print the local path of the verified bytes an identifier "
                                   "names, downloading them only if they are not cached.",
                       epilog=epilog, formatter_class=argparse.RawDescriptionHelpFormatter)
    r.add_argument("identifier")
    r.add_argument("hash", nargs="?", help="expected hash (same as --hash)")
    r.add_argument("--hash", dest="hash_opt", metavar="HASH", help="expected hash, alg:hex")
    r.add_argument("--offline", action="store_true", default=None,
                   help="never use the network; answer from the cache or fail")
    r.add_argument("--require-hash", action="store_true", default=None,
                   help="refuse to resolve without an expected hash")
    r.add_argument("--pin", action="store_true", default=None,
                   help="resolve a branch or tag (github:) as the commit it names now and "
                        "record that pinned identifier, instead of refusing it")
    r.add_argument("-o", "--output", metavar="PATH",
                   help="also place the verified file at PATH (a read-only hard link from the "
                        "cache, else a copy; atomic; replaces an existing file) and print PATH")


def run_resolve(args, settings) -> int:
    """``hostkit resolve``: print the path (or JSON) of the verified bytes."""
    from .errors import UsageError
    from .formatting import print_json

    expected = args.hash_opt or args.hash
    if args.hash_opt and args.hash and args.hash_opt != args.hash:
        raise UsageError("two different hashes given", hint="pass one hash")
    if args.output is not None and not args.output:
        raise UsageError("-o needs a file path", hint="pass -o PATH")
    settings = settings.with_overrides(offline=args.offline, require_hash=args.require_hash)
    from . import api
    from .progress import progress_for

    # through the daemon when HOSTKIT_DAEMON_URL is set, unless --cache-dir names another cache
    resolved = api.resolve_info(args.identifier, expected, settings=settings,
                                cache_dir=_path(args.cache_dir), progress=progress_for(settings),
                                pin=args.pin)
    placed = None
    if args.output is not None:
        from .place import place

        placed = place(resolved.path, _path(args.output))
    if args.json:
        print_json({**resolved.to_dict(), **({"placed": str(placed)} if placed else {})})
    else:
        print(placed or resolved.path)
        if resolved.pinned_from and not args.quiet:
            print(f"note: {resolved.pinned_from} pinned as {resolved.identifier}",
                  file=sys.stderr)
        if not resolved.verified and not args.quiet:
            print(f"note: no hash given; sha256:{resolved.sha256} recorded on first use. "
                  "Pass it with --hash to pin these bytes.", file=sys.stderr)
    return 0


def _path(value):
    from pathlib import Path

    return Path(os.path.expanduser(value)) if value else None
