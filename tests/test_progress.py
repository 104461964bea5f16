"""Every waiter sees progress: the caller that starts a download, one that joins it,
a process waiting for another process's download, and ``hostkit.resolve(progress=True)``."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import time

from hostkit.results import Progress
from tests.test_faults import partial_bytes, spawn


class Recording(Progress):
    """Remembers every call."""

    def __init__(self):
        self.calls: list[tuple] = []

    def start(self, identifier, total, done):
        self.calls.append(("start", total, done))

    def advance(self, nbytes):
        self.calls.append(("advance", nbytes))

    def close(self):
        self.calls.append(("close",))

    @property
    def advanced(self) -> int:
        return sum(c[1] for c in self.calls if c[0] == "advance")


def test_the_starter_and_a_joiner_both_see_the_download(origin, resolver):
    data = os.urandom(3 << 20)
    sha = origin.add("join.bin", data)
    url = f"{origin.url}/slow/join.bin"
    first, second = Recording(), Recording()

    async def both():
        one = asyncio.ensure_future(resolver.resolve(url, sha, progress=first))
        await asyncio.sleep(0.2)  # the download runs: the second call joins it
        two = asyncio.ensure_future(resolver.resolve(url, sha, progress=second))
        results = await asyncio.gather(one, two)
        await resolver.aclose()
        return results

    a, b = asyncio.run(both())
    assert a.sha256 == b.sha256 == sha
    assert len(origin.gets("join.bin")) == 1
    for seen in (first, second):
        assert seen.calls[0][0] == "start" and seen.calls[0][1] == len(data)
        assert seen.calls[-1] == ("close",)
    assert first.advanced == len(data)
    # the joiner sees everything from where it joined
    assert 0 < second.advanced <= len(data)
    assert second.calls[0][2] + second.advanced == len(data)


def test_a_process_waiting_for_another_process_sees_its_progress(origin, resolver, isolated_env):
    data = os.urandom(6 << 20)
    sha = origin.add("other.bin", data)
    url = f"{origin.url}/slow/other.bin"
    holder = spawn("resolve", url, sha)
    cache = isolated_env / "cache"
    deadline = time.monotonic() + 20
    while partial_bytes(cache) < (512 << 10) and time.monotonic() < deadline:
        time.sleep(0.02)
    waiting = Recording()

    async def wait_for_it():
        got = await resolver.resolve(url, sha, progress=waiting)
        await resolver.aclose()
        return got

    got = asyncio.run(wait_for_it())
    holder.communicate(timeout=60)
    assert got.sha256 == sha and got.cached  # the other process downloaded it
    assert waiting.calls and waiting.calls[0][0] == "start"
    assert waiting.calls[0][1] == len(data)  # the total, read from its sidecar
    assert waiting.advanced > 0  # it watched the other process's partial grow
    assert len(origin.gets("other.bin")) == 1


def test_resolve_with_progress_true_draws_a_bar(origin):
    sha = origin.add("bar.bin", os.urandom(2 << 20))
    script = ("import sys, hostkit; p = hostkit.resolve(sys.argv[1], sys.argv[2], "
              "progress=True); print(p)")
    proc = subprocess.run([sys.executable, "-c", script, f"{origin.url}/slow/bar.bin", sha],
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "HOSTKIT_PROGRESS_MIN_BYTES": "0"})
    assert proc.returncode == 0, proc.stderr
    assert "bar.bin" in proc.stderr and "MB" in proc.stderr  # tqdm's line: name, sizes
    assert proc.stdout.strip().endswith(sha)
