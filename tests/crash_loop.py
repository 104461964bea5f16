"""The crash loop: kill ``hostkit resolve`` at random moments, then check what the next run does.

Each run publishes a new file on the fault-injecting origin (tests/origin.py),
starts ``hostkit resolve`` on one shared cache and ends it with SIGKILL or
SIGINT: at a random moment of the download, or exactly at a named point
(fsync, verification, the rename into ``blobs/``, the index writes) through
``HOSTKIT_FAILPOINT``. A second, undisturbed run must then give exactly the
published bytes, and fetch from the origin only what was not on disk yet.
After all runs, ``cache verify`` must find every blob whole.

    ./dev crash 50          (or: python -m tests.crash_loop 50 [--seed S])

prints ``N/N runs: no corrupt entry, R/M resumed without re-downloading`` where
M counts the runs that left bytes on disk. Exit status 1 unless R = M and
nothing is corrupt.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from hostkit.failpoints import POINTS
from tests.origin import OriginServer


@dataclass
class Summary:
    """What the loop saw."""

    runs: int = 0
    corrupt: list[str] = field(default_factory=list)
    with_bytes: int = 0
    resumed: int = 0
    failures: list[str] = field(default_factory=list)

    def line(self) -> str:
        """The one-line verdict."""
        clean = self.runs - len(self.corrupt)
        return (f"{clean}/{self.runs} runs: no corrupt entry, {self.resumed}/{self.with_bytes} "
                f"resumed without re-downloading ({self.with_bytes} runs had bytes on disk)")

    @property
    def ok(self) -> bool:
        """Nothing corrupt, every run with bytes on disk resumed, every rerun succeeded."""
        return not self.corrupt and not self.failures and self.resumed == self.with_bytes


def _cli(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "hostkit.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _on_disk(cache: Path, sha: str) -> int:
    """Bytes of this download an interrupted run left: partials, or the whole blob unindexed."""
    parts = sum(p.stat().st_size for p in (cache / "tmp").glob("*.part")) \
        if (cache / "tmp").exists() else 0
    blob = cache / "blobs" / "sha256" / sha
    return parts + (blob.stat().st_size if blob.exists() else 0)


def _indexed(cache: Path, sha: str) -> bool:
    import sqlite3

    if not (cache / "index.db").exists():
        return False
    db = sqlite3.connect(f"file:{cache / 'index.db'}?mode=ro", uri=True)
    try:
        return db.execute("SELECT 1 FROM entries WHERE sha256=?", (sha,)).fetchone() is not None
    except sqlite3.Error:
        return False
    finally:
        db.close()


def run(n: int, seed: int | None = None, size: int = 4 << 20, log=print) -> Summary:
    """Do ``n`` kill-and-rerun rounds on one cache; return the summary."""
    rng = random.Random(seed)
    server = OriginServer()
    origin = server.start()
    summary = Summary()
    with tempfile.TemporaryDirectory(prefix="hostkit-crash-") as tmp:
        cache = Path(tmp) / "cache"
        env = {k: v for k, v in os.environ.items() if not k.startswith("HOSTKIT_")}
        env.update(HOSTKIT_CACHE_DIR=str(cache), HOSTKIT_CONFIG=str(Path(tmp) / "none.toml"),
                   HOSTKIT_BACKOFF="0.01")
        try:
            for i in range(n):
                _round(i, rng, origin, cache, env, size, summary, log)
            verify = subprocess.run([sys.executable, "-m", "hostkit.cli", "cache", "verify",
                                     "--report-only", "--json"], env=env, capture_output=True,
                                    text=True, timeout=300)
            problems = json.loads(verify.stdout).get("problems", []) if verify.stdout else []
            summary.corrupt += [p["sha256"] for p in problems]
            if verify.returncode not in (0, 8):
                summary.failures.append(f"cache verify exited {verify.returncode}: "
                                        f"{verify.stderr.strip()}")
        finally:
            server.stop()
    return summary


def _round(i: int, rng: random.Random, origin, cache: Path, env: dict, size: int,
           summary: Summary, log) -> None:
    data = rng.randbytes(size)
    name = f"crash{i}.bin"
    sha = origin.add(name, data)
    url = f"{origin.url}/slow/{name}"
    with_hash = rng.random() < 0.5
    sig = rng.choice([signal.SIGKILL, signal.SIGINT])
    point = rng.choice([None, None, *POINTS])
    run_env = dict(env)
    if point:
        run_env["HOSTKIT_FAILPOINT"] = f"{point}:{sig.name}"
    args = ["resolve", url, *([sha] if with_hash else []), "-q"]
    proc = _cli(args, run_env)
    how = f"{sig.name} at {point}" if point else f"{sig.name} after "
    if point is None:
        delay = rng.uniform(0.05, 2.0)
        how += f"{delay:.2f}s"
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    proc.communicate(timeout=120)
    summary.runs += 1
    held = 0 if _indexed(cache, sha) else _on_disk(cache, sha)
    origin.hits.clear()
    rerun = subprocess.run([sys.executable, "-m", "hostkit.cli", *args, "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
    fetched = sum(size - (int(h.range[6:-1]) if h.range else 0) for h in origin.gets(name))
    if rerun.returncode != 0:
        summary.failures.append(f"run {i} ({how}): rerun exited {rerun.returncode}: "
                                f"{rerun.stderr.strip()}")
        return
    got = json.loads(rerun.stdout)
    if got["sha256"] != sha or Path(got["path"]).read_bytes() != data:
        summary.corrupt.append(sha)
        log(f"run {i} ({how}): WRONG BYTES")
        return
    resumed = None
    if held:
        summary.with_bytes += 1
        resumed = fetched <= size - held
        summary.resumed += resumed
    log(f"run {i}: {how}, exit {proc.returncode}, {held} bytes on disk, rerun fetched "
        f"{fetched}" + ("" if resumed is None else f", resumed: {resumed}"))


def main(argv=None) -> int:
    """``python -m tests.crash_loop N [--seed S]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, nargs="?", default=20, help="rounds (default 20)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--size", type=int, default=4 << 20, help="bytes per file")
    args = p.parse_args(argv)
    started = time.monotonic()
    summary = run(args.n, args.seed, args.size)
    for failure in summary.failures:
        print("FAILED:", failure)
    print(summary.line(), f"[{time.monotonic() - started:.0f}s]")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
