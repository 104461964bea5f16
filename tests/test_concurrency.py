"""Several threads and processes at once, and kill -9 in the middle of a download."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time

from tests.conftest import run_cli
from tests.test_resolve import data


def test_two_processes_and_eight_threads_download_once(origin, settings):
    sha = origin.add("shared.bin", data(600_000, 20))
    url = f"{origin.url}/slow/shared.bin"
    procs = [subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve", url, sha,
                               "--quiet"], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    import hostkit

    results, failures = [], []

    def worker():
        try:
            results.append(hostkit.resolve(url, sha))
        except Exception as exc:  # collected and asserted below
            failures.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    outs = [p.communicate(timeout=120) for p in procs]
    assert not failures, failures
    assert all(p.returncode == 0 for p in procs), outs
    paths = {str(r) for r in results} | {out.strip() for out, _ in outs}
    assert paths == {str(settings.cache_dir / "blobs" / "sha256" / sha)}
    assert len(origin.gets("/slow/shared.bin")) == 1


def _wait_for_partial(tmp_dir, minimum: int, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = list(tmp_dir.glob("*.part")) if tmp_dir.exists() else []
        if parts and parts[0].stat().st_size >= minimum:
            return
        time.sleep(0.02)
    raise AssertionError("no partial download appeared")


def test_kill_9_mid_download_then_resume(origin, settings):
    payload = data(2_000_000, 21)
    sha = origin.add("k9.bin", payload)
    proc = subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve",
                             f"{origin.url}/slow/k9.bin", sha, "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_partial(settings.cache_dir / "tmp", 300_000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    assert os.listdir(settings.cache_dir / "blobs" / "sha256") == []  # nothing half-stored
    # the next run resumes the partial (via the fast origin path of the same object)
    done = run_cli("resolve", f"{origin.url}/slow/k9.bin", sha, "--json", check=True)
    assert sha in done.stdout
    gets = origin.gets("/slow/k9.bin")
    assert len(gets) == 2 and gets[1].range and int(gets[1].range[6:-1]) >= 300_000
    assert list((settings.cache_dir / "tmp").iterdir()) == []
    blob = settings.cache_dir / "blobs" / "sha256" / sha
    assert blob.read_bytes() == payload


def test_partial_of_a_changed_object_is_not_reused(origin, settings):
    sha_old = origin.add("chg.bin", data(2_000_000, 22))
    proc = subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve",
                             f"{origin.url}/slow/chg.bin", "--quiet"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    _wait_for_partial(settings.cache_dir / "tmp", 200_000)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    new = data(2_000_000, 23)
    sha_new = origin.add("chg.bin", new)  # the publisher replaced the file: new ETag
    done = run_cli("resolve", f"{origin.url}/f/chg.bin", "--json", check=True)
    assert sha_new in done.stdout and sha_old not in done.stdout
    assert (settings.cache_dir / "blobs" / "sha256" / sha_new).read_bytes() == new
