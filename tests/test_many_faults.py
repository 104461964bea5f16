"""Several things at once, attacked: lists, lock files, ``-o``, ``-j`` and Ctrl-C.

Each test here failed before the change it came with (a second, hostile review of
issue 11); real CLI processes against the real origin (tests/origin.py) or the
gated origin (tests/daemon_fixtures.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest

from tests.conftest import run_cli
from tests.daemon_fixtures import payload
from tests.test_resolve import data

pytestmark = pytest.mark.timeout(120)


def _json(proc) -> list | dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


TWO_BATCHES = r"""
import json, sys, threading
import hostkit
urls = json.loads(sys.argv[1])
out = {}
def batch(n, part):
    out[n] = [getattr(r, "size", None) or repr(r) for r in hostkit.resolve_many(part, jobs=33)]
threads = [threading.Thread(target=batch, args=(n, urls[n::2])) for n in (0, 1)]
for t in threads: t.start()
for t in threads: t.join()
print(json.dumps(out[0] + out[1]))
"""


def test_requests_waiting_for_a_pooled_connection_are_no_connect_failure(gated, tmp_path):
    """Two batches of 33 in one process share the session's 64 connections: the two
    requests left over wait for a free one, however long, instead of failing "cannot
    connect" after connect_timeout (aiohttp's connect timeout counts the pool's queue)."""
    names = [f"pool-{i}.bin" for i in range(66)]
    for i, name in enumerate(names):
        gated.add(name, payload(131_072, 900 + i))
        gated.hold(name)
    env = {**os.environ, "HOSTKIT_CACHE_DIR": str(tmp_path / "pool"),
           "HOSTKIT_CONNECT_TIMEOUT": "1", "HOSTKIT_MIN_RATE": "0"}
    proc = subprocess.Popen([sys.executable, "-c", TWO_BATCHES,
                             json.dumps([gated.file_url(n) for n in names])], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while sum(gated._started[n].is_set() for n in names) < 64:
            assert time.monotonic() < deadline, "64 downloads never started"
            time.sleep(0.05)
        time.sleep(4)  # well past 3 connect timeouts (and their retries) for the others
        for name in names:
            gated.release(name)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        for name in names:
            gated.release(name)
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert "cannot connect" not in stderr
    assert json.loads(stdout) == [131_072] * 66


def test_downloads_beyond_the_pool_are_not_timed_while_they_wait(origin, tmp_path):
    """-j 66 over 64 pooled connections: the two downloads left over start once a
    connection is free; the resolver's answer timer (connect + read timeout) does not run
    while they wait, so a long wait is no "stall" (here with no retries to hide one)."""
    origin.add("drip.bin", data(8192 + 6, 990))  # 6 s a download
    urls = [f"{origin.url}/trickle/drip.bin?i={i}" for i in range(66)]
    proc = run_cli("resolve", "-j", "66", "--json", *urls, timeout=90,
                   env={"HOSTKIT_CONNECT_TIMEOUT": "1", "HOSTKIT_READ_TIMEOUT": "2",
                        "HOSTKIT_MIN_RATE": "0", "HOSTKIT_RETRIES": "0"})
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert [o["size"] for o in _json(proc)] == [8198] * 66


def test_one_identifier_with_two_different_hashes_refuses_the_list(origin, tmp_path):
    """The same identifier (in any of its forms) with two different hashes in one list is
    refused before anything downloads, as ``ID=H1 --hash H2`` is: one of them is wrong, and
    which item "succeeds" must not depend on what happens to be cached."""
    a = origin.add("two-a.bin", data(700, 991))
    b = origin.add("two-b.bin", data(701, 992))
    ua, ub = f"{origin.url}/f/two-a.bin", f"{origin.url}/f/two-b.bin"
    run_cli("resolve", ua, a, ub, b, check=True)  # both blobs cached
    origin.hits.clear()
    proc = run_cli("resolve", f"{ua}={a}", f"direct:{ua}", f"sha256:{b}", "--json")
    assert proc.returncode == 2, proc.stderr
    out = _json(proc)
    assert [o["error"] for o in out] == ["usage", "usage"]
    assert "two different hashes" in proc.stderr and ua in proc.stderr
    listing = tmp_path / "list.txt"
    listing.write_text(f"{ua} {a}\n{ub} {b}\n{ua} sha256:{b}\n")
    again = run_cli("resolve", "-r", listing)
    assert again.returncode == 2 and f"{listing}:3" in again.stderr
    assert not origin.requests()
    # the same hash twice (or no hash for one of them) is no contradiction
    same = run_cli("resolve", f"{ua}={a}", ua, f"{ua}=sha256:{a.upper()}", "--json")
    assert same.returncode == 0, same.stderr
    assert {o["sha256"] for o in _json(same)} == {a}


def test_output_ending_in_a_slash_is_a_folder_for_one_item_too(origin, tmp_path):
    """``-o models/`` with one identifier places it in models/ under its name, as with
    several (it created a file named models); the API refuses ``output="models/"``."""
    sha = origin.add("one-slash.bin", data(900, 993))
    url = f"{origin.url}/f/one-slash.bin"
    proc = run_cli("resolve", url, sha, "-o", f"{tmp_path}/models/", "--json")
    assert proc.returncode == 0, proc.stderr
    placed = tmp_path / "models" / "one-slash.bin"
    assert _json(proc)["placed"] == str(placed)
    assert placed.read_bytes() == data(900, 993)
    plain = run_cli("resolve", url, sha, "-o", f"{tmp_path}/more/", check=True)
    assert plain.stdout.strip() == str(tmp_path / "more" / "one-slash.bin")
    import hostkit
    from hostkit.errors import UsageError

    with pytest.raises(UsageError, match="folder"):
        hostkit.resolve(url, sha, output=f"{tmp_path}/api/")
    assert not (tmp_path / "api").exists()


def test_output_names_that_collide_on_some_file_system_are_refused(origin, tmp_path):
    """Under ``-o DIR/``, names equal but for case (one file on macOS or Windows, where the
    second silently replaced the first) and a name that is another's folder ("a" and
    "a/b.bin": the second failed late, "File exists") refuse the list up front."""
    a = origin.add("case-a.bin", data(600, 994))
    b = origin.add("case-b.bin", data(601, 995))
    ua, ub = f"{origin.url}/f/case-a.bin", f"{origin.url}/f/case-b.bin"
    for first, second in (("Weights.bin", "weights.BIN"), ("a", "a/b.bin"),
                          ("x/Y/z", "x/y")):
        lock = tmp_path / "clash.lock"
        lock.write_text(f'version = 1\n[[file]]\nidentifier = "{ua}"\nhash = "sha256:{a}"\n'
                        f'output = "{first}"\n[[file]]\nidentifier = "{ub}"\n'
                        f'hash = "sha256:{b}"\noutput = "{second}"\n')
        origin.hits.clear()
        proc = run_cli("resolve", "-r", lock, "-o", f"{tmp_path}/out/", "--json")
        assert proc.returncode == 2, (first, second, proc.stderr)
        assert [o["error"] for o in _json(proc)] == ["usage", "usage"]
        assert "clash.lock: [[file]] #2" in proc.stderr
        assert not (tmp_path / "out").exists() and not origin.requests()


def test_a_list_line_may_write_id_equals_hash_as_the_command_line_does(origin, tmp_path):
    """``URL=sha256:HEX`` on a list line was taken for one URL and sent to the server with
    the hash in its path (a 404); it is the identifier and its hash, as on the command line."""
    sha = origin.add("line-eq.bin", data(650, 996))
    url = f"{origin.url}/f/line-eq.bin"
    listing = tmp_path / "eq.txt"
    listing.write_text(f"{url}=sha256:{sha}\n{url}?v=2={sha}  # bare hex after a query stays\n")
    proc = run_cli("resolve", "-r", listing, "--json")
    out = _json(proc)
    assert out[0]["identifier"] == url and out[0]["verified"] is True, out
    assert "=" not in out[0]["identifier"].rsplit("/", 1)[1]
    assert not [h for h in origin.requests() if "sha256" in h.path]
    listing.write_text(f"{url}=sha256:{sha} sha256:{'0' * 64}\n")
    clash = run_cli("resolve", "-r", listing)
    assert clash.returncode == 2 and "two different hashes" in clash.stderr


def test_a_query_value_that_looks_like_a_hash_stays_part_of_the_url(origin):
    """``?digest=sha256:HEX`` is the query's own key=value (an artifact server's URL): it
    was split off as the expected hash, leaving no way to write that URL."""
    sha = origin.add("q-digest.bin", data(660, 997))
    url = f"{origin.url}/f/q-digest.bin?digest=sha256:{sha}"
    proc = run_cli("resolve", url, "--json")
    assert proc.returncode == 0, proc.stderr
    assert _json(proc)["identifier"] == url
    both = run_cli("resolve", f"{url}=sha256:{sha}", "--json")  # then ID=HASH still splits
    assert both.returncode == 0, both.stderr
    assert _json(both)["identifier"] == url and _json(both)["verified"] is True


def test_ctrl_c_before_the_command_runs_is_exit_130_without_a_traceback(origin):
    """Ctrl-C while hostkit starts (plugins load, the command line is read: seconds on a
    busy machine) printed a traceback and died of the signal."""
    proc = run_cli("resolve", f"{origin.url}/f/x.bin", f"{origin.url}/f/y.bin",
                   env={"HOSTKIT_FAILPOINT": "parse:SIGINT"})
    assert proc.returncode == 130, proc.stderr
    assert "Traceback" not in proc.stderr and "interrupted" in proc.stderr
    assert not origin.requests()


def _stopped(proc, timeout: float = 60) -> None:
    """Wait until ``proc`` stopped itself (a failpoint's SIGSTOP)."""
    deadline = time.monotonic() + timeout
    while True:
        with open(f"/proc/{proc.pid}/stat") as f:
            if f.read().rsplit(")", 1)[1].split()[0] == "T":
                return
        assert proc.poll() is None and time.monotonic() < deadline, "never stopped"
        time.sleep(0.02)


@pytest.mark.parametrize("how", ["cli", "cli-many", "drop-in"])
def test_a_blob_removed_before_it_is_placed_is_resolved_again(origin, tmp_path, how):
    """`hostkit cache rm` (or a prune from cron) in another process, between a resolve and
    its placing at -o PATH / the drop-in's output_path: the same bytes are resolved again
    by their sha256 and placed (it failed "cannot place the file ...: No such file or
    directory", exit 6 / CommunicationRetrievalError, blaming the output folder)."""
    import signal

    payload_ = data(5000, 998)
    origin.add("gone-b", data(5001, 999))
    sha = origin.add(f"gone-{how}.bin", payload_)
    url = f"{origin.url}/f/gone-{how}.bin"
    run_cli("resolve", url, sha, check=True)
    out = tmp_path / "out" / "w.bin"
    argv = {"cli": ["-m", "hostkit.cli", "resolve", url, sha, "-o", out],
            "cli-many": ["-m", "hostkit.cli", "resolve", url, sha, f"{origin.url}/f/gone-b",
                         "-o", f"{out.parent}/"],
            "drop-in": ["-c", "import sys; from hostkit.integrations.medperf import "
                        "download_resource as d; print(d(*sys.argv[1:]))", url, out, sha]}[how]
    if how == "cli-many":
        out = out.parent / f"gone-{how}.bin"
    proc = subprocess.Popen([sys.executable, *map(str, argv)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOSTKIT_FAILPOINT": "place:SIGSTOP"})
    try:
        _stopped(proc)
        run_cli("cache", "rm", sha, "-y", check=True)
        origin.hits.clear()
        os.kill(proc.pid, signal.SIGCONT)
        if how == "cli-many":  # the second item stops at its own placing too
            _stopped(proc)
            os.kill(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert out.read_bytes() == payload_
    assert len(origin.gets(f"gone-{how}.bin")) == 1  # downloaded again, once


def test_lock_into_a_folder_says_so_before_any_download(origin, tmp_path):
    """``hostkit lock ID -o DIR`` said "cannot read DIR: Is a directory" with the hint of
    ``-r FILE``; it names the folder and the file to give instead."""
    origin.add("lock-dir.bin", data(500, 1000))
    origin.hits.clear()
    proc = run_cli("lock", f"{origin.url}/f/lock-dir.bin", "-o", tmp_path)
    assert proc.returncode == 2
    assert "is a folder" in proc.stderr and str(tmp_path / "hostkit.lock") in proc.stderr
    assert "-r FILE" not in proc.stderr and not origin.requests()


@pytest.mark.parametrize("damage", ["garbage header", "truncated"])
def test_a_damaged_index_says_so_and_how_to_recover(origin, tmp_path, damage):
    """A corrupted index.db was reported with the hint for permissions and free space; it
    says the index is damaged and to move it aside, which works."""
    sha = origin.add("dmg.bin", data(3000, 1001))
    url = f"{origin.url}/f/dmg.bin"
    run_cli("resolve", url, sha, check=True)
    index = tmp_path / "cache" / "index.db"
    raw = index.read_bytes()
    index.write_bytes(b"garbage garbage " + raw[16:] if damage == "garbage header"
                      else raw[:5000])
    for argv in (["cache", "ls"], ["resolve", url, sha], ["resolve", url, f"{url}?x"]):
        proc = run_cli(*argv)
        assert proc.returncode == 6, (argv, proc.stderr)
        assert "damaged" in proc.stderr and f"mv {index} " in proc.stderr, proc.stderr
        assert "permissions" not in proc.stderr
    os.rename(index, f"{index}.broken")
    again = run_cli("resolve", url, sha, "--json")
    assert again.returncode == 0, again.stderr
    assert _json(again)["sha256"] == sha


def test_a_lock_file_on_standard_input_is_read_as_one(origin, tmp_path):
    """``hostkit resolve -r - < hostkit.lock`` (or a pipe) refused the lock as a list with
    three words on line 3; standard input is recognised as a lock file as a file is."""
    sha = origin.add("stdin-lock.bin", data(700, 1002))
    url = f"{origin.url}/f/stdin-lock.bin"
    lock = tmp_path / "hostkit.lock"
    run_cli("lock", url, "-o", lock, check=True)
    proc = subprocess.run([sys.executable, "-m", "hostkit.cli", "resolve", "-r", "-", "--json"],
                          input=lock.read_text(), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    (item,) = _json(proc)
    assert item["sha256"] == sha and item["verified"] is True


@pytest.mark.parametrize("name", ["a\nb", "a\tb", "x\x1b[2Jy", "a\u202eb.exe", "..\\evil",
                                  "sub\\w.bin"])
def test_lock_output_names_with_controls_or_backslashes_are_refused(origin, tmp_path, name):
    """A lock file's output name with a newline broke the one-path-a-line output (two
    lines for one file), with terminal escapes or a bidi override it was printed raw, and a
    backslash is a separator (``..\\evil``: outside the folder) on Windows."""
    sha = origin.add("ctl.bin", data(400, 1003))
    escaped = name.replace("\\", "\\\\").replace("\n", "\\n").replace("\t", "\\t") \
        .replace("\x1b", "\\u001b").replace("\u202e", "\\u202e")
    lock = tmp_path / "ctl.lock"
    lock.write_text(f'version = 1\n[[file]]\nidentifier = "{origin.url}/f/ctl.bin"\n'
                    f'hash = "sha256:{sha}"\noutput = "{escaped}"\n')
    proc = run_cli("resolve", "-r", lock, "-o", f"{tmp_path}/out/")
    assert proc.returncode == 2, proc.stdout
    assert "cannot be an output name" in proc.stderr and proc.stdout == ""
    assert not any(c in proc.stderr for c in "\x1b\u202e")
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize("version", ["true", "1.0", '"1"'])
def test_a_lock_version_of_another_type_is_refused(origin, tmp_path, version):
    """``version = true`` and ``version = 1.0`` passed for version 1 (Python: True == 1)."""
    sha = origin.add("ver.bin", data(300, 1004))
    lock = tmp_path / "v.lock"
    lock.write_text(f'version = {version}\n[[file]]\nidentifier = "{origin.url}/f/ver.bin"\n'
                    f'hash = "sha256:{sha}"\n')
    proc = run_cli("resolve", "-r", lock)
    assert proc.returncode == 2 and "not a hostkit lock file" in proc.stderr, proc.stderr
