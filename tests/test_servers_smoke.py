"""Smoke tests: each real test server starts, round-trips data and checks credentials.

A server that cannot start makes its tests error (never skip): run
scripts/install-test-servers.sh and `uv sync` first.
"""

import os

# gcsfs reads this at import time; without it every open() against the emulator is slow.
os.environ.setdefault("GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT", "false")

import base64
import hashlib
import socket
import urllib.error
import urllib.request

import pytest

from tests import servers
from tests.servers import (
    AzuriteServer,
    GcsEmulatorServer,
    NginxServer,
    SeaweedS3Server,
    free_port,
)

DATA = os.urandom(256 * 1024)


def _get(url: str, headers: dict[str, str] | None = None, method: str = "GET"):
    req = urllib.request.Request(url, headers=headers or {}, method=method)
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, dict(resp.headers), resp.read()


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    (root / "data.bin").write_bytes(DATA)
    with NginxServer(root) as srv:
        yield srv


@pytest.fixture(scope="module")
def seaweed():
    with SeaweedS3Server() as srv:
        yield srv


@pytest.fixture(scope="module")
def azurite():
    with AzuriteServer() as srv:
        yield srv


@pytest.fixture(scope="module")
def gcs():
    with GcsEmulatorServer() as srv:
        yield srv


def test_free_port_is_bindable():
    port = free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_nginx_serves_ranges_and_logs_requests(nginx):
    url = nginx.url + "/data.bin"
    status, headers, body = _get(url)
    assert (status, body) == (200, DATA)
    assert headers["ETag"] and headers["Last-Modified"] and headers["Accept-Ranges"] == "bytes"
    status, headers, body = _get(url, {"Range": "bytes=10-19"})
    assert (status, body, headers["Content-Range"]) == (
        206,
        DATA[10:20],
        f"bytes 10-19/{len(DATA)}",
    )
    assert _get(url, method="HEAD")[0] == 200
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(nginx.url + "/missing")
    assert e.value.code == 404

    assert nginx.count_requests("/data.bin", "GET") == 2
    assert nginx.count_requests("/data.bin", "HEAD") == 1
    assert nginx.count_requests(status=404) == 1
    full, ranged = [e for e in nginx.access_log() if e.method == "GET" and e.path == "/data.bin"]
    assert (full.status, full.bytes_sent, full.range) == (200, len(DATA), "")
    assert (ranged.status, ranged.bytes_sent, ranged.range) == (206, 10, "bytes=10-19")
    nginx.clear_access_log()
    assert nginx.count_requests() == 0


def test_seaweed_roundtrip_and_refuses_bad_credentials(seaweed):
    import s3fs

    fs = s3fs.S3FileSystem(**seaweed.storage_options)
    fs.mkdir("smoke-bucket")
    fs.pipe("smoke-bucket/dir/data.bin", DATA)
    assert fs.cat("smoke-bucket/dir/data.bin") == DATA
    assert fs.info("smoke-bucket/dir/data.bin")["ETag"] == f'"{hashlib.md5(DATA).hexdigest()}"'

    bad = s3fs.S3FileSystem(
        **{**seaweed.storage_options, "secret": "wrong"}, skip_instance_cache=True
    )
    with pytest.raises(PermissionError):
        bad.cat("smoke-bucket/dir/data.bin")
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(seaweed.endpoint_url + "/smoke-bucket/dir/data.bin")
    assert e.value.code == 403


def test_azurite_roundtrip_and_refuses_bad_credentials(azurite):
    import adlfs
    from azure.core.exceptions import HttpResponseError

    fs = adlfs.AzureBlobFileSystem(**azurite.storage_options)
    fs.mkdir("smoke")
    fs.pipe("smoke/dir/data.bin", DATA)
    assert fs.cat("smoke/dir/data.bin") == DATA
    assert (
        fs.info("smoke/dir/data.bin")["content_settings"]["content_md5"]
        == hashlib.md5(DATA).digest()
    )

    wrong_key = base64.b64encode(b"x" * 64).decode()
    bad_cs = azurite.connection_string.replace(azurite.account_key, wrong_key)
    bad = adlfs.AzureBlobFileSystem(connection_string=bad_cs, skip_instance_cache=True)
    with pytest.raises(HttpResponseError) as e:
        bad.cat("smoke/dir/data.bin")
    assert e.value.status_code == 403
    with pytest.raises(urllib.error.HTTPError) as e:
        _get(azurite.blob_endpoint + "/smoke/dir/data.bin")
    assert e.value.code == 403


def test_gcs_emulator_roundtrip(gcs):
    import gcsfs

    fs = gcsfs.GCSFileSystem(**gcs.storage_options)
    fs.mkdir("smoke-bucket")
    fs.pipe("smoke-bucket/dir/data.bin", DATA)
    assert fs.cat("smoke-bucket/dir/data.bin") == DATA
    with fs.open("smoke-bucket/dir/data.bin", "rb") as f:
        f.seek(10)
        assert f.read(10) == DATA[10:20]
    md5 = base64.b64encode(hashlib.md5(DATA).digest()).decode()
    assert fs.info("smoke-bucket/dir/data.bin")["md5Hash"] == md5


def test_stop_kills_process_and_removes_tmp(tmp_path):
    srv = NginxServer(tmp_path)
    pid, tmp = srv.pid, srv.tmp_dir
    srv.stop()
    with pytest.raises(ProcessLookupError):
        os.killpg(pid, 0)
    assert not tmp.exists()
    srv.stop()  # idempotent


def test_startup_failure_reports_log(tmp_path, nginx):
    with pytest.raises(RuntimeError, match=r"(?s)install-test-servers\.sh.*Address already in use"):
        NginxServer(tmp_path, port=nginx.port)


def test_missing_binary_says_how_to_install(tmp_path, monkeypatch):
    monkeypatch.setattr(servers, "NGINX_BIN", str(tmp_path / "no-nginx"))
    with pytest.raises(RuntimeError, match="install-test-servers.sh"):
        NginxServer(tmp_path)
