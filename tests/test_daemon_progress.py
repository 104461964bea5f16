"""Progress through the daemon: NDJSON on /v1/resolve, the core client, the CLI's bar.

The origin holds the file mid-body, so "the download is in flight" is a state the
test controls: progress must reach the caller while it lasts, not only at the end.
"""

from __future__ import annotations

import fcntl
import http.client
import json
import os
import pty
import select
import struct
import subprocess
import sys
import termios
import threading
import time

import pytest

from tests.daemon_fixtures import (
    DaemonProcess,
    auth,
    payload,
    wait_until,
)

pytestmark = pytest.mark.timeout(60)


class Lines:
    """A streamed resolve read line by line in a thread (lines visible as they arrive)."""

    def __init__(self, url: str, body: dict, headers: dict):
        self.lines: list[dict] = []
        self.status = None
        self.content_type = None
        host, port = url.removeprefix("http://").split(":")
        self._conn = http.client.HTTPConnection(host, int(port), timeout=30)
        self._conn.request("POST", "/v1/resolve", body=json.dumps(body).encode(),
                           headers={"Content-Type": "application/json", **auth(url), **headers})
        self._thread = threading.Thread(target=self._read, daemon=True)
        self._thread.start()

    def _read(self) -> None:
        resp = self._conn.getresponse()
        self.status, self.content_type = resp.status, resp.getheader("Content-Type")
        for line in resp:
            self.lines.append(json.loads(line))

    def events(self, name: str) -> list[dict]:
        return [line for line in self.lines if line["event"] == name]

    def finish(self) -> list[dict]:
        self._thread.join(30)
        self._conn.close()
        return self.lines


def test_the_ndjson_route_streams_progress_while_the_download_runs(daemon, gated):
    data = payload(2_000_000, 401)
    sha = gated.add("nd.bin", data)
    url = gated.file_url("nd.bin")
    gated.hold("nd.bin", after=600_000)
    stream = Lines(daemon.url, {"identifier": url}, {"Accept": "application/x-ndjson"})
    gated.wait_started("nd.bin")
    wait_until(lambda: any(e["done"] >= 600_000 for e in stream.events("Progressed")),
               what="progress of the held download on the stream")
    assert stream.events("DownloadStarted")[0] == {
        "event": "DownloadStarted", "identifier": url, "total": len(data), "offset": 0}
    assert not stream.events("resolved")  # still held: the answer has not come
    gated.release("nd.bin")
    lines = stream.finish()
    assert stream.status == 200 and stream.content_type.startswith("application/x-ndjson")
    last = lines[-1]
    assert last["event"] == "resolved" and last["sha256"] == sha and last["cached"] is False
    assert last["blob"] == f"/v1/blobs/{sha}"
    assert [e["event"] for e in lines].count("Finished") == 1
    done = [e["done"] for e in stream.events("Progressed")]
    assert done == sorted(done) and done[-1] == len(data)
    assert all("key" not in e for e in lines)  # a cache key may embed a secret: never sent


def test_progress_true_in_the_body_streams_too_and_errors_come_last(daemon, gated):
    sha = gated.add("nd-small.bin", payload(3000, 402))
    stream = Lines(daemon.url, {"identifier": gated.file_url("nd-small.bin"), "progress": True},
                   {})
    lines = stream.finish()
    assert stream.content_type.startswith("application/x-ndjson")
    assert lines[-1]["event"] == "resolved" and lines[-1]["sha256"] == sha
    missing = Lines(daemon.url, {"identifier": gated.file_url("nd-none.bin"), "progress": True},
                    {}).finish()
    assert missing[-1]["event"] == "error" and missing[-1]["status"] == 404
    assert missing[-1]["error"] == "not_found" and missing[-1]["hint"]
    # refusals before anything runs stay plain JSON errors with their status
    bad = Lines(daemon.url, {"identifier": "gopher://h/x", "progress": True}, {})
    bad._thread.join(30)
    assert bad.status == 400 and bad.content_type.startswith("application/json")


class Recording:
    """A :class:`hostkit.results.Progress` that writes down every call."""

    def __init__(self):
        self.calls: list[tuple] = []

    def start(self, identifier, total, done):
        self.calls.append(("start", identifier, total, done))

    def advance(self, nbytes):
        self.calls.append(("advance", nbytes))

    def close(self):
        self.calls.append(("close",))

    def advanced(self) -> int:
        return sum(c[1] for c in self.calls if c[0] == "advance")


def test_the_client_feeds_the_callers_progress_from_the_daemons_events(daemon, gated,
                                                                       settings, monkeypatch):
    from hostkit import api
    from hostkit.client import DaemonClient

    data = payload(1_500_000, 403)
    sha = gated.add("cl.bin", data)
    url = gated.file_url("cl.bin")
    gated.hold("cl.bin", after=400_000)
    progress = Recording()
    out: list = []
    client = DaemonClient(daemon.url, daemon.token)
    thread = threading.Thread(target=lambda: out.append(client.resolve(url, progress=progress)))
    thread.start()
    gated.wait_started("cl.bin")
    wait_until(lambda: progress.advanced() >= 400_000, what="progress while the origin holds")
    assert progress.calls[0] == ("start", url, len(data), 0)
    assert not out
    gated.release("cl.bin")
    thread.join(30)
    assert out[0].sha256 == sha and out[0].cached is False
    assert progress.advanced() == len(data) and progress.calls[-1] == ("close",)
    # the Python API passes its progress through the daemon the same way (a second
    # caller joining a running download sees it too)
    gated.add("cl2.bin", payload(1_000_000, 404))
    gated.hold("cl2.bin", after=300_000)
    monkeypatch.setenv("HOSTKIT_DAEMON_TOKEN", daemon.token)
    first, joiner = Recording(), Recording()
    with_daemon = settings.with_overrides(daemon_url=daemon.url)
    threads = [threading.Thread(target=api.resolve_info, args=(gated.file_url("cl2.bin"),),
                                kwargs={"settings": with_daemon, "progress": p})
               for p in (first, joiner)]
    threads[0].start()
    gated.wait_started("cl2.bin")
    threads[1].start()
    wait_until(lambda: sum(daemon.state.downloads.waiters.values()) >= 2,
               what="both callers waiting in the daemon")
    gated.release("cl2.bin")
    for t in threads:
        t.join(30)
    assert first.advanced() == 1_000_000
    # the joiner's bar starts where the download was when it joined, and ends full
    start = [c for c in joiner.calls if c[0] == "start"]
    assert start and start[0][2] == 1_000_000
    assert start[0][3] + joiner.advanced() == 1_000_000 and joiner.calls[-1] == ("close",)
    assert len(gated.gets("cl2.bin")) == 1
    assert not (settings.cache_dir / "blobs").exists()  # all through the daemon


def test_a_cli_resolve_through_a_real_daemon_draws_progress(tmp_path, gated):
    data = payload(3_000_000, 405)
    gated.add("bar.bin", data)
    gated.hold("bar.bin", after=1_000_000)
    d = DaemonProcess(tmp_path, env={"HOSTKIT_CACHE_DIR": str(tmp_path / "pcache")})
    try:
        env = {**os.environ, "HOSTKIT_DAEMON_URL": d.url, "HOSTKIT_DAEMON_TOKEN": d.token,
               "HOSTKIT_PROGRESS_MIN_BYTES": "0"}
        parent, child = pty.openpty()  # stderr a terminal: the CLI draws its bar
        # a terminal of 0 columns (a new pty's size) would give the bar no room at all
        fcntl.ioctl(child, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
        cli = subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve",
                                gated.file_url("bar.bin")], stdout=subprocess.PIPE,
                               stderr=child, env=env)
        os.close(child)
        seen = b""
        deadline = time.monotonic() + 20
        while b"bar.bin" not in seen or b"%" not in seen:
            assert time.monotonic() < deadline, seen
            if select.select([parent], [], [], 0.5)[0]:
                seen += os.read(parent, 4096)
        assert cli.poll() is None  # the bar shows while the origin still holds the file
        gated.release("bar.bin")
        stdout, _ = cli.communicate(timeout=30)
        assert cli.returncode == 0
        assert stdout.decode().strip().startswith(str(tmp_path / "pcache"))
        assert any(e["route"] == "/v1/resolve" for e in d.events("request"))
        os.close(parent)
    finally:
        gated.release("bar.bin")
        d.stop()
