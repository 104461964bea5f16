"""A folder (tree) from a local SeaweedFS: hostkit resolve vs s5cmd cp, cold and warm.

    uv run python benchmarks/bench_tree.py [--small 1000] [--small-kib 64] [--big 4]
                                           [--big-mib 64] [--rounds 3] [--warm 15]

The folder: ``--small`` files of ``--small-kib`` KiB (in 10 subfolders) and
``--big`` files of ``--big-mib`` MiB, uploaded once under ``s3://bench/tree/``.

- cold: ``hostkit resolve s3://bench/tree/ --hash sha256:<manifest>`` with an
  empty cache (each file verified, fsynced, stored; the snapshot built) against
  ``s5cmd cp 's3://bench/tree/*' DIR`` (Go, parallel; no verification, no
  fsync), interleaved A B A B so the machine's load hits both alike, outputs
  deleted and ``sync`` run before each. Target: hostkit <= 1.5x s5cmd (median).
- warm: the same pinned resolve again, the snapshot in place (the CLI's fast
  path: no plugins, no network). Target: <= 50 ms (median). The interpreter's
  own start-up (``python -c pass``), measured in the same rounds, is its floor.
- warm re-list: the same resolve without the hash (the prefix is mutable: one
  listing, every file's validator compared, nothing fetched).
- a minimal verified Python client (``minimal_client.py tree``: aiohttp and hashlib,
  md5 and size checked, each file fsynced, no cache), in the same rounds: what the
  same promise costs any Python program here, the second floor.
- peak memory (max RSS) of each, and a CPU breakdown: user and system seconds
  of the client, and the CPU SeaweedFS spent serving it (its /proc counters).

Wall times are the best and the median of the rounds; only ratios measured in
one run mean anything (see ``uptime``'s load before trusting them).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
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
    Sample,
    compile_bytecode,
    interleaved,
    measure,
    minimal_client,
    row,
    sha256_seconds_per_gib,
)

from tests.servers import SeaweedS3Server

STARTUP = "python start-up (aiohttp, hostkit)"
S5 = "s5cmd cp (no verification, no fsync)"
COLD = "hostkit resolve --hash (cold)"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--small", type=int, default=1000)
    ap.add_argument("--small-kib", type=int, default=64)
    ap.add_argument("--big", type=int, default=4)
    ap.add_argument("--big-mib", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--warm", type=int, default=15)
    args = ap.parse_args()
    s5cmd = shutil.which("s5cmd", path=str(BIN)) or shutil.which("s5cmd")
    if not s5cmd:
        raise SystemExit("s5cmd not found: `uv sync` installs it (dev group)")
    compile_bytecode()
    print(f"load average: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} "
          f"{os.getloadavg()[2]:.2f} on {os.cpu_count()} CPUs", flush=True)
    (ROOT / ".bench").mkdir(exist_ok=True)  # on the cache's disk, gitignored
    work = Path(tempfile.mkdtemp(prefix="hostkit-bench-tree-", dir=ROOT / ".bench"))
    total = args.small * args.small_kib * 1024 + args.big * (args.big_mib << 20)
    results: dict[str, list[Sample]] = {}
    try:
        src = work / "src"
        src.mkdir()
        for i in range(args.small):
            path = src / f"d{i % 10}" / f"f{i:05d}.bin"
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(os.urandom(args.small_kib * 1024))
        for i in range(args.big):
            with open(src / f"big{i}.bin", "wb") as f:
                for _ in range(args.big_mib):
                    f.write(os.urandom(1 << 20))
        with SeaweedS3Server(access_key=KEY, secret_key=SECRET) as server:
            env = {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                   "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                   "AWS_EC2_METADATA_DISABLED": "true",
                   "AWS_ENDPOINT_URL_S3": server.endpoint_url,
                   "HOSTKIT_CONFIG": str(work / "no-config.toml")}
            s5 = [s5cmd, "--endpoint-url", server.endpoint_url]
            subprocess.run([*s5, "mb", "s3://bench"], env={**os.environ, **env}, check=True,
                           capture_output=True)
            print(f"uploading {args.small} x {args.small_kib} KiB + {args.big} x "
                  f"{args.big_mib} MiB ({total / 2**20:.0f} MiB) ...", flush=True)
            subprocess.run([*s5, "cp", f"{src}/", "s3://bench/tree/"],
                           env={**os.environ, **env}, check=True, capture_output=True)
            shutil.rmtree(src)
            ident = "s3://bench/tree/"
            cache, out, out_minimal = work / "cache", work / "out", work / "out-minimal"
            hostkit = [str(BIN / "hostkit"), "resolve", "--quiet", ident]
            first = subprocess.run([*hostkit, "--json"], capture_output=True, text=True,
                                   env={**os.environ, **env, "HOSTKIT_CACHE_DIR": str(cache)})
            if first.returncode != 0:
                raise SystemExit(f"hostkit resolve failed: {first.stderr[-3000:]}")
            answer = json.loads(first.stdout)
            digest = answer["sha256"]
            assert answer["files"] == args.small + args.big, answer
            print(f"manifest sha256:{digest}, {answer['files']} files", flush=True)

            def cold_hostkit() -> Sample:
                shutil.rmtree(cache, ignore_errors=True)
                os.sync()
                return measure([*hostkit, "--hash", f"sha256:{digest}"],
                               {**env, "HOSTKIT_CACHE_DIR": str(cache)}, server.pid)

            def cold_s5cmd() -> Sample:
                shutil.rmtree(out, ignore_errors=True)
                os.sync()
                return measure([*s5, "cp", "s3://bench/tree/*", f"{out}/"], env, server.pid)

            def cold_minimal() -> Sample:
                # its own folder: a contender deletes only its own last output (on this
                # kind of disk, files deleted a moment ago slow down creating new ones)
                shutil.rmtree(out_minimal, ignore_errors=True)
                os.sync()
                return measure(minimal_client("tree", server.endpoint_url, "bench", "tree/",
                                              out_minimal, 16), env, server.pid)

            contenders = {S5: cold_s5cmd, COLD: cold_hostkit, MINIMAL: cold_minimal}
            interleaved(contenders, args.rounds, results)
            warm_env = {**env, "HOSTKIT_CACHE_DIR": str(cache)}
            for _ in range(args.warm):
                results.setdefault("hostkit resolve --hash (warm, pinned)", []).append(
                    measure([*hostkit, "--hash", f"sha256:{digest}"], warm_env, server.pid))
                results.setdefault("python -c pass (interpreter start-up)", []).append(
                    measure([sys.executable, "-c", "pass"], warm_env, server.pid))
            for _ in range(max(3, args.warm // 5)):
                results.setdefault("hostkit resolve (warm, re-listed)", []).append(
                    measure(hostkit, warm_env, server.pid))
                results.setdefault(STARTUP, []).append(
                    measure([sys.executable, "-c", START], warm_env, server.pid))
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, args, total)


def report(results: dict[str, list[Sample]], args, total: int) -> None:
    def med(name: str, key: str = "wall") -> float:
        return statistics.median(getattr(r, key) for r in results[name])

    s5, cold = S5, COLD
    warm, relist = "hostkit resolve --hash (warm, pinned)", "hostkit resolve (warm, re-listed)"
    print(f"\na folder of {args.small} x {args.small_kib} KiB + {args.big} x {args.big_mib} MiB "
          f"({total / 2**20:.0f} MiB) from SeaweedFS on loopback; {args.rounds} interleaved "
          f"cold rounds, {args.warm} warm")
    print(f"{'what':<40}{'best s':>8}{'median s':>10}{'spread':>8}{'x s5cmd':>9}"
          f"{'user s':>8}{'sys s':>7}{'server s':>9}{'peak MiB':>9}")
    for name, runs in results.items():
        walls = [r.wall for r in runs]
        spread = (max(walls) - min(walls)) / statistics.median(walls)
        print(f"{name:<40}{min(walls):>8.3f}{statistics.median(walls):>10.3f}"
              f"{spread:>7.0%} {med(name) / med(s5):>8.2f}{med(name, 'user'):>8.2f}"
              f"{med(name, 'sys'):>7.2f}{med(name, 'server'):>9.2f}"
              f"{max(r.peak_kib for r in runs) / 1024:>9.0f}")
    ratio = med(cold) / med(s5)
    ratios = [h.wall / c.wall for h, c in zip(results[cold], results[s5], strict=True)]
    # the floor: what s5cmd and SeaweedFS spent, plus sha256 of every byte, on the cores;
    # never below s5cmd's wall; plus the interpreter and imports s5cmd does not pay
    gib = total / (1 << 30)
    hashing = sha256_seconds_per_gib() * gib
    cores = os.cpu_count() or 1
    tool_cpu = med(s5, "user") + med(s5, "sys") + med(s5, "server")
    startup = med(STARTUP)
    least = max(med(s5), (tool_cpu + hashing) / cores) + startup
    print(f"\nCPU per GiB (medians): hostkit user {med(cold, 'user') / gib:.2f} + sys "
          f"{med(cold, 'sys') / gib:.2f}, SeaweedFS {med(cold, 'server') / gib:.2f}; s5cmd user "
          f"{med(s5, 'user') / gib:.2f} + sys {med(s5, 'sys') / gib:.2f}, SeaweedFS "
          f"{med(s5, 'server') / gib:.2f}; sha256 alone {hashing / gib:.2f} s/GiB")
    print(f"floor: max(s5cmd wall {med(s5):.2f} s, (s5cmd+server CPU {tool_cpu:.2f} s + sha256 "
          f"{hashing:.2f} s) / {cores} cores) + start-up {startup:.2f} s = {least:.2f} s "
          f"-> {least / med(s5):.2f}x s5cmd")
    minimal = med(MINIMAL) / med(s5)
    print(f"a minimal verified Python client (minimal_client.py: aiohttp + hashlib, fsync, "
          f"no cache, "
          f"16 at a time): {minimal:.2f}x s5cmd; hostkit {med(cold) / med(MINIMAL):.2f}x it")
    print()
    print(row(f"cold tree ({args.small} x {args.small_kib} KiB + {args.big} x {args.big_mib} "
              "MiB), verified / s5cmd cp",
              f"{ratio:.2f}x (per round {min(ratios):.2f}-{max(ratios):.2f}; floor "
              f"{least / med(s5):.2f}x; a minimal verified Python client {minimal:.2f}x)",
              "<= 1.5x", ratio <= 1.5))
    print(row("warm re-resolve of the pinned tree", f"{med(warm) * 1000:.0f} ms median",
              "<= 50 ms", med(warm) <= 0.05))
    print(row("peak memory, cold tree", f"{max(r.peak_kib for r in results[cold]) / 1024:.0f} MiB "
              f"(warm {max(r.peak_kib for r in results[warm]) / 1024:.0f}, re-list "
              f"{max(r.peak_kib for r in results[relist]) / 1024:.0f}; s5cmd "
              f"{max(r.peak_kib for r in results[s5]) / 1024:.0f})", "flat with size", True))


if __name__ == "__main__":
    sys.exit(main())
