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


def test_one_bar_for_several_counts_restarts_once(monkeypatch):
    """The batch bar opens once the known sizes reach min_bytes (or a size is unknown); an
    item's restart from another offset moves the bar, never counts its bytes twice."""
    import io

    from hostkit.progress import BatchBar

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    bar = BatchBar(3, 1000)
    a, b, c = (bar.item(i, f"id{i}") for i in range(3))
    a.start("id0", 400, 0)
    a.advance(300)
    assert bar._bar is None  # 400 bytes known: under min_bytes
    b.start("id1", 700, 0)
    assert (bar._bar.total, bar._bar.n) == (1100, 300)
    b.advance(500)
    b.start("id1", 700, 200)  # b retried from byte 200: 500 -> 200 of it
    assert (bar._bar.total, bar._bar.n) == (1100, 500)
    c.start("id2", None, 0)
    assert bar._bar.total is None
    bar.finished(0, None)
    assert "1/3 done" in bar._bar.desc
    bar.close()
    assert bar._bar is None


def test_one_bar_for_many_items_costs_little_per_item(monkeypatch):
    """Each start updates the sums: the bar's work does not grow with the items before it
    (summing every item at each start took 24 s for 20,000 items)."""
    import io

    from hostkit.progress import BatchBar

    monkeypatch.setattr(sys, "stderr", io.StringIO())
    n = 20_000
    bar = BatchBar(n, 1 << 60)  # never drawn: the bookkeeping alone
    began = time.perf_counter()
    for index in range(n):
        item = bar.item(index, "x")
        item.start("x", 1000, 0)
        item.advance(1000)
        bar.finished(index, None)
    assert time.perf_counter() - began < 3
