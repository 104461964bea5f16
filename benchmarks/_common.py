"""What the benchmarks share: timing a command (wall, CPU, peak memory), random files, bytecode.

Each benchmark is run as a script (``uv run python benchmarks/bench_x.py``), so
this directory is on ``sys.path`` and ``from _common import ...`` finds this
module; importing it also puts the repository root there (``tests.servers``).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))
#: The virtual environment's scripts (hostkit, s5cmd) next to this interpreter.
BIN = Path(sys.executable).parent
#: What a Python client imports before its first request (part of every floor).
START = "import asyncio, aiohttp, hostkit.resolver"
#: The second baseline: ``minimal_client.py``, a verified, durable download in plain Python.
MINIMAL = "minimal Python client (verified, fsync)"
#: The S3 keys the benchmarks give their SeaweedFS.
KEY, SECRET = "benchkey", "benchsecret"


def minimal_client(*args) -> list:
    """The command running ``minimal_client.py`` with ``args`` (``http URL OUT``, ...)."""
    return [sys.executable, Path(__file__).resolve().parent / "minimal_client.py", *args]

#: ``make_file(path, size)``: random bytes, returns their sha256 hex (the tests' helper).
from tests.objectstore_fixtures import write_random as make_file  # noqa: E402, F401


def run(cmd, env=None) -> tuple[float, int]:
    """Wall seconds and peak RSS (KiB) of one command; exits with its stderr if it fails."""
    sample = measure(cmd, env)
    return sample.wall, sample.peak_kib


@dataclass
class Sample:
    """One run of a command: wall seconds, its CPU (user, sys), peak RSS, a server's CPU."""

    wall: float
    user: float
    sys: float
    peak_kib: int
    server: float = 0.0
    #: the end of what the command wrote to stderr
    stderr: str = ""

    @property
    def cpu(self) -> float:
        return self.user + self.sys


#: Runs a command from a small process and reports its own wait4: a child forked straight
#: from the benchmark would report the benchmark's RSS as its peak (Linux keeps the high-water
#: mark across fork and exec), and the wall time starts at the fork.
_WRAPPER = """
import os, sys, time
t = time.perf_counter()
pid = os.fork()
if pid == 0:
    try:
        os.execvp(sys.argv[2], sys.argv[2:])
    finally:
        os._exit(127)
_, status, ru = os.wait4(pid, 0)
with open(sys.argv[1], "w") as f:
    f.write(f"{time.perf_counter() - t} {ru.ru_utime} {ru.ru_stime} {ru.ru_maxrss} {status}")
"""


def measure(cmd, env=None, server_pid: int | None = None) -> Sample:
    """Run ``cmd``; its :class:`Sample` (``server``: CPU seconds ``server_pid`` and its
    children spent meanwhile). Exits with the command's stderr if it fails."""
    import tempfile

    with tempfile.NamedTemporaryFile("r", suffix=".wait4") as out:
        before = tree_cpu(server_pid) if server_pid else 0.0
        proc = subprocess.Popen([sys.executable, "-S", "-c", _WRAPPER, out.name, *map(str, cmd)],
                                env={**os.environ, **(env or {})},
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        _, err = proc.communicate()
        server = tree_cpu(server_pid) - before if server_pid else 0.0
        fields = out.read().split()
    if proc.returncode != 0 or len(fields) != 5 or fields[4] != "0":
        raise SystemExit(f"{cmd[0]} failed: {err.decode(errors='replace')[-2000:]}")
    wall, user, sys_, peak = map(float, fields[:4])
    return Sample(wall, user, sys_, int(peak), server, err.decode(errors="replace")[-500:])


def tree_cpu(pid: int) -> float:
    """User + system CPU seconds of ``pid`` and every process below it, so far (Linux /proc).

    (nginx serves from worker processes; SeaweedFS is one process.)
    """
    tick = os.sysconf("SC_CLK_TCK")
    children: dict[int, list[int]] = {}
    cpu: dict[int, float] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            fields = Path(entry.path, "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        children.setdefault(int(fields[1]), []).append(int(entry.name))
        cpu[int(entry.name)] = (int(fields[11]) + int(fields[12])) / tick
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        total += cpu.get(p, 0.0)
        todo.extend(children.get(p, ()))
    return total


def sha256_seconds_per_gib(mib: int = 256) -> float:
    """CPU seconds hashlib's sha256 takes per GiB on this machine (one thread, in memory)."""
    import hashlib

    block = os.urandom(1 << 20) * mib
    view = memoryview(block)
    h = hashlib.sha256()
    t0 = time.thread_time()
    for i in range(0, len(block), 1 << 20):
        h.update(view[i:i + (1 << 20)])
    return (time.thread_time() - t0) * 1024 / mib


def spread(values) -> str:
    """``median [min-max]`` of a list of numbers, two decimals."""
    import statistics

    return f"{statistics.median(values):.2f} [{min(values):.2f}-{max(values):.2f}]"


def per_gib(samples: list[Sample], size: int) -> dict[str, float]:
    """Median user, sys, server CPU seconds of ``samples``, per GiB of ``size`` bytes."""
    import statistics

    scale = (1 << 30) / size
    return {k: statistics.median(getattr(s, k) for s in samples) * scale
            for k in ("user", "sys", "server", "wall")}


def cpu_breakdown(name: str, samples: list[Sample], size: int) -> str:
    """One line: a contender's client user and sys CPU and the server's, per GiB."""
    g = per_gib(samples, size)
    return (f"  {name:<34} client user {g['user']:5.2f} + sys {g['sys']:5.2f} s/GiB, "
            f"server {g['server']:5.2f} s/GiB")


def floor(baseline: list[Sample], size: int, hash_per_gib: float,
          start: float = 0.0, disk: float = 0.0) -> tuple[float, str]:
    """The least wall time a verified download can take here, as a ratio to ``baseline``.

    It needs at least the CPU the unverified tool and the server spent, plus hashing
    (``hash_per_gib``), on ``os.cpu_count()`` cores; it cannot beat the tool's wall
    time; ``start`` is a start-up the tool does not pay (an interpreter and its
    imports). ``disk`` (dd writing the same size, then fdatasync) is shown, not counted:
    the tool leaves its bytes in the page cache and a cache fsyncs before it answers,
    but hostkit starts writeback as it downloads, so the disk overlaps the transfer
    (dd's total is page-cache copy plus flush, one after the other). Returns
    ``(ratio, explanation)``.
    """
    import statistics

    cores = os.cpu_count() or 1
    wall = statistics.median(s.wall for s in baseline)
    cpu = statistics.median(s.cpu + s.server for s in baseline)
    hashing = hash_per_gib * size / (1 << 30)
    least = max(wall, (cpu + hashing) / cores) + start
    shown = f" (dd + fdatasync of the same size: {disk:.2f} s, overlapped)" if disk else ""
    return least / wall, (f"max(tool wall {wall:.2f} s, (tool+server CPU {cpu:.2f} s + "
                          f"sha256 {hashing:.2f} s) / {cores} cores) + start-up {start:.2f} s "
                          f"= {least:.2f} s{shown}")


def durable_write(path: Path, size: int) -> Sample:
    """``dd`` of ``size`` zero bytes to ``path`` with fdatasync: the disk's part of a floor."""
    try:
        return measure(["dd", "if=/dev/zero", f"of={path}", "bs=1M", f"count={size >> 20}",
                        "conv=fdatasync", "status=none"])
    finally:
        Path(path).unlink(missing_ok=True)


def row(measure: str, value: str, target: str, met: bool) -> str:
    """A line of the issue's table: the measure, what this run found, the target, met or not."""
    return f"ROW | {measure} | {value} | target {target} | {'met' if met else 'MISSED'}"


def clean_start(out: Path) -> None:
    """Delete the last run's output and write back dirty pages: the baselines do not fsync,
    and their dirty pages would otherwise be written back during the next contender's run."""
    out.unlink(missing_ok=True)
    os.sync()


def interleaved(contenders: dict, rounds: int, results: dict, before=None) -> None:
    """Run each of ``contenders`` (name -> a function returning a :class:`Sample`) once a
    round, in turn (A B A B: the machine's load hits all alike), ``before()`` ahead of
    each run; append the samples to ``results[name]`` and print each round's walls."""
    for i in range(rounds):
        for name, fn in contenders.items():
            if before is not None:
                before()
            results.setdefault(name, []).append(fn())
        print(f"round {i + 1}/{rounds}: " + ", ".join(
            f"{n.split()[0]} {r[-1].wall:.2f}s" for n, r in results.items()), flush=True)


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
