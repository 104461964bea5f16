"""``hostkit.integrations.medperf.download_resource``: MedPerf's download, through the cache.

Each call runs in a subprocess, with the stand-in ``medperf`` package
(tests/standins/medperf) importable or not, so the drop-in really sees
MedPerf's exception classes, or really does not.
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.synapse_standin import TOKEN
from tests.test_place import tmpfs  # noqa: F401 (fixture)
from tests.test_resolve import data
from tests.test_synapse import synapse, synapse_server  # noqa: F401 (fixtures)

STANDINS = Path(__file__).resolve().parent / "standins"
ROOT = Path(__file__).resolve().parent.parent

SCRIPT = r"""
import json, sys
from hostkit import errors
from hostkit.integrations.medperf import download_resource

args = json.loads(sys.argv[1])
try:
    import medperf.exceptions as mx
except ImportError:
    mx = None
try:
    print(json.dumps({"sha256": download_resource(*args)}))
except Exception as exc:
    out = {"error": type(exc).__name__, "module": type(exc).__module__, "message": str(exc),
           "hostkit": [n for n in dir(errors) if isinstance(getattr(errors, n), type)
                       and isinstance(exc, getattr(errors, n))]}
    if mx is not None:
        out["medperf"] = [n for n in dir(mx) if isinstance(getattr(mx, n), type)
                          and isinstance(exc, getattr(mx, n))]
        try:  # MedPerf's own clause, as written in its code
            raise exc
        except mx.InvalidEntityError:
            out["caught_by_invalid_entity"] = True
        except Exception:
            out["caught_by_invalid_entity"] = False
    print(json.dumps(out))
"""


def call(resource, output, expected=None, *, medperf: bool, env=None) -> dict:
    """``download_resource(resource, output, expected)`` in a fresh interpreter."""
    paths = [str(ROOT)] + ([str(STANDINS)] if medperf else [])
    proc = subprocess.run(
        [sys.executable, "-c", SCRIPT, json.dumps([resource, str(output), expected])],
        capture_output=True, text=True, timeout=120,
        env={**os.environ, "PYTHONPATH": os.pathsep.join(paths), **(env or {})})
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)


@pytest.mark.parametrize("medperf", [False, True])
def test_without_a_hash_returns_bare_sha256_and_places_the_file(origin, tmp_path, medperf):
    payload = data(40_000, 101)
    origin.add("nohash.bin", payload)
    out = tmp_path / "cubes" / "1" / "additional_files.tar.gz"  # parents created
    got = call(f"{origin.url}/f/nohash.bin", out, medperf=medperf)
    assert got == {"sha256": hashlib.sha256(payload).hexdigest()}
    assert out.read_bytes() == payload
    assert stat.S_IMODE(out.stat().st_mode) == 0o400  # read-only: it may be the cache's blob
    assert os.listdir(out.parent) == ["additional_files.tar.gz"]


@pytest.mark.parametrize("medperf", [False, True])
def test_with_a_hash_and_a_second_call_makes_no_request(origin, tmp_path, medperf):
    payload = data(60_000, 102)
    sha = origin.add("hashed.bin", payload)
    url = f"direct:{origin.url}/f/hashed.bin"
    out = tmp_path / "image.sif"
    out.write_bytes(b"an older image")  # replaced
    assert call(url, out, sha, medperf=medperf) == {"sha256": sha}
    assert out.read_bytes() == payload
    origin.hits.clear()
    again = tmp_path / "elsewhere" / "image.sif"
    # the same digest written as sha256:HEX, in uppercase: the same hash, from the cache
    assert call(url, again, f"sha256:{sha.upper()}", medperf=medperf) == {"sha256": sha}
    assert again.read_bytes() == payload
    assert origin.requests("hashed.bin") == []


def test_a_mismatch_is_medperfs_invalid_entity_error_and_leaves_the_output(origin, tmp_path):
    url = f"{origin.url}/f/mismatch.bin"
    origin.add("mismatch.bin", data(10_000, 103))
    out = tmp_path / "params.yaml"
    out.write_bytes(b"old: 1\n")
    got = call(url, out, "ab" * 32, medperf=True)
    assert got["caught_by_invalid_entity"] is True
    assert got["medperf"] == ["InvalidEntityError", "MedperfException"]
    assert "HashMismatch" in got["hostkit"] and got["error"] == "HashMismatch"
    assert got["message"].startswith(f"Hash mismatch: {url}")
    assert out.read_bytes() == b"old: 1\n"
    assert os.listdir(tmp_path).count("params.yaml") == 1
    missing = tmp_path / "new" / "x.bin"
    assert call(url, missing, "ab" * 32, medperf=True)["error"] == "HashMismatch"
    assert not missing.exists()


def test_a_mismatch_without_medperf_is_hostkits_own_error(origin, tmp_path):
    origin.add("mm2.bin", data(1000, 104))
    got = call(f"{origin.url}/f/mm2.bin", tmp_path / "o", "cd" * 32, medperf=False)
    assert got["module"] == "hostkit.errors" and got["error"] == "HashMismatch"
    assert "medperf" not in got
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("medperf", [False, True])
@pytest.mark.parametrize("resource,expected", [
    ("ftp://{host}/f/bad.bin", None),                 # no backend takes it
    ("synapse:notanid", None),                         # MedPerf's check refuses it too
    ("{url}/f/bad.bin", "md5:" + "0" * 32),            # not a sha256
    ("{url}/f/bad.bin", "a" * 40),                     # a SHA-1 (old MedPerf)
    ("{url}/f/bad.bin", " " + "a" * 64),
])
def test_an_invalid_argument_is_refused_before_any_request(origin, tmp_path, medperf, resource,
                                                           expected):
    origin.add("bad.bin", data(1000, 105))
    origin.hits.clear()
    resource = resource.format(url=origin.url, host=origin.url.split("//")[1])
    got = call(resource, tmp_path / "out.bin", expected, medperf=medperf)
    assert got.get("error"), got
    assert "UsageError" in got["hostkit"]
    if medperf:
        assert got["medperf"] == ["InvalidArgumentError", "MedperfException"]
    assert origin.hits == []
    assert not (tmp_path / "out.bin").exists()


@pytest.mark.parametrize("path,kind", [
    ("/page", "NotDirectLink"),  # an HTML page where a file was expected
    ("https://drive.google.com/file/d/abc/view", "NotDirectLink"),  # a share page: no request
    ("/trunc/t.bin", "TruncatedBody"), ("/f/absent.bin", "NotFound")])
def test_html_truncation_and_404_are_retrieval_errors(origin, tmp_path, path, kind):
    origin.add("t.bin", data(100_000, 106))
    out = tmp_path / "out.bin"
    url = path if path.startswith("https:") else f"{origin.url}{path}"
    got = call(url, out, None, medperf=True, env={"HOSTKIT_RETRIES": "1"})
    assert kind in got["hostkit"], got
    assert got["medperf"] == ["CommunicationError", "CommunicationRetrievalError",
                              "MedperfException"]
    assert not out.exists() and os.listdir(tmp_path).count("out.bin") == 0


def test_output_on_another_file_system(origin, tmpfs):  # noqa: F811
    payload = data(200_000, 107)
    sha = origin.add("xfs.bin", payload)
    out = tmpfs / "cube" / "additional_files.tar.gz"
    assert call(f"{origin.url}/f/xfs.bin", out, sha, medperf=True) == {"sha256": sha}
    assert out.read_bytes() == payload and os.listdir(out.parent) == [out.name]


def test_synapse_through_the_standin(synapse, tmp_path, monkeypatch):  # noqa: F811
    payload = data(30_000, 108)
    sid = synapse.add_file("weights.bin", payload)
    out = tmp_path / "w.bin"
    sha = hashlib.sha256(payload).hexdigest()
    assert call(f"synapse:{sid}", out, sha, medperf=True) == {"sha256": sha}
    assert out.read_bytes() == payload
    private = synapse.add_file("private.bin", data(1000, 109), access="private")
    got = call(f"synapse:{private}", tmp_path / "p.bin", None, medperf=True)
    assert got["medperf"] == ["CommunicationAuthenticationError", "CommunicationError",
                              "MedperfException"]
    assert "CredentialsNeeded" in got["hostkit"]
    got = call(f"synapse:{private}", tmp_path / "p.bin", None, medperf=False)
    assert got["error"] == "CredentialsNeeded" and got["module"] == "hostkit.errors"
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    assert call(f"synapse:{private}", tmp_path / "p.bin", None, medperf=True) == {
        "sha256": hashlib.sha256(data(1000, 109)).hexdigest()}


def test_through_the_machines_daemon(origin, tmp_path, daemon, settings):
    payload = data(50_000, 110)
    sha = origin.add("daemon.bin", payload)
    out = tmp_path / "via-daemon.bin"
    assert call(f"{origin.url}/f/daemon.bin", out, sha, medperf=True, env=daemon.env) == {
        "sha256": sha}
    blob = tmp_path / "dcache" / "blobs" / "sha256" / sha
    assert out.stat().st_ino == blob.stat().st_ino  # the daemon's cache, not this process's
    assert not (settings.cache_dir / "blobs" / "sha256" / sha).exists()
    got = call(f"{origin.url}/f/daemon.bin", tmp_path / "no.bin", "ef" * 32, medperf=True,
               env=daemon.env)
    assert got["caught_by_invalid_entity"] is True and "HashMismatch" in got["hostkit"]
    assert got["message"].startswith(f"Hash mismatch: {origin.url}/f/daemon.bin")
    assert not (tmp_path / "no.bin").exists()
    got = call("ftp://nowhere/x", tmp_path / "no.bin", None, medperf=True, env=daemon.env)
    assert got["medperf"] == ["InvalidArgumentError", "MedperfException"]


def test_a_full_output_disk_is_a_retrieval_error_and_no_partial(origin, tmpfs):  # noqa: F811
    payload = data(3 << 20, 111)
    sha = origin.add("full.bin", payload)
    (tmpfs / "filler").write_bytes(b"\0" * (2 << 20))
    out = tmpfs / "image.sif"
    out.write_bytes(b"old image")
    got = call(f"{origin.url}/f/full.bin", out, sha, medperf=True)
    assert "CacheError" in got["hostkit"] and "disk full" in got["message"], got
    assert "CommunicationRetrievalError" in got["medperf"]
    assert out.read_bytes() == b"old image"
    assert sorted(os.listdir(tmpfs)) == ["filler", "image.sif"]
