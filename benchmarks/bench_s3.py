"""Cold resolve of one large object from a local SeaweedFS S3 gateway, vs s5cmd and boto3.

    uv run python benchmarks/bench_s3.py [--size-mib 1024] [--rounds 5] [--no-boto3]

- ``hostkit resolve minio://127.0.0.1:PORT/bench/big.bin --hash sha256:..``:
  download in parallel ranged parts, sha256-verified, fsynced into the cache.
- ``s5cmd cp`` (Go, parallel ranges; no verification, no fsync) and boto3's managed
  ``download_file`` of the same object, run interleaved with hostkit in the same
  rounds so the machine's load hits all alike.
- a minimal verified Python client (``minimal_client.py get``: one GET through aiohttp,
  sha256 while writing, fsync): what the same promise costs any Python program here.
- ``hostkit resolve`` of a 1-byte object: the fixed cost (interpreter, imports,
  signing, a HEAD and a GET) inside the big figure, next to ``s5cmd cp`` of the same
  object and the bare start-up of the Python it runs on.

Before each timed run, outputs are deleted and ``sync`` flushes dirty pages, so no
contender pays for the previous one's write-back (hostkit's own fsync is timed).
Peak memory is measured from a small parent process (``_common.measure``).

Printed: medians and spreads, each contender's CPU per GiB (user, sys) and
SeaweedFS's meanwhile, sha256 alone, and the floor they imply on this machine: a
verified download needs at least the CPU s5cmd and SeaweedFS spent plus the hashing,
over this machine's cores, plus the start-up of an interpreter.

Targets: hostkit <= 1.3x s5cmd, 1-byte fixed cost <= 0.2 s, peak memory < 64 MiB.
Only ratios (and CPU-seconds) from one run mean anything.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
from pathlib import Path

from _common import (
    BIN,
    KEY,
    MINIMAL,
    ROOT,
    SECRET,
    START,
    clean_start,
    compile_bytecode,
    cpu_breakdown,
    durable_write,
    floor,
    interleaved,
    make_file,
    measure,
    minimal_client,
    row,
    run,
    sha256_seconds_per_gib,
    spread,
)

from tests.servers import SeaweedS3Server

S5 = "s5cmd cp (no verification)"
HK = "hostkit resolve --hash (cold)"
BOTO = "boto3 download_file (no verification)"
TINY = "hostkit resolve, 1-byte object (fixed cost)"
TINY_S5 = "s5cmd cp, 1-byte object"
PY = f"python start-up ({START})"
DISK = "durable write (dd, fdatasync)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--no-boto3", action="store_true", help="leave boto3 out (5 s a round)")
    args = ap.parse_args()
    s5cmd = shutil.which("s5cmd", path=str(BIN)) or shutil.which("s5cmd")
    if not s5cmd:
        raise SystemExit("s5cmd not found: `uv sync` installs it (dev group)")
    compile_bytecode()
    (ROOT / ".bench").mkdir(exist_ok=True)  # on the cache's disk, gitignored
    work = Path(tempfile.mkdtemp(prefix="hostkit-bench-s3-", dir=ROOT / ".bench"))
    size = args.size_mib << 20
    results: dict[str, list] = {}
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

            pid = server.pid
            contenders = {
                S5: lambda: measure([*s5, "cp", "s3://bench/big.bin", out], env, pid),
                HK: lambda: measure([BIN / "hostkit", "resolve", "--quiet", ident, "--hash",
                                     f"sha256:{sha}"], fresh_cache(), pid),
                BOTO: lambda: measure([sys.executable, "-c", boto], env, pid),
                MINIMAL: lambda: measure(minimal_client("get", server.endpoint_url, "bench",
                                                        "big.bin", out), env, pid),
                TINY: lambda: measure([BIN / "hostkit", "resolve", "--quiet",
                                       f"minio://127.0.0.1:{server.port}/bench/tiny.bin"],
                                      fresh_cache(), pid),
                TINY_S5: lambda: measure([*s5, "cp", "s3://bench/tiny.bin", out], env, pid),
                PY: lambda: measure([sys.executable, "-c", START]),
                DISK: lambda: durable_write(out, size),
            }
            if args.no_boto3:
                del contenders[BOTO]
            interleaved(contenders, args.rounds, results, before=lambda: clean_start(out))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, size, args)


def report(results: dict[str, list], size: int, args) -> None:
    med = statistics.median
    hash_gib = sha256_seconds_per_gib()
    base = med(s.wall for s in results[S5])
    print(f"\ncold download of {args.size_mib} MiB from SeaweedFS on loopback, {args.rounds} "
          f"interleaved rounds; machine load {os.getloadavg()[0]:.2f}")
    print(f"{'what':<46}{'wall s median [min-max]':>26}{'x s5cmd':>9}{'peak MiB':>10}")
    for name in (S5, HK, MINIMAL, BOTO):
        if name in results:
            walls = [s.wall for s in results[name]]
            print(f"{name:<46}{spread(walls):>26}{med(walls) / base:>9.2f}"
                  f"{max(s.peak_kib for s in results[name]) / 1024:>10.0f}")
    for name in (TINY, TINY_S5, PY, DISK):
        walls = [s.wall for s in results[name]]
        print(f"{name:<46}{spread(walls):>26}{'':>9}"
              f"{max(s.peak_kib for s in results[name]) / 1024:>10.0f}")
    print("\nCPU per GiB (operating system's accounting, medians; server = SeaweedFS):")
    for name in (S5, HK, MINIMAL, BOTO):
        if name in results:
            print(cpu_breakdown(name, results[name], size))
    tiny = results[TINY]
    startup = med(s.wall for s in results[PY])
    print(f"  1-byte object: hostkit user {med(s.user for s in tiny):.2f} + sys "
          f"{med(s.sys for s in tiny):.2f} s, SeaweedFS {med(s.server for s in tiny):.2f} s")
    print(f"  sha256 alone (hashlib, one thread)    {hash_gib:.2f} s/GiB; python start-up "
          f"with aiohttp and hostkit {startup:.2f} s")
    least, why = floor(results[S5], size, hash_gib, startup,
                       med(s.wall for s in results[DISK]))
    print(f"  floor for a verified download here: {why} -> {least:.2f}x s5cmd")
    minimal = med(s.wall for s in results[MINIMAL]) / base
    versus = med(s.wall for s in results[HK]) / base / minimal
    print(f"  a minimal verified Python client (minimal_client.py: one aiohttp GET, sha256, "
          f"fsync): "
          f"{minimal:.2f}x s5cmd; hostkit {versus:.2f}x it")
    ratios = [h.wall / c.wall for h, c in zip(results[HK], results[S5], strict=True)]
    ratio = med(s.wall for s in results[HK]) / base
    tiny_wall = med(s.wall for s in tiny)
    peak = max(s.peak_kib for s in results[HK]) / 1024
    print()
    print(row(f"cold resolve of {args.size_mib} MiB from SeaweedFS, verified / s5cmd cp",
              f"{ratio:.2f}x (per round {spread(ratios)}; floor {least:.2f}x; a minimal "
              f"verified Python client {minimal:.2f}x)", "<= 1.3x",
              ratio <= 1.3))
    print(row("fixed cost of an s3 resolve (a 1-byte object)",
              f"{tiny_wall:.2f} s (s5cmd {med(s.wall for s in results[TINY_S5]):.2f} s, "
              f"python start-up {startup:.2f} s)", "<= 0.2 s", tiny_wall <= 0.2))
    print(row(f"peak memory, {args.size_mib} MiB s3 download", f"{peak:.0f} MiB", "< 64 MiB",
              peak < 64))


if __name__ == "__main__":
    main()
