"""The s3/minio, gs and az backends against real servers started here.

SeaweedFS (with an identities file) stands in for S3 and MinIO, Azurite for
Azure Blob, gcp-storage-emulator for GCS. A TCP relay in front of a server
counts connections (no network for pinned versions), cuts them mid-download
(resume) and shows parallel ranged reads. A server that cannot start fails
these tests; nothing is skipped.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
from dataclasses import replace

import pytest

from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    HashMismatch,
    NotFound,
    TransientError,
    Unreachable,
)
from tests import objectstore_fixtures as fx
from tests.conftest import run_cli
from tests.objectstore_fixtures import KEY, SECRET, resolve, start_seaweed, upload, write_random
from tests.servers import free_port

MiB = 1 << 20

# fixtures (module-scoped servers, relays, per-test environments)
seaweed, seaweed_proxy, proxy, s3env = fx.seaweed, fx.seaweed_proxy, fx.proxy, fx.s3env
gcs_emulator, gcs_proxy, gcsenv = fx.gcs_emulator, fx.gcs_proxy, fx.gcsenv
azurite, azenv = fx.azurite, fx.azenv


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- s3 / minio: round trips -------------------------------------------------------------


def test_upload_then_resolve_versioned_single_part(s3env, tmp_path):
    src = tmp_path / "weights.bin"
    digest = write_random(src, 3 * MiB)
    result = upload(src, f"{s3env}/vers/models/")
    assert result.created and result.sha256 == digest and result.size == 3 * MiB
    assert result.identifier.startswith(f"{s3env}/vers/models/weights.bin?versionId=")
    resolved, stats = resolve(result.identifier, f"sha256:{digest}")
    assert resolved.sha256 == digest and resolved.verified and not resolved.cached
    # a single-part ETag is the MD5: the server vouched for it and the resolver checked it
    assert resolved.digests["md5"] == hashlib.md5(src.read_bytes()).hexdigest()
    again = upload(src, f"{s3env}/vers/models/")  # identical bytes: a no-op, same identifier
    assert not again.created and again.identifier == result.identifier


def test_multipart_upload_resolve_and_overwrite_rules(s3env, tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTKIT_PART_SIZE", str(5 * MiB))
    src, other = tmp_path / "big.bin", tmp_path / "other.bin"
    digest = write_random(src, 12 * MiB + 123)
    other_digest = write_random(other, 6 * MiB)
    dest = f"{s3env}/vers/mp/big.bin"
    first = upload(src, dest)
    assert first.created and first.sha256 == digest and "?versionId=" in first.identifier
    assert resolve(first.identifier)[0].sha256 == digest
    # identical bytes again: recognised by the sha256 tag written after the multipart upload
    assert not upload(src, dest).created
    # different bytes: refused without --overwrite, then a new version with it
    from hostkit.errors import AlreadyExists

    with pytest.raises(AlreadyExists, match="--overwrite"):
        upload(other, dest)
    second = upload(other, dest, overwrite=True)
    assert second.created and second.identifier != first.identifier
    assert resolve(second.identifier)[0].sha256 == other_digest
    # the first version's identifier still names exactly its bytes
    assert resolve(first.identifier)[0].sha256 == digest
    assert resolve(dest)[0].sha256 == other_digest


def test_content_addressed_upload_names_the_key_by_sha256(s3env, tmp_path):
    src = tmp_path / "blob.bin"
    digest = write_random(src, 100_000)
    result = upload(src, f"{s3env}/plain/cas", content_addressed=True)
    assert result.identifier == f"{s3env}/plain/cas/{digest}"  # unversioned bucket: no pin
    again = upload(src, f"{s3env}/plain/cas/", content_addressed=True)
    assert not again.created and again.identifier == result.identifier
    assert resolve(result.identifier, digest)[0].sha256 == digest


def test_cli_upload_prints_identifier_and_sha256_that_resolve(s3env, tmp_path):
    src = tmp_path / "cli.bin"
    digest = write_random(src, 70_000)
    out = run_cli("upload", src, f"{s3env}/vers/cli/", check=True).stdout.split()
    assert out[1] == f"sha256:{digest}" and "?versionId=" in out[0]
    path = run_cli("resolve", out[0], out[1], check=True).stdout.strip()
    with open(path, "rb") as f:
        assert sha(f.read()) == digest
    import json

    again = json.loads(run_cli("upload", "--json", src, f"{s3env}/vers/cli/",
                               check=True).stdout)
    assert again == {"identifier": out[0], "sha256": digest, "size": 70_000, "created": False}


def test_mutable_key_revalidated_and_downloaded_again_when_changed(s3env, seaweed):
    admin = seaweed.admin
    admin.put_object(Bucket="plain", Key="mutable.bin", Body=b"version one")
    ident = f"{s3env}/plain/mutable.bin"
    first, _ = resolve(ident)
    assert first.sha256 == sha(b"version one") and not first.cached
    same, _ = resolve(ident)  # a HEAD shows the same ETag: served from the cache
    assert same.cached and same.sha256 == first.sha256
    admin.put_object(Bucket="plain", Key="mutable.bin", Body=b"version two!")
    changed, stats = resolve(ident)
    assert changed.sha256 == sha(b"version two!") and not changed.cached
    assert stats["downloads"] == 1


def test_revalidation_head_serves_the_download_that_follows(s3env, seaweed, monkeypatch):
    from hostkit_backends import s3

    heads = []
    real = s3.S3Store.head

    async def counting(self, loc):
        heads.append(loc.key)
        return await real(self, loc)

    monkeypatch.setattr(s3.S3Store, "head", counting)
    seaweed.admin.put_object(Bucket="plain", Key="reval.bin", Body=b"first bytes")
    ident = f"{s3env}/plain/reval.bin"
    assert resolve(ident)[0].sha256 == sha(b"first bytes")
    assert heads == ["reval.bin"]  # cold: one HEAD, then the ranged reads
    seaweed.admin.put_object(Bucket="plain", Key="reval.bin", Body=b"second bytes!")
    heads.clear()
    changed, stats = resolve(ident)
    assert changed.sha256 == sha(b"second bytes!") and stats["downloads"] == 1
    assert heads == ["reval.bin"]  # the revalidating HEAD is not repeated to download


def test_upload_over_a_different_size_reads_the_file_once(s3env, tmp_path, monkeypatch):
    from hostkit_backends import objectstore

    src = tmp_path / "sized.bin"
    src.write_bytes(b"short")
    upload(src, f"{s3env}/plain/sized.bin", overwrite=True)
    hashed = []
    real = objectstore.hash_file

    async def counting(path, algs):
        hashed.append(algs)
        return await real(path, algs)

    monkeypatch.setattr(objectstore, "hash_file", counting)
    digest = write_random(src, 70_000)
    result = upload(src, f"{s3env}/plain/sized.bin", overwrite=True)
    assert result.created and result.sha256 == digest
    assert hashed == []  # sizes differ: not hashed to compare, only while sending
    assert resolve(result.identifier, digest)[0].sha256 == digest


def test_pinned_version_is_served_from_cache_without_network(s3env, proxy, seaweed):
    resp = seaweed.admin.put_object(Bucket="vers", Key="pinned.bin", Body=b"pinned bytes")
    ident = f"minio://{proxy.hostport}/vers/pinned.bin?versionId={resp['VersionId']}"
    assert resolve(ident)[0].sha256 == sha(b"pinned bytes")
    assert proxy.connections > 0
    seen = proxy.connections
    proxy.refuse = True  # the endpoint is now down: a pinned version needs no network at all
    again, stats = resolve(ident)
    assert again.cached and again.sha256 == sha(b"pinned bytes")
    assert proxy.connections == seen and stats["downloads"] == 0


def test_interrupted_ranged_download_resumes_from_completed_parts(s3env, proxy, seaweed,
                                                                  tmp_path, monkeypatch):
    size = 48 * MiB
    data = os.urandom(size)
    seaweed.admin.put_object(Bucket="plain", Key="resume.bin", Body=data)
    monkeypatch.setenv("HOSTKIT_PART_SIZE", str(4 * MiB))
    monkeypatch.setenv("HOSTKIT_CONCURRENCY", "4")
    monkeypatch.setenv("HOSTKIT_RETRIES", "0")
    ident = f"minio://{proxy.hostport}/plain/resume.bin"
    proxy.cut_after = 20 * MiB  # every connection dies once 20 MiB went down
    with pytest.raises(TransientError):
        resolve(ident)
    parts = list((tmp_path / "cache" / "tmp").glob("*.part"))
    assert len(parts) == 1 and 0 < parts[0].stat().st_size <= 20 * MiB
    kept = parts[0].stat().st_size
    proxy.reset()
    resolved, stats = resolve(ident)
    assert resolved.sha256 == sha(data)
    # only what was missing came over the wire again
    assert stats["bytes_from_origin"] == size - kept
    assert proxy.down < size - kept + 1 * MiB


def test_200_mib_object_resolved_with_parallel_ranges(s3env, proxy, tmp_path):
    src = tmp_path / "large.bin"
    digest = write_random(src, 200 * MiB)
    result = upload(src, f"minio://{proxy.hostport}/plain/large.bin")
    assert result.sha256 == digest
    src.unlink()
    proxy.reset()
    t0 = time.monotonic()
    resolved, stats = resolve(result.identifier, f"sha256:{digest}")
    elapsed = time.monotonic() - t0
    assert resolved.sha256 == digest and resolved.size == 200 * MiB and resolved.verified
    assert proxy.max_active >= 4, "ranged parts were not fetched in parallel"
    assert stats["bytes_from_origin"] == 200 * MiB
    print(f"200 MiB resolved in {elapsed:.1f}s with up to {proxy.max_active} connections")


#: Runs argv[1:] from a small process and prints its exit status and peak RSS (KiB): a child
#: forked from pytest itself would report pytest's RSS (Linux keeps the high-water mark
#: across fork and exec).
_PEAK = ("import os, sys\npid = os.fork()\nif pid == 0:\n    os.execv(sys.argv[1], sys.argv[1:])\n"
         "_, status, usage = os.wait4(pid, 0)\nprint(status, usage.ru_maxrss)")


def test_parallel_parts_waiting_for_their_turn_hold_a_few_mib(s3env, seaweed, tmp_path):
    """4 parts of 16 MiB: the three waiting ones leave their bytes in the kernel's socket
    buffers, so the download's peak memory is that of a 1-byte one plus a few MiB."""
    data = os.urandom(64 * MiB)
    seaweed.admin.put_object(Bucket="plain", Key="peak-big.bin", Body=data)
    seaweed.admin.put_object(Bucket="plain", Key="peak-tiny.bin", Body=b"x")
    env = {**os.environ, "HOSTKIT_PART_SIZE": str(16 * MiB), "HOSTKIT_CONCURRENCY": "4"}

    def peak(key: str, expected: str) -> int:
        env["HOSTKIT_CACHE_DIR"] = str(tmp_path / key)
        out = subprocess.run([sys.executable, "-S", "-c", _PEAK, sys.executable, "-m",
                              "hostkit.cli", "resolve", "--quiet", f"{s3env}/plain/{key}",
                              expected], capture_output=True, text=True, timeout=120, env=env)
        status, kib = out.stdout.splitlines()[-1].split()  # after the path resolve prints
        assert status == "0", out.stderr
        return int(kib)

    grown = peak("peak-big.bin", sha(data)) - peak("peak-tiny.bin", sha(b"x"))
    assert grown < 24 * 1024, f"{grown >> 10} MiB more than a 1-byte download"


def test_advertised_md5_is_checked(s3env, seaweed, monkeypatch):
    seaweed.admin.put_object(Bucket="plain", Key="md5.bin", Body=b"checked by md5")
    from hostkit_backends import s3

    real = s3._meta
    monkeypatch.setattr(s3, "_meta", lambda resp: replace(real(resp), md5="0" * 32))
    with pytest.raises(HashMismatch, match="advertised by the server"):
        resolve(f"{s3env}/plain/md5.bin")


# -- s3: configuration --------------------------------------------------------------


def test_s3_endpoint_from_env_shares_the_cache_entry_with_minio_form(s3env, seaweed,
                                                                     monkeypatch):
    seaweed.admin.put_object(Bucket="plain", Key="env.bin", Body=b"endpoint from env")
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", seaweed.endpoint_url)
    first, _ = resolve("s3://plain/env.bin")
    assert first.sha256 == sha(b"endpoint from env")
    # the same endpoint written as minio:// is the same object: one index entry
    via_minio, stats = resolve(f"{s3env}/plain/env.bin")
    assert via_minio.cached and stats["downloads"] == 0


def test_s3_profile_with_endpoint_url_and_mlflow_fallback(s3env, seaweed, monkeypatch,
                                                          tmp_path):
    seaweed.admin.put_object(Bucket="plain", Key="profile.bin", Body=b"from a profile")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    (tmp_path / "aws-config").write_text(
        f"[profile lab]\nendpoint_url = {seaweed.endpoint_url}\nregion = us-east-1\n")
    (tmp_path / "aws-credentials").write_text(
        f"[lab]\naws_access_key_id = {KEY}\naws_secret_access_key = {SECRET}\n")
    monkeypatch.setenv("AWS_PROFILE", "lab")
    assert resolve("s3://plain/profile.bin")[0].sha256 == sha(b"from a profile")
    # minio:// with no keys and no AWS_PROFILE: the profile whose endpoint names the host
    monkeypatch.delenv("AWS_PROFILE")
    monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(tmp_path / "cache2"))
    assert resolve(f"{s3env}/plain/profile.bin")[0].sha256 == sha(b"from a profile")
    # MLflow's endpoint variable, keys from the environment
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    (tmp_path / "aws-config").write_text("")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", seaweed.endpoint_url)
    monkeypatch.setenv("HOSTKIT_CACHE_DIR", str(tmp_path / "cache3"))
    assert resolve("s3://plain/profile.bin")[0].sha256 == sha(b"from a profile")


def test_same_bucket_and_key_on_two_endpoints_never_collide(s3env, seaweed):
    other = start_seaweed(buckets=("plain",))
    try:
        seaweed.admin.put_object(Bucket="plain", Key="same.bin", Body=b"bytes at endpoint A")
        other.admin.put_object(Bucket="plain", Key="same.bin", Body=b"bytes at endpoint B")
        a, _ = resolve(f"minio://127.0.0.1:{seaweed.port}/plain/same.bin")
        b, _ = resolve(f"minio://127.0.0.1:{other.port}/plain/same.bin")
        assert a.sha256 == sha(b"bytes at endpoint A") and not a.cached
        assert b.sha256 == sha(b"bytes at endpoint B") and not b.cached
        a_again, _ = resolve(f"minio://127.0.0.1:{seaweed.port}/plain/same.bin")
        assert a_again.cached and a_again.sha256 == a.sha256
        from hostkit.settings import load_settings
        from hostkit.store.cache import Cache

        keys = {e.key for e in Cache(load_settings().cache_dir).entries()}
        assert keys == {f"s3+http://127.0.0.1:{port}/plain/same.bin"
                        for port in (seaweed.port, other.port)}
    finally:
        other.stop()


def test_aws_bucket_in_another_region_is_asked_there(monkeypatch, tmp_path):
    """On AWS a HEAD answered with another x-amz-bucket-region is signed again for that region."""
    import asyncio
    import threading

    from aiohttp import web
    from hostkit_backends import s3

    data = os.urandom(3 * MiB)
    etag = '"' + hashlib.md5(data).hexdigest() + '"'
    seen: list[tuple[str, str, str]] = []

    async def handler(request):
        region = request.match_info["region"]
        seen.append((request.method, region, request.headers.get("Authorization", "")))
        if region != "eu-west-1":
            return web.Response(status=301, headers={"x-amz-bucket-region": "eu-west-1"})
        if request.method == "HEAD":
            return web.Response(headers={"ETag": etag, "Content-Length": str(len(data))})
        assert request.headers["If-Match"] == etag
        first, last = map(int, request.headers["Range"].removeprefix("bytes=").split("-"))
        return web.Response(status=206, body=data[first:last + 1], headers={
            "Content-Range": f"bytes {first}-{last}/{len(data)}", "ETag": etag})

    loop = asyncio.new_event_loop()
    threading.Thread(target=loop.run_forever, daemon=True).start()
    app = web.Application()
    app.router.add_route("*", "/{region}/{bucket}/{key:.*}", handler)
    runner = web.AppRunner(app)
    port = free_port()

    async def start():
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    asyncio.run_coroutine_threadsafe(start(), loop).result(10)
    try:
        fx._clear_cloud_env(monkeypatch, tmp_path)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("HOSTKIT_PART_SIZE", str(1 * MiB))
        monkeypatch.setattr(s3, "_aws_base",
                            lambda bucket, region: f"http://127.0.0.1:{port}/{region}/{bucket}/")
        resolved, _ = resolve("s3://some-bucket/dir/file.bin", sha(data))
        assert resolved.sha256 == sha(data) and resolved.digests["md5"] == etag.strip('"')
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
    # asked once in the default region, then only where the bucket is, signed for it
    assert [(m, r) for m, r, _ in seen[:2]] == [("HEAD", "us-east-1"), ("HEAD", "eu-west-1")]
    assert {(m, r) for m, r, _ in seen[2:]} == {("GET", "eu-west-1")} and len(seen) == 5
    assert all("/eu-west-1/s3/aws4_request" in auth for _, r, auth in seen if r == "eu-west-1")
    monkeypatch.undo()  # the real URLs: virtual-hosted unless the bucket name has dots
    assert s3._aws_base("my-bucket", "eu-west-1") == "https://my-bucket.s3.eu-west-1.amazonaws.com/"
    assert s3._aws_base("my.dotted.bucket", "us-east-1") == \
        "https://s3.amazonaws.com/my.dotted.bucket/"


# -- s3: errors ---------------------------------------------------------------------------


def test_not_found_tells_bucket_from_key(s3env):
    with pytest.raises(NotFound, match="no such object") as exc:
        resolve(f"{s3env}/plain/missing.bin")
    assert "aws s3 ls" in exc.value.hint
    with pytest.raises(NotFound, match="no bucket 'nobucket'"):
        resolve(f"{s3env}/nobucket/missing.bin")
    with pytest.raises(NotFound, match="no files in this folder"):  # a folder is a tree
        resolve(f"{s3env}/plain/folder/")


def test_wrong_secret_refused_and_never_printed(s3env, seaweed, monkeypatch):
    seaweed.admin.put_object(Bucket="plain", Key="secret.bin", Body=b"private")
    wrong = "WRONG-secret-value-8d1f0a"
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", wrong)
    with pytest.raises(CredentialsRefused, match="refused the credentials") as exc:
        resolve(f"{s3env}/plain/secret.bin")
    assert "AWS_ACCESS_KEY_ID" in exc.value.hint
    for args in (("resolve", "-v", f"{s3env}/plain/secret.bin"),
                 ("resolve", "--json", f"{s3env}/plain/secret.bin"),
                 ("upload", "-v", __file__, f"{s3env}/plain/up/")):
        proc = run_cli(*args)
        assert proc.returncode == 4, proc.stderr
        assert "refused the credentials" in proc.stderr
        assert wrong not in proc.stdout + proc.stderr
    # the right secret does not leak from a failing run either
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    proc = run_cli("resolve", "-v", f"{s3env}/plain/nothing-here.bin")
    assert proc.returncode == 4 and "no such object" in proc.stderr
    assert SECRET not in proc.stdout + proc.stderr


def test_anonymous_access_refused(s3env, seaweed, monkeypatch):
    seaweed.admin.put_object(Bucket="plain", Key="anon.bin", Body=b"not public")
    monkeypatch.setenv("HOSTKIT_S3_ANONYMOUS", "1")
    with pytest.raises(CredentialsNeeded, match="anonymous access was refused") as exc:
        resolve(f"{s3env}/plain/anon.bin")
    assert "HOSTKIT_S3_ANONYMOUS" in exc.value.hint


def test_missing_credentials(s3env, monkeypatch):
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    with pytest.raises(CredentialsNeeded, match="no usable AWS credentials") as exc:
        resolve(f"{s3env}/plain/anything.bin")
    assert "AWS_PROFILE" in exc.value.hint
    monkeypatch.setenv("AWS_PROFILE", "nosuchprofile")
    with pytest.raises(CredentialsNeeded, match="nosuchprofile"):
        resolve("s3://plain/anything.bin")


def test_unreachable_endpoint(s3env):
    port = free_port()
    t0 = time.monotonic()
    with pytest.raises(Unreachable, match="cannot connect") as exc:
        resolve(f"minio://127.0.0.1:{port}/plain/x.bin")
    assert "endpoint" in exc.value.hint
    assert time.monotonic() - t0 < 30


def test_minio_speaks_https_unless_the_host_is_listed(s3env, seaweed, monkeypatch):
    monkeypatch.delenv("HOSTKIT_MINIO_INSECURE_HOSTS")
    with pytest.raises(Unreachable) as exc:
        resolve(f"{s3env}/plain/x.bin")
    assert "HOSTKIT_MINIO_INSECURE_HOSTS" in exc.value.hint


@pytest.mark.parametrize("method, url, headers, token", [
    ("GET", "http://127.0.0.1:9000/bucket/dir/a%20b%2Bc~.bin",
     {"Range": "bytes=0-1048575", "Accept-Encoding": "identity", "If-Match": '"abc"'}, None),
    ("HEAD", "https://bucket.s3.eu-west-1.amazonaws.com/k.bin?versionId=3%2Fx",
     {"User-Agent": "hostkit", "X-Custom": "  two   spaces "}, "session-token"),
    ("GET", "http://[::1]:9000/bucket/?prefix=a%2Fb&list-type=2&encoding-type=url", {}, None),
    ("GET", "http://localhost:80/bucket?versioning", {}, None),
])
def test_sigv4_signs_exactly_as_botocore(monkeypatch, method, url, headers, token):
    import datetime

    from botocore import auth
    from botocore.awsrequest import AWSRequest
    from botocore.credentials import Credentials
    from hostkit_backends import sigv4

    when = datetime.datetime(2026, 11, 29, 12, 34, 56, tzinfo=datetime.UTC)
    monkeypatch.setattr(auth, "get_current_datetime", lambda: when.replace(tzinfo=None))
    theirs = AWSRequest(method=method, url=url, headers=dict(headers))
    auth.S3SigV4Auth(Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token), "s3",
                     "eu-west-1").add_auth(theirs)
    ours = sigv4.sign(sigv4.StaticCredentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG", token),
                      method, url, dict(headers), "eu-west-1", now=when)
    assert ours == dict(theirs.headers.items())
    assert "wJalrXUtnFEMI" not in repr(sigv4.StaticCredentials("a", "wJalrXUtnFEMI/K7MDENG"))


def test_s3_download_with_keys_in_the_environment_loads_no_botocore(s3env, seaweed, tmp_path):
    seaweed.admin.put_object(Bucket="plain", Key="nobotocore.bin", Body=b"light")
    code = ("import sys\nfrom hostkit.cli import main\n"
            f"rc = main(['resolve', '--quiet', '{s3env}/plain/nobotocore.bin'])\n"
            "print(rc, 'botocore' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, env={**os.environ, "HOSTKIT_CACHE_DIR": str(tmp_path / "c")})
    assert out.stdout.split()[-2:] == ["0", "False"], out.stderr


def test_missing_extra_names_the_pip_install():
    # hostkit[s3] not installed: neither s3fs (uploads) nor botocore (downloads) imports
    code = ("import sys; sys.modules['s3fs'] = sys.modules['botocore'] = None\n"
            "from hostkit.cli import main\n"
            "sys.exit(main(['resolve', 's3://some-bucket/key.bin']))\n")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=60)
    assert proc.returncode == 2
    assert "pip install 'hostkit[s3]'" in proc.stderr


def test_backends_import_no_heavy_client():
    code = ("import sys, hostkit_backends.s3, hostkit_backends.gcs, hostkit_backends.azure\n"
            "heavy = ['s3fs', 'botocore', 'aiobotocore', 'gcsfs', 'google.auth', 'adlfs',\n"
            "         'azure.storage.blob', 'fsspec']\n"
            "print([m for m in heavy if m in sys.modules])\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert out.strip() == "[]"


# -- gcs --------------------------------------------------------------------------------


def test_gcs_round_trip_generation_pin_and_no_network(gcsenv, gcs_proxy, tmp_path,
                                                      monkeypatch):
    gcs_proxy.reset()
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://{gcs_proxy.hostport}")
    monkeypatch.setenv("HOSTKIT_PART_SIZE", str(5 * MiB))
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small_digest = write_random(small, 200_000)
    big_digest = write_random(big, 11 * MiB + 7)  # resumable upload in three chunks
    for src, digest in ((small, small_digest), (big, big_digest)):
        result = upload(src, "gs://gbucket/models/")
        assert result.sha256 == digest and result.identifier.startswith(
            f"gs://gbucket/models/{src.name}#")
        resolved, _ = resolve(result.identifier, digest)
        assert resolved.sha256 == digest and not resolved.cached
        assert resolved.digests.get("md5") == hashlib.md5(src.read_bytes()).hexdigest()
        assert not upload(src, "gs://gbucket/models/").created
    seen = gcs_proxy.connections
    gcs_proxy.refuse = True
    again, stats = resolve(result.identifier)
    assert again.cached and again.sha256 == big_digest
    assert gcs_proxy.connections == seen and stats["downloads"] == 0
    gcs_proxy.reset()


def test_gcs_mutable_object_changed(gcsenv, tmp_path):
    src = tmp_path / "m.bin"
    src.write_bytes(b"gcs one")
    upload(src, "gs://gbucket/mutable.bin")
    assert resolve("gs://gbucket/mutable.bin")[0].sha256 == sha(b"gcs one")
    assert resolve("gs://gbucket/mutable.bin")[0].cached
    src.write_bytes(b"gcs two, longer")
    from hostkit.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        upload(src, "gs://gbucket/mutable.bin")
    upload(src, "gs://gbucket/mutable.bin", overwrite=True)
    changed, _ = resolve("gs://gbucket/mutable.bin")
    assert changed.sha256 == sha(b"gcs two, longer") and not changed.cached


def test_gcs_errors(gcsenv, tmp_path, monkeypatch):
    with pytest.raises(NotFound, match="no such object"):
        resolve("gs://gbucket/missing.bin")
    with pytest.raises(NotFound, match="no bucket 'nobucket'"):
        resolve("gs://nobucket/missing.bin")
    monkeypatch.delenv("HOSTKIT_GCS_ANONYMOUS")
    with pytest.raises(CredentialsNeeded, match="no Google credentials") as exc:
        resolve("gs://gbucket/x.bin")
    assert "gcloud auth application-default login" in exc.value.hint
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "nope.json"))
    with pytest.raises(CredentialsNeeded, match="does not exist"):
        resolve("gs://gbucket/x.bin")
    (tmp_path / "bad.json").write_text('{"type": "service_account"}')
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "bad.json"))
    with pytest.raises(CredentialsNeeded, match="not a usable Google credentials file"):
        resolve("gs://gbucket/x.bin")
    monkeypatch.setenv("HOSTKIT_GCS_ANONYMOUS", "1")
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(Unreachable):
        resolve("gs://gbucket/x.bin")


# -- azure ---------------------------------------------------------------------------


def test_azure_round_trip_blocks_and_overwrite_rules(azenv, tmp_path, monkeypatch):
    monkeypatch.setenv("HOSTKIT_PART_SIZE", str(5 * MiB))
    small, big = tmp_path / "small.bin", tmp_path / "big.bin"
    small_digest = write_random(small, 300_000)
    big_digest = write_random(big, 12 * MiB + 5)  # staged blocks, committed with the sha256
    for src, digest in ((small, small_digest), (big, big_digest)):
        result = upload(src, "az://cont/models/")
        assert result.identifier == f"az://cont/models/{src.name}" and result.sha256 == digest
        resolved, _ = resolve(result.identifier, digest)
        assert resolved.sha256 == digest and resolved.verified
        assert not upload(src, "az://cont/models/").created
    from hostkit.errors import AlreadyExists

    with pytest.raises(AlreadyExists):
        upload(small, "az://cont/models/big.bin")
    assert upload(small, "az://cont/models/big.bin", overwrite=True).created
    changed, _ = resolve("az://cont/models/big.bin")  # new ETag: downloaded again
    assert changed.sha256 == small_digest and not changed.cached


def test_azure_errors_and_secret_never_printed(azenv, monkeypatch):
    with pytest.raises(NotFound, match="no such blob"):
        resolve("az://cont/missing.bin")
    with pytest.raises(NotFound, match="no container 'nocont'"):
        resolve("az://nocont/missing.bin")
    wrong_key = "V3JvbmdLZXlXcm9uZ0tleVdyb25nS2V5V3JvbmdLZXk="
    wrong = azenv.connection_string.replace(azenv.account_key, wrong_key)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", wrong)
    with pytest.raises(CredentialsRefused, match="refused the credentials"):
        resolve("az://cont/missing.bin")
    proc = run_cli("resolve", "-v", "az://cont/missing.bin")
    assert proc.returncode == 4 and "refused the credentials" in proc.stderr
    assert wrong_key not in proc.stdout + proc.stderr
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azenv.connection_string)
    proc = run_cli("resolve", "-v", "az://cont/missing.bin")
    assert azenv.account_key not in proc.stdout + proc.stderr
    monkeypatch.setenv("HOSTKIT_AZURE_ANONYMOUS", "1")
    with pytest.raises(CredentialsNeeded, match="anonymous access was refused"):
        resolve("az://cont/missing.bin")
    monkeypatch.delenv("HOSTKIT_AZURE_ANONYMOUS")
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    with pytest.raises(CredentialsNeeded, match="no Azure storage account"):
        resolve("az://cont/missing.bin")
    port = free_port()
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING",
                       azenv.connection_string.replace(str(azenv.port), str(port)))
    with pytest.raises(Unreachable):
        resolve("az://cont/missing.bin")


# -- every backend: malformed identifiers and wrong hashes ------------------------------


@pytest.mark.parametrize("identifier, hint", [
    ("s3:bucket/key", "s3://bucket/key"),
    ("s3://ab/key", "3 to 63 characters"),
    ("s3://bucket/key?version=1", "?versionId=ID"),
    ("minio:///bucket/key", "minio://host:port/bucket/key"),
    ("minio://AKIAKEY:hunter2-secret@127.0.0.1:9000/bucket/key", "never the identifier"),
    ("s3://AKIAKEY:hunter2-secret@bucket/key", "never the identifier"),
    ("s3://bucket/key?X-Amz-Signature=hunter2-secret", "?versionId=ID"),
    ("gs://oauth2:hunter2-secret@bucket/key", "never the identifier"),
    ("az://cont/blob?sv=2022-11-02&sig=hunter2-secret", "?versionid=ID"),
    ("gs:bucket/key", "gs://bucket/key"),
    ("gs://Upper/key", "lowercase"),
    ("gs://bucket/key#latest", "#GENERATION"),
    ("az:cont/blob", "az://container/blob"),
    ("az://Cont/blob", "lowercase"),
    ("az://cont/blob?snapshot=1", "?versionid=ID"),
])
def test_malformed_object_store_identifiers(identifier, hint, monkeypatch, tmp_path):
    from hostkit.errors import UsageError

    fx._clear_cloud_env(monkeypatch, tmp_path)
    with pytest.raises(UsageError) as exc:
        resolve(identifier)
    assert hint in exc.value.hint
    assert "hunter2-secret" not in str(exc.value) + str(exc.value.to_dict())


def _refused_wrong_hash(src, destination: str):
    """Upload ``src``, resolve it with a wrong sha256: HashMismatch and nothing cached."""
    from hostkit.settings import load_settings
    from hostkit.store.cache import Cache

    ident = upload(src, destination).identifier
    wrong = "sha256:" + "0" * 64
    with pytest.raises(HashMismatch, match="expected " + wrong) as exc:
        resolve(ident, wrong)
    assert exc.value.found == "sha256:" + sha(src.read_bytes())
    assert list(Cache(load_settings().cache_dir).entries()) == []


def test_wrong_expected_hash_s3(s3env, tmp_path):
    src = tmp_path / "hashed.bin"
    src.write_bytes(b"the bytes the publisher uploaded to s3")
    _refused_wrong_hash(src, f"{s3env}/plain/hashed.bin")


def test_wrong_expected_hash_gcs(gcsenv, tmp_path):
    src = tmp_path / "hashed.bin"
    src.write_bytes(b"the bytes the publisher uploaded to gcs")
    _refused_wrong_hash(src, "gs://gbucket/hashed.bin")


def test_wrong_expected_hash_azure(azenv, tmp_path):
    src = tmp_path / "hashed.bin"
    src.write_bytes(b"the bytes the publisher uploaded to azure")
    _refused_wrong_hash(src, "az://cont/hashed.bin")


def test_gcs_refused_credentials_are_told_apart_from_anonymous(monkeypatch, tmp_path):
    """The emulator checks no credentials: Google's 401/403 answers are mapped here directly."""
    import json

    from hostkit_backends import gcs

    from hostkit.identifiers import parse_identifier
    from hostkit.plugins import load_plugins
    from hostkit.remote import Context
    from hostkit.settings import load_settings

    fx._clear_cloud_env(monkeypatch, tmp_path)
    context = Context(load_settings(), declared=load_plugins().options())
    loc, conf = gcs.parse(parse_identifier("gs://gbucket/x.bin"), context)
    body = json.dumps({"error": {"message": "caller does not have storage.objects.get"}})
    refused = gcs.GcsStore(conf, None)._status_error(403, body, loc)
    assert isinstance(refused, CredentialsRefused) and "storage.objects.get" in refused.message
    anon = gcs.GcsStore(replace(conf, token="anon"), None)._status_error(401, "", loc)
    assert isinstance(anon, CredentialsNeeded) and "HOSTKIT_GCS_ANONYMOUS" in anon.hint


def test_an_oversized_listing_page_is_refused(monkeypatch):
    """A ListObjectsV2 page over the limit is an error, not held in memory whole."""
    from hostkit_backends import s3

    from tests.test_trees import LyingS3, page

    liar = LyingS3()
    try:
        monkeypatch.setenv("HOSTKIT_S3_ANONYMOUS", "1")
        monkeypatch.setenv("HOSTKIT_MINIO_INSECURE_HOSTS", "127.0.0.1")
        monkeypatch.setenv("HOSTKIT_RETRIES", "0")
        monkeypatch.setattr(s3, "_MAX_LISTING", 4000)
        liar.pages = [page([f"p/{i:04d}" for i in range(200)])]
        with pytest.raises(BackendError, match="listing page is over 4000 bytes"):
            resolve(f"minio://127.0.0.1:{liar.port}/bucket/p/")
        assert liar.gets == 0
    finally:
        liar.close()


def test_a_gcs_json_answer_too_large_is_refused_unread(monkeypatch, tmp_path):
    """An endpoint answering an object's metadata with 17 MiB of JSON: read whole into
    memory and parsed before; now refused once it passes 16 MiB."""
    from aiohttp import web

    from hostkit.errors import BackendError
    from tests.servers import AppThread

    async def resource(request):
        return web.json_response({"name": "m.bin", "size": "3", "generation": "1",
                                  "pad": "x" * (17 << 20)})

    app = web.Application()
    app.router.add_get("/storage/v1/b/gbucket/o/{key:.+}", resource)
    server = AppThread(app)
    try:
        fx._clear_cloud_env(monkeypatch, tmp_path)
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", f"http://127.0.0.1:{server.port}")
        monkeypatch.setenv("HOSTKIT_GCS_ANONYMOUS", "1")
        with pytest.raises(BackendError, match="more than 16 MiB"):
            resolve("gs://gbucket/m.bin")
    finally:
        server.close()
