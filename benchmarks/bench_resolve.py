"""Cold and warm resolve against nginx on loopback, as ratios to baselines from the same run.

    uv run python benchmarks/bench_resolve.py [--size-mib 1024] [--rounds 5] [--others]

- cold: ``hostkit resolve URL --hash sha256:..`` (download + verify + fsync + store)
  vs ``curl -o`` of the same file (no verification, no fsync). Target <= 1.2x.
  Also the same resolve through the Python API in an interpreter that has already
  imported hostkit (the daemon's and a long-running client's case), which separates
  the streaming cost from the CLI's start-up.
- a minimal verified Python client (``minimal_client.py http``: one aiohttp GET,
  sha256 while writing, fsync), in the same rounds: what the same promise costs any
  Python program here, a second floor.
- peak memory (max RSS) of the cold CLI resolve, measured from a small parent
  process (see ``_common.measure``). Target < 64 MiB.
- warm: CLI cache hit vs ``python -c pass``. Target <= 3x.
- ``--others``: pooch.retrieve with the known hash and fsspec simplecache + sha256,
  once each, if installed.

Contenders run interleaved (curl, hostkit, API, curl, hostkit, ...) so the machine's
load hits all alike; before each, outputs are deleted and ``sync`` flushes dirty pages
(curl's gigabyte of dirty pages would otherwise be written back during hostkit's
run). Medians and spreads are printed, with each one's CPU per GiB (user, sys, and
nginx's) from the operating system's accounting, the cost of sha256 alone here, and
the floor those imply: no verified download can beat the CPU that curl and nginx
spent plus the hashing, spread over this machine's cores. Only ratios from one run
mean anything.
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
    MINIMAL,
    ROOT,
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
    sha256_seconds_per_gib,
    spread,
)

from tests.servers import NginxServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--others", action="store_true", help="pooch and fsspec too, once each")
    args = ap.parse_args()
    compile_bytecode()
    (ROOT / ".bench").mkdir(exist_ok=True)  # on the cache's disk, gitignored
    work = Path(tempfile.mkdtemp(prefix="hostkit-bench-", dir=ROOT / ".bench"))
    size = args.size_mib << 20
    results: dict[str, list] = {}
    others = []
    try:
        root = work / "www"
        root.mkdir()
        sha = make_file(root / "big.bin", size)
        with NginxServer(root) as nginx:
            url = f"{nginx.url}/big.bin"
            out = work / "out.bin"
            api = ("import sys, time, hostkit, hostkit.api, hostkit.resolver, aiohttp\n"
                   "from hostkit.plugins import load_plugins; load_plugins()\n"
                   "t = time.perf_counter()\n"
                   f"hostkit.resolve({url!r}, 'sha256:{sha}')\n"
                   "sys.stderr.write(f'{time.perf_counter() - t}')")

            def cache(name: str) -> dict:
                shutil.rmtree(work / name, ignore_errors=True)
                return {"HOSTKIT_CACHE_DIR": str(work / name)}

            contenders = {
                "curl -o (no verification)":
                    lambda: measure(["curl", "-sS", "-o", out, url], server_pid=nginx.pid),
                "hostkit resolve --hash (cold)":
                    lambda: measure([BIN / "hostkit", "resolve", url, "--hash", f"sha256:{sha}",
                                     "--quiet"], cache("cache"), server_pid=nginx.pid),
                "hostkit.resolve, interpreter up":
                    lambda: measure([sys.executable, "-c", api], cache("cache-api"),
                                    server_pid=nginx.pid),
                "python start-up (" + START + ")":
                    lambda: measure([sys.executable, "-c", START]),
                "durable write (dd, fdatasync)": lambda: durable_write(out, size),
                MINIMAL: lambda: measure(minimal_client("http", url, out),
                                         server_pid=nginx.pid),
            }
            interleaved(contenders, args.rounds, results, before=lambda: clean_start(out))
            if args.others:
                others = list(_others(url, sha, work))

            def warm():
                return measure([BIN / "hostkit", "resolve", url, sha],
                               {"HOSTKIT_CACHE_DIR": str(work / "cache")})

            def bare():
                return measure([sys.executable, "-c", "pass"])

            warm_s, bare_s = [], []
            for _ in range(15):
                warm_s.append(warm().wall)
                bare_s.append(bare().wall)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report(results, others, warm_s, bare_s, size, args)


def report(results, others, warm_s, bare_s, size: int, args) -> None:
    names = list(results)
    curl, cli, api, start, disk, minimal = (results[n] for n in names)
    names = [*names[:3], MINIMAL]  # the downloads
    med = statistics.median
    base = med(s.wall for s in curl)
    hash_gib = sha256_seconds_per_gib()
    print(f"\ncold resolve of {args.size_mib} MiB from nginx on loopback, {args.rounds} "
          f"interleaved rounds; machine load {os.getloadavg()[0]:.2f}")
    print(f"{'what':<44}{'wall s median [min-max]':>26}{'x curl':>8}{'peak MiB':>10}")
    for name in names:
        walls = [s.wall for s in results[name]]
        print(f"{name:<44}{spread(walls):>26}{med(walls) / base:>8.2f}"
              f"{max(s.peak_kib for s in results[name]) / 1024:>10.0f}")
    inside = [float(s.stderr.split()[-1]) for s in api]
    print(f"{'  of which the resolve itself':<44}{spread(inside):>26}"
          f"{med(inside) / base:>8.2f}")
    for name, wall, peak in others:
        print(f"{name:<44}{wall:>26.2f}{wall / base:>8.2f}{peak / 1024:>10.0f}")
    print("\nCPU per GiB (operating system's accounting, medians):")
    for name in names:
        print(cpu_breakdown(name, results[name], size))
    startup = med(s.wall for s in start)
    written = med(s.wall for s in disk)
    print(f"  sha256 alone (hashlib, one thread)  {hash_gib:.2f} s/GiB; python start-up "
          f"with aiohttp and hostkit {startup:.2f} s; durable write (dd + fdatasync) "
          f"{spread([s.wall for s in disk])} s")
    ratios = [h.wall / c.wall for h, c in zip(cli, curl, strict=True)]
    ratio = med(s.wall for s in cli) / base
    least, why = floor(curl, size, hash_gib, startup, written)
    print(f"  floor for a verified download here: {why} -> {least:.2f}x curl")
    least_python = med(s.wall for s in minimal) / base
    print(f"  a minimal verified Python client (minimal_client.py: one aiohttp GET, sha256, "
          f"fsync): {least_python:.2f}x curl; hostkit {ratio / least_python:.2f}x it")
    peak = max(s.peak_kib for s in cli) / 1024
    print()
    print(row(f"cold resolve of {args.size_mib} MiB from nginx, sha256 verified / curl -o",
              f"{ratio:.2f}x (per round {spread(ratios)}; floor {least:.2f}x; a minimal "
              f"verified Python client {least_python:.2f}x)", "<= 1.2x",
              ratio <= 1.2))
    print(row(f"peak memory, {args.size_mib} MiB http download", f"{peak:.0f} MiB", "< 64 MiB",
              peak < 64))
    warm = med(warm_s) / med(bare_s)
    print(row("warm CLI resolve (cache hit) / python -c pass",
              f"{warm:.2f}x ({med(warm_s) * 1000:.0f} ms vs {med(bare_s) * 1000:.0f} ms, "
              "medians of 15)", "<= 3x", warm <= 3))


def _others(url: str, sha: str, work: Path):
    """(name, wall, peak KiB) of pooch and fsspec, when installed (one run each)."""
    codes = []
    try:
        import pooch  # noqa: F401

        codes.append(("pooch.retrieve(known_hash=sha256)",
                      f"import pooch; pooch.retrieve({url!r}, known_hash='sha256:{sha}', "
                      f"path={str(work / 'pooch')!r}, progressbar=False)"))
    except ImportError:
        pass
    try:
        import fsspec  # noqa: F401

        codes.append(("fsspec simplecache::http + sha256",
                      "import fsspec, hashlib\n"
                      f"with fsspec.open('simplecache::{url}', 'rb', simplecache="
                      f"{{'cache_storage': {str(work / 'fsspec')!r}}}) as f:\n"
                      "    name = f.name\n"
                      "h = hashlib.sha256()\n"
                      "with open(name, 'rb') as g:\n"
                      "    for b in iter(lambda: g.read(1 << 20), b''): h.update(b)\n"
                      f"assert h.hexdigest() == {sha!r}"))
    except ImportError:
        pass
    for name, code in codes:
        os.sync()
        try:
            sample = measure([sys.executable, "-c", code])
            yield name, sample.wall, sample.peak_kib
        except SystemExit as exc:
            yield f"{name} (failed: {str(exc)[:40]})", float("nan"), 0


if __name__ == "__main__":
    main()
