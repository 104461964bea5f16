"""Cold resolve of one large object from a local SeaweedFS S3 gateway, vs s5cmd and boto3.

    uv run python benchmarks/bench_s3.py [--size-mib 1024] [--rounds 5]

- ``hostkit resolve minio://127.0.0.1:PORT/bench/big.bin --hash sha256:..``:
  download in parallel ranged parts, sha256-verified, fsynced into the cache.
- ``s5cmd cp`` (Go, parallel ranges; no verification) and boto3's managed
  ``download_file`` of the same object, run interleaved with hostkit in the same
  rounds so the machine's load hits all three alike.
- ``hostkit resolve`` of a 1-byte object: the fixed cost (interpreter, imports,
  client set-up) inside the big figure.

Before each timed run, outputs are deleted and ``sync`` flushes dirty pages, so
no contender pays for the previous one's write-back (hostkit's own fsync is
timed; the baselines do not fsync).

Targets: hostkit <= 1.3x s5cmd, peak memory < 150 MiB. Wall times are the best
and the median of the rounds; only ratios from one run mean anything.

Python byte-code is compiled first (as ``pip install`` does; ``uv sync`` only with
``--compile-bytecode``): with ``PYTHONDONTWRITEBYTECODE=1`` and no ``__pycache__``,
every start of hostkit (or of the boto3 baseline) would recompile aiohttp and
botocore from source, about a second, and measure that instead.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import BIN, ROOT, compile_bytecode, make_file, run

from tests.servers import SeaweedS3Server

KEY, SECRET = "benchkey", "benchsecret"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    s5cmd = shutil.which("s5cmd", path=str(BIN)) or shutil.which("s5cmd")
    if not s5cmd:
        raise SystemExit("s5cmd not found: `uv sync` installs it (dev group)")
    compile_bytecode()
    (ROOT / ".bench").mkdir(exist_ok=True)  # on the cache's disk, gitignored
    work = Path(tempfile.mkdtemp(prefix="hostkit-bench-s3-", dir=ROOT / ".bench"))
    size = args.size_mib << 20
    results: dict[str, list[tuple[float, int]]] = {}
    try:
        src = work / "big.bin"
        sha = make_file(src, size)
        (work / "tiny.bin").write_bytes(b"x")
        with SeaweedS3Server(access_key=KEY, secret_key=SECRET) as server:
            env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true",
                   "HOSTKIT_MINIO_INSECURE_HOSTS": "127.0.0.1"}
            s5 = [s5cmd, "--endpoint-url", server.endpoint_url]
            run([*s5, "mb", "s3://bench"], env)
            print(f"uploading {args.size_mib} MiB to SeaweedFS ...", flush=True)
            run([*s5, "cp", str(src), "s3://bench/big.bin"], env)
            run([*s5, "cp", str(work / "tiny.bin"), "s3://bench/tiny.bin"], env)
            src.unlink()
            out = work / "out.bin"
            ident = f"minio://127.0.0.1:{server.port}/bench/big.bin"
            boto = ("import boto3, sys\n"
                    f"c = boto3.client('s3', endpoint_url={server.endpoint_url!r})\n"
                    f"c.download_file('bench', 'big.bin', {str(out)!r})\n")

            def fresh_cache() -> dict:
                cache = work / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                return {**env, "HOSTKIT_CACHE_DIR": str(cache)}

            contenders = {
                "s5cmd cp (no verification)":
                    lambda: (out.unlink(missing_ok=True), run([*s5, "cp", "s3://bench/big.bin",
                                                               str(out)], env))[1],
                "boto3 download_file (no verification)":
                    lambda: (out.unlink(missing_ok=True),
                             run([sys.executable, "-c", boto], env))[1],
                "hostkit resolve --hash (cold)":
                    lambda: run([str(BIN / "hostkit"), "resolve", "--quiet", ident, "--hash",
                                 f"sha256:{sha}"], fresh_cache()),
                "hostkit resolve, 1-byte object (fixed cost)":
                    lambda: run([str(BIN / "hostkit"), "resolve", "--quiet",
                                 f"minio://127.0.0.1:{server.port}/bench/tiny.bin"],
                                fresh_cache()),
            }
            for i in range(args.rounds):
                for name, fn in contenders.items():
                    # start each from a clean page cache state: the baselines do not fsync,
                    # and their gigabyte of dirty pages would be written back during the
                    # next contender's run
                    out.unlink(missing_ok=True)
                    os.sync()
                    results.setdefault(name, []).append(fn())
                print(f"round {i + 1}/{args.rounds}: " + ", ".join(
                    f"{n.split()[0]} {r[-1][0]:.2f}s" for n, r in results.items()), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    best = {name: min(r)[0] for name, r in results.items()}
    median = {name: statistics.median(w for w, _ in r) for name, r in results.items()}
    peak = {name: max(rss for _, rss in r) for name, r in results.items()}
    s5_best, s5_median = best["s5cmd cp (no verification)"], median["s5cmd cp (no verification)"]
    print(f"\ncold download of {args.size_mib} MiB from SeaweedFS on loopback, "
          f"{args.rounds} interleaved rounds")
    print(f"{'what':<46}{'best s':>8}{'median s':>10}{'x s5cmd':>9}{'peak MiB':>10}")
    for name in results:
        print(f"{name:<46}{best[name]:>8.2f}{median[name]:>10.2f}"
              f"{median[name] / s5_median:>9.2f}{peak[name] / 1024:>10.0f}")
    hk = "hostkit resolve --hash (cold)"
    ratio = median[hk] / s5_median
    boto_ratio = median["boto3 download_file (no verification)"] / median[hk]
    print(f"\ntarget: hostkit <= 1.3x s5cmd -> {ratio:.2f}x median, "
          f"{best[hk] / s5_best:.2f}x best ({'met' if ratio <= 1.3 else 'NOT met'})")
    print(f"hostkit vs boto3: {boto_ratio:.2f}x faster (median)")
    print(f"target: peak memory < 150 MiB -> {peak[hk] / 1024:.0f} MiB "
          f"({'met' if peak[hk] / 1024 < 150 else 'NOT met'})")


if __name__ == "__main__":
    main()
