"""The http backend against nginx, which serves Range/ETag/If-Range as real CDNs do (and
its refusals that need no server)."""

from __future__ import annotations

import asyncio
import json

import pytest

from tests.servers import NginxServer
from tests.test_resolve import data, resolve


@pytest.fixture(scope="module")
def nginx(tmp_path_factory):
    root = tmp_path_factory.mktemp("www")
    payload = data(3_000_000, 60)
    (root / "model.bin").write_bytes(payload)
    with NginxServer(root) as server:
        server.payload = payload
        yield server


def test_cold_and_warm_through_nginx(nginx, resolver):
    import hashlib

    sha = hashlib.sha256(nginx.payload).hexdigest()
    before = nginx.count_requests("/model.bin")
    assert resolve(resolver, f"{nginx.url}/model.bin", sha).sha256 == sha
    assert resolve(resolver, f"{nginx.url}/model.bin", sha).cached
    assert nginx.count_requests("/model.bin") - before == 1


def test_resume_with_if_range_against_nginx(nginx, resolver):
    """A partial left by a dead process is resumed with a 206 from nginx."""
    from hostkit.store.layout import key_hash

    url = f"{nginx.url}/model.bin"
    remote = resolver.remote_for(url)

    async def etag():
        try:
            return (await remote.stat()).validator
        finally:
            await resolver.context.aclose()

    validator = asyncio.run(etag())
    assert validator and not validator.startswith("W/")
    tmp = resolver.cache.root / "tmp"
    tmp.mkdir(parents=True, exist_ok=True)
    dead_pid = 2 ** 22 + 7  # beyond pid_max defaults: no such process
    part = tmp / f"{key_hash(url)}.{dead_pid}-abcd.part"
    part.write_bytes(nginx.payload[:1_000_000])
    part.with_suffix(".json").write_text(json.dumps({"key": url, "validator": validator,
                                                    "size": len(nginx.payload)}))
    got = resolve(resolver, url)
    assert got.path.read_bytes() == nginx.payload
    last = nginx.access_log()[-1]
    assert (last.status, last.range) == (206, "bytes=1000000-")


def test_a_share_links_suggestion_never_carries_its_secret():
    """Before, a Dropbox link holding a token printed it whole as the error's suggestion in
    ``hostkit resolve --json`` (message and hint redact it); a link without one keeps its
    suggestion."""
    from tests.conftest import run_cli

    proc = run_cli("resolve", "https://www.dropbox.com/s/k3y/m.bin?dl=0&token=SEC-0042", "--json")
    answer = json.loads(proc.stdout)
    assert proc.returncode == 4 and answer["error"] == "not_direct_link", proc.stderr
    assert "SEC-0042" not in proc.stdout + proc.stderr
    assert "dl=1" in answer["hint"] and answer.get("suggestion") is None
    proc = run_cli("resolve", "https://www.dropbox.com/s/k3y/m.bin?dl=0", "--json")
    assert json.loads(proc.stdout)["suggestion"] == "https://www.dropbox.com/s/k3y/m.bin?dl=1"
