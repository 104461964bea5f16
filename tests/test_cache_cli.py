"""``hostkit cache``: tables people can read, --json for scripts, plan-then-execute deletion,
confirmation on a terminal, and no cache created by commands that only look."""

from __future__ import annotations

import json
import os
import pty
import re
import select
import stat
import subprocess
import sys
import time
import zlib

import pytest

from hostkit.cli import main
from tests.test_resolve import data

ISO = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def fill(origin, names, size=100_000, pause=0.02) -> dict[str, str]:
    """Resolve each name from the origin (with its sha256) into the test's cache."""
    shas = {}
    for i, name in enumerate(names):
        shas[name] = origin.add(name, data(size, zlib.crc32(name.encode()) + i))
        assert main(["resolve", f"{origin.url}/f/{name}", shas[name], "-q"]) == 0
        time.sleep(pause)  # distinct last-use times: LRU order is the order given
    return shas


def cli(capsys, *args) -> tuple[int, str, str]:
    """Run ``hostkit ARGS`` in this process; return (exit code, stdout, stderr)."""
    capsys.readouterr()
    code = main(list(args))
    out = capsys.readouterr()
    return code, out.out, out.err


def blob(settings, sha):
    return settings.cache_dir / "blobs" / "sha256" / sha


# -- listing and showing --------------------------------------------------------------------


def test_ls_prints_a_table_and_json_has_bytes_and_iso_times(origin, settings, capsys):
    shas = fill(origin, ["ls-a.bin", "ls-b.bin"])
    main(["cache", "pin", f"{origin.url}/f/ls-a.bin"])
    code, out, _ = cli(capsys, "cache", "ls")
    assert code == 0
    lines = out.splitlines()
    assert lines[0].split() == ["SHA256", "SIZE", "LAST", "USED", "PINNED", "HASH", "IDENTIFIER"]
    row_a = next(line for line in lines if line.endswith("/f/ls-a.bin"))
    assert shas["ls-a.bin"][:12] in row_a and "97.7 KiB" in row_a and " ago " in row_a
    assert " yes " in row_a and "given" in row_a
    assert " no " in next(line for line in lines if line.endswith("/f/ls-b.bin"))
    assert "2 entries, 2 blobs, 195.3 KiB in " + str(settings.cache_dir) in out
    assert "{" not in out and "1.7" not in out  # no JSON, no epoch floats for people

    code, out, _ = cli(capsys, "cache", "ls", "--json")
    listing = json.loads(out)
    entry = next(e for e in listing["entries"] if e["identifier"].endswith("/f/ls-a.bin"))
    assert entry["size"] == 100_000 and entry["pinned"] is True
    assert isinstance(entry["accessed"], float)  # epoch seconds stay for scripts
    for name in ("created_at", "accessed_at", "checked_at"):
        assert ISO.match(entry[name]), entry[name]
    assert time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(entry["accessed"])) == \
        entry["accessed_at"]
    assert all(ISO.match(b["accessed_at"]) for b in listing["blobs"])
    assert listing["total_bytes"] == 200_000


def test_info_shows_one_entry_readably(origin, settings, capsys):
    shas = fill(origin, ["info.bin"])
    code, out, _ = cli(capsys, "cache", "info", shas["info.bin"][:8])
    assert code == 0
    fields = dict(re.split(r"\s{2,}", line, maxsplit=1) for line in out.splitlines() if line)
    assert fields["identifier"] == f"{origin.url}/f/info.bin"
    assert fields["sha256"] == shas["info.bin"]
    assert fields["size"] == "97.7 KiB (100000 bytes)"
    assert fields["pinned"] == "no" and fields["hash"].startswith("given")
    assert fields["path"] == str(blob(settings, shas["info.bin"]))
    assert re.match(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ \(\d+s ago\)$", fields["last used"])
    code, out, _ = cli(capsys, "cache", "info", shas["info.bin"], "--json")
    info = json.loads(out)
    assert info["blobs"][0]["identifiers"] == [f"{origin.url}/f/info.bin"]
    assert ISO.match(info["entries"][0]["accessed_at"])


def test_a_sha256_prefix_too_short_says_so(origin, capsys):
    shas = fill(origin, ["prefix.bin"])
    sha = shas["prefix.bin"]
    for short in (sha[:5], f"sha256:{sha[:3]}", sha[:1].upper()):
        code, _, err = cli(capsys, "cache", "info", short)
        assert code == 2, short
        assert "too short" in err and "at least 6 hex digits" in err, err
    for action in ("rm", "pin", "unpin"):
        code, _, err = cli(capsys, "cache", action, sha[:4])
        assert code == 2 and "too short" in err
    assert cli(capsys, "cache", "info", sha[:6])[0] == 0  # the minimum is enough
    code, _, err = cli(capsys, "cache", "info", "0" * 7 if sha[0] != "0" else "1" * 7)
    assert code == 2 and "nothing in the cache matches" in err  # long enough, no match


def test_commands_that_only_look_never_create_a_cache(tmp_path, origin, capsys):
    missing = tmp_path / "no-such-cache"
    for args in (["cache", "ls"], ["cache", "info", "abcdef"], ["cache", "verify"],
                 ["cache", "prune", "--max-size", "0"], ["cache", "rm", "abcdef", "-y"],
                 ["cache", "pin", "abcdef"]):
        code, out, err = cli(capsys, *args, "--cache-dir", str(missing))
        assert code == 6, (args, err)
        assert f"no cache at {missing}" in err and "does not exist" in err
        assert "HOSTKIT_CACHE_DIR" in err and "--cache-dir" in err
        assert not missing.exists(), args
    code, out, err = cli(capsys, "cache", "ls", "--json", "--cache-dir", str(missing))
    assert code == 6 and json.loads(out)["error"] == "cache"

    empty = tmp_path / "some-folder"
    empty.mkdir()
    code, _, err = cli(capsys, "cache", "ls", "--cache-dir", str(empty))
    assert code == 6 and "no hostkit index" in err
    assert list(empty.iterdir()) == []  # nothing written into a folder that is not a cache

    a_file = tmp_path / "a-file"
    a_file.write_text("not a cache")
    code, _, err = cli(capsys, "cache", "ls", "--cache-dir", str(a_file))
    assert code == 6 and "is a file, not a folder" in err and "holds no" not in err

    sha = origin.add("creates.bin", data(100, 9))  # resolve still creates the cache
    assert main(["resolve", f"{origin.url}/f/creates.bin", sha, "--cache-dir", str(missing)]) == 0
    code, out, _ = cli(capsys, "cache", "ls", "--cache-dir", str(missing))
    assert code == 0 and "creates.bin" in out


# -- rm and prune: dry run, plan, identifiers ----------------------------------------------------


def test_rm_dry_run_shows_what_goes_and_deletes_nothing(origin, settings, capsys):
    shas = fill(origin, ["rm.bin"])
    sha, url = shas["rm.bin"], f"{origin.url}/f/rm.bin"
    code, out, _ = cli(capsys, "cache", "rm", sha[:10], "--dry-run")
    assert code == 0
    assert "would delete:" in out and url in out and "97.7 KiB" in out
    assert "dry run: 1 entry, 1 blob; would free 97.7 KiB" in out
    assert blob(settings, sha).exists()
    code, out, _ = cli(capsys, "cache", "rm", url, "--dry-run", "--json")
    plan = json.loads(out)
    assert plan["dry_run"] is True and plan["freed_bytes"] == 100_000
    assert plan["removed_blobs"] == [sha] and plan["removed_entries"] == [url]
    assert plan["blobs"][0]["identifiers"] == [url]
    assert blob(settings, sha).exists() and main(["cache", "info", sha]) == 0

    code, out, _ = cli(capsys, "cache", "rm", url, "--json")  # stdin is no terminal: no question
    done = json.loads(out)
    assert done["dry_run"] is False and done["removed_blobs"] == [sha]
    assert done["freed_bytes"] == 100_000 and not blob(settings, sha).exists()


def test_rm_of_one_identifier_keeps_a_blob_another_identifier_uses(origin, settings, capsys):
    body = data(5000, 77)
    sha = origin.add("twin-a.bin", body)
    origin.add("twin-b.bin", body)
    for name in ("twin-a.bin", "twin-b.bin"):  # no hash given: each is downloaded, recorded
        assert main(["resolve", f"{origin.url}/f/{name}", "-q"]) == 0
    code, out, _ = cli(capsys, "cache", "rm", f"{origin.url}/f/twin-a.bin")
    assert code == 0 and "1 entry, 0 blobs; freed 0 B" in out
    assert "1 blob kept: other identifiers still use it" in out
    assert blob(settings, sha).exists()


def test_prune_names_evictions_by_identifier_and_warns_about_pinned(origin, settings, capsys):
    shas = fill(origin, ["p-old.bin", "p-mid.bin", "p-new.bin"])
    assert main(["cache", "pin", f"{origin.url}/f/p-old.bin"]) == 0
    code, out, err = cli(capsys, "cache", "prune", "--max-size", "250K", "--dry-run")
    assert code == 0 and err == ""  # the pinned entry alone fits
    assert f"{origin.url}/f/p-mid.bin" in out and "p-new.bin" not in out
    assert "dry run: 1 entry, 1 blob; would free 97.7 KiB; 195.3 KiB left" in out
    assert blob(settings, shas["p-mid.bin"]).exists()

    code, out, err = cli(capsys, "cache", "prune", "--max-size", "50K", "--json")
    report = json.loads(out)
    assert "warning: pinned entries alone hold 97.7 KiB, more than --max-size 50.0 KiB" in err
    assert report["pinned_over_budget"] is True and report["pinned_bytes"] == 100_000
    assert report["evicted"] == [shas["p-mid.bin"], shas["p-new.bin"]]  # least recently used first
    assert [b["identifiers"] for b in report["blobs"]] == [
        [f"{origin.url}/f/p-mid.bin"], [f"{origin.url}/f/p-new.bin"]]
    assert report["total_bytes"] == 100_000 and report["freed_bytes"] == 200_000
    assert blob(settings, shas["p-old.bin"]).exists()
    code, out, _ = cli(capsys, "cache", "prune", "--max-size", "1G")
    assert code == 0 and out.startswith("nothing to prune: 97.7 KiB held, within 1.0 GiB")


def test_execute_rechecks_a_plan_made_before_a_pin(origin, settings):
    """A person may take a while to answer: what was pinned meanwhile stays."""
    from hostkit.store.cache import Cache

    shas = fill(origin, ["late-pin.bin", "other.bin"])
    cache = Cache(settings.cache_dir)
    plan = cache.plan_prune(0)
    assert {b.sha256 for b in plan.blobs} == set(shas.values())
    assert plan.expected_freed_size == 200_000
    cache.set_pinned(f"{origin.url}/f/late-pin.bin", True)
    done = cache.execute(plan)
    assert [b.sha256 for b in done.blobs] == [shas["other.bin"]]
    assert blob(settings, shas["late-pin.bin"]).exists()
    assert not blob(settings, shas["other.bin"]).exists()
    cache.close()


def test_secrets_never_appear_in_cache_tables(origin, capsys):
    sha = origin.add("signed.bin", data(300, 12))
    signed = f"{origin.url}/f/signed.bin?X-Amz-Signature=SECRETSIG&X-Amz-Credential=KEYID"
    assert main(["resolve", signed, sha]) == 0
    outputs = [cli(capsys, *args) for args in (
        ["cache", "ls"], ["cache", "info", sha], ["cache", "rm", signed, "--dry-run"],
        ["cache", "prune", "--max-size", "0", "--dry-run", "--json"], ["cache", "rm", signed])]
    assert all(code == 0 for code, _, _ in outputs)
    text = "".join(out + err for _, out, err in outputs)
    assert "signed.bin" in text and "SECRETSIG" not in text and "KEYID" not in text


# -- confirmation on a terminal ------------------------------------------------------------------


def run_on_terminal(args, answer: bytes | None, timeout=60) -> tuple[int, str, str]:
    """Run ``hostkit ARGS`` with a pseudo-terminal as stdin; type ``answer`` at the prompt."""
    leader, follower = pty.openpty()
    proc = subprocess.Popen([sys.executable, "-m", "hostkit.cli", *args], stdin=follower,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=os.environ)
    os.close(follower)
    try:
        if answer is not None:
            os.write(leader, answer)
        out, err = proc.communicate(timeout=timeout)
        while select.select([leader], [], [], 0)[0]:  # drain the terminal's echo
            try:
                os.read(leader, 4096)
            except OSError:
                break
    finally:
        os.close(leader)
    return proc.returncode, out.decode(), err.decode()


def test_a_declined_prompt_deletes_nothing(origin, settings):
    shas = fill(origin, ["ask-1.bin", "ask-2.bin"])
    sha = shas["ask-1.bin"]
    code, out, err = run_on_terminal(["cache", "rm", sha], b"n\n")
    assert code == 1, err
    assert "1 entry, 1 blob: delete? [y/N]" in err and "nothing deleted" in err
    assert "to delete:" in out and f"{origin.url}/f/ask-1.bin" in out
    assert blob(settings, sha).exists()
    code, _, err = run_on_terminal(["cache", "prune", "--max-size", "0"], b"\n")  # Enter: no
    assert code == 1 and "2 entries, 2 blobs: delete? [y/N]" in err
    assert all(blob(settings, s).exists() for s in shas.values())

    code, out, err = run_on_terminal(["cache", "rm", sha], b"y\n")
    assert code == 0 and "freed 97.7 KiB" in out and not blob(settings, sha).exists()
    code, out, err = run_on_terminal(["cache", "prune", "--max-size", "0", "--yes"], None)
    assert code == 0 and "delete?" not in err  # -y: not asked, even on a terminal
    assert not blob(settings, shas["ask-2.bin"]).exists()


def test_a_script_is_never_asked(origin, settings):
    shas = fill(origin, ["script.bin"])
    proc = subprocess.run([sys.executable, "-m", "hostkit.cli", "cache", "prune",
                           "--max-size", "0"], stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=60, env=os.environ)
    assert proc.returncode == 0 and "delete?" not in proc.stderr
    assert not blob(settings, shas["script.bin"]).exists()


# -- verify ------------------------------------------------------------------------------------


def test_verify_prints_what_it_checked_and_names_corrupt_entries(origin, settings, capsys):
    shas = fill(origin, ["v-ok.bin", "v-bad.bin"], size=5000)
    code, out, _ = cli(capsys, "cache", "verify")
    assert code == 0 and out == "checked 2 blobs (9.8 KiB): every one matches its hashes\n"
    code, out, _ = cli(capsys, "cache", "verify", shas["v-ok.bin"][:8], "--json")
    assert json.loads(out)["checked"] == 1
    bad = blob(settings, shas["v-bad.bin"])
    bad.chmod(stat.S_IWUSR | stat.S_IRUSR)
    bad.write_bytes(b"tampered" + bad.read_bytes()[8:])
    code, out, _ = cli(capsys, "cache", "verify", "--report-only")
    assert code == 8 and bad.exists()
    assert f"{origin.url}/f/v-bad.bin" in out and "content changed" in out
    assert "1 problem; left in place (--report-only)" in out and "None" not in out
    code, out, _ = cli(capsys, "cache", "verify", "--json")
    report = json.loads(out)
    assert code == 8 and report["checked"] == 2
    assert report["problems"][0]["identifiers"] == [f"{origin.url}/f/v-bad.bin"]
    assert report["problems"][0]["removed"] is True and not bad.exists()


@pytest.mark.parametrize("size,text", [(0, "0 B"), (1023, "1023 B"), (1536, "1.5 KiB"),
                                       (5 << 30, "5.0 GiB"), (3 << 40, "3.0 TiB")])
def test_format_size(size, text):
    from hostkit.formatting import format_size

    assert format_size(size) == text
