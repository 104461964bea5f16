"""Help, global options and shell completion, through the real parser (plugins' commands too)."""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import pytest

from hostkit.cli import _parser, main
from tests.conftest import run_cli
from tests.test_resolve import data

#: Commands that must be there: the core's, the workflows', the daemon plugin's and the
#: example third-party plugin's (installed in the test environment).
EXPECTED = {"resolve", "hash", "cache", "upload", "plugins", "config", "demo", "completion",
            "package", "pull", "publish", "daemon", "status", "example-url"}
CACHE_ACTIONS = {"ls", "info", "rm", "pin", "unpin", "verify", "prune"}
#: Arguments without a help line in commands other modules own, tolerated (not required)
#: until they get one; anything else missing fails.
KNOWN_GAPS = {"hostkit resolve: identifier has no help line",
              "hostkit check: identifiers has no help line"}


def walk(parser, path=()):
    """``(path, parser)`` of the main parser and every command and subcommand under it."""
    yield path, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, child in action.choices.items():
                yield from walk(child, (*path, name))


def test_every_command_has_a_description_and_examples(capsys):
    found = dict(walk(_parser()))
    assert EXPECTED.issubset(path[0] for path in found if len(path) == 1)
    assert CACHE_ACTIONS.issubset(path[1] for path in found
                                  if path[:1] == ("cache",) and len(path) == 2)
    missing = []
    for path, parser in found.items():
        with pytest.raises(SystemExit) as exited:
            main([*path, "--help"])
        shown = capsys.readouterr().out
        assert exited.value.code == 0, path
        name = " ".join(("hostkit", *path))
        if not (parser.description or "").strip():
            missing.append(f"{name}: no description")
        if not re.search(r"^examples?:\n  .*hostkit ", shown, re.M):
            missing.append(f"{name}: no 'examples:' section of hostkit command lines")
        for action in parser._actions:
            if action.help is None and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{name}: {'/'.join(action.option_strings) or action.dest} "
                               "has no help line")
    assert set(missing) - KNOWN_GAPS == set()


def test_id_arguments_and_report_only_say_what_they_take():
    parsers = dict(walk(_parser()))
    for action in ("info", "rm", "pin", "unpin", "verify"):
        text = " ".join(parsers[("cache", action)].format_help().split())
        assert "identifier as resolved" in text and "prefix of at least 6 hex digits" in text
    assert "leave corrupt blobs" in parsers[("cache", "verify")].format_help()


# -- global options before or after the command ----------------------------------------------


def test_global_options_before_or_after_the_command(origin, settings):
    sha = origin.add("glob.bin", data(2000, 61))
    url = f"{origin.url}/f/glob.bin"
    before = run_cli("-q", "resolve", url, check=True)  # trust on first use: a note, unless -q
    assert before.stdout.strip() and before.stderr == ""
    after = run_cli("resolve", url, "-q", check=True)
    assert after.stderr == "" and after.stdout == before.stdout
    assert "recorded on first use" in run_cli("resolve", url, check=True).stderr

    first = run_cli("--json", "cache", "ls", check=True).stdout
    assert json.loads(first) == json.loads(run_cli("cache", "ls", "--json", check=True).stdout)
    assert json.loads(run_cli("cache", "--json", "ls", check=True).stdout)["total_bytes"] == 2000

    other = settings.cache_dir.parent / "other-cache"
    run_cli("--cache-dir", other, "resolve", url, sha, check=True)
    assert (other / "blobs" / "sha256" / sha).exists()
    assert json.loads(run_cli("--cache-dir", other, "--json", "cache", "ls",
                              check=True).stdout)["root"] == str(other)

    origin.hits.clear()
    missing = f"{origin.url}/f/not-cached.bin"
    for args in (["--offline", "resolve", missing], ["resolve", missing, "--offline"]):
        proc = run_cli(*args)
        assert proc.returncode == 5 and "offline" in proc.stderr, (args, proc.stderr)
    assert origin.hits == []  # --offline before the command reached resolve: no request
    parser = _parser()
    for argv in (["-v", "resolve", url], ["resolve", url, "--verbose"]):
        assert parser.parse_args(argv).verbose is True
    assert parser.parse_args(["resolve", url]).verbose is False


def test_the_fast_path_takes_global_options_first(origin):
    """``hostkit --json resolve ID HASH`` is still a warm hit without plugins or argcomplete."""
    sha = origin.add("fastglob.bin", data(2000, 62))
    url = f"{origin.url}/f/fastglob.bin"
    run_cli("resolve", url, sha, check=True)
    probe = ("import sys, hostkit.cli as c; rc = c.main(sys.argv[1:]); "
             "print('slow' if {'hostkit.plugins', 'argcomplete'} & set(sys.modules) else 'fast');"
             " sys.exit(rc)")

    def run(*args):
        proc = subprocess.run([sys.executable, "-c", probe, *args], capture_output=True,
                              text=True, env=os.environ, timeout=60, stdin=subprocess.DEVNULL)
        assert proc.returncode == 0, proc.stderr
        return proc.stdout.rsplit("\n", 2)[-2], proc.stdout.rsplit("\n", 2)[0]

    for args in (["--json", "resolve", url, sha], ["-q", "--json", "resolve", url, sha],
                 ["resolve", url, sha, "--json"]):
        path, printed = run(*args)
        assert path == "fast", args
        assert json.loads(printed)["sha256"] == sha
    assert run("-q", "resolve", url, sha)[0] == "fast"
    # a global option the fast path does not handle: the full path answers, the same way
    path, printed = run("--offline", "--json", "resolve", url, sha)
    assert path == "slow" and json.loads(printed)["sha256"] == sha


# -- shell completion ----------------------------------------------------------------------


@pytest.mark.parametrize("shell,marker", [
    ("bash", "complete -o nospace -o default -o bashdefault -F _python_argcomplete hostkit"),
    ("zsh", "compdef _python_argcomplete hostkit"),
    ("fish", "complete --command hostkit"),
])
def test_completion_prints_the_script_for_each_shell(shell, marker):
    proc = run_cli("completion", shell, check=True)
    assert marker in proc.stdout
    assert run_cli("completion", "tcsh").returncode == 2


def complete(line: str) -> list[str]:
    """What argcomplete offers for ``line`` (the cursor at its end), as a shell asks for it:
    environment variables in, the answer on file descriptor 8 (as argcomplete's tests do)."""
    with tempfile.TemporaryFile() as answer:
        env = {**os.environ, "_ARGCOMPLETE": "1", "_ARGCOMPLETE_IFS": "\n",
               "COMP_LINE": line, "COMP_POINT": str(len(line)), "COMP_TYPE": "9"}
        fd = answer.fileno()
        proc = subprocess.run([sys.executable, "-m", "hostkit.cli"], env=env, timeout=60,
                              capture_output=True, stdin=subprocess.DEVNULL, pass_fds=(fd, 8),
                              preexec_fn=lambda: os.dup2(fd, 8))  # kept: 8 is in pass_fds
        assert proc.returncode == 0, proc.stderr
        answer.seek(0)
        return answer.read().decode().split("\n")


def test_completion_lists_commands_actions_and_options():
    commands = complete("hostkit ")
    assert EXPECTED.issubset(c.strip() for c in commands)
    assert {c.strip() for c in complete("hostkit ca")} == {"cache"}
    assert {c.strip() for c in complete("hostkit cache p")} == {"pin", "prune"}
    assert "--dry-run" in {c.strip() for c in complete("hostkit cache prune --d")}
    assert "--json" in {c.strip() for c in complete("hostkit cache ls --js")}  # global, after


def test_completion_offers_cached_ids(origin, settings):
    sha = origin.add("complete-me.bin", data(300, 63))
    assert main(["resolve", f"{origin.url}/f/complete-me.bin", sha, "-q"]) == 0
    assert [c.strip() for c in complete(f"hostkit cache info {sha[:3]}")] == [sha[:12]]
    assert [c.strip() for c in complete(f"hostkit cache rm --dry-run {sha[:5]}")] == [sha[:12]]
    missing = settings.cache_dir.parent / "none-here"
    assert complete(f"hostkit cache info --cache-dir {missing} {sha[:3]}") == [""]
    assert not missing.exists()  # completing never creates a cache


def test_bash_completes_with_the_printed_script(tmp_path):
    """The script from `hostkit completion bash`, sourced in bash, completes a command."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "hostkit").write_text(f"#!/bin/sh\nexec {sys.executable} -m hostkit.cli \"$@\"\n")
    (bin_dir / "hostkit").chmod(0o755)
    script = run_cli("completion", "bash", check=True).stdout
    probe = (f"{script}\nCOMP_WORDS=(hostkit cache pr); COMP_CWORD=2; "
             "COMP_LINE='hostkit cache pr'; COMP_POINT=${#COMP_LINE}; "
             "_python_argcomplete hostkit; printf '%s\\n' \"${COMPREPLY[@]}\"")
    proc = subprocess.run([shutil.which("bash") or "bash", "--norc", "-c", probe], text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL,
                          env={**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"})
    assert [w.strip() for w in proc.stdout.split()] == ["prune"], proc.stderr


def test_argcomplete_is_not_imported_outside_completion(capsys):
    probe = ("import sys, hostkit.cli as c; c.main(['config']); "
             "print('argcomplete' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                          env=os.environ, timeout=60, stdin=subprocess.DEVNULL)
    assert proc.stdout.splitlines()[-1] == "False", proc.stderr
