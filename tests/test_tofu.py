"""Trust on first use that notices changes: the same identifier, other bytes.

The origin (tests/origin.py) serves NAME; the test changes its bytes (a new ETag), so
the next resolve without a hash revalidates, downloads and finds another sha256.
"""

from __future__ import annotations

import asyncio
import json
import warnings

import pytest

from hostkit.formatting import iso_time
from tests.conftest import run_cli
from tests.test_resolve import data

pytestmark = pytest.mark.timeout(120)


def _entry(url: str, *extra) -> dict:
    info = json.loads(run_cli("cache", "info", url, "--json", *extra, check=True).stdout)
    (entry,) = info["entries"]
    return entry


def test_changed_bytes_warn_with_both_hashes_and_the_old_time(origin):
    old = origin.add("ch.bin", data(3000, 900))
    url = f"{origin.url}/f/ch.bin"
    first = run_cli("resolve", url, check=True)
    assert "changed" not in first.stderr
    recorded = _entry(url)["created"]
    same = run_cli("resolve", url, check=True)  # unchanged: nothing to say
    assert "changed" not in same.stderr
    new = origin.add("ch.bin", data(3100, 901))
    proc = run_cli("resolve", url, "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["sha256"] == new
    assert out["changed_from"] == {"sha256": old, "recorded_at": iso_time(recorded)}
    assert f"warning: {url} changed" in proc.stderr
    assert f"sha256:{old}" in proc.stderr and f"sha256:{new}" in proc.stderr
    assert iso_time(recorded) in proc.stderr
    entry = _entry(url)
    assert entry["sha256"] == new and entry["created"] > recorded  # the new bytes' own time
    quiet = run_cli("resolve", url, "-q", check=True)  # and no warning once it is known
    assert quiet.stderr == ""


def test_a_new_etag_for_the_same_bytes_is_not_a_change(origin):
    sha = origin.add("etag.bin", data(2000, 902))
    url = f"{origin.url}/f/etag.bin"
    run_cli("resolve", url, check=True)
    # the origin's ETag follows its bytes: the index is told another one instead, as if
    # the origin had re-tagged the same bytes
    import sqlite3

    from hostkit.settings import load_settings
    from hostkit.store.layout import Layout

    db = sqlite3.connect(Layout(load_settings().cache_dir).index_path)
    with db:
        db.execute("UPDATE entries SET validator='\"stale\"'")
    db.close()
    proc = run_cli("resolve", url, "--json", check=True)
    assert json.loads(proc.stdout)["sha256"] == sha and "changed_from" not in proc.stdout
    assert "changed" not in proc.stderr
    assert origin.gets("etag.bin")[-1:]  # it did download again (the validator differed)


def test_require_same_refuses_and_keeps_the_old_bytes(origin):
    old = origin.add("strict.bin", data(2500, 903))
    url = f"{origin.url}/f/strict.bin"
    old_path = run_cli("resolve", url, check=True).stdout.strip()
    recorded = _entry(url)["created"]
    new = origin.add("strict.bin", data(2600, 904))
    proc = run_cli("resolve", url, "--require-same")
    assert proc.returncode == 3, proc.stderr
    assert f"sha256:{old}" in proc.stderr and f"sha256:{new}" in proc.stderr
    assert iso_time(recorded) in proc.stderr and "--require-same" in proc.stderr
    assert proc.stdout == ""
    entry = _entry(url)
    assert entry["sha256"] == old and entry["created"] == recorded
    info = run_cli("cache", "info", url, check=True).stdout
    assert old in info and new not in info
    # the setting does the same, and --json carries the error's fields
    env = run_cli("resolve", url, "--json", env={"HOSTKIT_REQUIRE_SAME": "1"})
    assert env.returncode == 3
    err = json.loads(env.stdout)
    assert err["error"] == "content_changed" and err["expected"] == f"sha256:{old}"
    assert err["found"] == f"sha256:{new}" and err["recorded_at"] == iso_time(recorded)
    assert _entry(url)["sha256"] == old
    # the old bytes still answer by their hash; accepting the change is one lenient resolve
    assert run_cli("resolve", url, old, check=True).stdout.strip() == old_path
    accepted = run_cli("resolve", url, check=True)
    assert "changed" in accepted.stderr and _entry(url)["sha256"] == new


def test_require_same_is_a_setting_shown_by_config():
    proc = run_cli("config", "--json", env={"HOSTKIT_REQUIRE_SAME": "1"}, check=True)
    row = json.loads(proc.stdout)["core"]["require_same"]
    assert row == {"name": "require_same", "value": "True", "source": "HOSTKIT_REQUIRE_SAME"}
    bad = run_cli("resolve", "https://example.invalid/x", env={"HOSTKIT_REQUIRE_SAME": "ture"})
    assert bad.returncode == 2 and "HOSTKIT_REQUIRE_SAME" in bad.stderr


def test_the_api_warns_and_the_resolver_publishes_changed(origin, settings):
    import hostkit
    from hostkit import api, events
    from hostkit.errors import ContentChanged, ContentChangedWarning
    from hostkit.resolver import Resolver

    old = origin.add("api.bin", data(1800, 905))
    url = f"{origin.url}/f/api.bin"
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        hostkit.resolve(url)
    new = origin.add("api.bin", data(1900, 906))
    with pytest.warns(ContentChangedWarning, match=f"sha256:{old}.*sha256:{new}") as caught:
        path = hostkit.resolve(url)
    assert path.name == new
    assert caught[0].filename == __file__  # it points at the caller, not at hostkit
    info = api.resolve_info(url)  # known now: no warning, no change
    assert info.changed_from is None

    newer = origin.add("api.bin", data(2000, 907))
    seen: list[events.Event] = []

    async def go(resolver):
        resolver.events.subscribe(seen.append)
        try:
            with pytest.raises(ContentChanged) as refused:
                await resolver.resolve(url, require_same=True)
            resolved = await resolver.resolve(url)
        finally:
            await resolver.aclose()
        return refused.value, resolved

    refused, resolved = asyncio.run(go(Resolver(settings)))
    assert refused.exit_code == 3 and refused.http_status == 409
    assert (refused.expected, refused.found) == (f"sha256:{new}", f"sha256:{newer}")
    assert resolved.changed_from["sha256"] == new and resolved.sha256 == newer
    changed = [e for e in seen if isinstance(e, events.Changed)]
    assert [(e.old_sha256, e.new_sha256, e.accepted) for e in changed] == [
        (new, newer, False), (new, newer, True)]
    assert changed[0].identifier == url and changed[0].old_recorded_at > 0


def test_changes_through_the_daemon(daemon, origin):
    old = origin.add("dch.bin", data(2200, 908))
    url = f"{origin.url}/f/dch.bin"
    first = json.loads(run_cli("resolve", url, "--json", env=daemon.env, check=True).stdout)
    assert first["path"].startswith(str(daemon.settings.cache_dir))
    new = origin.add("dch.bin", data(2300, 909))
    refused = run_cli("resolve", url, "--require-same", env=daemon.env)
    assert refused.returncode == 3, refused.stderr
    assert f"sha256:{old}" in refused.stderr and f"sha256:{new}" in refused.stderr
    dcache = str(daemon.settings.cache_dir)
    assert _entry(url, "--cache-dir", dcache)["sha256"] == old
    proc = run_cli("resolve", url, "--json", env=daemon.env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["path"].startswith(dcache)
    assert out["changed_from"]["sha256"] == old and out["sha256"] == new
    assert f"sha256:{old}" in proc.stderr and f"sha256:{new}" in proc.stderr
    assert _entry(url, "--cache-dir", dcache)["sha256"] == new


def test_resolve_info_warns_at_its_caller_too(origin, settings):
    from hostkit import api
    from hostkit.errors import ContentChangedWarning

    origin.add("where.bin", data(1100, 909))
    url = f"{origin.url}/f/where.bin"
    api.resolve_info(url)
    new = origin.add("where.bin", data(1200, 910))
    with pytest.warns(ContentChangedWarning, match=f"sha256:{new}") as caught:
        api.resolve_info(url)
    assert caught[0].filename == __file__
