"""Several things at once: ``hostkit resolve ID ID...``, ``-r FILE``, ``hostkit lock``.

Real CLI processes against the real origin (tests/origin.py) and the gated origin
(tests/daemon_fixtures.py); exit codes, JSON and stderr are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib

import pytest

from tests.conftest import run_cli
from tests.daemon_fixtures import payload
from tests.test_resolve import data

pytestmark = pytest.mark.timeout(120)


def _json(proc) -> list | dict:
    assert "Traceback" not in proc.stderr, proc.stderr
    return json.loads(proc.stdout)


def test_several_identifiers_each_with_its_own_hash_form(origin):
    """Positionals that parse as hashes belong to the identifier before them; ID=HASH and
    --hash after an identifier too; anything else is another identifier."""
    shas = [origin.add(f"m{i}.bin", data(2000 + i, 700 + i)) for i in range(5)]
    urls = [f"{origin.url}/f/m{i}.bin" for i in range(5)]
    proc = run_cli("resolve", urls[0], urls[1], f"{urls[2]}=sha256:{shas[2]}",
                   urls[3], "--hash", f"sha256:{shas[3]}", urls[4], shas[4], "--json")
    assert proc.returncode == 0, proc.stderr
    out = _json(proc)
    assert [o["identifier"] for o in out] == urls
    assert [o["sha256"] for o in out] == shas
    assert [o["verified"] for o in out] == [False, False, True, True, True]
    assert all(os.path.isfile(o["path"]) for o in out)
    # plain output: one path a line, in the order given; the summary on stderr
    again = run_cli("resolve", *urls)
    assert again.returncode == 0, again.stderr
    assert again.stdout.split() == [o["path"] for o in out]
    assert "5 resolved (5 cached)" in again.stderr


def test_hash_flag_binds_to_the_identifier_before_it(origin):
    a, b = origin.add("hb-a.bin", data(900, 710)), origin.add("hb-b.bin", data(901, 711))
    ua, ub = f"{origin.url}/f/hb-a.bin", f"{origin.url}/f/hb-b.bin"
    first = _json(run_cli("resolve", ua, ub, "--hash", b, "--json"))
    assert [o["verified"] for o in first] == [False, True]
    # (a hash whose bytes are cached answers from the cache: these bytes are nowhere)
    wrong = run_cli("resolve", ua, "--hash", "sha256:" + "0" * 64, ub, "--json")
    assert wrong.returncode == 3
    out = _json(wrong)
    assert out[0]["error"] == "hash_mismatch" and out[0]["identifier"] == ua
    assert out[1]["sha256"] == b  # (verified: its entry was, by the first call)
    assert a in out[0]["found"]
    # old single forms keep working: --hash before the identifier, ID HASH --hash HASH
    assert run_cli("resolve", "--hash", a, ua, check=True).stdout.strip().endswith(a)
    assert run_cli("resolve", ua, a, "--hash", f"sha256:{a}", check=True)
    clash = run_cli("resolve", ua, a, "--hash", b)
    assert clash.returncode == 2 and "two different hashes" in clash.stderr


def test_equals_splits_only_before_a_hash(origin):
    """``ID=HASH`` splits on the last '=' only when a hash follows, and a bare hex digest
    after '=' in a query string stays part of the URL (a signature, say)."""
    sha = origin.add("eq.bin", data(1500, 720))
    url = f"{origin.url}/f/eq.bin"
    out = _json(run_cli("resolve", f"{url}?v=1", f"{url}?v=2=sha256:{sha}",
                        f"{url}?v=3&sig={sha}", f"{url}={sha}", "--json"))
    assert [o.get("verified") for o in out] == [False, True, False, True], out
    assert out[1]["identifier"] == f"{url}?v=2"
    assert "=" + sha not in out[1]["identifier"]
    assert out[3]["identifier"] == url


def test_worst_outcome_is_the_exit_status(origin):
    """3 (hash mismatch) outranks 4 (not found); every item has its own answer."""
    sha = origin.add("ok.bin", data(1000, 730))
    ok, missing = f"{origin.url}/f/ok.bin", f"{origin.url}/f/absent.bin"
    proc = run_cli("resolve", ok, missing, f"{ok}=sha256:{'0' * 64}", "--json")
    assert proc.returncode == 3, proc.stderr
    out = _json(proc)
    assert out[0]["sha256"] == sha
    assert out[1]["error"] == "not_found" and out[1]["identifier"] == missing
    assert out[2]["error"] == "hash_mismatch" and out[2]["identifier"] == ok
    assert "1 resolved (1 downloaded" in proc.stderr and "2 failed" in proc.stderr
    assert "not found" in proc.stderr and "hash mismatch" in proc.stderr
    only_missing = run_cli("resolve", ok, missing)
    assert only_missing.returncode == 4
    assert only_missing.stdout.split() == [_json(run_cli("resolve", ok, sha, "--json"))["path"]]


def test_a_bad_item_refuses_the_whole_list_before_any_download(origin):
    origin.add("nodl.bin", data(1000, 740))
    good = f"{origin.url}/f/nodl.bin"
    proc = run_cli("resolve", good, "ftp://host/x", "nope:", f"{good}=sha256:12", "--json")
    assert proc.returncode == 2, proc.stderr
    out = _json(proc)
    assert [o["error"] for o in out] == ["not_run", "unknown_scheme", "usage", "bad_hash"]
    assert [o["identifier"] for o in out][:2] == [good, "ftp://host/x"]
    assert "3 of 4 items refused; nothing was resolved" in proc.stderr
    assert not origin.requests("nodl.bin")
    strict = run_cli("resolve", good, f"{good}={'a' * 64}", "--require-hash")
    assert strict.returncode == 2 and "hash is required" in strict.stderr
    assert not origin.requests("nodl.bin")


def test_list_file_with_comments_and_a_missing_file(origin, tmp_path):
    shas = [origin.add(f"l{i}.bin", data(1200 + i, 750 + i)) for i in range(3)]
    urls = [f"{origin.url}/f/l{i}.bin" for i in range(3)]
    listing = tmp_path / "assets.txt"
    listing.write_text(f"# the assets\n\n{urls[0]}\n  {urls[1]}  sha256:{shas[1]}  # pinned\n"
                       f"{urls[2]} {shas[2]}\n")
    out = _json(run_cli("resolve", "-r", listing, "--json", check=True))
    assert [o["sha256"] for o in out] == shas
    assert [o["verified"] for o in out] == [False, True, True]
    listing.write_text(f"{urls[0]} sha256:{shas[0]} extra\n")
    bad = run_cli("resolve", "-r", listing)
    assert bad.returncode == 2 and f"{listing}:1" in bad.stderr
    gone = run_cli("resolve", "-r", tmp_path / "nothing.txt")
    assert gone.returncode == 2 and "cannot read" in gone.stderr
    listing.write_text("# nothing\n")
    empty = run_cli("resolve", "-r", listing)
    assert empty.returncode == 2 and "no identifiers" in empty.stderr


def test_output_directory_and_clashing_names(origin, tmp_path):
    shas = [origin.add("od-a.bin", data(800, 760)), origin.add("od-b.bin", data(801, 761))]
    urls = [f"{origin.url}/f/od-a.bin", f"{origin.url}/f/od-b.bin"]
    out_dir = tmp_path / "out"
    proc = run_cli("resolve", *urls, "-o", f"{out_dir}/", "--json")
    assert proc.returncode == 0, proc.stderr
    out = _json(proc)
    assert [o["placed"] for o in out] == [str(out_dir / "od-a.bin"), str(out_dir / "od-b.bin")]
    assert (out_dir / "od-b.bin").read_bytes() == data(801, 761)
    plain = run_cli("resolve", *urls, "-o", out_dir, check=True)  # an existing folder
    assert plain.stdout.split() == [o["placed"] for o in out]
    not_dir = run_cli("resolve", *urls, "-o", tmp_path / "file.bin")
    assert not_dir.returncode == 2 and "DIR/" in not_dir.stderr
    origin.hits.clear()
    clash = run_cli("resolve", urls[0], f"{origin.url}/redirect/1/od-a.bin", "-o", f"{out_dir}/")
    assert clash.returncode == 2 and "od-a.bin" in clash.stderr and "same name" in clash.stderr
    assert not origin.requests()
    assert shas


def test_downloads_run_in_parallel_up_to_jobs(gated, tmp_path):
    """-j 2: two downloads are in flight at once, the third waits for a free slot."""
    names = [f"par-{i}.bin" for i in range(3)]
    for i, name in enumerate(names):
        gated.add(name, payload(400_000, 800 + i))
        gated.hold(name)
    env = {**os.environ, "HOSTKIT_CACHE_DIR": str(tmp_path / "pcache")}
    proc = subprocess.Popen([sys.executable, "-m", "hostkit.cli", "resolve", "-j", "2",
                             "--json", *map(gated.file_url, names)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        gated.wait_started(names[0])
        gated.wait_started(names[1])  # both at once: neither has finished
        assert not gated.gets(names[2])
        gated.release(names[0])
        gated.wait_started(names[2])
        for name in names:
            gated.release(name)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    assert [o["size"] for o in json.loads(stdout)] == [400_000] * 3


def test_several_through_the_daemon(daemon, origin):
    shas = [origin.add(f"dm{i}.bin", data(1100 + i, 770 + i)) for i in range(2)]
    urls = [f"{origin.url}/f/dm{i}.bin" for i in range(2)]
    proc = run_cli("resolve", *urls, f"{origin.url}/f/dm-none.bin", "--json", env=daemon.env)
    assert proc.returncode == 4, proc.stderr
    out = _json(proc)
    assert [o.get("sha256") for o in out[:2]] == shas
    assert all(o["path"].startswith(str(daemon.settings.cache_dir)) for o in out[:2])
    assert out[2]["error"] == "not_found"


# -- lock files ------------------------------------------------------------------------


def test_lock_then_resolve_the_lock_verifies_everything(origin, tmp_path):
    shas = [origin.add(f"lk{i}.bin", data(1300 + i, 780 + i)) for i in range(2)]
    urls = [f"{origin.url}/f/lk{i}.bin" for i in range(2)]
    lock = tmp_path / "hostkit.lock"
    proc = run_cli("lock", urls[0], f"{urls[1]}=sha256:{shas[1]}", "-o", lock)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == str(lock) and "2 added, 0 updated" in proc.stderr
    doc = tomllib.loads(lock.read_text())
    assert doc["version"] == 1
    assert doc["file"] == [{"identifier": urls[0], "hash": f"sha256:{shas[0]}", "size": 1300},
                           {"identifier": urls[1], "hash": f"sha256:{shas[1]}", "size": 1301}]
    out = _json(run_cli("resolve", "-r", lock, "--json", check=True))
    assert [o["verified"] for o in out] == [True, True]
    # a fresh cache (another machine) and changed bytes at the origin: refused
    origin.add("lk0.bin", data(1300, 999))
    fresh = run_cli("resolve", "-r", lock, "--cache-dir", tmp_path / "fresh")
    assert fresh.returncode == 3 and "hash mismatch" in fresh.stderr and shas[0] in fresh.stderr


def test_lock_updates_and_adds_entries_keeping_output_names(origin, tmp_path):
    origin.add("up-a.bin", data(600, 790))
    sha_b = origin.add("up-b.bin", data(601, 791))
    ua, ub = f"{origin.url}/f/up-a.bin", f"{origin.url}/f/up-b.bin"
    lock = tmp_path / "assets.lock"
    run_cli("lock", ua, "-o", lock, check=True)
    named = 'size = 600\noutput = "renamed \\"a\\".bin"'  # a name with quotes, by hand
    lock.write_text(lock.read_text().replace("size = 600", named))
    new_a = origin.add("up-a.bin", data(650, 792))
    proc = run_cli("lock", ub, ua, "-o", lock)
    assert proc.returncode == 0, proc.stderr
    entries = tomllib.loads(lock.read_text())["file"]
    assert [e["identifier"] for e in entries] == [ua, ub]  # updated in place, then added
    assert entries[0] == {"identifier": ua, "hash": f"sha256:{new_a}", "size": 650,
                          "output": 'renamed "a".bin'}
    assert entries[1]["hash"] == f"sha256:{sha_b}"
    assert "changed" in proc.stderr  # the bytes behind ua changed since they were cached
    out_dir = tmp_path / "placed"
    run_cli("resolve", "-r", lock, "-o", f"{out_dir}/", check=True)
    assert sorted(os.listdir(out_dir)) == ['renamed "a".bin', "up-b.bin"]


def test_lock_refuses_credentials_and_writes_nothing(origin, tmp_path):
    origin.add("cred.bin", data(500, 795))
    lock = tmp_path / "hostkit.lock"
    for ident in (f"http://user:hunter2@{origin.url.removeprefix('http://')}/f/cred.bin",
                  f"{origin.url}/f/cred.bin?X-Amz-Signature=hunter2"):
        proc = run_cli("lock", ident, "-o", lock, "--json")
        assert proc.returncode == 2, proc.stderr
        assert "hunter2" not in proc.stderr + proc.stdout
        assert "credential" in proc.stderr
    assert not lock.exists() and not origin.requests("cred.bin")


def test_lock_file_errors_name_the_file(tmp_path, origin):
    lock = tmp_path / "hostkit.lock"
    lock.write_text('version = 1\n[[file]]\nidentifier = "https://h/x"\n')
    proc = run_cli("resolve", "-r", lock)
    assert proc.returncode == 2 and str(lock) in proc.stderr and "hash" in proc.stderr
    lock.write_text("version = [\n")
    proc = run_cli("resolve", "-r", lock)
    assert proc.returncode == 2 and str(lock) in proc.stderr
    lock.write_text('version = 1\n[[file]]\nidentifier = "https://h/x"\nhash = "sha256:'
                    + "a" * 64 + '"\nsize = 1\ncolour = "red"\n')
    proc = run_cli("resolve", "-r", lock)
    assert proc.returncode == 2 and "colour" in proc.stderr


def test_lists_and_lock_files_saved_with_a_byte_order_mark_are_read(tmp_path, monkeypatch):
    """Windows editors (Notepad, PowerShell's -Encoding utf8) start UTF-8 files with a BOM:
    it is no part of the first identifier, nor a TOML error at line 1, column 1."""
    import io

    from hostkit.lockfile import read_items

    sha = "sha256:" + "a" * 64
    lock = tmp_path / "bom.lock"
    lock.write_text(f'\ufeffversion = 1\n[[file]]\nidentifier = "https://h/x"\nhash = "{sha}"\n',
                    encoding="utf-8")
    listed = tmp_path / "bom.txt"
    listed.write_text(f"\ufeffhttps://h/y {sha}\n", encoding="utf-8")
    monkeypatch.setattr(sys, "stdin", io.StringIO(f"\ufeffhttps://h/z {sha}\n"))
    for path, identifier in ((lock, "https://h/x"), (listed, "https://h/y"), ("-", "https://h/z")):
        (item,) = read_items(path)
        assert (item.identifier, item.hash) == (identifier, sha)


def test_lock_writer_escapes_strings(tmp_path):
    """Every string the writer emits reads back the same through tomllib."""
    from hostkit.lockfile import LockEntry, dumps

    odd = ['a"b', "back\\slash", "tab\there", "new\nline", "del\x7f", "uni\u00e9\u4e2d",
           "ctl\x01\x1f", "'single'", "#hash = [x]"]
    entries = [LockEntry(f"https://h/{s}", "sha256:" + "b" * 64, 5, s) for s in odd]
    doc = tomllib.loads(dumps(entries))
    assert [e["output"] for e in doc["file"]] == odd
    assert [e["identifier"] for e in doc["file"]] == [f"https://h/{s}" for s in odd]


def test_the_api_answers_per_item_and_refuses_bad_lists_up_front(origin):
    import hostkit
    from hostkit.errors import ContentChangedWarning, HashMismatch, ItemsRefused, NotFound

    sha = origin.add("api-m.bin", data(1400, 796))
    url = f"{origin.url}/f/api-m.bin"
    answers = hostkit.resolve_many([url, f"{origin.url}/f/api-none.bin",
                                    (f"{url}?v=2", "sha256:" + "1" * 64), (url, sha)], jobs=2)
    assert answers[0].sha256 == sha and answers[3].verified
    assert isinstance(answers[1], NotFound) and isinstance(answers[2], HashMismatch)
    with pytest.raises(ItemsRefused) as refused:
        hostkit.resolve_many([url, "ftp://x/y", (url, "md5:zz")])
    assert [i for i, _ in refused.value.refused] == [1, 2]
    assert refused.value.exit_code == 2 and len(origin.gets("api-m.bin")) == 2
    with pytest.raises(ItemsRefused) as clash:  # one identifier, two different hashes
        hostkit.resolve_many([(url, sha), url, (url, "sha256:" + "1" * 64)])
    assert [i for i, _ in clash.value.refused] == [0, 2]
    new = origin.add("api-m.bin", data(1500, 797))
    with pytest.warns(ContentChangedWarning, match=new):
        (changed,) = hostkit.resolve_many([url])
    assert changed.changed_from["sha256"] == sha


def test_a_clean_list_is_checked_once(origin, tmp_path, monkeypatch, capsys):
    """The command's own checks (output names) pass: the API's checks (every identifier
    through its backend) run once, in resolve_many, not once more before it."""
    from hostkit import api
    from hostkit.cli import main

    calls = []
    check_many = api.check_many
    monkeypatch.setattr(api, "check_many", lambda *a, **k: calls.append(1) or check_many(*a, **k))
    urls = [f"{origin.url}/f/{origin_name}" for origin_name in ("once-a.bin", "once-b.bin")]
    shas = [origin.add(url.rsplit("/", 1)[1], data(900 + i, 760 + i)) for i, url in enumerate(urls)]
    out = tmp_path / "once"
    assert main(["resolve", "-q", f"{urls[0]}={shas[0]}", urls[1], "-o", f"{out}/"]) == 0
    assert len(calls) == 1
    assert (out / "once-a.bin").read_bytes() == data(900, 760)
    assert capsys.readouterr().out.split() == [str(out / "once-a.bin"), str(out / "once-b.bin")]
    calls.clear()  # refused: every item named, the API's refusals with the clash
    assert main(["resolve", urls[0], f"{urls[0]}?x=1", "ftp://x/y", "-o", f"{out}/"]) == 2
    err = capsys.readouterr().err
    assert "same name 'once-a.bin'" in err and "no backend accepts" in err
