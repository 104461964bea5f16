"""The ``hostkit`` command line.

Kept light at import time: a cache hit for a hash you already have opens
SQLite, stats one file and prints, without loading plugins or asyncio.
"""

from __future__ import annotations

import os
import sys

TYPE_CHECKING = False  # not typing.TYPE_CHECKING: importing typing slows every warm hit
if TYPE_CHECKING:
    from typing import Any

EPILOG = """\
identifiers: https://host/file, direct:https://host/file, synapse:syn123, s3://bucket/key,
minio://host:port/bucket/key, gs://bucket/key, az://container/blob  (`hostkit plugins`)
hashes: sha256:<hex> (default), sha1:, md5:, sha512:, blake2b:, or bare sha256 hex (MedPerf)
environment: HOSTKIT_CACHE_DIR, HOSTKIT_OFFLINE=1, HOSTKIT_REQUIRE_HASH=1, HOSTKIT_CONFIG
"""

MAIN_EPILOG = """\
examples:
  hostkit resolve https://example.org/w.bin sha256:3f2a...   # prints the verified file's path
  hostkit --json cache ls                                    # global options go before or
  hostkit cache ls --json                                    # after the command
  hostkit COMMAND --help                                     # a command's options and examples
global options: --json, -q/--quiet, -v/--verbose, --offline, --cache-dir DIR
shell completion: eval "$(hostkit completion bash)" (or zsh; fish: see `hostkit completion -h`)
""" + EPILOG

RESOLVE_EPILOG = """\
examples:
  hostkit resolve https://example.org/w.bin sha256:3f2a...   # prints the cached file's path
  hostkit resolve synapse:syn123 --json                      # path, sha256, size, verified
  hostkit resolve s3://bucket/w.bin sha256:3f2a... -o w.bin  # also place it at ./w.bin
  hostkit resolve s3://box/models/unet/ -o /home/app/model   # a folder, placed whole at DIR
  hostkit --offline resolve https://example.org/w.bin        # from the cache, or fail
""" + EPILOG

HASH_EPILOG = """\
examples:
  hostkit hash weights.bin                      # sha256:<hex>  weights.bin
  hostkit hash weights.bin --alg sha256 --alg md5
  hostkit hash weights.bin --json               # {"file": ..., "sha256": ...}
"""

UPLOAD_EPILOG = """\
examples:
  hostkit upload weights.bin s3://bucket/models/weights.bin
  hostkit upload weights.bin minio://127.0.0.1:9000/bucket/models/ --content-addressed
  hostkit upload weights.bin synapse:syn123 --json   # identifier, sha256, size, created
  hostkit upload weights.bin github:org/repo/models/ --branch main   # GH_TOKEN needed
"""

PLUGINS_EPILOG = """\
examples:
  hostkit plugins
  hostkit plugins --json | jq '.backends[].schemes'
exit code 1 when every plugin failed to load (each failure is named on stderr)
"""

CONFIG_EPILOG = """\
examples:
  hostkit config
  hostkit config --json | jq '.core.cache_dir'
  HOSTKIT_OFFLINE=1 hostkit config
"""

DEMO_EPILOG = """\
examples:
  hostkit demo
  hostkit demo --json                          # one object per step
  hostkit --cache-dir /tmp/demo-cache demo     # keep the demo's files out of your cache
"""

COMPLETION_EPILOG = """\
examples:
  eval "$(hostkit completion bash)"            # add this line to ~/.bashrc
  eval "$(hostkit completion zsh)"             # add to ~/.zshrc, after compinit
  hostkit completion fish > ~/.config/fish/completions/hostkit.fish
"""

#: Global options: accepted before the command (``hostkit --json cache ls``) and after it
#: (``hostkit cache ls --json``). ``(flags, argparse keywords, default)``.
GLOBAL_OPTIONS = (
    (("--cache-dir",), {"metavar": "DIR", "help": "cache location (default: HOSTKIT_CACHE_DIR, "
                        "cache_dir in config.toml, or the platform's user cache dir)"}, None),
    (("--json",), {"action": "store_true", "help": "print machine-readable JSON"}, False),
    (("-q", "--quiet"), {"action": "store_true", "help": "no progress or notes"}, False),
    (("-v", "--verbose"), {"action": "store_true", "help": "log what happens"}, False),
    (("--offline",), {"action": "store_true", "help": "never use the network: answer from "
                      "the cache or fail (also HOSTKIT_OFFLINE=1)"}, None),
)
_GLOBAL_TITLE = "global options (before or after the command)"


def _parser():
    import argparse

    from .formatting import help_formatter
    from .hashes import ALGORITHMS

    raw = help_formatter()
    p = argparse.ArgumentParser(
        prog="hostkit", description="Turn ML asset identifiers into verified, cached local files.",
        epilog=MAIN_EPILOG, formatter_class=raw)
    p.add_argument("--version", action="version", version=f"hostkit {_version()}")
    top = p.add_argument_group(_GLOBAL_TITLE)
    for flags, kwargs, default in GLOBAL_OPTIONS:
        top.add_argument(*flags, **kwargs, default=default)
    # the copies after the command leave a value given before it alone (SUPPRESS: not set
    # unless given); `common` is every command's parent, plugins' too
    common = argparse.ArgumentParser(add_help=False)
    group = common.add_argument_group(_GLOBAL_TITLE)
    for flags, kwargs, _default in GLOBAL_OPTIONS:
        if flags != ("--offline",):  # resolve declares its own; added to the rest below
            group.add_argument(*flags, **kwargs, default=argparse.SUPPRESS)
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    from .resolve_cli import add_resolve_command

    add_resolve_command(sub, common, RESOLVE_EPILOG)

    h = sub.add_parser("hash", parents=[common], help="hash a local file",
                       description="Print the digests of a local file (sha256 unless --alg "
                                   "says otherwise) as alg:hex, the form resolve's --hash "
                                   "takes.", epilog=HASH_EPILOG, formatter_class=raw)
    h.add_argument("file", help="the local file to hash")
    h.add_argument("--alg", action="append", choices=sorted(ALGORITHMS),
                   help="algorithm (repeatable; default sha256)")

    from .cache_cli import add_cache_command

    add_cache_command(sub, common)

    u = sub.add_parser("upload", parents=[common],
                       help="upload a file; print its permanent identifier and sha256",
                       description="Upload FILE to DEST (s3://bucket/key, minio://host:port/"
                                   "bucket/prefix/, gs://..., az://..., synapse:synPARENT, "
                                   "github:owner/repo/path; a "
                                   "DEST ending in / is a prefix). Prints `IDENTIFIER "
                                   "sha256:HEX`, ready for `hostkit resolve IDENTIFIER "
                                   "sha256:HEX`.", epilog=UPLOAD_EPILOG, formatter_class=raw)
    u.add_argument("file", help="the local file to upload")
    u.add_argument("dest", help="where to: s3://bucket/key, minio://host:port/bucket/key, "
                   "gs://bucket/key, az://container/blob, synapse:synPARENT, or "
                   "github:owner/repo/path (a DEST ending in / is a prefix)")
    u.add_argument("--overwrite", action="store_true",
                   help="replace an existing object that holds different bytes")
    u.add_argument("--content-addressed", action="store_true",
                   help="name the object by its sha256 under DEST (a prefix)")
    u.add_argument("--branch", help="github: the branch to commit to (default: the "
                                    "repository's default branch)")
    sub.add_parser("plugins", parents=[common], help="list backends and identifier forms",
                   description="List the installed backends: the identifier forms each "
                               "accepts, what it does, the plugin that provides it and the "
                               "extra to install for it. Plugins that failed to load are "
                               "named on stderr.", epilog=PLUGINS_EPILOG, formatter_class=raw)
    sub.add_parser("config", parents=[common], help="show every setting and where it came from",
                   description="Print the effective settings: the core's, then each plugin's "
                               "([backends.NAME] in config.toml, HOSTKIT_NAME_KEY in the "
                               "environment), each with its source (default, the config "
                               "file, an environment variable or a flag).",
                   epilog=CONFIG_EPILOG, formatter_class=raw)
    sub.add_parser("demo", parents=[common],
                   help="serve sample files from a local origin and resolve them (offline)",
                   description="Serve sample ML assets (weights, a parameters file, a tarball) "
                               "from a throwaway origin on 127.0.0.1 and resolve them into the "
                               "cache: a download, a cache hit, trust on first use and a wrong "
                               "hash refused. Uses no network beyond this machine.",
                   epilog=DEMO_EPILOG, formatter_class=raw)
    comp = sub.add_parser("completion", parents=[common], help="print shell completion code",
                          description="Print the code that makes TAB complete hostkit's "
                                      "commands and options in bash, zsh or fish. Source it "
                                      "from your shell's startup file (examples below).",
                          epilog=COMPLETION_EPILOG, formatter_class=raw)
    comp.add_argument("shell", choices=("bash", "zsh", "fish"), help="the shell to complete in")
    from .workflows_cli import add_workflow_commands

    add_workflow_commands(sub, common)  # `hostkit package`, `hostkit pull` (MedPerf)
    from .check_cli import add_check_command

    add_check_command(sub, common)  # `hostkit check` (MedPerf's hosting rules)
    from .plugins import load_plugins

    # plugins' own commands (hostkit_register_commands): the daemon adds `daemon` and `status`
    load_plugins().register_commands(sub, common)
    _globals_everywhere(p)
    return p


def _globals_everywhere(parser) -> None:
    """Give every command (and ``cache``'s actions) every global option, not set by default.

    So ``hostkit --offline resolve X`` keeps the --offline given before the command
    (argparse would otherwise overwrite it with the command's own default), and an
    option a command lacks (``--offline`` on most) is still accepted after it.
    """
    import argparse

    for action in parser._actions:
        if not isinstance(action, argparse._SubParsersAction):
            continue
        for child in {id(c): c for c in action.choices.values()}.values():
            taken = child._option_string_actions
            for flags, kwargs, _default in GLOBAL_OPTIONS:
                dest = flags[-1].lstrip("-").replace("-", "_")
                mine = [taken[f] for f in flags if f in taken and taken[f].dest == dest]
                for own in mine:
                    own.default = argparse.SUPPRESS
                free = [f for f in flags if f not in taken]
                if not mine and free:
                    group = next((g for g in child._action_groups if g.title == _GLOBAL_TITLE),
                                 None) or child.add_argument_group(_GLOBAL_TITLE)
                    group.add_argument(*free, **kwargs, dest=dest, default=argparse.SUPPRESS)
            _globals_everywhere(child)


def main(argv=None) -> int:
    """Entry point of the ``hostkit`` console script."""
    try:
        return _main(argv)
    except KeyboardInterrupt:  # before the command runs (start-up, plugins, parsing)
        print("interrupted", file=sys.stderr)
        return 130


def _main(argv) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if "_ARGCOMPLETE" in os.environ:  # a shell asking for completions (hostkit completion)
        import argcomplete

        argcomplete.autocomplete(_parser())  # prints them and exits
    from .fastpath import try_resolve

    fast = try_resolve(argv)
    if fast is not None:
        return fast
    import logging

    from .errors import HostkitError
    from .failpoints import failpoint

    failpoint("parse")  # tests: Ctrl-C while the command line is read
    args = _parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        handlers=[_log_handler()])
    try:
        _refuse_undecodable(args)
        return _dispatch(args)
    except HostkitError as exc:
        _fail(exc, args)
        return exc.exit_code
    except KeyboardInterrupt:
        print("interrupted; a partial download will resume next time", file=sys.stderr)
        return 130


def _log_handler():
    """Log lines to stderr, each (a traceback too) through :func:`hostkit.redact.redact_text`:
    a plugin's or a library's exception may quote an identifier as given."""
    import logging

    from .redact import redact_text

    class Redacting(logging.Formatter):
        def format(self, record: logging.LogRecord) -> str:
            return redact_text(super().format(record))

    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(Redacting("hostkit: %(message)s"))
    return handler


#: Arguments that name things hostkit looks up or sends (paths may be any bytes: not these).
_TEXT_ARGS = ("identifier", "hash", "hash_opt", "id", "dest", "max_size", "branch")


def _refuse_undecodable(args) -> None:
    """UsageError for a text argument that is not valid UTF-8.

    Python decodes such argv bytes to lone surrogates, which no URL, hash, SQLite
    query or JSON encoder accepts; say so once here instead of failing deep inside.
    """
    from .errors import UsageError

    for name in _TEXT_ARGS:
        value = getattr(args, name, None)
        if isinstance(value, str):
            try:
                value.encode("utf-8")
            except UnicodeEncodeError:
                raise UsageError(f"the {name.replace('_opt', '')} argument is not valid UTF-8",
                                 hint="pass it as UTF-8 text") from None


def _dispatch(args) -> int:
    from .errors import UsageError
    from .formatting import print_json
    from .settings import load_settings

    settings = load_settings().with_overrides(
        cache_dir=_path(args.cache_dir), quiet=args.quiet or None, offline=args.offline)
    if handler := getattr(args, "handler", None):  # a plugin's command
        return handler(args, settings)
    if args.command == "resolve":
        from .resolve_cli import run_resolve

        return run_resolve(args, settings)
    if args.command == "hash":
        from .hashes import hash_file

        try:
            digests = hash_file(args.file, args.alg or ["sha256"])
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from None
        algs = args.alg or ["sha256"]
        if args.json:
            print_json({"file": args.file, **{a: digests[a] for a in algs}})
        else:
            for alg in algs:
                print(f"{alg}:{digests[alg]}  {args.file}")
        return 0
    if args.command == "cache":
        from .cache_cli import run_cache_command

        return run_cache_command(args, settings)
    if args.command == "upload":
        return _upload(args, settings)
    if args.command == "config":
        return _config(args, settings)
    if args.command == "plugins":
        return _plugins(args)
    if args.command == "demo":
        from .demo import run_demo

        return run_demo(settings, as_json=args.json)
    if args.command == "completion":
        return _completion(args.shell)
    raise AssertionError(args.command)


def _upload(args, settings) -> int:
    """``hostkit upload FILE DEST``: print ``IDENTIFIER sha256:HEX`` (or JSON)."""
    from . import api
    from .formatting import print_json
    from .progress import progress_for

    if args.branch is not None:
        from .errors import UsageError
        from .identifiers import parse_identifier

        if parse_identifier(args.dest).scheme != "github":
            raise UsageError("--branch is for github: destinations",
                             hint="drop --branch, or upload to github:owner/repo/path")
        # read by the backend as its option github.branch (a flag beats env and config)
        settings = settings.with_option("github", "branch", args.branch)
    result = api.upload(args.file, args.dest, overwrite=args.overwrite,
                        content_addressed=args.content_addressed, settings=settings,
                        progress=progress_for(settings))
    if args.json:
        print_json({"identifier": result.identifier, "sha256": result.sha256,
                    "size": result.size, "created": result.created})
    else:
        print(f"{result.identifier} sha256:{result.sha256}")
        if not result.created and not args.quiet:
            print("note: identical bytes were already there; nothing was uploaded",
                  file=sys.stderr)
    return 0


def _config(args, settings) -> int:
    """``hostkit config``: the effective settings, core then plugins', with their sources."""
    from .formatting import print_json
    from .plugins import load_plugins
    from .settings import Option, check_options, core_settings

    def shown(value):
        return str(value) if value is not None else ""

    core = [{"name": name, "value": shown(value), "source": source}
            for name, value, source in core_settings(settings)]
    declared = load_plugins().options()
    check_options(settings, declared)
    options: list[Option] = sorted(declared.values(), key=lambda o: (o.backend, o.key))
    plugin_rows = []
    for option in options:
        value, source = settings.option_source(option)
        plugin_rows.append({"backend": option.backend, "key": option.key, "value": shown(value),
                            "source": source, "env": option.env, "help": option.help})
    if args.json:
        print_json({"config_file": str(settings.config_file),
                    "config_file_exists": bool(settings.config_file
                                               and settings.config_file.is_file()),
                    "core": {r["name"]: r for r in core}, "backends": plugin_rows})
        return 0
    exists = settings.config_file is not None and settings.config_file.is_file()
    print(f"config file: {settings.config_file}{'' if exists else ' (none)'}")
    width = max(len(r["name"]) for r in core)
    for row in core:
        print(f"  {row['name']:<{width}}  {row['value']:<28} {row['source']}")
    for backend in sorted({r["backend"] for r in plugin_rows}):
        print(f"[backends.{backend}]")
        for row in (r for r in plugin_rows if r["backend"] == backend):
            source = row["source"] if row["source"] != "default" else f"default ({row['env']})"
            print(f"  {row['key']:<{width}}  {row['value']:<28} {source}")
    return 0


def _plugins(args) -> int:
    from .formatting import print_json
    from .plugins import load_plugins

    loaded = load_plugins()
    rows: list[dict[str, Any]] = [
            {"plugin": name, "source": loaded.sources.get(name, "?"), "backend": info.name,
             "schemes": list(info.schemes), "summary": info.summary,
             "examples": list(info.examples), "extra": info.extra}
            for name, info in loaded.backends()]
    if args.json:
        print_json({"backends": rows, "broken": loaded.failures})
    else:
        for row in rows:
            extra = f"  (pip install 'hostkit[{row['extra']}]')" if row["extra"] else ""
            print(f"{row['backend']:<10} {', '.join(row['examples'])}{extra}")
            print(f"{'':<10} {row['summary']}  [from {row['source']}]")
        for name, error in loaded.failures.items():
            print(f"BROKEN     plugin {name!r}: {error}", file=sys.stderr)
    return 1 if loaded.failures and not rows else 0


def _completion(shell: str) -> int:
    """``hostkit completion SHELL``: print argcomplete's completion code for ``hostkit``."""
    import argcomplete

    print(argcomplete.shellcode(["hostkit"], shell=shell), end="")
    return 0


def _fail(exc, args) -> None:
    from .formatting import print_json

    if getattr(args, "json", False):
        print_json(exc.to_dict())
    print(f"error: {exc}", file=sys.stderr)


def _path(value):
    from pathlib import Path

    return Path(os.path.expanduser(value)) if value else None


def _version() -> str:
    from ._version import __version__

    return __version__


if __name__ == "__main__":
    sys.exit(main())
