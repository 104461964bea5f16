"""What the benchmarks share: timing a command (wall and peak memory), random files, bytecode.

Each benchmark is run as a script (``uv run python benchmarks/bench_x.py``), so
this directory is on ``sys.path`` and ``from _common import ...`` finds this
module; importing it also puts the repository root there (``tests.servers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
#: The virtual environment's scripts (hostkit, s5cmd) next to this interpreter.
BIN = Path(sys.executable).parent

#: ``make_file(path, size)``: random bytes, returns their sha256 hex (the tests' helper).
from tests.objectstore_fixtures import write_random as make_file  # noqa: E402, F401


def run(cmd, env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command; exits with its stderr if it fails."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env={**os.environ, **(env or {})},
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    _, status, usage = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    if status != 0:
        raise SystemExit(f"{cmd[0]} failed: {proc.stderr.read().decode()[-2000:]}")
    return wall, usage.ru_maxrss


def best(fn, rounds: int):
    """The result of ``fn()`` with the smallest first element (wall time) over ``rounds`` calls."""
    results = [fn() for _ in range(rounds)]
    return min(results, key=lambda r: r[0])


def compile_bytecode() -> None:
    """Write the .pyc files an installed package would have (quick when they exist)."""
    import compileall
    import sysconfig

    dirs = [sysconfig.get_paths()["purelib"], ROOT / "hostkit", ROOT / "plugins",
            ROOT / "daemon"]
    for d in dirs:
        if Path(d).is_dir():
            compileall.compile_dir(str(d), quiet=2, workers=0)
