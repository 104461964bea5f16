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

    ./dev crash 20 --trees

does the same with folders on SeaweedFS: each run uploads a new prefix (small files
fetched into memory and stored in batches, two larger ones through the single-file
path, a few files the earlier folders hold too, an empty one), resolves it pinned by
its manifest or not, and is killed at a random moment or at a failpoint (the batch
ones included), now and then with another process resolving the same folder
meanwhile. That process and the undisturbed rerun must give the folder exactly as
uploaded, its manifest digest the one computed here. Small files are not resumed across runs (they
are held in memory until their batch is stored), so only correctness is counted.
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

#: The bucket the folder rounds upload to.
TREE_BUCKET = "crash"


@dataclass
class Summary:
    """What the loop saw."""

    runs: int = 0
    corrupt: list[str] = field(default_factory=list)
    with_bytes: int = 0
    resumed: int = 0
    failures: list[str] = field(default_factory=list)
    #: Whether resumes are counted (folders: their small files are never resumed).
    resumes: bool = True

    def line(self) -> str:
        """The one-line verdict."""
        clean = self.runs - len(self.corrupt)
        if not self.resumes:
            return f"{clean}/{self.runs} runs: no corrupt entry, every rerun exact"
        return (f"{clean}/{self.runs} runs: no corrupt entry, {self.resumed}/{self.with_bytes} "
                f"resumed without re-downloading ({self.with_bytes} runs had bytes on disk)")

    @property
    def ok(self) -> bool:
        """Nothing corrupt, every run with bytes on disk resumed, every rerun succeeded."""
        return not self.corrupt and not self.failures and self.resumed == self.with_bytes


def _cli(args, env, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "hostkit.cli", *args], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **kwargs)


def _killed(args: list[str], env: dict, rng: random.Random, max_delay: float
            ) -> tuple[str, subprocess.Popen]:
    """Run ``hostkit args`` and end it with SIGKILL or SIGINT: at a failpoint picked at
    random, or after a random delay of up to ``max_delay`` seconds. Returns how it was
    ended (for the log) and the ended process."""
    sig = rng.choice([signal.SIGKILL, signal.SIGINT])
    point = rng.choice([None, None, *POINTS])
    run_env = dict(env)
    if point:
        run_env["HOSTKIT_FAILPOINT"] = f"{point}:{sig.name}"
    proc = _cli(args, run_env)
    how = f"{sig.name} at {point}" if point else f"{sig.name} after "
    if point is None:
        delay = rng.uniform(0.05, max_delay)
        how += f"{delay:.2f}s"
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(sig)
    proc.communicate(timeout=120)
    return how, proc


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
        _rounds(n, lambda i: _round(i, rng, origin, cache, env, size, summary, log), env,
                summary, server.stop)
    return summary


def _round(i: int, rng: random.Random, origin, cache: Path, env: dict, size: int,
           summary: Summary, log) -> None:
    data = rng.randbytes(size)
    name = f"crash{i}.bin"
    sha = origin.add(name, data)
    url = f"{origin.url}/slow/{name}"
    with_hash = rng.random() < 0.5
    args = ["resolve", url, *([sha] if with_hash else []), "-q"]
    how, proc = _killed(args, env, rng, 2.0)
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


def run_trees(n: int, seed: int | None = None, log=print) -> Summary:
    """Do ``n`` kill-and-rerun rounds of folder resolves on one cache; return the summary."""
    from tests.objectstore_fixtures import KEY, SECRET, start_seaweed

    rng = random.Random(seed)
    server = start_seaweed(buckets=(TREE_BUCKET,))
    summary = Summary(resumes=False)
    with tempfile.TemporaryDirectory(prefix="hostkit-crash-trees-") as tmp:
        cache = Path(tmp) / "cache"
        env = {k: v for k, v in os.environ.items()
               if not k.startswith(("HOSTKIT_", "AWS_", "MLFLOW_"))}
        env.update(HOSTKIT_CACHE_DIR=str(cache), HOSTKIT_CONFIG=str(Path(tmp) / "none.toml"),
                   HOSTKIT_BACKOFF="0.01", HOSTKIT_MINIO_INSECURE_HOSTS="127.0.0.1",
                   AWS_ACCESS_KEY_ID=KEY, AWS_SECRET_ACCESS_KEY=SECRET,
                   AWS_EC2_METADATA_DISABLED="true",
                   AWS_SHARED_CREDENTIALS_FILE=str(Path(tmp) / "no-aws-credentials"))
        shared: list[bytes] = []  # contents earlier folders hold: stored once, linked again
        _rounds(n, lambda i: _tree_round(i, rng, server, cache, env, shared, summary, log),
                env, summary, server.stop)
    return summary


def _rounds(n: int, one, env: dict, summary: Summary, stop) -> None:
    """``one(i)`` for each of ``n`` rounds, then ``cache verify``; ``stop()`` the server
    whatever happens."""
    try:
        for i in range(n):
            one(i)
        _verify(env, summary)
    finally:
        stop()


def _verify(env: dict, summary: Summary) -> None:
    """``cache verify``: every blob must hash to its name."""
    verify = subprocess.run([sys.executable, "-m", "hostkit.cli", "cache", "verify",
                             "--report-only", "--json"], env=env, capture_output=True,
                            text=True, timeout=300)
    problems = json.loads(verify.stdout).get("problems", []) if verify.stdout else []
    summary.corrupt += [p["sha256"] for p in problems]
    if verify.returncode not in (0, 8):
        summary.failures.append(f"cache verify exited {verify.returncode}: "
                                f"{verify.stderr.strip()}")


def _tree_files(rng: random.Random, shared: list[bytes]) -> dict[str, bytes]:
    """A folder: small files in two subfolders, two past the small-file size, a few
    contents of earlier folders, one empty file."""
    files = {f"d{k % 2}/f{k:03d}.bin": rng.randbytes(rng.randint(1, 64 << 10))
             for k in range(rng.randint(20, 60))}
    for k in range(2):
        files[f"big{k}.bin"] = rng.randbytes(rng.randint(3 << 19, 3 << 20))
    for k, data in enumerate(rng.sample(shared, min(len(shared), 5))):
        files[f"again/{k}.bin"] = data
    files["empty.txt"] = b""
    shared.extend(rng.sample(list(files.values()), 3))
    return files


def _tree_round(i: int, rng: random.Random, server, cache: Path, env: dict,
                shared: list[bytes], summary: Summary, log) -> None:
    import hashlib

    from hostkit.store.snapshots import TreeFile, manifest_bytes

    files = _tree_files(rng, shared)
    prefix = f"t{i}/"
    for path, data in files.items():
        server.admin.put_object(Bucket=TREE_BUCKET, Key=prefix + path, Body=data)
    manifest = hashlib.sha256(manifest_bytes(
        TreeFile(p, len(d), hashlib.sha256(d).hexdigest()) for p, d in files.items())).hexdigest()
    ident = f"minio://127.0.0.1:{server.port}/{TREE_BUCKET}/{prefix}"
    pinned = rng.random() < 0.5
    args = ["resolve", ident, *([f"sha256:{manifest}"] if pinned else []), "-q"]
    # now and then another process resolves the same folder meanwhile, undisturbed
    beside = _cli([*args, "--json"], env) if rng.random() < 0.3 else None
    how, proc = _killed(args, env, rng, 1.5)
    summary.runs += 1
    answers = []
    if beside is not None:
        out, err = beside.communicate(timeout=120)
        how += ", another process beside it"
        answers.append((beside.returncode, out, err))
    rerun = subprocess.run([sys.executable, "-m", "hostkit.cli", *args, "--json"], env=env,
                           capture_output=True, text=True, timeout=120)
    answers.append((rerun.returncode, rerun.stdout, rerun.stderr))
    for code, out, err in answers:
        if code != 0:
            summary.failures.append(f"run {i} ({how}): an undisturbed run exited {code}: "
                                    f"{err.strip()}")
            return
        got = json.loads(out)
        root = Path(got["path"])
        found = {str(f.relative_to(root)): f.read_bytes() for f in root.rglob("*")
                 if f.is_file()}
        if got["sha256"] != manifest or found != files:
            summary.corrupt.append(f"t{i}")
            log(f"run {i} ({how}): WRONG FOLDER (manifest {got['sha256']}, "
                f"{len(found)} files)")
            return
    log(f"run {i}: {how}, exit {proc.returncode}, {len(files)} files, rerun good")


def main(argv=None) -> int:
    """``python -m tests.crash_loop N [--seed S] [--trees]``."""
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("n", type=int, nargs="?", default=20, help="rounds (default 20)")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--size", type=int, default=4 << 20, help="bytes per file")
    p.add_argument("--trees", action="store_true",
                   help="folders on SeaweedFS instead of files on the test origin")
    args = p.parse_args(argv)
    started = time.monotonic()
    summary = run_trees(args.n, args.seed) if args.trees else run(args.n, args.seed, args.size)
    for failure in summary.failures:
        print("FAILED:", failure)
    print(summary.line(), f"[{time.monotonic() - started:.0f}s]")
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
