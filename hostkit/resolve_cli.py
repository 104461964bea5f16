"""``hostkit resolve`` and ``hostkit lock``: identifiers to verified local paths, one or many.

``hostkit resolve ID [ID...]``: each identifier optionally as ``ID=HASH``, or
followed by its hash (a positional that parses as a hash, or ``--hash``);
``-r FILE`` reads a list or a lock file (:mod:`hostkit.lockfile`). One
identifier keeps the single answer (a path, or one JSON object); several, or
``-r``, resolve in parallel (``-j``) through :func:`hostkit.api.resolve_many`
and answer per item: a path a line, or a JSON list. ``hostkit lock`` resolves
the same way and writes each identifier's sha256 into a lock file.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
from dataclasses import dataclass

SEVERAL_EPILOG = """
several at once (resolved in parallel, -j at a time; an answer per item):
  hostkit resolve URL1 URL2=sha256:3f2a... URL3 --hash sha256:9bc1...  # a hash belongs
                                                                   # to the identifier before it
  hostkit resolve -r assets.txt -o models/      # IDENTIFIER [HASH] a line; each file in models/
  hostkit resolve -r hostkit.lock --json        # a lock file: every hash verified; a JSON list
exit status with several items: the worst outcome, in this order: 3 (hash mismatch or changed
  bytes) > 2 (usage) > 6 (cache) > 7 (plugin) > 4 (backend, network) > 5 (offline) > 1 (other).
  An item refused before resolving (malformed, unknown scheme, bad hash, clashing -o names)
  refuses the whole list: nothing is downloaded, exit 2.
"""

LOCK_EPILOG = """\
examples:
  hostkit lock https://example.org/w.bin synapse:syn123      # writes ./hostkit.lock
  hostkit lock -r assets.txt -o assets.lock                  # every line of a list
  hostkit resolve -r hostkit.lock                            # later, elsewhere: verify all
An existing lock file is updated: entries of the given identifiers are replaced in place
(keeping their output names), new ones are appended, others are left as they are. Nothing is
written unless every item resolved. Identifiers carrying a credential (user:password@, a
token or a signature in the URL) are refused: a lock file is meant to be shared.
"""

#: Exit codes from worst to least bad, for a list of outcomes (0 is success, best of all).
SEVERITY = (3, 2, 6, 7, 4, 5, 1)


@dataclass
class Want:
    """One item to resolve: where it came from (``FILE:LINE``, or None for an argument)."""

    identifier: str
    hash: str | None
    output: str | None = None
    where: str | None = None


class _OrderedParser(argparse.ArgumentParser):
    """Keeps the order of identifiers and ``--hash`` options (a hash belongs to the
    identifier before it), which argparse does not record.

    argparse also takes only the first run of positionals for ``nargs="*"``
    (``ID1 --hash H ID2`` leaves ID2 unrecognised). So the arguments are walked
    once here, their order kept as ``sequence``, and argparse is handed the
    options first, then ``--`` and every positional.
    """

    def parse_known_args(self, args: list[str] | None = None,  # type: ignore[override]
                         namespace: argparse.Namespace | None = None
                         ) -> tuple[argparse.Namespace, list[str]]:
        """argparse's parse, with ``namespace.sequence``: ``[("item"|"hash", text), ...]``."""
        args = list(sys.argv[1:] if args is None else args)
        options: list[str] = []
        positionals: list[str] = []
        sequence: list[tuple[str, str]] = []
        i = 0
        while i < len(args):
            arg = args[i]
            if arg == "--":
                positionals.extend(args[i + 1:])
                sequence.extend(("item", a) for a in args[i + 1:])
                break
            if not arg.startswith("-") or arg == "-":
                positionals.append(arg)
                sequence.append(("item", arg))
                i += 1
                continue
            options.append(arg)
            action, value = self._option_value(arg)
            if action is not None and action.nargs != 0 and value is None \
                    and i + 1 < len(args):
                i += 1
                value = args[i]
                options.append(value)
            if action is not None and action.dest == "hashes" and value is not None:
                sequence.append(("hash", value))
            i += 1
        parsed, extras = super().parse_known_args(
            options + (["--", *positionals] if positionals else []), namespace)
        parsed.sequence = sequence
        return parsed, extras

    def _option_value(self, arg: str):
        """``(action, attached value or None)`` of an option string, as argparse reads it."""
        known = self._option_string_actions
        if arg.startswith("--"):
            name, eq, value = arg.partition("=")
            matches = [known[name]] if name in known else \
                list({id(a): a for o, a in known.items() if o.startswith(name)}.values())
            return (matches[0] if len(matches) == 1 else None), (value if eq else None)
        for n in range(1, len(arg)):  # -j4, -qj 4: flags, then one that takes a value
            action = known.get("-" + arg[n])
            if action is None:
                return None, None
            if action.nargs != 0:
                rest = arg[n + 1:]
                return action, (rest.removeprefix("=") if rest else None)
        return None, None


def _item_arguments(p, verb: str) -> None:
    p.add_argument("items", nargs="*", metavar="ID",
                   help=f"identifier to {verb}, optionally as ID=HASH or followed by its hash "
                        "(alg:hex, or bare sha256 hex as MedPerf writes it)")
    p.add_argument("--hash", dest="hashes", action="append", metavar="HASH",
                   help="expected hash of the identifier before it, alg:hex")
    p.add_argument("-r", "--requirement", dest="lists", action="append", metavar="FILE",
                   help="read identifiers from FILE: one IDENTIFIER [HASH] a line (# comments), "
                        "or a hostkit.lock; - reads a list from standard input (repeatable)")
    p.add_argument("-j", "--jobs", type=int, default=4, metavar="N",
                   help="resolve up to N items at a time (default 4)")
    p.add_argument("--require-same", action="store_true", default=None,
                   help="an identifier resolved without a hash that now gives other bytes "
                        "than recorded is an error (exit 3), and the cache keeps the old ones "
                        "(also HOSTKIT_REQUIRE_SAME=1)")
    p.add_argument("--pin", action="store_true", default=None,
                   help="resolve a branch or tag (github:) as the commit it names now and "
                        "record that pinned identifier, instead of refusing it")


def add_resolve_command(sub, common, epilog: str) -> None:
    """Add ``resolve`` and ``lock`` to the ``hostkit`` subparsers."""
    from .formatting import help_formatter

    r = sub.add_parser("resolve", parents=[common], help="download (once) and print a local path",
                       description="Print the local path of the verified bytes an identifier "
                                   "names, downloading them only if they are not cached. "
                                   "Several identifiers (or -r FILE) are resolved in "
                                   "parallel: one path a line, or a JSON list.",
                       epilog=epilog + SEVERAL_EPILOG, formatter_class=help_formatter())
    r.__class__ = _OrderedParser  # argparse builds the subparser; the order is kept here
    _item_arguments(r, "resolve")
    r.add_argument("--offline", action="store_true", default=None,
                   help="never use the network; answer from the cache or fail")
    r.add_argument("--require-hash", action="store_true", default=None,
                   help="refuse to resolve without an expected hash")
    r.add_argument("-o", "--output", metavar="PATH",
                   help="also place the verified file at PATH (a read-only hard link from the "
                        "cache, else a copy; atomic; replaces an existing file) and print PATH; "
                        "DIR/ (a trailing slash, or several items) is a folder, each file "
                        "placed in it under its lock file output name or its identifier's "
                        "file name (names that clash, also by case, are refused). A folder "
                        "identifier "
                        "(s3://bucket/prefix/, ...) is placed as a folder at PATH, built next "
                        "to it and renamed in (a mount point, which cannot be renamed, is "
                        "filled in place); an existing PATH is replaced only when empty "
                        "or placed by hostkit")
    lock = sub.add_parser("lock", parents=[common], help="write the sha256 of identifiers to a "
                          "lock file", description="Resolve each identifier and record its "
                          "sha256 and size in a lock file (TOML), which `hostkit resolve -r "
                          "FILE` verifies later: pip's --require-hashes, for assets.",
                          epilog=LOCK_EPILOG, formatter_class=help_formatter())
    lock.__class__ = _OrderedParser
    _item_arguments(lock, "lock")
    lock.add_argument("-o", "--output", metavar="LOCK", help="the lock file to write or update "
                      "(default: ./hostkit.lock)")
    lock.set_defaults(handler=run_lock)


# -- resolve ---------------------------------------------------------------------------


def run_resolve(args, settings) -> int:
    """``hostkit resolve``: print the path (or JSON) of the verified bytes, of each item."""
    from .errors import UsageError

    wants = _wants(args)
    if not wants:
        raise UsageError("no identifier given", hint="hostkit resolve ID [HASH], or -r FILE")
    settings = settings.with_overrides(offline=args.offline, require_hash=args.require_hash,
                                       require_same=args.require_same)
    if len(wants) == 1 and not args.lists:
        return _resolve_one(args, settings, wants[0])
    out_dir = _output_dir(args.output) if args.output is not None else None
    return _resolve_many(args, settings, wants, out_dir=out_dir)


def _resolve_one(args, settings, want: Want) -> int:
    """One identifier: the answer hostkit always gave (a path, or one JSON object)."""
    from .errors import UsageError
    from .formatting import print_json

    if args.output is not None and not args.output:
        raise UsageError("-o needs a file path", hint="pass -o PATH")
    target = _path(args.output)
    if args.output is not None and args.output.endswith(("/", os.sep)):
        # -o DIR/ names a folder (as with several items): the file goes in it, under its name
        name = _safe_name(want.output) if want.output is not None else \
            _file_name(want.identifier)
        target = _output_dir(args.output) / name
    from .progress import progress_for

    # through the daemon when HOSTKIT_DAEMON_URL is set, unless --cache-dir names another cache
    with _own_warnings():
        resolved = _api().resolve_info(want.identifier, want.hash, settings=settings,
                                       cache_dir=_path(args.cache_dir),
                                       progress=progress_for(settings), pin=args.pin)
    placed = None
    if target is not None:
        placed = _place(resolved, target, want, args, settings)
    _warn(resolved)
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


def _resolve_many(args, settings, wants: list[Want], *, out_dir=None) -> int:
    """Several items: check all, resolve in parallel, place, answer per item."""
    ran = _run(args, settings, wants, out_dir=out_dir)
    if ran is None:
        return 2
    outcomes, placed = ran
    _report(args, wants, outcomes, placed)
    return _worst(outcomes)


def _run(args, settings, wants: list[Want], *, out_dir=None, refused: dict | None = None):
    """Every item's Resolved or error, in order, and where each was placed (``-o DIR/``);
    None when some were refused (reported)."""
    from .errors import HostkitError, ItemsRefused, UsageError

    if args.jobs < 1:
        raise UsageError(f"-j {args.jobs}: the number of parallel resolves must be 1 or more",
                         hint="e.g. -j 4")
    api = _api()
    pairs = [(w.identifier, w.hash) for w in wants]
    given = dict(refused or {})
    refused = dict(given)
    names = _output_names(wants, refused) if out_dir is not None else {}
    if refused:  # the API's checks too, so that every refused item is named at once
        refused = given
        for index, error in api.check_many(pairs, settings=settings):
            refused.setdefault(index, error)
        if out_dir is not None:
            _output_names(wants, refused)
        _report_refused(args, wants, refused)
        return None
    from .progress import batch_progress_for

    try:  # resolve_many checks every item (check_many) before it resolves any
        with _own_warnings():
            outcomes: list = api.resolve_many(
                pairs, jobs=args.jobs, settings=settings, cache_dir=_path(args.cache_dir),
                progress=batch_progress_for(settings, len(wants)), pin=args.pin)
    except ItemsRefused as exc:
        _report_refused(args, wants, dict(exc.refused))
        return None
    placed: dict[int, object] = {}
    if out_dir is not None:
        for index, outcome in enumerate(outcomes):
            if not isinstance(outcome, HostkitError):
                try:
                    placed[index] = _place(outcome, out_dir / names[index], wants[index],
                                           args, settings)
                except HostkitError as exc:
                    exc.identifier = exc.identifier or outcome.identifier
                    outcomes[index] = exc
    return outcomes, placed


def _report(args, wants: list[Want], outcomes: list, placed: dict, *,
            paths: bool = True) -> None:
    """Print each item's answer (stdout, unless not ``paths``), errors, warnings and a
    summary (stderr)."""
    from .errors import HostkitError
    from .formatting import format_size, print_json

    for outcome in outcomes:
        if not isinstance(outcome, HostkitError):
            _warn(outcome)
    rows = []
    for index, (want, outcome) in enumerate(zip(wants, outcomes, strict=True)):
        if isinstance(outcome, HostkitError):
            print(f"error: {_where(want)}{outcome}", file=sys.stderr)
            if args.json:
                rows.append({**outcome.to_dict(), "identifier": outcome.identifier or
                             _shown(want.identifier)})
            continue
        target = placed.get(index)
        if args.json:
            rows.append({**outcome.to_dict(), **({"placed": str(target)} if target else {})})
        elif paths:
            print(target or outcome.path)
    if args.json:
        print_json(rows)
    good = [o for o in outcomes if not isinstance(o, HostkitError)]
    if not args.quiet:
        for outcome in good:
            if outcome.pinned_from and not args.json:
                print(f"note: {outcome.pinned_from} pinned as {outcome.identifier}",
                      file=sys.stderr)
        unverified = sum(not o.verified for o in good)
        if unverified and not args.json and args.command == "resolve":
            print(f"note: {unverified} of {len(good)} resolved without a hash (their sha256 was "
                  "recorded on first use); `hostkit lock` writes them all to a lock file",
                  file=sys.stderr)
        cached = sum(o.cached for o in good)
        fetched = [o for o in good if not o.cached]
        parts = ([f"{cached} cached"] if cached else []) + (
            [f"{len(fetched)} downloaded, {format_size(sum(o.size for o in fetched))}"]
            if fetched else [])
        failed = len(outcomes) - len(good)
        print(f"{len(good)} resolved" + (f" ({', '.join(parts)})" if parts else "")
              + (f", {failed} failed" if failed else ""), file=sys.stderr)


def _report_refused(args, wants: list[Want], refused: dict) -> None:
    """Name every refused item; with --json, the per-item list (the rest "not_run")."""
    from .errors import ItemsRefused
    from .formatting import print_json

    for index in sorted(refused):
        print(f"error: {_where(wants[index])}{refused[index]}", file=sys.stderr)
    summary = ItemsRefused(sorted(refused.items()), len(wants))
    if args.json:
        others = len(refused)
        print_json([{**refused[i].to_dict(), "identifier": refused[i].identifier or
                     _shown(w.identifier)} if i in refused else
                    {"error": "not_run", "message": f"not resolved: {others} other "
                     f"item{'s' if others > 1 else ''} refused", "hint": summary.hint,
                     "identifier": _shown(w.identifier)}
                    for i, w in enumerate(wants)])
    print(f"error: {summary}", file=sys.stderr)


def _worst(outcomes: list) -> int:
    """The exit status of a list: the worst outcome, by :data:`SEVERITY`."""
    from .errors import HostkitError

    codes = {o.exit_code for o in outcomes if isinstance(o, HostkitError)}
    if not codes:
        return 0
    rank = {code: n for n, code in enumerate(SEVERITY)}
    return min(codes, key=lambda c: rank.get(c, len(SEVERITY) - 1.5))


# -- lock ------------------------------------------------------------------------------


def run_lock(args, settings) -> int:
    """``hostkit lock``: resolve every item, then write their sha256 into the lock file."""
    from .errors import UsageError
    from .formatting import print_json
    from .lockfile import DEFAULT_LOCK, LockEntry, merge, read_lock, write_lock

    wants = _wants(args)
    if not wants:
        raise UsageError("no identifier given", hint="hostkit lock ID [ID...], or -r FILE")
    path = _path(args.output) or _path(DEFAULT_LOCK)
    existing = read_lock(path)  # a broken lock file stops here, before any download
    settings = settings.with_overrides(offline=args.offline, require_same=args.require_same)
    ran = _run(args, settings, wants, refused=_credentialed(wants))
    if ran is None:
        return 2
    outcomes, _ = ran
    from .errors import HostkitError

    failed = sum(isinstance(o, HostkitError) for o in outcomes)
    entries = [] if failed else [
        LockEntry(o.identifier if o.pinned_from else w.identifier.strip(),
                  f"sha256:{o.sha256}", o.size, w.output)
        for w, o in zip(wants, outcomes, strict=True)]
    if entries:
        write_lock(path, merge(existing, entries))
    if args.json:
        rows = [{**o.to_dict(), "identifier": o.identifier or _shown(w.identifier)}
                for w, o in zip(wants, outcomes, strict=True)]
        print_json({"lock": str(path), "written": bool(entries), "items": rows})
        for want, outcome in zip(wants, outcomes, strict=True):
            if isinstance(outcome, HostkitError):
                print(f"error: {_where(want)}{outcome}", file=sys.stderr)
            else:
                _warn(outcome)
    else:
        _report(args, wants, outcomes, {}, paths=False)
    if failed:
        print(f"error: {path} was not written: {failed} of {len(wants)} failed",
              file=sys.stderr)
        return _worst(outcomes)
    known = {e.identifier for e in existing}
    added = sum(e.identifier not in known for e in entries)
    if not args.json:
        print(path)
    if not args.quiet:
        print(f"wrote {path}: {added} added, {len(entries) - added} updated, "
              f"{len(merge(existing, entries))} in all", file=sys.stderr)
    return 0


def _credentialed(wants: list[Want]) -> dict:
    """Items whose identifier carries a credential, refused: a lock file must never hold one."""
    from .errors import UsageError
    from .identifiers import parse_identifier

    refused = {}
    for index, want in enumerate(wants):
        try:
            ref = parse_identifier(want.identifier)
        except UsageError:
            continue  # named by the other checks
        if ref.credentialed:
            refused[index] = UsageError(
                f"{ref.display} carries a credential (a password, token or signature); a "
                "lock file is shared, so it is not written", identifier=ref.display,
                hint="lock the identifier without it (s3://bucket/key, synapse:syn123, a URL "
                     "without user:password@ or a signed query) and give credentials through "
                     "the environment or the config file")
    return refused


# -- items -----------------------------------------------------------------------------


def _wants(args) -> list[Want]:
    """The items of the command line (in order, each with its hash), then of each -r FILE."""
    from .errors import UsageError
    from .lockfile import read_items

    wants: list[Want] = []
    leading: list[str] = []  # --hash before any identifier: the old `--hash H ID` form
    for kind, text in getattr(args, "sequence", []):
        if kind == "hash":
            if wants:
                _give_hash(wants[-1], text)
            else:
                leading.append(text)
        elif _looks_like_hash(text):
            if not wants:
                raise UsageError(f"{_shown(text)!r} is a hash, but no identifier comes before it",
                                 hint="write ID HASH, ID=HASH or ID --hash HASH")
            _give_hash(wants[-1], text)
        else:
            identifier, digest = _split_hash(text)
            wants.append(Want(identifier, digest))
    for text in leading:
        if not wants:
            raise UsageError("--hash given without an identifier",
                             hint="write hostkit resolve ID --hash HASH")
        _give_hash(wants[0], text)
    for path in args.lists or ():
        items = read_items(path)
        if not items:
            raise UsageError(f"{path} lists no identifiers",
                             hint="one IDENTIFIER [HASH] a line, or a hostkit.lock")
        for item in items:
            want = Want(item.identifier, None, item.output, item.where)
            if item.listed:  # a line may write ID=HASH, as the command line does
                want.identifier, want.hash = _split_hash(item.identifier)
            if item.hash is not None:
                try:
                    _give_hash(want, item.hash)
                except UsageError as exc:
                    raise UsageError(f"{item.where}: {exc.message}", hint=exc.hint) from None
            wants.append(want)
    return wants


def _give_hash(want: Want, text: str) -> None:
    from .errors import UsageError

    if want.hash is not None and _digest(want.hash) != _digest(text):
        raise UsageError(f"two different hashes given for {_shown(want.identifier)}",
                         hint="pass one hash")
    want.hash = text


def _digest(text: str):
    """A hash in one form (``abc...`` and ``sha256:abc...`` are one), else its text."""
    from .errors import UsageError
    from .hashes import parse_hash

    try:
        return parse_hash(text)
    except UsageError:
        return text.strip()


def _looks_like_hash(text: str) -> bool:
    """A positional that is a hash (``alg:...`` of a known algorithm, or bare hex), not an
    identifier: no identifier is bare hex, and no scheme is named like a hash algorithm."""
    from .hashes import ALGORITHMS

    text = text.strip()
    alg, sep, _ = text.partition(":")
    if sep:
        return alg.lower().replace("-", "") in ALGORITHMS
    return bool(text) and all(c in "0123456789abcdefABCDEF" for c in text)


def _split_hash(text: str) -> tuple[str, str | None]:
    """``ID=HASH`` -> ``(ID, HASH)``, split on the last '=' only when a hash follows it.

    ``alg:hex`` after the '=' splits unless that '=' is the query's own (``?digest=
    sha256:...``: its last parameter has no other '='); bare sha256 hex only when ID has
    no query string, where ``?sig=<64 hex>`` is a signature, not a hash.
    """
    from .hashes import ALGORITHMS

    head, eq, tail = text.rpartition("=")
    tail = tail.strip()
    if not eq or not head.strip():
        return text, None
    query = head.partition("?")[2].partition("#")[0]
    if query and "=" not in query.replace(";", "&").rsplit("&", 1)[-1]:
        return text, None  # '?digest=sha256:...': the '=' is the query's own key=value
    alg, sep, _ = tail.partition(":")
    if sep and alg.lower().replace("-", "") in ALGORITHMS:
        return head, tail
    if len(tail) == 64 and _looks_like_hash(tail) and "?" not in head:
        return head, tail
    return text, None


# -- output names ----------------------------------------------------------------------


def _output_dir(text: str):
    """The folder ``-o`` names when there are several items (``DIR/``, or an existing one)."""
    from .errors import UsageError

    path = _path(text)
    if not text or path is None or not (text.endswith(("/", os.sep)) or path.is_dir()):
        raise UsageError(f"with several items, -o names a folder, not {text!r}",
                         hint="write -o DIR/ (created if missing); each file is placed "
                              "under its name")
    if path.exists() and not path.is_dir():
        raise UsageError(f"-o {text}: {path} exists and is not a folder",
                         hint="name a folder, -o DIR/")
    return path


def _output_names(wants: list[Want], refused: dict) -> dict[int, str]:
    """Each item's file name under ``-o DIR/`` (a clash or a bad name is a refusal)."""
    from .errors import UsageError

    names: dict[int, str] = {}
    for index, want in enumerate(wants):
        if index in refused:
            continue
        try:
            names[index] = _safe_name(want.output) if want.output is not None else \
                _file_name(want.identifier)
        except UsageError as exc:
            exc.identifier = exc.identifier or _shown(want.identifier)
            refused[index] = exc
    # names compared as a case-insensitive file system (macOS, Windows) compares them, so a
    # list or lock file places the same files everywhere; a name that is another's folder
    # ("a" and "a/b.bin") clashes too
    seen: dict[str, int] = {}
    for index, name in names.items():
        seen.setdefault(_fold(name), index)
    for index, name in names.items():
        parts = _fold(name).split("/")
        for depth in range(1, len(parts) + 1):
            other = seen.get("/".join(parts[:depth]))
            if other is None or other == index:
                continue
            if depth < len(parts):
                why = (f"two items would be placed under the names {names[other]!r} and "
                       f"{name!r}: one would be a folder of the other")
            elif names[other] == name:
                why = f"two items would be placed under the same name {name!r}"
            else:
                why = (f"two items would be placed under the names {names[other]!r} and "
                       f"{name!r}, one file where case does not count (macOS, Windows)")
            for i in (other, index):
                refused.setdefault(i, UsageError(
                    why, identifier=_shown(wants[i].identifier),
                    hint="give one an output name in a lock file (output = \"NAME\"), or "
                         "resolve them into different folders"))
    return names


def _fold(name: str) -> str:
    """A name as a case-insensitive, Unicode-normalising file system sees it."""
    import unicodedata

    return unicodedata.normalize("NFC", name).casefold()


def _file_name(identifier: str) -> str:
    """The last path segment an identifier names (``https://h/a/w.bin`` -> ``w.bin``)."""
    from urllib.parse import unquote, urlsplit

    from .errors import UsageError
    from .identifiers import parse_identifier

    ref = parse_identifier(identifier)
    path = urlsplit(ref.display).path if "://" in ref.display else ref.rest
    name = unquote(path).rstrip("/").rsplit("/", 1)[-1]  # a folder: its own name
    try:
        return _safe_name(name)
    except UsageError:
        raise UsageError(f"{ref.display} names no file name to place it under",
                         identifier=ref.display,
                         hint="give it an output name in a lock file (output = \"NAME\")"
                         ) from None


#: Characters no output name may hold: controls (a newline would split the one-path-a-line
#: output, escapes would reach the terminal), bidi overrides, and '\\' (a separator on
#: Windows, where '..\\x' leaves the folder).
_NOT_IN_NAMES = frozenset([*map(chr, range(0x20)), *map(chr, range(0x7f, 0xa0)),
                           *map(chr, range(0x202a, 0x202f)), *map(chr, range(0x2066, 0x206a)),
                           "\\"])


def _safe_name(name: str) -> str:
    """A relative path inside the output folder: no absolute path, no '..', no empty name,
    no control character or backslash."""
    from pathlib import PurePosixPath

    from .errors import UsageError

    parts = PurePosixPath(name).parts
    if not name.strip() or not _NOT_IN_NAMES.isdisjoint(name) or name.startswith("/") \
            or not parts or any(p in (".", "..") for p in name.split("/")):
        raise UsageError(f"{name!r} cannot be an output name",
                         hint="a file name (or a relative path with '/') inside the -o "
                              "folder, without control characters or backslashes")
    return str(PurePosixPath(*parts))


# -- helpers ---------------------------------------------------------------------------


def _warn(resolved) -> None:
    """Trust on first use noticed other bytes: say so, whatever --quiet says."""
    if (message := resolved.change_message()) is not None:
        print(f"warning: {message}", file=sys.stderr)


@contextlib.contextmanager
def _own_warnings():
    """The API's ContentChangedWarning is silenced here: the CLI says it in its own words."""
    import warnings

    from .errors import ContentChangedWarning

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ContentChangedWarning)
        yield


def _place(resolved, target, want: Want, args, settings):
    """Place a resolved file or folder (:func:`hostkit.api.place_resolved`); its path."""
    return _api().place_resolved(resolved, target, want.identifier, settings=settings,
                                 cache_dir=_path(args.cache_dir), pin=args.pin).path


def _where(want: Want) -> str:
    return f"{want.where}: " if want.where else ""


def _shown(text: str) -> str:
    from .redact import redact_url

    return redact_url(text.strip())


def _api():
    from . import api

    return api


def _path(value):
    from pathlib import Path

    return Path(os.path.expanduser(value)) if value else None
