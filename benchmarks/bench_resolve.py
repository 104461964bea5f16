"""Cold and warm resolve against nginx on loopback, as ratios to baselines from the same run.

    uv run python benchmarks/bench_resolve.py [--size-mib 1024] [--rounds 3]

- cold: ``hostkit resolve URL --hash sha256:..`` (download + verify + store) vs
  ``curl -o`` of the same file (no verification). Target <= 1.2x.
  Also pooch.retrieve with the known hash and fsspec simplecache + sha256, if installed.
- warm: CLI cache hit vs ``python -c pass``. Target <= 3x.
- peak memory (max RSS) of the cold CLI resolve. Target < 100 MiB.
- also: the same cold resolve through the Python API in an interpreter that has
  already imported hostkit (the daemon's and a long-running client's case), which
  separates the streaming cost from the CLI's start-up.

Times are best-of-N wall times; only the ratios mean anything across machines.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import BIN, ROOT, best, make_file, run

from tests.servers import NginxServer


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    (ROOT / ".bench").mkdir(exist_ok=True)  # on the cache's disk, gitignored
    work = Path(tempfile.mkdtemp(prefix="hostkit-bench-", dir=ROOT / ".bench"))
    try:
        root = work / "www"
        root.mkdir()
        size = args.size_mib << 20
        sha = make_file(root / "big.bin", size)
        with NginxServer(root) as nginx:
            url = f"{nginx.url}/big.bin"
            out = work / "out.bin"

            def curl():
                out.unlink(missing_ok=True)
                return run(["curl", "-sS", "-o", str(out), url])

            def hostkit_cold():
                cache = work / "cache"
                shutil.rmtree(cache, ignore_errors=True)
                return run([str(BIN / "hostkit"), "resolve", url, "--hash", f"sha256:{sha}",
                            "--quiet"], env={"HOSTKIT_CACHE_DIR": str(cache)})

            def hostkit_in_process():
                cache = work / "cache-api"
                shutil.rmtree(cache, ignore_errors=True)
                code = ("import time, hostkit, hostkit.api, hostkit.resolver, aiohttp\n"
                        "from hostkit.plugins import load_plugins; load_plugins()\n"
                        "t = time.perf_counter()\n"
                        f"hostkit.resolve({url!r}, 'sha256:{sha}')\n"
                        "print(time.perf_counter() - t)")
                out = subprocess.run([sys.executable, "-c", code], capture_output=True,
                                     text=True, check=True,
                                     env={**os.environ, "HOSTKIT_CACHE_DIR": str(cache)})
                return float(out.stdout.strip()), 0

            rows = []
            c_wall, _ = best(curl, args.rounds)
            h_wall, h_rss = best(hostkit_cold, args.rounds)
            a_wall, _ = best(hostkit_in_process, args.rounds)
            rows.append(("curl -o (no verification)", c_wall, None))
            rows.append(("hostkit resolve --hash (cold)", h_wall, h_rss))
            rows.append(("hostkit.resolve, interpreter already up", a_wall, None))
            for name, code in _optional_baselines(url, sha, work):
                try:
                    wall, rss = run([sys.executable, "-c", code])
                    rows.append((name, wall, rss))
                except SystemExit as exc:
                    rows.append((f"{name} (failed: {str(exc)[:60]})", float("nan"), None))

            def warm():
                return run([str(BIN / "hostkit"), "resolve", url, sha],
                           env={"HOSTKIT_CACHE_DIR": str(work / "cache")})

            def bare():
                return run([sys.executable, "-c", "pass"])

            w_wall, _ = best(warm, 15)
            p_wall, _ = best(bare, 15)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    mib = size / (1 << 20)
    print(f"\ncold resolve of {mib:.0f} MiB from nginx on loopback (best of {args.rounds})")
    print(f"{'what':<42}{'wall s':>8}{'x curl':>9}{'peak MiB':>10}")
    for name, wall, rss in rows:
        peak = f"{rss / 1024:.0f}" if rss else "-"
        print(f"{name:<42}{wall:>8.2f}{wall / c_wall:>9.2f}{peak:>10}")
    print(f"\ntarget: hostkit <= 1.2x curl -> {h_wall / c_wall:.2f}x "
          f"({'met' if h_wall / c_wall <= 1.2 else 'NOT met'})")
    print(f"target: peak memory < 100 MiB -> {h_rss / 1024:.0f} MiB "
          f"({'met' if h_rss / 1024 < 100 else 'NOT met'})")
    print(f"\nwarm CLI resolve (cache hit) {w_wall * 1000:.1f} ms vs python -c pass "
          f"{p_wall * 1000:.1f} ms (best of 15)")
    ratio = w_wall / p_wall
    print(f"target: <= 3x -> {ratio:.2f}x ({'met' if ratio <= 3 else 'NOT met'})")


def _optional_baselines(url: str, sha: str, work: Path):
    try:
        import pooch  # noqa: F401

        yield ("pooch.retrieve(known_hash=sha256)",
               f"import pooch; pooch.retrieve({url!r}, known_hash='sha256:{sha}', "
               f"path={str(work / 'pooch')!r}, progressbar=False)")
    except ImportError:
        pass
    try:
        import fsspec  # noqa: F401

        yield ("fsspec simplecache::http + sha256",
               "import fsspec, hashlib\n"
               f"with fsspec.open('simplecache::{url}', 'rb', simplecache="
               f"{{'cache_storage': {str(work / 'fsspec')!r}}}) as f:\n"
               "    name = f.name\n"
               "h = hashlib.sha256()\n"
               "with open(name, 'rb') as g:\n"
               "    for b in iter(lambda: g.read(1 << 20), b''): h.update(b)\n"
               f"assert h.hexdigest() == {sha!r}")
    except ImportError:
        pass


if __name__ == "__main__":
    main()
