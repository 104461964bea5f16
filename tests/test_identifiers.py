"""Hostile and unusual identifiers: IDN hosts, bad ports, undecodable argv, path escapes,
redirects no client may follow. Each is a clean error (or works), never a traceback."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from hostkit import errors
from hostkit.identifiers import parse_identifier
from tests.conftest import run_cli
from tests.test_resolve import data

SHA = "a" * 40


def _run_bytes(*args: bytes, timeout: float = 60) -> subprocess.CompletedProcess:
    """``hostkit ARGS`` with raw bytes arguments (as a shell passes $'\\xff')."""
    return subprocess.run([sys.executable.encode(), b"-m", b"hostkit.cli", *args],
                          capture_output=True, timeout=timeout, env=dict(os.environ))


def _clean_exit(proc, code: int, text: str) -> None:
    stderr = proc.stderr if isinstance(proc.stderr, str) else proc.stderr.decode()
    assert proc.returncode == code, stderr
    assert "Traceback" not in stderr and text in stderr, stderr


def test_idn_host_is_idna_encoded_once_at_parse():
    ref = parse_identifier("direct:http://Bücher.example:8080/f.bin")
    assert ref.identifier == "http://xn--bcher-kva.example:8080/f.bin"
    assert ref.key == "http://xn--bcher-kva.example:8080/f.bin"
    # the same host written either way is one cache entry
    assert parse_identifier("http://xn--bcher-kva.example:8080/f.bin").key == ref.key


def test_idn_host_request_goes_out_with_the_punycode_host(origin, settings):
    # the origin is used as an HTTP proxy: it sees the Host header the client sent
    sha = origin.add("idn.bin", data(5000, 70))
    proc = run_cli("resolve", "http://bücher.example/f/idn.bin", sha, "--json",
                   env={"HTTP_PROXY": origin.url, "http_proxy": origin.url, "NO_PROXY": "",
                        "no_proxy": ""})
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["sha256"] == sha
    assert {h.host for h in origin.gets("/f/idn.bin")} == {"xn--bcher-kva.example"}


def test_unreachable_idn_host_is_a_clean_network_error():
    env = {"HTTP_PROXY": "", "http_proxy": "", "HOSTKIT_RETRIES": "0",
           "HOSTKIT_CONNECT_TIMEOUT": "3"}
    proc = run_cli("resolve", "http://bücher.invalid/f.bin", env=env)
    _clean_exit(proc, 4, "cannot connect")
    assert "xn--bcher-kva.invalid" in proc.stderr


@pytest.mark.parametrize("ident", [
    "http://127.0.0.1:99999/f.bin", "http://127.0.0.1:-1/f.bin", "https://h:0/f",
    "http://h:8o/f", "http:///f.bin", "direct:http://[::1/f", "http://exa mple/f",
    "minio://host:70000/bucket/key", "http://a\u0001b/f",
    # hosts the resolver's IDNA step refuses: once a traceback, exit 1
    "http://h..o/x", "http://xn--a/x", f"https://{'a' * 64}.example/x",
])
def test_bad_hosts_and_ports_are_usage_errors(ident):
    with pytest.raises(errors.UsageError):
        parse_identifier(ident)
    _clean_exit(run_cli("resolve", ident), 2, "error:")


def test_bad_port_in_daemon_style_api_call_is_usage_error(resolver):
    with pytest.raises(errors.UsageError, match="port"):
        resolver.remote_for("http://127.0.0.1:99999/f.bin")


def test_invalid_utf8_in_argv_is_a_usage_error():
    for args in ([b"resolve", b"http://x/\xff"], [b"resolve", b"http://x/f", b"\xff" * 64],
                 [b"resolve", b"http://x/\xff", b"--json"], [b"cache", b"info", b"\xff"],
                 [b"cache", b"rm", b"s3://b/\xff"], [b"cache", b"pin", b"\xffabc"],
                 [b"upload", os.fsencode(__file__), b"s3://bucket/\xff"]):
        _clean_exit(_run_bytes(*args), 2, "error:")
    out = _run_bytes(b"resolve", b"http://x/\xff", b"--json")
    assert json.loads(out.stdout)["error"] == "usage"


@pytest.mark.parametrize("ident", [
    f"github:owner/repo@{SHA}/../../x",
    f"github:owner/repo@{SHA}/a/./b",
    f"github:owner/repo@{SHA}/a/%2e%2E/b",
    f"github:owner/repo@{SHA}//etc/passwd",
    f"github:owner/repo@{SHA}/a//b",
    f"https://raw.githubusercontent.com/owner/repo/{SHA}/../other/x",
    f"https://raw.githubusercontent.com/owner/repo/{SHA}//x",
    "s3://bucket/a/../b", "s3://bucket//abs", "s3://bucket/a//b", "s3://bucket/./k",
    "gs://bucket/a/../b#12", "az://container/a/%2E%2E/b", "minio://h:9000/bucket/a/../b",
    "https://host/a/../b.bin", "https://host/a/%2e/b.bin",
])
def test_path_escapes_are_refused_in_every_backend(resolver, ident):
    with pytest.raises(errors.UsageError, match="segment|inside the repository"):
        resolver.remote_for(ident)


def test_github_escape_is_refused_by_the_cli(origin):
    proc = run_cli("resolve", f"github:owner/repo@{SHA}/../../x",
                   env={"HOSTKIT_GITHUB_RAW_URL": origin.url})
    _clean_exit(proc, 2, "segment")
    assert origin.requests() == []


@pytest.mark.parametrize("url,kind", [
    ("https://host/a//b.bin", errors.UsageError), ("https://host//b.bin", errors.UsageError),
    ("https://host/models/", errors.NotAFile), ("https://host/", errors.NotAFile),
    ("https://host", errors.NotAFile)])
def test_http_refuses_empty_segments_and_folders(resolver, url, kind):
    # servers merge or keep '//' as they please: the key might not name what is fetched
    with pytest.raises(kind):
        resolver.remote_for(url)


def test_plain_http_keeps_queries_in_the_key(resolver):
    assert resolver.remote_for("https://host/a/b.bin?id=3").cache_key == \
        "https://host/a/b.bin?id=3"


def test_object_store_upload_prefix_may_end_with_slash(resolver):
    from hostkit.plugins import call_first

    ref = parse_identifier("s3://bucket/models/")
    assert call_first(resolver.plugins, "hostkit_upload", destination=ref,
                      context=resolver.context) is not None
    with pytest.raises(errors.UsageError, match="segment"):
        call_first(resolver.plugins, "hostkit_upload",
                   destination=parse_identifier("s3://bucket/a//"), context=resolver.context)


@pytest.mark.parametrize("kind", ["file", "nohost"])
def test_redirect_to_file_or_no_host_is_permanent(origin, kind):
    proc = run_cli("resolve", f"{origin.url}/redirect-to/{kind}")
    _clean_exit(proc, 4, "redirected")
    assert "retry" not in proc.stderr
    assert len(origin.gets(f"/redirect-to/{kind}")) == 1
