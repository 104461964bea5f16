"""A site's nodes pulling one object at once, with the shared tier and without it.

    uv run python benchmarks/bench_tier.py [--nodes 1,2,4,8] [--mib 64] [--mbit 100]

One SeaweedFS on 127.0.0.1 is the tier (the site's network: unshaped). The
origin sits behind a rate-limited link: as root, in a network namespace of its
own whose veth has ``tc qdisc ... tbf rate <mbit>``; otherwise on 127.0.0.1,
throttled in the origin itself. It counts the body bytes it sends. For each N,
N ``hostkit daemon`` processes (fresh caches, a fresh tier prefix) resolve the
object (with its sha256, as MedPerf pins it) at the same moment. Printed per N,
tier on and off:

- origin bytes / object size (target with the tier: 1.00 for every N);
- time until all N have the file / time for one download (target <= 1.5 at
  N = 8), where one download is N = 1 without the tier.

Every daemon and SeaweedFS share this machine's cores: on a real site each node
hashes and writes with its own, so the tier's share of the time here is an upper
bound. Needs ``uv sync`` (weed); ``ip`` and ``tc`` for the shaped link.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from _common import ROOT

from tests.daemon_fixtures import DaemonProcess, call_json
from tests.objectstore_fixtures import start_seaweed
from tests.servers import free_port
from tests.tier_fixtures import BUCKET, ThrottledOrigin, node_env

MiB = 1 << 20


# -- the origin: this script with --serve-origin, inside the namespace when shaped ---------


def serve_origin(host: str, port: int, path: str, rate: int) -> None:
    """Serve ``path`` as /f/<name> (ETag, Range, HEAD) counting bytes; /_stats, /_reset."""
    from aiohttp import web

    origin = ThrottledOrigin(rate)
    origin.add(Path(path).name, Path(path).read_bytes())

    async def stats(request):
        return web.json_response({"gets": dict(origin.gets), "sent": dict(origin.sent)})

    async def reset(request):
        origin.reset()
        return web.json_response({})

    app = web.Application()
    app.router.add_get("/_stats", stats)
    app.router.add_get("/_reset", reset)
    app.router.add_route("GET", "/f/{name}", origin._serve)
    app.router.add_route("HEAD", "/f/{name}", origin._serve)
    web.run_app(app, host=host, port=port, access_log=None, print=None)


class Link:
    """The origin's link: a namespace with a shaped veth (root), else 127.0.0.1."""

    def __init__(self, mbit: float):
        self.mbit = mbit
        self.ns = None
        self.host = "127.0.0.1"
        tag = os.getpid() % 10000
        if os.geteuid() == 0 and shutil.which("ip") and shutil.which("tc"):
            ns, here, there = f"hkt{tag}", f"hkt{tag}a", f"hkt{tag}b"
            net = f"10.{200 + tag % 50}.{tag % 250}"
            steps = [["ip", "netns", "add", ns],
                     ["ip", "link", "add", here, "type", "veth", "peer", "name", there],
                     ["ip", "link", "set", there, "netns", ns],
                     ["ip", "addr", "add", f"{net}.1/30", "dev", here],
                     ["ip", "link", "set", here, "up"],
                     ["ip", "-n", ns, "addr", "add", f"{net}.2/30", "dev", there],
                     ["ip", "-n", ns, "link", "set", there, "up"],
                     ["ip", "-n", ns, "link", "set", "lo", "up"],
                     # the origin's egress: what it sends to the site goes through the bucket
                     ["ip", "netns", "exec", ns, "tc", "qdisc", "add", "dev", there, "root",
                      "tbf", "rate", f"{mbit}mbit", "burst", "256kb", "latency", "100ms"]]
            self.ns, self.here = ns, here
            try:
                for step in steps:
                    subprocess.run(step, check=True, capture_output=True)
            except subprocess.CalledProcessError as exc:
                self.close()
                print(f"network namespace not available ({exc.stderr.decode().strip()}); "
                      "throttling in the origin instead", file=sys.stderr)
                return
            self.host = f"{net}.2"

    @property
    def shaped(self) -> bool:
        return self.ns is not None

    def start_origin(self, path: Path) -> tuple[subprocess.Popen, str]:
        port = free_port()
        rate = 0 if self.shaped else int(self.mbit * 1e6 / 8)
        cmd = [sys.executable, __file__, "--serve-origin", self.host, str(port), str(path),
               str(rate)]
        if self.shaped:
            cmd = ["ip", "netns", "exec", self.ns, *cmd]
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL)
        url = f"http://{self.host}:{port}"
        for _ in range(200):
            try:
                urllib.request.urlopen(f"{url}/_stats", timeout=1).read()
                return proc, url
            except OSError:
                time.sleep(0.05)
        proc.kill()
        raise SystemExit("the origin did not start")

    def close(self) -> None:
        if self.ns:
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
            subprocess.run(["ip", "link", "del", self.here], capture_output=True)
            self.ns = None


# -- one round: N daemons, one object, all at once -----------------------------------------


def run_round(tmp: Path, seaweed_port: int, origin: str, name: str, sha: str, n: int,
              tier: bool, run: int) -> tuple[float, int]:
    """(seconds until all N have it, origin bytes) for N fresh daemons."""
    urllib.request.urlopen(f"{origin}/_reset").read()
    nodes = []
    try:
        for i in range(n):
            env = node_env(tmp, seaweed_port)
            env["HOSTKIT_CACHE_DIR"] = str(tmp / f"run{run}" / f"node{i}")
            if tier:
                env["HOSTKIT_TIER"] = f"minio://127.0.0.1:{seaweed_port}/{BUCKET}/run{run}"
            else:
                del env["HOSTKIT_TIER"]
            nodes.append(DaemonProcess(tmp, "--scrub-rate", "0", env=env, wait=False))
        for node in nodes:
            node.wait_ready(120)

        def one(node):
            status, answer = call_json(node.url, "POST", "/v1/resolve",
                                       {"identifier": f"{origin}/f/{name}",
                                        "hash": f"sha256:{sha}"}, timeout=1800)
            if status != 200:
                raise SystemExit(f"resolve failed: {answer}")
            return time.monotonic()

        with ThreadPoolExecutor(n) as pool:
            started = time.monotonic()
            done = list(pool.map(one, nodes))
        seconds = max(done) - started
    finally:
        for node in nodes:
            node.stop()
        shutil.rmtree(tmp / f"run{run}", ignore_errors=True)
    stats = json.loads(urllib.request.urlopen(f"{origin}/_stats").read())
    return seconds, int(stats["sent"].get(name, 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--nodes", default="1,2,4,8", help="values of N (default 1,2,4,8)")
    parser.add_argument("--mib", type=int, default=64, help="object size in MiB (default 64)")
    parser.add_argument("--mbit", type=float, default=100.0,
                        help="the origin link's rate in Mbit/s (default 100)")
    args = parser.parse_args()
    counts = [int(x) for x in args.nodes.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="hostkit-bench-tier-"))
    link = Link(args.mbit)
    seaweed = origin_proc = None
    try:
        data = os.urandom(args.mib * MiB)
        sha = hashlib.sha256(data).hexdigest()
        name = "image.bin"
        (tmp / name).write_bytes(data)
        del data
        seaweed = start_seaweed(buckets=(BUCKET,))
        origin_proc, origin = link.start_origin(tmp / name)
        how = (f"tc tbf {args.mbit:g} Mbit/s on a veth into a network namespace" if link.shaped
               else f"{args.mbit:g} Mbit/s paced by the origin (not root: no namespace)")
        print(f"object {args.mib} MiB; origin link {how}; tier: SeaweedFS on 127.0.0.1; "
              f"{os.cpu_count()} CPUs; load {os.getloadavg()[0]:.2f}")
        results = {}
        run = 0
        for tier in (False, True):
            for n in counts:
                run += 1
                seconds, sent = run_round(tmp, seaweed.port, origin, name, sha, n, tier, run)
                results[(tier, n)] = (seconds, sent)
                print(f"  tier {'on ' if tier else 'off'} N={n}: {seconds:6.2f} s, origin "
                      f"{sent / MiB:7.1f} MiB", flush=True)
        one = results.get((False, 1), results[(False, counts[0])])[0]
        size = args.mib * MiB
        print(f"\none download (N=1, no tier): {one:.2f} s")
        print(f"{'N':>3}  {'origin bytes / size':>20}  {'all have it / one download':>27}")
        for n in counts:
            cells = []
            for tier in (True, False):
                seconds, sent = results[(tier, n)]
                cells.append(f"{sent / size:5.2f} {'tier' if tier else 'base'}")
                cells.append(f"{seconds / one:5.2f} {'tier' if tier else 'base'}")
            print(f"{n:>3}  {cells[0]:>10} {cells[2]:>10}  {cells[1]:>13} {cells[3]:>13}")
    finally:
        if origin_proc is not None:
            origin_proc.kill()
            origin_proc.wait()
        if seaweed is not None:
            seaweed.stop()
        link.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    if len(sys.argv) == 6 and sys.argv[1] == "--serve-origin":
        serve_origin(sys.argv[2], int(sys.argv[3]), sys.argv[4], int(sys.argv[5]))
    else:
        sys.path.insert(0, str(ROOT))
        main()
