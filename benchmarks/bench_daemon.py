"""The daemon against baselines measured side by side in the same run.

    uv run python benchmarks/bench_daemon.py [--rounds 3] [--seconds 5] [--big-mib 1024]

1. Warm resolve throughput: ``POST /v1/resolve`` (identifier + sha256, blob cached)
   with ``wrk -t1 -c32`` (a Lua script makes the POST) vs a bare aiohttp handler
   returning a small JSON body, also under ``wrk -t1 -c32``. Both servers are one
   process with one event loop and no access log (the daemon writes its JSON
   request log to a file). With taskset, servers run on the last CPU and wrk on
   the first. Target: >= 0.8x the bare handler's requests/s, and p99 < 5 ms.
   Server CPU time per request is reported too: the same comparison, less
   sensitive to whatever else the machine is doing. A third handler does the
   daemon's per-request duties inline and nothing else (Host check, token, body
   lookup, the blob's stat, a JSON log line): what those duties cost in aiohttp.
2. Blob serving: ``GET /v1/blobs/{sha256}`` of a 1 GiB blob vs nginx serving the
   same file (sendfile on), each fetched with ``curl -o /dev/null`` (``--blob-rounds``
   alternating rounds). Target >= 0.9x in every round. Printed with each server's CPU
   per GiB and curl's (``_common.measure``).
3. Single flight: 64 concurrent cold ``POST /v1/resolve`` of a 256 MiB file from
   nginx vs one cold resolve of it; nginx's access log must show one GET per round.
   Target: total wall <= 1.3x one cold download.

Rounds alternate the two sides of each comparison; medians (and runs) are reported,
with a ``ROW |`` line per target of issue 14; only the ratios mean anything across
machines. Needs ``wrk`` (Debian: apt-get
install wrk), ``curl`` and nginx (scripts/install-test-servers.sh).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

from _common import BIN, ROOT, measure, row, spread
from _common import make_file as random_file

from tests.servers import NginxServer, free_port

WORK = ROOT / ".bench" / "daemon"

BARE_SERVER = """
import sys
from aiohttp import web

async def handler(request):
    return web.json_response({"path": "/cache/blobs/sha256/x", "sha256": "0" * 64,
                              "size": 1024, "cached": True})

app = web.Application()
app.router.add_route("*", "/", handler)
web.run_app(app, host="127.0.0.1", port=int(sys.argv[1]), access_log=None, print=None)
"""

#: The daemon's own per-request duties on the warm path, written inline in one handler: the
#: Host check, the token compared in constant time, the body read and looked up, the
#: blob's stat, a JSON log line. The least the same answer costs in aiohttp (a floor).
CHECKED_SERVER = """
import hmac, json, os, sys, time
from aiohttp import web

port, token, blob = int(sys.argv[1]), sys.argv[2].encode(), sys.argv[3]
size = os.stat(blob).st_size
log = open(sys.argv[4], "a")
answers = {}

async def handler(request):
    started = time.monotonic()
    if request.headers.get("Host") != f"127.0.0.1:{port}":
        raise web.HTTPForbidden()
    scheme, _, value = request.headers.get("Authorization", "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip().encode(), token):
        raise web.HTTPUnauthorized()
    raw = await request.read()
    body = answers.get(raw)
    if body is None:
        asked = json.loads(raw)
        body = answers[raw] = json.dumps({"path": blob, "sha256": asked["hash"][7:],
                                          "size": size, "cached": True}).encode()
    if os.stat(blob).st_size != size:
        raise web.HTTPNotFound()
    log.write(f'{{"ts":{time.time():.3f},"event":"request","method":"POST","route":'
              f'"/v1/resolve","status":200,"duration_ms":'
              f'{(time.monotonic() - started) * 1000:.2f},"outcome":"hit"}}\\n')
    return web.Response(body=body, content_type="application/json")

app = web.Application()
app.router.add_route("*", "/", handler)
web.run_app(app, host="127.0.0.1", port=port, access_log=None, print=None)
"""

WRK_POST = """
wrk.method = "POST"
wrk.body = {body}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
"""


# -- set-up ------------------------------------------------------------------------------


def make_file(path: Path, size: int) -> str:
    """A random file of ``size`` bytes (kept between runs); its sha256."""
    sidecar = path.with_suffix(path.suffix + ".sha256")
    if path.exists() and path.stat().st_size == size and sidecar.exists():
        return sidecar.read_text().strip()
    digest = random_file(path, size)
    sidecar.write_text(digest)
    return digest


def wait_http(url: str, timeout: float = 20.0) -> None:
    """Wait until ``url`` answers (any HTTP status: the server is up)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=1):
                return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"{url} did not answer within {timeout:.0f} s")


def pinned(argv: list[str], cpu: int | None) -> list[str]:
    """``argv`` pinned to one CPU with taskset (servers on the last, wrk on the first)."""
    if cpu is None or shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return argv
    return ["taskset", "-c", str(cpu), *argv]


SERVER_CPU = (os.cpu_count() or 1) - 1
LOAD_CPU = 0


class Proc:
    """A server subprocess stopped by its own pid."""

    def __init__(self, argv, *, env=None, log: Path | None = None):
        self.log = open(log, "wb") if log else subprocess.DEVNULL  # noqa: SIM115
        # taskset execs the server, so the pid is the server's own
        self.proc = subprocess.Popen(pinned(argv, SERVER_CPU), env={**os.environ, **(env or {})},
                                     stdout=self.log, stderr=self.log)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(10)
        if self.log is not subprocess.DEVNULL:
            self.log.close()


#: Every TCP listener of the daemon wants a token; the bench gives its daemon this one.
TOKEN = secrets.token_urlsafe(24)
AUTH = {"Authorization": f"Bearer {TOKEN}"}


def post(url: str, body: dict, method: str = "POST") -> tuple[int, dict]:
    req = urllib.request.Request(url, data=json.dumps(body).encode() if body else None,
                                 method=method,
                                 headers={"Content-Type": "application/json", **AUTH})
    try:
        with urllib.request.urlopen(req, timeout=600) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


# -- 1. warm resolve throughput -------------------------------------------------------------


_UNITS = {"us": 1e-3, "ms": 1.0, "s": 1000.0}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def wrk(url: str, seconds: float, script: Path, pid: int) -> tuple[float, float, float]:
    """(requests/s, p99 ms, server CPU µs per request) from ``wrk -t1 -c32 --latency``."""
    argv = pinned(["wrk", "-t1", "-c32", f"-d{seconds:g}s", "--latency", "-s", str(script), url],
                  LOAD_CPU)
    cpu0 = cpu_seconds(pid)
    out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout
    cpu = cpu_seconds(pid) - cpu0
    if "Non-2xx" in out or "Socket errors" in out:
        raise SystemExit(f"wrk saw errors against {url}:\n{out}")
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))
    total = int(re.search(r"(\d+) requests in", out).group(1))
    value, unit = re.search(r"\s99%\s+([\d.]+)(us|ms|s)", out).groups()
    return rps, float(value) * _UNITS[unit], cpu / total * 1e6


def bench_warm(daemon: tuple[str, int], bare: tuple[str, int], checked: tuple[str, int],
               body: dict, rounds: int, seconds: float, tmp: Path) -> dict:
    """Alternate wrk runs against the bare handler, the daemon and the checked handler;
    keep every figure."""
    script = tmp / "post.lua"
    script.write_text(WRK_POST.format(body=json.dumps(json.dumps(body)), token=TOKEN))
    targets = {"bare": (f"{bare[0]}/", bare[1]), "daemon": (f"{daemon[0]}/v1/resolve", daemon[1]),
               "checked": (f"{checked[0]}/", checked[1])}
    for url, pid in targets.values():
        wrk(url, 1, script, pid)  # warm-up
    out: dict = {f"{side}_{k}": [] for side in targets for k in ("rps", "p99_ms", "cpu_us")}
    for _ in range(rounds):
        for side, (url, pid) in targets.items():
            rps, p99, cpu = wrk(url, seconds, script, pid)
            out[f"{side}_rps"].append(rps)
            out[f"{side}_p99_ms"].append(p99)
            out[f"{side}_cpu_us"].append(cpu)
    return out


# -- 2. blob serving ---------------------------------------------------------------------------


def curl_seconds(url: str, size: int, headers: dict | None = None) -> float:
    extra = [arg for k, v in (headers or {}).items() for arg in ("-H", f"{k}: {v}")]
    out = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{time_total} %{size_download}",
                          *extra, url], capture_output=True, text=True, check=True).stdout.split()
    if int(out[1]) != size:
        raise SystemExit(f"curl got {out[1]} bytes of {size} from {url}")
    return float(out[0])


def bench_blob(daemon: tuple[str, int], nginx: tuple[str, int], sha: str, size: int,
               rounds: int) -> dict:
    """Alternate ``curl -o /dev/null`` of nginx's file and the daemon's blob: Samples with
    curl's CPU and the server's (nginx and its workers, or the daemon) meanwhile."""
    daemon_url, daemon_pid = daemon
    nginx_url, nginx_pid = nginx
    blob = f"{daemon_url}/v1/blobs/{sha}"
    curl_seconds(blob, size, AUTH)  # warm the page cache (and hash the blob once)
    curl_seconds(nginx_url, size)
    out: dict[str, list] = {"nginx": [], "daemon": []}
    for _ in range(rounds):
        out["nginx"].append(measure(["curl", "-sS", "--fail", "-o", "/dev/null", nginx_url],
                                    server_pid=nginx_pid))
        out["daemon"].append(measure(["curl", "-sS", "--fail", "-o", "/dev/null",
                                      "-H", f"Authorization: Bearer {TOKEN}", blob],
                                     server_pid=daemon_pid))
    return out


# -- 3. single flight ----------------------------------------------------------------------------


async def _resolve_many(daemon_url: str, body: dict, n: int) -> tuple[float, list]:
    import aiohttp

    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=n), headers=AUTH,
                                     timeout=aiohttp.ClientTimeout(total=600)) as s:
        async def one():
            async with s.post(f"{daemon_url}/v1/resolve", json=body) as r:
                return r.status, await r.json()

        t0 = time.perf_counter()
        answers = await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0, answers


def bench_single_flight(daemon_url: str, nginx: NginxServer, name: str, sha: str,
                        rounds: int, n: int = 64) -> dict:
    body = {"identifier": f"{nginx.url}/{name}", "hash": f"sha256:{sha}"}
    one_s, many_s = [], []
    for _ in range(rounds):
        for count, out in ((1, one_s), (n, many_s)):
            post(f"{daemon_url}/v1/cache/{sha}", {}, method="DELETE")
            gets = nginx.count_requests(path=f"/{name}", method="GET")
            wall, answers = asyncio.run(_resolve_many(daemon_url, body, count))
            if {s for s, _ in answers} != {200} or any(a != answers[0][1] for _, a in answers):
                raise SystemExit(f"unexpected answers: {answers[:2]}")
            if answers[0][1]["cached"] or answers[0][1]["sha256"] != sha:
                raise SystemExit(f"not a cold, correct download: {answers[0][1]}")
            time.sleep(0.2)  # let nginx write its access log line
            origin_gets = nginx.count_requests(path=f"/{name}", method="GET") - gets
            if origin_gets != 1:
                raise SystemExit(f"{count} requests caused {origin_gets} origin GETs")
            out.append(wall)
    return {"one_s": one_s, "many_s": many_s, "n": n}


# -- report --------------------------------------------------------------------------------------


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--seconds", type=float, default=5.0, help="wrk duration per run")
    ap.add_argument("--big-mib", type=int, default=1024, help="blob for GET /v1/blobs")
    ap.add_argument("--mid-mib", type=int, default=256, help="file for the 64-way cold test")
    ap.add_argument("--blob-rounds", type=int, default=5, help="GETs of the big blob, each side")
    args = ap.parse_args()
    for tool in ("wrk", "curl"):
        if shutil.which(tool) is None:
            raise SystemExit(f"{tool} is needed (Debian: apt-get install {tool})")
    www = WORK / "www"
    www.mkdir(parents=True, exist_ok=True)
    print(f"preparing files in {www} ...", flush=True)
    sha_small = make_file(www / "small.bin", 1024)
    sha_big = make_file(www / "big.bin", args.big_mib << 20)
    sha_mid = make_file(www / "mid.bin", args.mid_mib << 20)
    tmp = Path(tempfile.mkdtemp(prefix="bench-daemon-", dir=WORK))
    cache = tmp / "cache"
    env = {"HOSTKIT_CACHE_DIR": str(cache), "HOSTKIT_CONFIG": str(tmp / "none.toml")}
    daemon_port, bare_port = free_port(), free_port()
    daemon_url, bare_url = f"http://127.0.0.1:{daemon_port}", f"http://127.0.0.1:{bare_port}"
    procs: list[Proc] = []
    results: dict = {}
    try:
        with NginxServer(www) as nginx:
            procs.append(Proc([str(BIN / "hostkit"), "daemon", "--port", str(daemon_port),
                               "--token", TOKEN], env=env, log=tmp / "daemon.log"))
            procs.append(Proc([sys.executable, "-c", BARE_SERVER, str(bare_port)]))
            wait_http(f"{daemon_url}/healthz")
            wait_http(f"{bare_url}/")

            print("3/3 first, on a quiet daemon: 64 concurrent cold resolves ...", flush=True)
            results["single_flight"] = bench_single_flight(daemon_url, nginx, "mid.bin",
                                                           sha_mid, args.rounds)
            print("1/3 warm resolve throughput (wrk) ...", flush=True)
            body = {"identifier": f"{nginx.url}/small.bin", "hash": f"sha256:{sha_small}"}
            status, answer = post(f"{daemon_url}/v1/resolve", body)
            assert status == 200 and answer["sha256"] == sha_small, answer
            checked_port = free_port()
            checked_url = f"http://127.0.0.1:{checked_port}"
            procs.append(Proc([sys.executable, "-c", CHECKED_SERVER, str(checked_port), TOKEN,
                               answer["path"], str(tmp / "checked.log")]))
            wait_http(f"{checked_url}/")
            results["warm"] = bench_warm((daemon_url, procs[0].proc.pid),
                                         (bare_url, procs[1].proc.pid),
                                         (checked_url, procs[2].proc.pid), body, args.rounds,
                                         args.seconds, tmp)
            print("2/3 GET /v1/blobs vs nginx ...", flush=True)
            t0 = time.perf_counter()
            status, answer = post(f"{daemon_url}/v1/resolve",
                                  {"identifier": f"{nginx.url}/big.bin", "hash": sha_big})
            results["cold_big_s"] = time.perf_counter() - t0
            assert status == 200 and not answer["cached"], answer
            results["blob"] = bench_blob((daemon_url, procs[0].proc.pid),
                                         (f"{nginx.url}/big.bin", nginx.pid), sha_big,
                                         args.big_mib << 20, args.blob_rounds)
    finally:
        for p in procs:
            p.stop()
        shutil.rmtree(tmp, ignore_errors=True)
    report(results, args)
    return 0


def report(r: dict, args) -> None:
    med = statistics.median
    w, b, s = r["warm"], r["blob"], r["single_flight"]
    rps_ratio = med(w["daemon_rps"]) / med(w["bare_rps"])
    p99 = med(w["daemon_p99_ms"])
    size = args.big_mib << 20
    gib = (1 << 30) / size
    blob_runs = [n.wall / d.wall for n, d in zip(b["nginx"], b["daemon"], strict=True)]
    blob_ratio = med(n.wall for n in b["nginx"]) / med(d.wall for d in b["daemon"])
    sf_ratio = med(s["many_s"]) / med(s["one_s"])

    def ok(good: bool) -> str:
        return "ok" if good else "MISSED"

    pin = (f"; servers pinned to CPU {SERVER_CPU}, wrk to CPU {LOAD_CPU}"
           if pinned(["x"], 0) != ["x"] else "")
    print(f"\nload generator: wrk -t1 -c32 ({args.seconds:g} s per run), "
          f"{args.rounds} alternating rounds, medians{pin}; "
          f"machine load {os.getloadavg()[0]:.2f}")
    print("\n1. warm POST /v1/resolve (32 connections)")
    print(f"   bare aiohttp handler : {med(w['bare_rps']):8.0f} req/s   p99 "
          f"{med(w['bare_p99_ms']):6.2f} ms   runs {[round(x) for x in w['bare_rps']]}")
    print(f"   hostkit daemon       : {med(w['daemon_rps']):8.0f} req/s   p99 {p99:6.2f} ms"
          f"   runs {[round(x) for x in w['daemon_rps']]}")
    print(f"   checked handler      : {med(w['checked_rps']):8.0f} req/s   p99 "
          f"{med(w['checked_p99_ms']):6.2f} ms   runs {[round(x) for x in w['checked_rps']]}"
          "\n   (the daemon's per-request duties inline: Host, token, body, stat, log line)")
    cpu_ratio = med(w["bare_cpu_us"]) / med(w["daemon_cpu_us"])
    checked_ratio = med(w["checked_rps"]) / med(w["bare_rps"])
    print(f"   server CPU per request: bare {med(w['bare_cpu_us']):.0f} us, daemon "
          f"{med(w['daemon_cpu_us']):.0f} us -> {cpu_ratio:.2f}x (the same comparison, "
          "less sensitive to other load on the machine); the ratio of CPU per request is "
          "the floor of the throughput ratio when the server's core is the bottleneck")
    print(f"   checked handler {med(w['checked_cpu_us']):.0f} us per request, "
          f"{checked_ratio:.2f}x the bare handler's req/s: the duties alone cost that much; "
          f"the daemon {rps_ratio / checked_ratio:.2f}x the checked handler")
    print(f"\n2. GET of a {args.big_mib} MiB blob (curl -o /dev/null), "
          f"{args.blob_rounds} alternating rounds")
    for name, samples in (("nginx", b["nginx"]), ("GET /v1/blobs", b["daemon"])):
        walls = [x.wall for x in samples]
        server, user, sys_ = (med(getattr(x, k) for x in samples) * gib
                              for k in ("server", "user", "sys"))
        print(f"   {name:<20} : {size / med(walls) / 2**20:8.0f} MiB/s   wall {spread(walls)} s;"
              f" per GiB: server CPU {server:.2f} s, curl user {user:.2f} + sys {sys_:.2f} s")
    print(f"   (its cold resolve from nginx took {r['cold_big_s']:.2f} s)")
    print(f"\n3. cold {args.mid_mib} MiB resolve, one origin GET each round")
    print(f"   1 request            : {med(s['one_s']):6.2f} s   "
          f"runs {[round(x, 2) for x in s['one_s']]}")
    print(f"   {s['n']} concurrent        : {med(s['many_s']):6.2f} s   "
          f"runs {[round(x, 2) for x in s['many_s']]}")
    print(f"   ratio {sf_ratio:.2f}x (target <= 1.3x: {ok(sf_ratio <= 1.3)})")
    print()
    print(row(f"daemon GET /v1/blobs of {args.big_mib} MiB / nginx",
              f"{blob_ratio:.2f}x median, every run {min(blob_runs):.2f}x or more "
              f"(runs {[round(x, 2) for x in blob_runs]})", ">= 0.9x in every run",
              min(blob_runs) >= 0.9))
    print(row("warm resolve through the daemon / a bare aiohttp handler",
              f"{rps_ratio:.2f}x, p99 {p99:.2f} ms (CPU per request {cpu_ratio:.2f}x; a handler "
              f"doing only the same checks {checked_ratio:.2f}x)",
              ">= 0.8x, p99 < 5 ms", rps_ratio >= 0.8 and p99 < 5))


if __name__ == "__main__":
    sys.exit(main())
