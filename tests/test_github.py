"""The github backend against a GitHub stand-in (tests/standins/github.py): every form at a
commit, branches and tags refused or pinned, short SHAs, private repositories and where
the token goes, Git LFS, rate limits, and uploads through the contents API."""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time

import pytest

from hostkit import errors
from tests import github_fixtures as ghfx
from tests.conftest import run_cli
from tests.standins.github import TOKEN, pointer_for
from tests.test_resolve import data, resolve

RAW_HOST = "https://raw.githubusercontent.com"


github_server, gh = ghfx.github_server, ghfx.gh


def sha(payload: bytes) -> str:
    return hashlib.sha256(payload).hexdigest()


def refused(resolver, ident, cls=errors.HostkitError, **kwargs):
    with pytest.raises(cls) as info:
        resolve(resolver, ident, **kwargs)
    return info.value


# -- forms at a commit ----------------------------------------------------------------


def test_a_pinned_commit_is_immutable_and_never_revalidated(gh, resolver):
    payload = data(700, 70)
    commit = gh.commit("o/r", {"mlcube.yaml": payload})
    ident = f"github:o/r@{commit}/mlcube.yaml"
    remote = resolver.remote_for(ident)
    assert remote.immutable and remote.url == f"{gh.raw_url}/o/r/{commit}/mlcube.yaml"
    assert remote.anonymous and remote.display == remote.url  # shown as what is fetched
    first = resolve(resolver, ident)
    assert (first.sha256, first.cached, first.identifier) == (sha(payload), False, remote.url)
    before = len(gh.hits)
    again = resolve(resolver, ident)  # no hash given, yet no request: the commit pins it
    assert again.cached and len(gh.hits) == before
    assert gh.seen("api") == []  # a commit needs no lookup


def test_every_form_names_the_same_bytes_under_one_cache_key(gh, resolver):
    payload = data(5000, 71)
    commit = gh.commit("o/r", {"dir/w.bin": payload})
    forms = [f"github:o/r@{commit}/dir/w.bin",
             f"{gh.raw_url}/o/r/{commit}/dir/w.bin",
             f"{RAW_HOST}/o/r/{commit}/dir/w.bin",  # fetched from the raw_url setting
             f"https://github.com/o/r/blob/{commit}/dir/w.bin",
             f"https://github.com/o/r/raw/{commit}/dir/w.bin",
             f"https://github.com/o/r/blob/{commit}/dir/w.bin?raw=true#L3"]
    keys = {resolver.remote_for(form).cache_key for form in forms}
    assert keys == {f"{gh.raw_url}/o/r/{commit}/dir/w.bin"}
    answers = [resolve(resolver, form, sha(payload)) for form in forms]
    assert {a.sha256 for a in answers} == {sha(payload)}
    assert [a.cached for a in answers] == [False] + [True] * 5
    assert len(gh.seen("raw", "GET")) == 1


def test_other_github_com_urls_are_left_to_the_http_backend(gh, resolver):
    from hostkit_backends.http import HttpRemote

    remote = resolver.remote_for("https://github.com/o/r/releases/download/v1/w.bin")
    assert isinstance(remote, HttpRemote)


@pytest.mark.parametrize("ident", [
    "github:just-a-name", "github:o/r/no-ref.bin", "github:o/r@main",
    "github:o/r@main/a//b", f"{RAW_HOST}/o/r", "https://github.com/o/r/blob/main/",
])
def test_malformed_identifiers_are_usage_errors(gh, resolver, ident):
    refused(resolver, ident, errors.UsageError)
    assert gh.hits == []


def test_dot_segments_in_owner_repo_or_ref_are_refused_before_any_request(gh, resolver,
                                                                        tmp_path, monkeypatch):
    """URLs are normalised ('/repos/../user' is '/user'): before, github:../r@C/p fetched
    another path than it names, and a ref or --branch of '..' sent the API elsewhere (with
    the token)."""
    commit = gh.commit("o/r", {"w.bin": b"w" * 100})
    env = {"GITHUB_TOKEN": TOKEN}
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    for ident in (f"github:../r@{commit}/w.bin", f"github:o/..@{commit}/w.bin",
                  f"github:./r@{commit}/w.bin", f"{gh.raw_url}/../r/{commit}/w.bin",
                  f"{RAW_HOST}/o/../{commit}/w.bin", "github:o/r@../w.bin",
                  "github:o/r@refs/heads/../w.bin", "github:o/r@a..b/w.bin"):
        refused(resolver, ident, errors.UsageError, pin=True)
    src = tmp_path / "w.bin"
    src.write_bytes(b"up")
    for dest, branch in (("github:../user/x.bin", "main"), ("github:o/r/x.bin", "../../../../user"),
                         ("github:o/r@..%2f/x.bin", "")):
        proc = run_cli("upload", src, dest, *(["--branch", branch] if branch else []), env=env)
        assert proc.returncode == 2, (dest, branch, proc.returncode, proc.stderr)
    assert gh.hits == []


# -- branches, tags, short SHAs ------------------------------------------------------------


def test_a_branch_is_refused_with_its_pinned_identifier(gh, resolver, settings):
    commit = gh.commit("o/r", {"w.bin": data(900, 72)})
    pinned = f"{gh.raw_url}/o/r/{commit}/w.bin"  # the raw URL at the commit, for every form
    for ident in ("github:o/r@main/w.bin", f"{gh.raw_url}/o/r/main/w.bin",
                  f"{RAW_HOST}/o/r/refs/heads/main/w.bin",
                  "https://github.com/o/r/blob/main/w.bin"):
        exc = refused(resolver, ident, errors.NotPermanent)
        assert exc.suggestion == pinned and pinned in exc.message, exc
        assert "can change" in exc.message and "--pin" in exc.hint
        assert exc.to_dict()["suggestion"] == pinned
    assert gh.seen("raw") == [] and resolver.cache.entries() == []
    lookups = [h.path for h in gh.seen("api")]
    main, heads = "/api/repos/o/r/commits/main", "/api/repos/o/r/commits/heads/main"
    assert lookups == [main, main, heads, main]


def test_a_branch_is_refused_even_when_its_commit_cannot_be_looked_up(gh, monkeypatch):
    from hostkit.resolver import Resolver
    from hostkit.settings import load_settings
    from tests.servers import free_port

    monkeypatch.setenv("HOSTKIT_GITHUB_API_URL", f"http://127.0.0.1:{free_port()}")
    resolver = Resolver(load_settings())
    exc = refused(resolver, "github:o/r@main/w.bin", errors.NotPermanent)
    assert "(its commit could not be looked up: cannot connect" in exc.message
    assert exc.suggestion is None and "git ls-remote https://github.com/o/r main" in exc.hint
    refused(resolver, "github:o/r@main/w.bin", errors.Unreachable, pin=True)


def test_pin_resolves_the_commit_and_records_the_pinned_identifier(gh, resolver):
    first = data(1200, 73)
    commit = gh.commit("o/r", {"w.bin": first})
    got = resolve(resolver, "github:o/r@main/w.bin", pin=True)
    pinned = f"{gh.raw_url}/o/r/{commit}/w.bin"
    assert (got.sha256, got.identifier, got.pinned_from) == (sha(first),
                                                              pinned, "github:o/r@main/w.bin")
    assert got.to_dict()["pinned_from"] == "github:o/r@main/w.bin"
    [entry] = resolver.cache.entries()
    assert entry.identifier == pinned and commit in entry.key and entry.immutable
    # the branch moves: --pin follows it to the new commit, the old pin stays cached
    second = data(1300, 74)
    moved = gh.commit("o/r", {"w.bin": second})
    again = resolve(resolver, "github:o/r@main/w.bin", pin=True)
    assert (again.sha256, again.identifier) == (sha(second), f"{gh.raw_url}/o/r/{moved}/w.bin")
    assert resolve(resolver, pinned).cached  # the first commit's bytes, no request
    assert len(gh.seen("raw", "GET")) == 2


def test_pin_through_the_cli(gh, resolver):
    payload = data(1500, 75)
    commit = gh.commit("o/r", {"w.bin": payload})
    asked = f"{gh.raw_url}/o/r/main/w.bin"
    proc = run_cli("resolve", asked, "--pin", "--json")
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    pinned = f"{gh.raw_url}/o/r/{commit}/w.bin"
    assert (answer["identifier"], answer["pinned_from"], answer["sha256"]) == (
        pinned, asked, sha(payload))
    assert [e.identifier for e in resolver.cache.entries()] == [pinned]
    plain = run_cli("resolve", asked, "--pin")
    assert plain.returncode == 0 and f"pinned as {pinned}" in plain.stderr
    without = run_cli("resolve", asked, "--json")
    assert without.returncode == 4, without.stderr
    assert json.loads(without.stdout)["suggestion"] == pinned
    assert f"use {pinned}" in without.stderr


def test_pin_through_the_python_api(gh, tmp_path):
    from hostkit import api

    payload = data(1600, 76)
    commit = gh.commit("o/r", {"w.bin": payload})
    cache = tmp_path / "api-cache"
    with pytest.raises(errors.NotPermanent) as info:
        api.resolve("github:o/r@main/w.bin", cache_dir=cache)
    assert info.value.suggestion == f"{gh.raw_url}/o/r/{commit}/w.bin"
    path = api.resolve("github:o/r@main/w.bin", sha(payload), cache_dir=cache, pin=True)
    assert path.read_bytes() == payload
    record = api.resolve_info("github:o/r@main/w.bin", cache_dir=cache, pin=True)
    assert record.identifier == f"{gh.raw_url}/o/r/{commit}/w.bin" and record.cached
    assert record.pinned_from == "github:o/r@main/w.bin"


def test_pin_with_a_daemon_running_resolves_in_process(gh, resolver, daemon):
    """The daemon's protocol has no pin: a branch to pin is looked up by the caller."""
    payload = data(1700, 91)
    commit = gh.commit("o/r", {"w.bin": payload})
    proc = run_cli("resolve", "github:o/r@main/w.bin", "--pin", "--json", env=daemon.env)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["identifier"] == f"{gh.raw_url}/o/r/{commit}/w.bin"
    assert [e.identifier for e in resolver.cache.entries()] == [
        f"{gh.raw_url}/o/r/{commit}/w.bin"]  # this cache, not the daemon's


def test_a_tag_is_a_movable_reference_too(gh, resolver):
    old = data(800, 77)
    tagged = gh.commit("o/r", {"w.bin": old})
    gh.tag("o/r", "v1.0", tagged)
    gh.commit("o/r", {"w.bin": data(810, 78)})  # main moves on; the tag stays
    exc = refused(resolver, "github:o/r@v1.0/w.bin", errors.NotPermanent)
    assert exc.suggestion == f"{gh.raw_url}/o/r/{tagged}/w.bin" and "'v1.0'" in exc.message
    got = resolve(resolver, f"{RAW_HOST}/o/r/refs/tags/v1.0/w.bin", pin=True)
    assert got.sha256 == sha(old) and got.identifier == f"{gh.raw_url}/o/r/{tagged}/w.bin"
    assert "the tag 'v1.0'" in refused(resolver, f"{RAW_HOST}/o/r/refs/tags/v1.0/w.bin",
                                       errors.NotPermanent).message


def test_a_short_sha_is_expanded_without_pin(gh, resolver):
    payload = data(600, 79)
    commit = gh.commit("o/r", {"w.bin": payload})
    got = resolve(resolver, f"github:o/r@{commit[:7]}/w.bin")
    assert got.sha256 == sha(payload) and got.identifier == f"{gh.raw_url}/o/r/{commit}/w.bin"
    assert got.pinned_from == f"github:o/r@{commit[:7]}/w.bin"
    assert resolve(resolver, f"github:o/r@{commit[:12]}/w.bin").cached  # the same entry
    # a branch whose name looks like a short SHA is still a branch
    gh.commit("o/r", {"w.bin": data(610, 80)}, branch="deadbeef")
    exc = refused(resolver, "github:o/r@deadbeef/w.bin", errors.NotPermanent)
    assert "deadbeef" in exc.message and exc.suggestion


def test_unknown_commits_refs_and_repositories_are_not_found(gh, resolver):
    commit = gh.commit("o/r", {"w.bin": b"x" * 100})
    missing = "f" * 40
    exc = refused(resolver, f"github:o/r@{missing}/w.bin", errors.NotFound)
    assert missing in exc.message and "GH_TOKEN" in exc.hint
    exc = refused(resolver, f"github:o/r@{commit}/nope.bin", errors.NotFound)
    assert f"/o/r/tree/{commit}" in exc.hint
    exc = refused(resolver, "github:o/r@no-such-branch/w.bin", errors.NotFound)
    assert "no-such-branch" in exc.message and "git ls-remote" in exc.hint
    exc = refused(resolver, "github:o/none@main/w.bin", errors.NotFound, pin=True)
    assert "o/none" in exc.message and "GITHUB_TOKEN" in exc.hint
    assert resolver.cache.entries() == []


def test_offline_a_branch_cannot_be_looked_up(gh, resolver):
    commit = gh.commit("o/r", {"w.bin": b"y" * 100})
    exc = refused(resolver, "github:o/r@main/w.bin", errors.NotPermanent, offline=True)
    assert "offline" in exc.message
    exc = refused(resolver, "github:o/r@main/w.bin", errors.OfflineMiss, offline=True,
                  pin=True)
    assert "cannot be looked up" in exc.message
    refused(resolver, f"github:o/r@{commit[:8]}/w.bin", errors.OfflineMiss, offline=True)
    assert gh.hits == []


# -- private repositories and the token ---------------------------------------------------


def test_a_private_repository_needs_the_token(gh, resolver, monkeypatch):
    payload = data(3000, 81)
    commit = gh.commit("o/secret", {"w.bin": payload}, private=True)
    ident = f"github:o/secret@{commit}/w.bin"
    exc = refused(resolver, ident, errors.NotFound)
    assert "GH_TOKEN or GITHUB_TOKEN" in exc.hint
    exc = refused(resolver, "github:o/secret@main/w.bin", errors.NotFound, pin=True)
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    assert not resolver.remote_for(ident).anonymous  # a token is sent: not shared
    got = resolve(resolver, "github:o/secret@main/w.bin", pin=True)
    assert got.sha256 == sha(payload)
    [entry] = resolver.cache.entries()
    assert not entry.anonymous
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_wrong")
    exc = refused(resolver, "github:o/secret@main/w.bin", errors.CredentialsRefused, pin=True)
    assert "GITHUB_TOKEN" in exc.hint and "ghp_wrong" not in str(exc)
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("GH_TOKEN", TOKEN)  # gh's variable is read too
    assert resolve(resolver, ident).cached


def test_a_public_file_fetched_without_a_token_is_anonymous(gh, resolver):
    commit = gh.commit("o/r", {"w.bin": b"p" * 500})
    resolve(resolver, f"github:o/r@{commit}/w.bin")
    assert [e.anonymous for e in resolver.cache.entries()] == [True]
    assert all(h.authorization is None for h in gh.hits)


def test_the_token_never_reaches_another_host(gh, resolver, monkeypatch):
    """The raw host redirects to a CDN, the LFS server to its storage: no token there."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    big, lfs = data(40_000, 82), data(30_000, 83)
    commit = gh.commit("o/secret", {"big.bin": big, "model.bin": gh.lfs(lfs)}, private=True)
    gh.redirects.add(("o/secret", "big.bin"))
    assert resolve(resolver, f"github:o/secret@{commit}/big.bin").sha256 == sha(big)
    assert resolve(resolver, f"github:o/secret@{commit}/model.bin").sha256 == sha(lfs)
    assert {h.authorization for h in gh.seen("raw")} == {f"Bearer {TOKEN}"}
    assert [h.authorization for h in gh.seen("lfs")] != [None]  # Git's Basic form
    cdn = gh.seen("cdn")
    assert len(cdn) == 2 and not any(TOKEN in (h.authorization or "") for h in cdn)
    assert [h.authorization for h in cdn] == [None, f"RemoteAuth ticket-{sha(lfs)[:8]}"]


def test_the_token_never_shows_in_output_logs_or_the_cache(gh, tmp_path, settings):
    env = {"GITHUB_TOKEN": TOKEN}
    commit = gh.commit("o/secret", {"w.bin": data(2000, 84)}, private=True)
    runs = [run_cli("resolve", f"github:o/secret@{commit}/w.bin", "--json", "-v", env=env),
            run_cli("resolve", "github:o/secret@main/w.bin", "-v", env=env),
            run_cli("resolve", "github:o/secret@main/w.bin", "--pin", "-v", env=env),
            run_cli("resolve", f"github:o/secret@{commit}/nope.bin", "--json", "-v", env=env),
            run_cli("resolve", "github:o/secret@main/w.bin", "--pin", "-v",
                    env={"GITHUB_TOKEN": TOKEN + "x"})]
    src = tmp_path / "up.bin"
    src.write_bytes(b"upload me")
    runs.append(run_cli("upload", src, "github:o/secret/up.bin", "--branch", "main", "-v",
                        env=env))
    assert [p.returncode for p in runs] == [0, 4, 0, 4, 4, 0], [p.stderr for p in runs]
    for proc in runs:
        assert TOKEN not in proc.stdout + proc.stderr
    for path in settings.cache_dir.rglob("*"):
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


# -- Git LFS ----------------------------------------------------------------------------


def test_an_lfs_pointer_resolves_to_its_checked_object(gh, resolver):
    payload = data(50_000, 85)
    commit = gh.commit("o/r", {"model.bin": gh.lfs(payload)})
    ident = f"github:o/r@{commit}/model.bin"
    info = asyncio.run(_stat(resolver, ident))
    assert (info.size, info.digests) == (len(payload), {"sha256": sha(payload)})
    got = resolve(resolver, ident)
    assert got.path.read_bytes() == payload and got.sha256 == sha(payload)
    # the pointer is read once (it is small), the object once: nothing downloaded twice
    assert len(gh.seen("raw", "GET")) == 2  # one for stat(), one for the download
    assert len(gh.seen("cdn", "GET")) == 1 and len(gh.seen("lfs")) == 2


async def _stat(resolver, ident):
    try:
        return await resolver.remote_for(ident).stat()
    finally:
        await resolver.context.aclose()


def test_an_lfs_download_cut_short_resumes_from_its_offset(gh, resolver):
    payload = data(400_000, 86)
    commit = gh.commit("o/r", {"model.bin": gh.lfs(payload)})
    gh.cut_once.add(sha(payload))
    got = resolve(resolver, f"github:o/r@{commit}/model.bin", sha(payload))
    assert got.sha256 == sha(payload)
    first, second = gh.seen("cdn", "GET")
    assert first.range is None and second.range and second.range != "bytes=0-"


@pytest.mark.parametrize("damage", ["missing", "other bytes", "other size"])
def test_an_lfs_object_that_is_missing_or_wrong_is_refused(gh, resolver, settings, damage):
    payload = data(20_000, 87)
    commit = gh.commit("o/r", {"model.bin": gh.lfs(payload)})
    oid = sha(payload)
    if damage == "missing":
        del gh.lfs_objects[oid]
    elif damage == "other bytes":
        gh.lfs_objects[oid] = data(20_000, 88)
    else:
        gh.lfs_objects[oid] = payload + b"!"
    cls = errors.NotFound if damage == "missing" else errors.HashMismatch
    exc = refused(resolver, f"github:o/r@{commit}/model.bin", cls)
    assert oid in str(exc)
    assert resolver.cache.entries() == [] and list(settings.cache_dir.glob("blobs/*/*")) == []
    assert len(gh.seen("cdn", "GET")) <= 1  # refused, not retried


def test_a_small_file_that_is_no_pointer_is_served_as_it_is(gh, resolver):
    almost = pointer_for(b"x")[:40] + b"\n"  # starts like the spec line, but is not it
    commit = gh.commit("o/r", {"a.txt": b"tiny", "b.txt": almost})
    assert resolve(resolver, f"github:o/r@{commit}/a.txt").path.read_bytes() == b"tiny"
    assert resolve(resolver, f"github:o/r@{commit}/b.txt").path.read_bytes() == almost
    assert gh.seen("lfs") == []


def test_a_broken_pointer_is_refused(gh, resolver):
    commit = gh.commit("o/r", {"p.bin": b"version https://git-lfs.github.com/spec/v1\noid x\n"})
    exc = refused(resolver, f"github:o/r@{commit}/p.bin", errors.BackendError)
    assert "Git LFS pointer" in exc.message


# -- rate limits --------------------------------------------------------------------------


def test_a_rate_limit_reset_hours_away_fails_at_once_with_the_time(gh, resolver):
    gh.commit("o/r", {"w.bin": b"r" * 100})
    reset = int(time.time()) + 3 * 3600
    gh.fail("api", 403, {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(reset)},
            times=10)
    started = time.monotonic()
    exc = refused(resolver, "github:o/r@main/w.bin", errors.BackendError, pin=True)
    assert time.monotonic() - started < 5 and len(gh.seen("api")) == 1
    assert exc.kind == "github_rate_limited" and exc.exit_code == 4
    assert time.strftime("%H:%M:%S UTC", time.gmtime(reset)) in exc.message
    assert "GH_TOKEN" in exc.hint


@pytest.mark.parametrize("site, headers", [
    ("api", {"x-ratelimit-remaining": "0", "x-ratelimit-reset": "9" * 20}),
    ("api", {"Retry-After": "9" * 20}),
    ("raw", {"Retry-After": "9" * 20}),
    ("raw", {"Retry-After": "\u00b2"}),  # str.isdigit() says yes, float() says no
])
def test_a_rate_limit_header_a_server_lies_in_is_no_crash(gh, site, headers):
    """Before, time.gmtime() overflowed (or float() failed): a traceback from resolve and check."""
    commit = gh.commit("o/r", {"w.bin": b"l" * 100})
    gh.fail(site, 403 if "x-ratelimit-reset" in headers else 429, headers, times=20)
    ident = "github:o/r@main/w.bin" if site == "api" else f"github:o/r@{commit}/w.bin"
    started = time.monotonic()
    proc = run_cli("resolve", ident, "--pin", "--json")
    assert proc.returncode == 4, proc.stderr
    assert "Traceback" not in proc.stderr and time.monotonic() - started < 30
    assert json.loads(proc.stdout)["error"] in ("github_rate_limited", "transient")
    assert "rate limit" in proc.stderr
    check = run_cli("check", ident if site == "raw" else f"github:o/r@{commit[:9]}/w.bin",
                    "--no-download", "--json")
    assert check.returncode == 1 and "Traceback" not in check.stderr, check.stderr
    [anonymous] = [c for c in json.loads(check.stdout)[0]["checks"] if c["name"] == "anonymous"]
    assert anonymous["ok"] is False and ("rate limit" in anonymous["message"]
                                         or "429" in anonymous["message"]), anonymous


def test_a_servers_words_never_reach_the_terminal_as_control_characters(gh):
    """GitHub's 'message' is shown in errors: before, a hostile API (a mirror, an Enterprise
    host) could clear the screen, retitle the window or fake output with escape sequences."""
    gh.commit("o/r", {"w.bin": b"e" * 100})
    evil = "\x1b]0;PWNED\x07\x1b[2J\x1b[32m\u2713 all checks passed\r\u202e"
    gh.fail("api", 422, {}, times=10, message=evil)
    proc = run_cli("resolve", "github:o/r@main/w.bin", "--pin")
    assert proc.returncode == 4 and "has no branch, tag or commit" in proc.stderr
    check = run_cli("check", "github:o/r@e0e0e0e0/w.bin", "--no-download", "-v")
    assert check.returncode == 1, check.stderr
    for out in (proc.stderr, check.stdout + check.stderr):
        assert not any(c in out for c in "\x1b\x07\r\u202e"), out
        assert "\\x1b]0;PWNED\\x07" in out  # shown, as text


def test_a_short_rate_limit_is_waited_out(gh, resolver):
    payload = data(3000, 89)
    commit = gh.commit("o/r", {"w.bin": payload})
    gh.fail("api", 429, {"Retry-After": "1"})
    gh.fail("raw", 403, {"x-ratelimit-remaining": "0",
                         "x-ratelimit-reset": str(int(time.time()) + 1)})
    got = resolve(resolver, "github:o/r@main/w.bin", pin=True)
    assert got.identifier == f"{gh.raw_url}/o/r/{commit}/w.bin"
    for site in ("api", "raw"):
        first, second = gh.seen(site)[:2]
        assert second.at - first.at >= 0.99, site  # at least what the server asked


def test_the_resolver_waits_at_least_retry_after(gh, resolver):
    """Before, it retried after 50% to 100% of a server's Retry-After."""
    commit = gh.commit("o/r", {"w.bin": b"w" * 100})
    gh.fail("raw", 503, {"Retry-After": "1"}, times=2)
    resolve(resolver, f"github:o/r@{commit}/w.bin")
    gets = gh.seen("raw", "GET")
    assert len(gets) == 3 and all(b.at - a.at >= 0.99 for a, b in itertools.pairwise(gets))


def test_a_failing_lfs_server_or_listing_is_retried_by_the_resolver_alone(gh, resolver):
    """Before, the LFS batch call and the folder listing were retried inside the resolver's
    own retries: (retries + 1)² requests to a server answering 503 (36 by default, about a
    minute and a half of backoff before the error)."""
    commit = gh.commit("o/r", {"m.bin": gh.lfs(data(2000, 92))})
    tries = resolver.settings.retries + 1
    gh.fail("lfs", 503, {}, times=100)
    refused(resolver, f"github:o/r@{commit}/m.bin", errors.TransientError)
    gh.fail("api", 503, {}, times=100)
    refused(resolver, f"github:o/r@{commit}/", errors.TransientError)
    assert (len(gh.seen("lfs")), len(gh.seen("api"))) == (tries, tries)


# -- uploads ------------------------------------------------------------------------------


def test_upload_round_trip_through_the_cli(gh, resolver, tmp_path):
    gh.commit("o/r", {"README": b"hi"})
    src = tmp_path / "weights.bin"
    payload = data(70_000, 90)
    src.write_bytes(payload)
    env = {"GITHUB_TOKEN": TOKEN}
    proc = run_cli("upload", src, "github:o/r/models/", "--branch", "main", "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    commit = gh.repos["o/r"].branches["main"]
    assert answer == {"identifier": f"{gh.raw_url}/o/r/{commit}/models/weights.bin",
                      "sha256": sha(payload), "size": len(payload), "created": True}
    assert gh.repos["o/r"].commits[commit]["models/weights.bin"] == payload
    got = run_cli("resolve", answer["identifier"], answer["sha256"], "--json", env=env)
    assert got.returncode == 0 and json.loads(got.stdout)["sha256"] == sha(payload)
    again = run_cli("upload", src, "github:o/r/models/weights.bin", "--branch", "main",
                    env=env)
    assert again.returncode == 0 and "nothing was uploaded" in again.stderr
    assert again.stdout.split()[0] == answer["identifier"]  # pinned where the bytes are
    assert gh.repos["o/r"].branches["main"] == commit
    assert len(gh.seen("api", "PUT")) == 1


def test_upload_replaces_only_with_overwrite_and_keeps_the_old_commit(gh, resolver, tmp_path):
    from hostkit import api

    first = gh.commit("o/r", {"w.bin": b"old bytes"})
    src = tmp_path / "w.bin"
    src.write_bytes(b"new bytes")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_TOKEN", TOKEN)
        with pytest.raises(errors.AlreadyExists):
            api.upload(src, "github:o/r@main/w.bin", settings=resolver.settings)
        result = api.upload(src, "github:o/r@main/w.bin", overwrite=True,
                            settings=resolver.settings)
        assert result.created and result.sha256 == sha(b"new bytes")
        assert result.url == result.identifier
        assert resolve(resolver, result.identifier).path.read_bytes() == b"new bytes"
        assert resolve(resolver, f"github:o/r@{first}/w.bin").path.read_bytes() == b"old bytes"
        # no branch named: the repository's default branch
        other = api.upload(src, "github:o/r/copy.bin", settings=resolver.settings)
        assert gh.repos["o/r"].branches["main"] in other.identifier


def test_upload_content_addressed_and_a_branch_given_twice(gh, resolver, tmp_path):
    from hostkit import api

    gh.commit("o/r", {"README": b"hi"})
    gh.commit("o/r", {"README": b"hi"}, branch="data")
    src = tmp_path / "w.bin"
    src.write_bytes(b"content")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GITHUB_TOKEN", TOKEN)
        result = api.upload(src, "github:o/r@data/objects", content_addressed=True,
                            settings=resolver.settings)
        assert result.identifier.endswith(f"/objects/{sha(b'content')}")
        assert gh.repos["o/r"].branches["data"] in result.identifier
        both = run_cli("upload", src, "github:o/r@data/x.bin", "--branch", "main",
                       env={"GITHUB_TOKEN": TOKEN})
        assert both.returncode == 2 and "name the branch once" in both.stderr


def test_upload_refusals_before_any_request(gh, tmp_path):
    src = tmp_path / "w.bin"
    src.write_bytes(b"x")
    no_token = run_cli("upload", src, "github:o/r/w.bin", "--branch", "main")
    assert no_token.returncode == 4 and "GH_TOKEN or GITHUB_TOKEN" in no_token.stderr
    huge = tmp_path / "huge.bin"
    with open(huge, "wb") as f:
        f.truncate((100 << 20) + 1)  # sparse: no 100 MiB written
    too_big = run_cli("upload", huge, "github:o/r/huge.bin", env={"GITHUB_TOKEN": TOKEN})
    assert too_big.returncode == 2 and "100 MiB" in too_big.stderr
    assert "s3://" in too_big.stderr
    not_github = run_cli("upload", src, "s3://bucket/w.bin", "--branch", "main")
    assert not_github.returncode == 2 and "--branch is for github:" in not_github.stderr
    at_commit = run_cli("upload", src, f"github:o/r@{'a' * 40}/w.bin",
                        env={"GITHUB_TOKEN": TOKEN})
    assert at_commit.returncode == 2 and "commits to a branch" in at_commit.stderr
    assert gh.hits == []


# -- hostkit check ----------------------------------------------------------------------------


def checked(*args, env=None):
    """``hostkit check ARGS --json`` through the CLI: (exit status, {name: check} of each)."""
    proc = run_cli("check", *args, "--json", env=env)
    assert "Traceback" not in proc.stderr, proc.stderr
    reports = json.loads(proc.stdout)
    return proc.returncode, reports, [{c["name"]: c for c in r["checks"]} for r in reports]


def test_check_an_lfs_file_is_not_a_direct_download_of_its_raw_url(gh):
    """A plain GET of the raw URL (what MedPerf's users do) gets the pointer, not the
    object: before, check passed it and printed the object's sha256 to submit with it."""
    payload = data(30_000, 92)
    small = b"version 1.2 of the labels\n"  # a small file that merely starts with 'version '
    commit = gh.commit("o/r", {"model.bin": gh.lfs(payload), "labels.txt": small})
    status, reports, found = checked(f"github:o/r@{commit}/model.bin",
                                     f"{gh.raw_url}/o/r/{commit}/model.bin",
                                     f"github:o/r@{commit}/labels.txt")
    assert status == 1
    for report, verdict in zip(reports[:2], found[:2], strict=True):
        direct = verdict["direct"]
        assert direct["ok"] is False and "Git LFS pointer" in direct["message"], direct
        assert f"a {len(payload)}-byte object" in direct["message"]
        assert "the pointer, not the file" in direct["message"]
        assert verdict["anonymous"]["ok"] is True and verdict["permanent"]["ok"] is True
        assert report["submit"] is None and report["sha256"] is None
        assert direct["suggestion"] is None  # a stand-in raw host: no GitHub media host
    assert reports[2]["ok"] is True and reports[2]["sha256"] == sha(small)
    assert reports[2]["submit"] == f"{gh.raw_url}/o/r/{commit}/labels.txt"
    assert all(h.authorization is None for h in gh.seen("raw"))


def test_check_a_branch_in_github_form_judges_the_file_it_names_now(gh):
    """Before, a github:owner/repo@BRANCH/path failed 'reachable anonymously' with 'MedPerf
    cannot download github: identifiers', whatever the file was."""
    payload = data(4000, 93)
    commit = gh.commit("o/r", {"w.bin": payload, "m.bin": gh.lfs(data(5000, 94))})
    pinned = f"{gh.raw_url}/o/r/{commit}/w.bin"
    status, reports, found = checked("github:o/r@main/w.bin", "github:o/r@main/m.bin",
                                     f"{gh.raw_url}/o/r/main/m.bin", "--fix")
    assert status == 1
    assert found[0]["anonymous"]["ok"] is True, found[0]["anonymous"]
    assert found[0]["direct"]["ok"] is True
    assert found[0]["permanent"]["ok"] is False and found[0]["permanent"]["suggestion"] == pinned
    assert reports[0]["fixed"]["submit"] == pinned and reports[0]["fixed"]["sha256"] == sha(payload)
    for lfs in found[1:]:  # the raw URL at a branch too: a plain GET gets the pointer
        assert lfs["direct"]["ok"] is False and "Git LFS pointer" in lfs["direct"]["message"]
        assert lfs["permanent"]["ok"] is False


def test_check_json_has_every_check_for_every_identifier(gh, origin):
    """Before, an identifier that failed early (a branch that does not exist, a folder URL,
    one hostkit cannot read) had no 'direct' or 'permanent' check in --json."""
    gh.commit("o/r", {"w.bin": b"x" * 100})
    status, reports, found = checked("github:o/r@no-such-branch/w.bin", f"{origin.url}/f/",
                                     "nosuch:thing", "--no-download")
    assert status == 2  # nosuch: cannot be read
    names = ["anonymous", "direct", "permanent", "download"]
    assert [list(f) for f in found] == [names, names, ["identifier", *names]]
    assert found[0]["anonymous"]["ok"] is False and "no-such-branch" in \
        found[0]["anonymous"]["message"]
    folder = found[1]
    assert folder["direct"]["ok"] is False and "not one file" in folder["direct"]["message"]
    assert folder["anonymous"]["ok"] is None and folder["permanent"]["ok"] is None
    assert all(f[name]["ok"] is None for name in names for f in found[2:])


def test_check_a_branch_lookup_that_hangs_is_bounded(gh, tmp_path):
    """The branch or short-SHA lookup ran outside check's time limit: with retries, a silent
    API held check for (retries + 1) x the read timeout."""
    import socket

    silent = socket.socket()
    silent.bind(("127.0.0.1", 0))
    silent.listen(64)  # connections complete, and nothing ever answers
    try:
        env = {"HOSTKIT_GITHUB_API_URL": f"http://127.0.0.1:{silent.getsockname()[1]}/api",
               "HOSTKIT_READ_TIMEOUT": "1", "HOSTKIT_CONNECT_TIMEOUT": "1",
               "HOSTKIT_RETRIES": "12"}
        started = time.monotonic()
        status, reports, found = checked("github:o/r@abcdef12/w.bin", "--no-download",
                                         env=env)
        took = time.monotonic() - started
    finally:
        silent.close()
    assert status == 1 and took < 9, took  # the limit: connect + 2 x read = 3 s
    assert found[0]["anonymous"]["ok"] is False and "no answer within 3 s" in \
        found[0]["anonymous"]["message"]
    assert found[0]["permanent"]["ok"] is None  # never learnt what the short SHA names


def test_check_a_branch_whose_commit_cannot_be_looked_up(gh):
    """Before: 'reachable anonymously' failed with 'MedPerf cannot download github:
    identifiers' and its fix 'host the file where MedPerf can read it'."""
    from tests.servers import free_port

    env = {"HOSTKIT_GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"}  # nothing listens
    status, reports, found = checked("github:o/r@main/w.bin", "--no-download", env=env)
    assert status == 1
    assert found[0]["anonymous"]["ok"] is None, found[0]["anonymous"]
    assert found[0]["permanent"]["ok"] is False
    assert "could not be looked up" in found[0]["permanent"]["message"]
    assert "git ls-remote" in found[0]["permanent"]["fix"]


def test_check_a_private_repository_says_so(gh):
    """GitHub answers 404 to an anonymous GET of a private file: before, check said 'the file
    may have moved or been deleted' next to the author's own download of it."""
    payload = data(3000, 95)
    commit = gh.commit("o/secret", {"w.bin": payload}, private=True)
    status, reports, found = checked(f"github:o/secret@{commit}/w.bin", "-v",
                                     env={"GITHUB_TOKEN": TOKEN})
    assert status == 1
    anonymous = found[0]["anonymous"]
    assert anonymous["ok"] is False and "private" in anonymous["message"], anonymous
    assert "moved or been deleted" not in anonymous["fix"]
    assert "public repository" in anonymous["fix"]
    assert found[0]["download"]["ok"] is True and reports[0]["sha256"] == sha(payload)
    anonymous_gets = [h for h in gh.seen("raw") if h.range == "bytes=0-4095"]
    assert anonymous_gets and all(h.authorization is None for h in anonymous_gets)
    assert TOKEN not in json.dumps(reports)


# -- hostile answers ------------------------------------------------------------------------


@pytest.mark.parametrize("body, content_type, said", [
    (b"<!doctype html><html><body><form action=/login>Sign in</form></body></html>",
     "text/html", ("did not answer with a commit", "without JSON")),
    (b'{"tree": [' + b" " * (9 << 20) + b"]}", "application/json",
     ("over 8388608 bytes", "over 8388608 bytes")),
])
def test_an_api_answer_that_is_a_page_or_huge_is_a_clear_error(gh, resolver, body,
                                                               content_type, said):
    commit = gh.commit("o/r", {"w.bin": b"h" * 100})
    gh.fail("api", 200, {}, times=2, body=body, content_type=content_type)
    lookup = refused(resolver, "github:o/r@main/w.bin", errors.BackendError, pin=True)
    listing = refused(resolver, f"github:o/r@{commit}/", errors.BackendError)
    for exc, text in zip((lookup, listing), said, strict=True):
        assert text in exc.message and "api_url" in exc.hint


def test_a_redirect_or_lfs_link_no_client_may_follow_is_a_clear_error(gh, resolver,
                                                                     monkeypatch):
    """Before, a port out of range (in a raw host's redirect or the LFS server's link) raised
    ValueError from the token's host check, and a redirect to user:password@ a configured
    host aiohttp's ValueError (the token and the URL's credentials): tracebacks."""
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    lfs = data(2000, 91)
    commit = gh.commit("o/r", {"w.bin": b"x" * 100, "m.bin": gh.lfs(lfs)})
    raw_host = gh.raw_url.rpartition("/")[0].removeprefix("http://")
    for location in ("http://127.0.0.1:99999/x", f"http://user:pw@{raw_host}/raw/x"):
        gh.fail("raw", 302, {"Location": location})
        exc = refused(resolver, f"github:o/r@{commit}/w.bin", errors.BackendError)
        assert "redirected to a URL" in exc.message and "pw" not in exc.message
    gh.lfs_hrefs[sha(lfs)] = "http://127.0.0.1:99999/object"
    exc = refused(resolver, f"github:o/r@{commit}/m.bin", errors.BackendError)
    assert "gave no usable download link" in exc.message


@pytest.mark.parametrize("url, token", [
    ("http://user:s3cret@127.0.0.1:9/api", None),
    ("http://user:s3cret@127.0.0.1:9/api", TOKEN),
    ("http://127.0.0.1:99999/api", TOKEN),
])
def test_a_host_setting_with_a_password_or_a_bad_port_is_refused_unshown(gh, url, token):
    """Before, a user:password in api_url was printed in every 'cannot connect' message (and
    with a token, aiohttp refused the pair: a traceback), and a port out of range was a
    traceback too."""
    proc = run_cli("resolve", "github:o/r@main/w.bin", "--pin",
                   env={"HOSTKIT_GITHUB_API_URL": url, **({"GITHUB_TOKEN": token} if token
                                                          else {})})
    assert proc.returncode == 2 and "HOSTKIT_GITHUB_API_URL" in proc.stderr, proc.stderr
    assert "s3cret" not in proc.stderr and "Traceback" not in proc.stderr
    assert gh.hits == []


# -- settings and listings ------------------------------------------------------------------


def test_hosts_come_from_settings_and_bad_ones_are_named(gh, resolver, monkeypatch,
                                                         isolated_env):
    proc = run_cli("config", "--json")
    rows = {r["key"]: r for r in json.loads(proc.stdout)["backends"] if r["backend"] == "github"}
    assert rows["api_url"]["value"] == gh.api_url and rows["lfs_url"]["value"] == gh.lfs_url
    assert set(rows) == {"api_url", "raw_url", "lfs_url", "branch"}
    bad = run_cli("resolve", "github:o/r@main/w.bin", env={"HOSTKIT_GITHUB_API_URL": "ftp://x"})
    assert bad.returncode == 2 and "HOSTKIT_GITHUB_API_URL" in bad.stderr


def test_plugins_lists_the_forms(gh):
    proc = run_cli("plugins", "--json")
    [row] = [r for r in json.loads(proc.stdout)["backends"] if r["backend"] == "github"]
    assert "https://github.com/owner/repo/blob/<commit>/path" in row["examples"]
    assert "--pin" in row["summary"]
