"""The resolver against a real HTTP origin: hits, misses, faults, verification."""

from __future__ import annotations

import asyncio
import errno
import hashlib
import os

import pytest

from hostkit import errors


def data(n: int, seed: int = 0) -> bytes:
    """Deterministic pseudo-random bytes."""
    out, block = bytearray(), hashlib.sha256(str(seed).encode()).digest()
    while len(out) < n:
        block = hashlib.sha256(block).digest()
        out += block * 64
    return bytes(out[:n])


def resolve(resolver, *args, **kwargs):
    async def go():
        try:
            return await resolver.resolve(*args, **kwargs)
        finally:
            await resolver.context.aclose()
    return asyncio.run(go())


def cache_files(settings) -> dict[str, list[str]]:
    root = settings.cache_dir
    return {d: sorted(os.listdir(root / d)) for d in ("blobs/sha256", "tmp")}


def test_cold_then_warm_touches_origin_once(resolver, origin):
    sha = origin.add("w.bin", data(300_000))
    first = resolve(resolver, f"{origin.url}/f/w.bin", f"sha256:{sha}")
    assert (first.cached, first.verified, first.sha256) == (False, True, sha)
    assert first.path.read_bytes() == origin.files["w.bin"]
    second = resolve(resolver, f"{origin.url}/f/w.bin", sha)  # MedPerf's bare hex
    assert second.cached and second.path == first.path
    assert len(origin.requests("/w.bin")) == 1
    assert not os.access(first.path, os.W_OK) or os.geteuid() == 0  # blobs are read-only
    assert oct(first.path.stat().st_mode & 0o777) == "0o400"  # private to the owner


def test_direct_prefix_and_other_algorithms(resolver, origin):
    payload = data(5000, 1)
    origin.add("m.bin", payload)
    md5 = hashlib.md5(payload).hexdigest()
    got = resolve(resolver, f"direct:{origin.url}/f/m.bin", f"md5:{md5}")
    assert got.digests["md5"] == md5 and got.identifier == f"{origin.url}/f/m.bin"
    blake = hashlib.blake2b(payload).hexdigest()
    again = resolve(resolver, f"{origin.url}/f/m.bin", f"blake2b:{blake}")
    assert again.cached and again.sha256 == got.sha256  # re-hashed the blob, no download
    assert len(origin.gets("/m.bin")) == 1


def test_hash_mismatch_caches_nothing(resolver, settings, origin):
    origin.add("x.bin", data(100_000, 2))
    wrong = "0" * 64
    with pytest.raises(errors.HashMismatch) as info:
        resolve(resolver, f"{origin.url}/f/x.bin", wrong)
    msg = str(info.value)
    found = hashlib.sha256(origin.files["x.bin"]).hexdigest()
    assert "/f/x.bin" in msg and wrong in msg and found in msg
    assert cache_files(settings) == {"blobs/sha256": [], "tmp": []}
    assert resolver.cache.entries() == []


def test_truncated_body_fails_after_retries_and_leaves_nothing(resolver, settings, origin):
    origin.add("t.bin", data(200_000, 3))
    with pytest.raises(errors.TruncatedBody):
        resolve(resolver, f"{origin.url}/trunc/t.bin")
    assert len(origin.gets("/trunc/t.bin")) == resolver.settings.retries + 1
    assert cache_files(settings) == {"blobs/sha256": [], "tmp": []}


def test_connection_reset_mid_body_resumes_with_range(resolver, origin):
    sha = origin.add("r.bin", data(1_000_000, 4))
    got = resolve(resolver, f"{origin.url}/reset-once/r.bin", sha)
    assert got.sha256 == sha and not got.cached
    gets = origin.gets("/reset-once/r.bin")
    assert len(gets) == 2 and gets[0].range is None
    assert gets[1].range and int(gets[1].range.split("=")[1].rstrip("-")) > 0


def test_5xx_then_success(resolver, origin):
    sha = origin.add("f.bin", data(10_000, 5))
    got = resolve(resolver, f"{origin.url}/flaky/2/f.bin", sha)
    assert got.sha256 == sha
    assert len(origin.gets("/flaky/2/f.bin")) == 3


def test_persistent_5xx_gives_up_with_transient_error(resolver, origin):
    origin.add("g.bin", b"x")
    with pytest.raises(errors.TransientError) as info:
        resolve(resolver, f"{origin.url}/flaky/99/g.bin")
    assert "503" in str(info.value)


def test_404_is_not_found(resolver, origin):
    with pytest.raises(errors.NotFound) as info:
        resolve(resolver, f"{origin.url}/f/missing.bin")
    assert info.value.hint


def test_login_required_is_credentials_needed(resolver, settings, origin):
    with pytest.raises(errors.CredentialsNeeded) as info:
        resolve(resolver, f"{origin.url}/private/w.bin")
    assert "anonymous" in str(info.value) and info.value.hint
    assert len(origin.gets("/private/")) == 1  # not retried: a 401 will not go away
    assert cache_files(settings) == {"blobs/sha256": [], "tmp": []}


def test_html_page_is_refused(resolver, settings, origin):
    with pytest.raises(errors.NotDirectLink) as info:
        resolve(resolver, f"{origin.url}/page")
    assert "direct download link" in str(info.value)
    assert cache_files(settings) == {"blobs/sha256": [], "tmp": []}


@pytest.mark.parametrize("url,hint", [
    ("https://drive.google.com/file/d/abc/view", "Drive"),
    ("https://www.dropbox.com/s/abc/w.bin?dl=0", "dl=1"),
])  # github.com blob pages: the github backend resolves them (tests/test_github.py)
def test_share_links_are_refused_without_network(resolver, url, hint):
    with pytest.raises(errors.NotDirectLink) as info:
        resolve(resolver, url)
    assert hint in str(info.value)


def test_redirect_chain(resolver, origin):
    sha = origin.add("d.bin", data(1000, 6))
    assert resolve(resolver, f"{origin.url}/redirect/4/d.bin", sha).sha256 == sha
    assert len(origin.gets("/redirect/")) == 4


def test_dead_server_is_unreachable(resolver):
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # nothing listens here once closed
    resolver.settings = resolver.settings.with_overrides(retries=1)
    with pytest.raises(errors.Unreachable) as info:
        resolve(resolver, f"http://127.0.0.1:{port}/w.bin")
    assert "cannot connect" in str(info.value)


def test_same_bytes_under_two_identifiers_stored_once(resolver, settings, origin):
    payload = data(50_000, 7)
    origin.add("a.bin", payload)
    origin.add("b.bin", payload)
    a = resolve(resolver, f"{origin.url}/f/a.bin")
    b = resolve(resolver, f"{origin.url}/noetag/b.bin")
    assert a.path == b.path
    assert len(cache_files(settings)["blobs/sha256"]) == 1
    assert len(resolver.cache.entries()) == 2


def test_known_hash_is_served_without_plugin_or_network(resolver, origin):
    sha = origin.add("k.bin", data(1234, 8))
    resolve(resolver, f"{origin.url}/f/k.bin", sha)
    got = resolve(resolver, f"{origin.url}/f/another-name.bin", sha)
    assert got.cached and got.sha256 == sha
    assert origin.requests("another-name") == []


def test_mutable_reference_is_revalidated_and_refetched_when_changed(resolver, origin):
    origin.add("m.bin", data(2000, 9))
    url = f"{origin.url}/f/m.bin"
    first = resolve(resolver, url)
    assert not first.verified  # trust on first use
    assert resolve(resolver, url).cached
    assert [h.method for h in origin.requests("/m.bin")] == ["GET", "HEAD"]
    new_sha = origin.add("m.bin", data(2000, 10))
    changed = resolve(resolver, url)
    assert not changed.cached and changed.sha256 == new_sha


def test_new_expected_hash_for_cached_url_fetches_again(resolver, origin):
    origin.add("p.bin", data(3000, 11))
    url = f"{origin.url}/f/p.bin"
    resolve(resolver, url)
    new_sha = origin.add("p.bin", data(3000, 12))
    got = resolve(resolver, url, new_sha)
    assert got.sha256 == new_sha and not got.cached


def test_offline_serves_cache_and_refuses_misses_without_connecting(resolver, origin):
    sha = origin.add("o.bin", data(4000, 13))
    url = f"{origin.url}/f/o.bin"
    resolve(resolver, url)
    before = len(origin.hits)
    assert resolve(resolver, url, offline=True).sha256 == sha
    with pytest.raises(errors.OfflineMiss):
        resolve(resolver, f"{origin.url}/f/other.bin", offline=True)
    assert len(origin.hits) == before


def test_strict_mode_requires_a_hash(resolver, origin):
    origin.add("s.bin", b"s")
    with pytest.raises(errors.HashRequired):
        resolve(resolver, f"{origin.url}/f/s.bin", require_hash=True)
    assert origin.hits == []


def test_full_disk_is_a_clear_error_and_leaves_nothing(resolver, settings, origin, monkeypatch):
    origin.add("big.bin", data(3_000_000, 14))

    def no_space(fd, buffers):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "writev", no_space)
    with pytest.raises(errors.CacheError) as info:
        resolve(resolver, f"{origin.url}/f/big.bin")
    assert "disk full" in str(info.value) and "prune" in str(info.value)
    assert cache_files(settings) == {"blobs/sha256": [], "tmp": []}


def test_unknown_scheme_lists_accepted_forms(resolver):
    with pytest.raises(errors.UnknownScheme) as info:
        resolve(resolver, "ftp://host/file")
    assert "https://host/path/file" in str(info.value)


@pytest.mark.parametrize("bad", ["sha256:abc", "md4:" + "0" * 32, "xyz", "sha256:" + "g" * 64])
def test_bad_hash_syntax(resolver, bad):
    with pytest.raises(errors.BadHash):
        resolve(resolver, "https://example.invalid/x", bad)


def test_cancelled_waiter_does_not_cancel_shared_download(resolver, origin):
    sha = origin.add("c.bin", data(400_000, 15))
    url = f"{origin.url}/slow/c.bin"

    async def go():
        try:
            impatient = asyncio.ensure_future(resolver.resolve(url, sha))
            patient = asyncio.ensure_future(resolver.resolve(url, sha))
            await asyncio.sleep(0.1)
            impatient.cancel()
            return await patient
        finally:
            await resolver.context.aclose()

    assert asyncio.run(go()).sha256 == sha
    assert len(origin.gets("/slow/c.bin")) == 1


def test_a_wrong_hash_does_not_fail_callers_who_joined_without_it(resolver, origin):
    sha = origin.add("j.bin", data(400_000, 16))
    url = f"{origin.url}/slow/j.bin"

    async def go():
        try:
            wrong = asyncio.ensure_future(resolver.resolve(url, "0" * 64))
            await asyncio.sleep(0.05)
            plain = asyncio.ensure_future(resolver.resolve(url))
            right = asyncio.ensure_future(resolver.resolve(url, sha))
            return await asyncio.gather(wrong, plain, right, return_exceptions=True)
        finally:
            await resolver.context.aclose()

    wrong, plain, right = asyncio.run(go())
    assert isinstance(wrong, errors.HashMismatch)
    assert plain.sha256 == sha and right.sha256 == sha and right.verified


def test_hash_hit_never_echoes_credentials_in_the_identifier(resolver, origin):
    sha = origin.add("cred.bin", data(100, 17))
    resolve(resolver, f"{origin.url}/f/cred.bin", sha)
    got = resolve(resolver, f"{origin.url}/f/cred.bin?X-Amz-Signature=SECRETSIG", sha)
    assert got.cached and "SECRETSIG" not in got.identifier
