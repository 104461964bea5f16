"""Formatting for the command line: sizes, ages, JSON output.

Imports nothing else of hostkit, so any command module (the core's, a
plugin's) can use it without pulling in the CLI or making an import cycle.
"""

from __future__ import annotations

import json
import sys
import time

_UNITS = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}


def parse_size(text: str) -> int:
    """``10G``, ``500M``, ``1.5GiB``, ``0`` -> bytes (powers of 1024).

    :raises ValueError: text that is not a size (callers turn it into their own error).
    """
    s = text.strip().lower().removesuffix("ib").removesuffix("b")
    unit = s[-1] if s and s[-1] in _UNITS else ""
    try:
        return int(float(s[:len(s) - len(unit)]) * _UNITS[unit])
    except ValueError:
        raise ValueError(f"cannot read size {text!r}") from None


def format_size(n: float) -> str:
    """Bytes as a short human string (powers of 1024: ``97.7 KiB``)."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n} B"


def format_age(ts: float) -> str:
    """Seconds since ``ts`` as ``5s``, ``5m``, ``3h``, ``2d``."""
    age = max(0.0, time.time() - ts)
    for limit, div, unit in ((60, 1, "s"), (3600, 60, "m"), (86400, 3600, "h")):
        if age < limit:
            return f"{int(age // div)}{unit}"
    return f"{int(age // 86400)}d"


def iso_time(ts: float) -> str:
    """A Unix timestamp as ISO-8601 UTC to the second: ``2024-05-01T12:00:00Z``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def format_table(headers: list[str], rows: list[list[str]], *, right: tuple[int, ...] = ()) -> str:
    """Rows under headers in aligned columns (``right``: indexes of right-aligned columns).

    The last column is not padded, so a long identifier there never widens the rest.
    """
    widths = [max(len(str(r[i])) for r in [headers, *rows]) for i in range(len(headers))]
    lines = []
    for row in [headers, *rows]:
        cells = [str(c).rjust(w) if i in right else str(c).ljust(w)
                 for i, (c, w) in enumerate(zip(row, widths, strict=True))]
        cells[-1] = str(row[-1])
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)


def plural(n: int, word: str) -> str:
    """``1 blob``, ``2 blobs``, ``1 entry``, ``3 entries``."""
    if n == 1:
        return f"1 {word}"
    return f"{n} {word[:-1]}ies" if word.endswith("y") else f"{n} {word}s"


def help_formatter():
    """An argparse formatter class: a one-line text (a description) is wrapped to the
    terminal; a text with line breaks (an epilog of examples) is printed as written.

    For ``formatter_class=`` of any command's parser.
    """
    global _HELP_FORMATTER
    if _HELP_FORMATTER is None:
        import argparse

        class HelpFormatter(argparse.RawDescriptionHelpFormatter):
            def _fill_text(self, text, width, indent):
                if "\n" in text.strip():
                    return super()._fill_text(text, width, indent)
                return argparse.HelpFormatter._fill_text(self, text, width, indent)

        _HELP_FORMATTER = HelpFormatter
    return _HELP_FORMATTER


_HELP_FORMATTER = None


def add_actions(parser, dest: str, common, actions: dict) -> dict:
    """The ``ACTION`` subcommands of a command (``hostkit cache ls``, ``hostkit tier prune``).

    ``actions`` maps each name to ``(help, description, examples)``; each gets the
    ``common`` flags and its examples as its epilog. Returns the parsers by name.
    """
    raw = help_formatter()
    sub = parser.add_subparsers(dest=dest, metavar="ACTION", required=True)
    return {name: sub.add_parser(name, parents=[common], help=short, description=description,
                                 formatter_class=raw, epilog=f"examples:\n{examples}\n")
            for name, (short, description, examples) in actions.items()}


def add_plan_flags(parser) -> None:
    """``--dry-run`` and ``-y`` of a command that plans a deletion first (see :func:`confirm`)."""
    parser.add_argument("--dry-run", action="store_true",
                        help="show what would be deleted and the space freed; delete nothing")
    parser.add_argument("-y", "--yes", action="store_true",
                        help="do not ask for confirmation on a terminal")


def print_json(data) -> None:
    """Print ``data`` as indented JSON (anything not JSON, such as paths, as its str)."""
    print(json.dumps(data, indent=2, default=str))


def confirm(question: str, *, assume_yes: bool = False) -> bool:
    """Ask ``question`` on a terminal; anything but y/yes is no.

    With ``assume_yes`` (``-y``), or when stdin is not a terminal (a script, a pipe,
    cron), the answer is yes, unasked: scripts keep working as before the prompt.
    """
    if assume_yes or sys.stdin is None or not sys.stdin.isatty():
        return True
    print(question, end="", file=sys.stderr, flush=True)
    try:
        answer = sys.stdin.readline()
    except (EOFError, KeyboardInterrupt):
        answer = ""
    return answer.strip().lower() in ("y", "yes")
