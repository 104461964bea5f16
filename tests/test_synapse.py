"""The synapse backend, driving the REAL synapseclient against a local Synapse stand-in."""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hostkit import errors
from tests.conftest import run_cli
from tests.synapse_standin import TOKEN, SynapseServer, config_text
from tests.test_resolve import data, resolve

WRONG_TOKEN = "hk-wrong-pat-SECRET-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def synapse_server():
    server = SynapseServer()
    server.start()  # raises (the tests fail, not skip) if it cannot start
    yield server.synapse
    server.stop()


@pytest.fixture
def synapse(synapse_server, monkeypatch, tmp_path):
    """The stand-in, the client pointed at it, no token anywhere unless a test sets one."""
    synapse_server.hits.clear()
    for key in ("SYNAPSE_AUTH_TOKEN", "SYNAPSE_PROFILE", "SYNAPSE_TOKEN_AWS_SSM_PARAMETER_NAME"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    monkeypatch.setenv("HOSTKIT_SYNAPSE_ENDPOINT", synapse_server.url)
    # a path of its own per test: synapseclient parses a config file once per path
    monkeypatch.setenv("HOSTKIT_SYNAPSE_CONFIG", str(tmp_path / "synapseConfig"))
    return synapse_server


@pytest.fixture
def resolver(synapse):
    """A resolver whose settings are read once the stand-in's are in the environment."""
    return reloaded()


def reloaded():
    """A resolver reading the settings now in the environment (they are read once, when made)."""
    from hostkit.resolver import Resolver
    from hostkit.settings import load_settings

    return Resolver(load_settings())


def upload(resolver, *args, **kwargs):
    async def go():
        try:
            return await resolver.upload(*args, **kwargs)
        finally:
            await resolver.context.aclose()
    return asyncio.run(go())


def fresh(resolver):
    """Another resolver on the same cache (a second process, as far as the cache knows)."""
    from hostkit.resolver import Resolver

    return Resolver(resolver.settings)


# -- downloads ------------------------------------------------------------------------


def test_cold_resolve_checks_md5_and_records_sha256(resolver, synapse):
    payload = data(300_000, 11)
    sid = synapse.add_file("weights.bin", payload)
    got = resolve(resolver, f"synapse:{sid}")
    sha = hashlib.sha256(payload).hexdigest()
    assert (got.cached, got.verified, got.sha256, got.size) == (False, False, sha, len(payload))
    assert got.path.read_bytes() == payload
    assert got.digests["md5"] == hashlib.md5(payload).hexdigest() == synapse.handle_of(sid).md5
    assert got.identifier == f"synapse:{sid}"
    assert resolver.cache.entries()[0].sha256 == sha  # trust on first use, recorded
    paths = [(h.method, h.path) for h in synapse.hits]
    assert paths == [("POST", f"/repo/v1/entity/{sid}/bundle2"),
                     ("POST", "/file/v1/fileHandle/batch"),
                     ("GET", f"/s3/{synapse.handle_of(sid).id}/weights.bin")]
    again = resolve(fresh(resolver), f"synapse:{sid}", f"sha256:{sha}")
    assert again.cached and again.verified and again.path == got.path
    for path in resolver.cache.root.rglob("*"):  # synapseclient's own folder is private too
        if path.is_dir():
            assert path.stat().st_mode & 0o777 == 0o700, path


def test_md5_advertised_by_synapse_is_checked(resolver, synapse, settings):
    sid = synapse.add_file("bad.bin", data(50_000, 12), md5="0" * 32)
    with pytest.raises(errors.HashMismatch) as info:
        resolve(resolver, f"synapse:{sid}")
    assert "md5:" + "0" * 32 in str(info.value) and "advertised" in str(info.value)
    assert resolver.cache.entries() == []
    assert list((settings.cache_dir / "blobs" / "sha256").iterdir()) == []


def test_warm_hit_revalidates_by_file_handle_then_follows_a_new_version(resolver, synapse):
    sid = synapse.add_file("m.bin", data(80_000, 13))
    first = resolve(resolver, f"synapse:{sid}")
    synapse.hits.clear()
    warm = resolve(fresh(resolver), f"synapse:{sid}")
    assert warm.cached and warm.path == first.path
    assert [h.path for h in synapse.hits] == [f"/repo/v1/entity/{sid}/bundle2"]  # no bytes
    new = data(90_000, 14)
    assert synapse.add_version(sid, new) == 2
    synapse.hits.clear()
    moved = resolve(fresh(resolver), f"synapse:{sid}")
    assert not moved.cached and moved.path.read_bytes() == new
    assert len(synapse.storage_hits()) == 1


def test_pinned_version_is_served_without_network(resolver, synapse):
    v1, v2 = data(60_000, 15), data(70_000, 16)
    sid = synapse.add_file("p.bin", v1)
    synapse.add_version(sid, v2)
    one = resolve(resolver, f"synapse:{sid}.1")
    two = resolve(fresh(resolver), f"synapse:{sid}.2")
    assert one.path.read_bytes() == v1 and two.path.read_bytes() == v2
    assert f"/repo/v1/entity/{sid}/version/1/bundle2" in [h.path for h in synapse.hits]
    synapse.hits.clear()
    for version, payload in ((1, v1), (2, v2)):
        hit = resolve(fresh(resolver), f"synapse:{sid}.{version}")
        assert hit.cached and hit.path.read_bytes() == payload
    assert resolve(fresh(resolver), f"synapse:{sid}.1", offline=True).cached
    assert synapse.hits == []  # not even a login


def test_token_from_env_reads_a_private_file_and_never_goes_to_storage(
        resolver, synapse, monkeypatch):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    payload = data(120_000, 17)
    sid = synapse.add_file("private.bin", payload, access="private")
    got = resolve(resolver, f"synapse:{sid}")
    assert got.path.read_bytes() == payload
    assert [h.path for h in synapse.hits][:1] == ["/repo/v1/userProfile"]
    api = [h for h in synapse.hits if h.path.startswith(("/repo/", "/file/"))]
    assert api and all(h.authorization == f"Bearer {TOKEN}" for h in api)
    storage = synapse.storage_hits()
    assert len(storage) == 1 and storage[0].authorization is None


def test_token_and_endpoints_from_the_synapse_config_file(resolver, synapse, monkeypatch,
                                                          tmp_path):
    config = tmp_path / "synapseConfig.ini"
    config.write_text(config_text(synapse.url, TOKEN))
    config.chmod(0o600)
    monkeypatch.setenv("HOSTKIT_SYNAPSE_CONFIG", str(config))
    monkeypatch.delenv("HOSTKIT_SYNAPSE_ENDPOINT")
    resolver = reloaded()
    sid = synapse.add_file("cfg.bin", data(10_000, 18), access="login")
    got = resolve(resolver, f"synapse:{sid}")
    assert got.path.read_bytes() == data(10_000, 18)
    assert resolver.cache.entries()[0].key == f"synapse+{synapse.url}/repo/v1:{sid}"
    assert synapse.requests("/userProfile")[0].authorization == f"Bearer {TOKEN}"


def test_wrong_token_is_refused(resolver, synapse, monkeypatch):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", WRONG_TOKEN)
    sid = synapse.add_file("x.bin", data(1000, 19))
    with pytest.raises(errors.CredentialsRefused) as info:
        resolve(resolver, f"synapse:{sid}")
    text = str(info.value)
    assert "SYNAPSE_AUTH_TOKEN" in text and "401" in text and WRONG_TOKEN not in text
    assert info.value.identifier == f"synapse:{sid}"
    assert [h.path for h in synapse.hits] == ["/repo/v1/userProfile"]  # at once, no retries


def test_private_file_without_token_needs_credentials(resolver, synapse):
    private = synapse.add_file("secret.bin", data(1000, 20), access="private")
    login = synapse.add_file("members.bin", data(1000, 21), access="login")
    for sid in (private, login):
        with pytest.raises(errors.CredentialsNeeded) as info:
            resolve(fresh(resolver), f"synapse:{sid}")
        assert "SYNAPSE_AUTH_TOKEN" in info.value.hint and "synapseConfig" in info.value.hint
        assert f"synapse:{sid}" in info.value.message
    assert synapse.storage_hits() == [] and synapse.requests("/fileHandle/batch") == []


def test_no_download_permission_with_a_token_is_refused(resolver, synapse, monkeypatch):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    sid = synapse.add_file("controlled.bin", data(1000, 22), access="restricted")
    with pytest.raises(errors.CredentialsRefused) as info:
        resolve(resolver, f"synapse:{sid}")
    assert "hostkit-tester" in info.value.message and "request access" in info.value.hint
    assert "access requirements" in info.value.message


def test_missing_entity_and_version_are_not_found(resolver, synapse):
    sid = synapse.add_file("one.bin", data(1000, 23))
    for identifier in ("synapse:syn99999999", f"synapse:{sid}.5"):
        with pytest.raises(errors.NotFound) as info:
            resolve(fresh(resolver), identifier)
        assert identifier in info.value.message


def test_folder_and_project_are_folders_not_files(resolver, synapse):
    # synapse:synN of a folder or project resolves as a folder (tests/test_trees.py)
    empty = synapse.add_folder("data")
    with pytest.raises(errors.NotFound, match="no files in this folder"):
        resolve(fresh(resolver), f"synapse:{empty}")
    # a version names a file: a folder's or project's is refused as not one
    for sid, kind in ((empty, "Folder"), (synapse.project, "Project")):
        with pytest.raises(errors.NotAFile) as info:
            resolve(fresh(resolver), f"synapse:{sid}.1")
        assert kind in info.value.message


@pytest.mark.parametrize("identifier", [
    "synapse:123", "synapse:syn", "synapse:syn12x", "synapse:syn1.0", "synapse://syn1",
    "synapse:syn1.2.3", "synapse:SYN1", "synapse:syn1.", "synapse:syn-1"])
def test_bad_identifiers_list_the_forms(resolver, synapse, identifier):
    with pytest.raises(errors.UsageError) as info:
        resolve(resolver, identifier)
    assert "synapse:syn123" in info.value.hint and "synapse:syn123.4" in info.value.hint
    assert synapse.hits == []


def test_resume_after_a_cut(resolver, synapse):
    payload = data(3_000_000, 24)
    sid = synapse.add_file("big.bin", payload)
    synapse.cut_once.add(synapse.handle_of(sid).id)
    got = resolve(resolver, f"synapse:{sid}")
    assert got.path.read_bytes() == payload
    assert got.digests["md5"] == hashlib.md5(payload).hexdigest()  # checked across the cut
    gets = synapse.storage_hits()
    assert len(gets) == 2 and gets[0].range is None
    offset = int(gets[1].range.removeprefix("bytes=").rstrip("-"))
    assert 0 < offset < len(payload)
    assert len(synapse.requests("/fileHandle/batch")) == 2  # a fresh presigned URL each time


def test_refused_presigned_url_is_retried_and_never_shown(resolver, synapse):
    sid = synapse.add_file("r.bin", data(40_000, 25))
    fh = synapse.handle_of(sid).id
    synapse.storage_fail[fh] = [403]
    assert resolve(resolver, f"synapse:{sid}").path.read_bytes() == data(40_000, 25)
    synapse.storage_fail[fh] = [404]
    with pytest.raises(errors.NotFound) as info:
        resolve(fresh(resolver), f"synapse:{sid}.1")
    text = str(info.value)
    assert "X-Amz" not in text and "Signature" not in text and "/s3/" not in text
    assert synapse.url in text  # the storage host, without path or query


def test_unreachable_endpoint_fails_fast(resolver, synapse, monkeypatch):
    monkeypatch.setenv("HOSTKIT_SYNAPSE_ENDPOINT", "http://127.0.0.1:9")
    resolver = reloaded()
    started = time.monotonic()
    with pytest.raises(errors.Unreachable):
        resolve(resolver, "synapse:syn123")
    assert time.monotonic() - started < 15  # synapseclient alone would retry for ~30 min


def test_downloads_need_no_synapseclient_and_uploads_name_the_extra(resolver, synapse,
                                                                     monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "synapseclient", None)  # import fails as if absent
    sid = synapse.add_file("noclient.bin", data(5000, 31))
    assert resolve(resolver, f"synapse:{sid}").path.read_bytes() == data(5000, 31)
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    source = tmp_path / "up.bin"
    source.write_bytes(b"z" * 10)
    with pytest.raises(errors.UsageError) as info:
        upload(fresh(reloaded()), source, f"synapse:{synapse.add_folder('nc')}")
    assert "pip install 'hostkit[synapse]'" in str(info.value)


def test_backend_imports_no_synapseclient():
    code = ("import sys, hostkit_backends.synapse\n"
            "print('synapseclient' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "False"


# -- the CLI: secrets never printed -----------------------------------------------------


def test_cli_never_prints_the_token(synapse, tmp_path):
    sid = synapse.add_file("cli.bin", data(20_000, 26), access="private")
    refused = run_cli("resolve", f"synapse:{sid}", "-v", env={"SYNAPSE_AUTH_TOKEN": WRONG_TOKEN})
    assert refused.returncode == 4, refused.stderr
    assert "refused the access token" in refused.stderr
    config = tmp_path / "cli.synapseConfig"
    config.write_text(config_text(synapse.url, WRONG_TOKEN))
    as_json = run_cli("resolve", f"synapse:{sid}", "-v", "--json",
                      env={"HOSTKIT_SYNAPSE_CONFIG": str(config)})
    assert json.loads(as_json.stdout)["error"] == "credentials_refused"
    ok = run_cli("resolve", f"synapse:{sid}", "-v", env={"SYNAPSE_AUTH_TOKEN": TOKEN})
    assert ok.returncode == 0, ok.stderr
    assert Path(ok.stdout.strip()).read_bytes() == data(20_000, 26)
    for proc, secret in ((refused, WRONG_TOKEN), (as_json, WRONG_TOKEN), (ok, TOKEN)):
        assert secret not in proc.stdout + proc.stderr
        assert "X-Amz-Signature" not in proc.stdout + proc.stderr
    storage = synapse.storage_hits()
    assert storage and all(h.authorization is None for h in storage)


# -- uploads ------------------------------------------------------------------------------


def test_upload_round_trip(resolver, synapse, monkeypatch, tmp_path):
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    folder = synapse.add_folder("models")
    source = tmp_path / "model.bin"
    source.write_bytes(data(200_000, 27))
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    first = upload(resolver, source, f"synapse:{folder}")
    sid = synapse.child(folder, "model.bin").id
    assert (first.identifier, first.sha256, first.created) == (f"synapse:{sid}.1", sha, True)
    assert synapse.handle_of(sid).data == source.read_bytes()
    assert all(h.authorization is None for h in synapse.storage_hits())  # part PUTs too
    got = resolve(fresh(resolver), first.identifier, sha)
    assert got.verified and got.path.read_bytes() == source.read_bytes()

    same = upload(fresh(resolver), source, f"synapse:{folder}")
    assert (same.identifier, same.created) == (first.identifier, False)
    stamp = source.stat()
    source.write_bytes(data(210_000, 28))
    # same mtime as the uploaded bytes: synapseclient's own cache would call it unchanged
    os.utime(source, ns=(stamp.st_atime_ns, stamp.st_mtime_ns))
    with pytest.raises(errors.UsageError) as info:
        upload(fresh(resolver), source, f"synapse:{folder}")
    assert "--overwrite" in info.value.hint
    second = upload(fresh(resolver), source, f"synapse:{folder}", overwrite=True)
    assert (second.identifier, second.created) == (f"synapse:{sid}.2", True)
    assert synapse.handle_of(sid).data == data(210_000, 28)
    assert resolve(fresh(resolver), f"synapse:{sid}.1").path.read_bytes() == data(200_000, 27)
    named = upload(fresh(resolver), source, f"synapse:{folder}", content_addressed=True)
    assert synapse.child(folder, named.sha256) is not None


def test_upload_needs_a_token_and_a_folder(resolver, synapse, monkeypatch, tmp_path):
    source = tmp_path / "f.bin"
    source.write_bytes(b"x" * 100)
    folder = synapse.add_folder("in")
    with pytest.raises(errors.CredentialsNeeded):
        upload(resolver, source, f"synapse:{folder}")
    monkeypatch.setenv("SYNAPSE_AUTH_TOKEN", TOKEN)
    sid = synapse.add_file("plain.bin", b"y")
    with pytest.raises(errors.NotAFile):
        upload(fresh(resolver), source, f"synapse:{sid}")
    with pytest.raises(errors.UsageError):
        upload(fresh(resolver), source, f"synapse:{folder}.1")
    with pytest.raises(errors.NotFound):
        upload(fresh(resolver), source, "synapse:syn99999999")


def test_cli_upload_and_plugins(synapse, tmp_path):
    folder = synapse.add_folder("cli-up")
    source = tmp_path / "w.tar.gz"
    source.write_bytes(data(30_000, 29))
    proc = run_cli("upload", source, f"synapse:{folder}", env={"SYNAPSE_AUTH_TOKEN": TOKEN})
    assert proc.returncode == 0, proc.stderr
    sid = synapse.child(folder, "w.tar.gz").id
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert proc.stdout.split() == [f"synapse:{sid}.1", f"sha256:{sha}"]
    assert TOKEN not in proc.stdout + proc.stderr
    plugins = run_cli("plugins", "--json")
    rows = json.loads(plugins.stdout)["backends"]
    assert any(r["backend"] == "synapse" and r["extra"] == "synapse" for r in rows)


def test_wrong_expected_hash_is_refused(resolver, synapse):
    payload = data(30_000, 30)
    sid = synapse.add_file("h.bin", payload)
    wrong = "sha256:" + "0" * 64
    with pytest.raises(errors.HashMismatch) as info:
        resolve(resolver, f"synapse:{sid}", wrong)
    assert info.value.expected == wrong
    assert info.value.found == "sha256:" + hashlib.sha256(payload).hexdigest()
    assert resolver.cache.entries() == []


# -- a server that lies (an aiohttp stand-in answering only the entity bundle) -------------------


@pytest.fixture
def lying_synapse(monkeypatch, tmp_path):
    """``answer["bundle"]``: the body (bytes) every ``bundle2`` gets, as JSON, status 200."""
    from aiohttp import web

    from tests.daemon_fixtures import serve_in_thread

    answer = {"bundle": b"{}"}

    def make_app():
        async def bundle(request):
            return web.Response(body=answer["bundle"], content_type="application/json")

        app = web.Application()
        app.router.add_post("/repo/v1/entity/{id}/bundle2", bundle)
        app.router.add_post("/repo/v1/entity/{id}/version/{v}/bundle2", bundle)
        return app

    for key in ("SYNAPSE_AUTH_TOKEN", "SYNAPSE_PROFILE"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("HOSTKIT_RETRIES", "0")
    monkeypatch.setenv("HOSTKIT_SYNAPSE_CONFIG", str(tmp_path / "synapseConfig"))
    _, loop, url = serve_in_thread(make_app, "lying-synapse")
    monkeypatch.setenv("HOSTKIT_SYNAPSE_ENDPOINT", url)
    yield answer
    loop.call_soon_threadsafe(loop.stop)


def _file_bundle(size):
    return json.dumps({"entity": {"concreteType": "org.sagebionetworks.repo.model.FileEntity",
                                  "id": "syn1", "name": "f", "dataFileHandleId": "7",
                                  "versionNumber": 1},
                       "fileHandles": [{"id": "7", "contentSize": size}]}).encode()


@pytest.mark.parametrize("body, words", [
    (json.dumps({"entity": ["a", "list"]}).encode(), "not answering as Synapse"),
    (json.dumps({"entity": {"concreteType": "org.sagebionetworks.repo.model.FileEntity",
                            "dataFileHandleId": "7"}, "fileHandles": "7"}).encode(),
     "not answering as Synapse"),
    (_file_bundle("many"), "size"),
    (_file_bundle(-3), "size"),
    (b'{"entity": {"name": "' + b"x" * (17 << 20) + b'"}}', "more than"),
])
def test_a_lying_bundle_is_a_clear_error(lying_synapse, body, words):
    lying_synapse["bundle"] = body
    with pytest.raises(errors.BackendError, match=words) as error:
        resolve(reloaded(), "synapse:syn1.1")
    assert error.value.hint
