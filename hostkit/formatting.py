"""Formatting for the command line: sizes, ages, JSON output.

Imports nothing else of hostkit, so any command module (the core's, a
plugin's) can use it without pulling in the CLI or making an import cycle.
"""

from __future__ import annotations

import json
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
    """Bytes as a short human string."""
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
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


def print_json(data) -> None:
    """Print ``data`` as indented JSON (anything not JSON, such as paths, as its str)."""
    print(json.dumps(data, indent=2, default=str))
