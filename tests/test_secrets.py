"""Secrets planted in identifiers never appear in any output, log, listing or cache file.

Each kind of secret (URL userinfo, S3 / GCS presigned query values, an Azure SAS
signature, a token parameter) is planted in identifiers the test origin serves,
then resolved through every output form of the CLI, listed and shown from the
cache, resolved and prefetched through a real daemon process, interrupted so a
resume sidecar is left in tmp/, and given in malformed identifiers. Then every
captured output and every byte of every file under the cache directories
(index.db, its -wal/-shm, sidecars, locks) is searched for each secret.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import run_cli
from tests.daemon_fixtures import DaemonProcess, call, call_json, wait_until
from tests.servers import free_port
from tests.test_resolve import data

PW = "PwUserinfo9871"
AMZ_SIG, AMZ_CRED, AMZ_TOKEN = "AmzSig4412ab", "AKIAAMZCRED5521", "AmzSessTok7781"
GOOG_SIG, GOOG_CRED = "GoogSig3321cd", "googcred-sa-8812"
AZ_SIG = "AzSasSig6619ef"
TOKEN = "PlainTok2277"
SECRETS = (PW, AMZ_SIG, AMZ_CRED, AMZ_TOKEN, GOOG_SIG, GOOG_CRED, AZ_SIG, TOKEN)


def _amz(sig: str = AMZ_SIG, date: str = "20240101T000000Z") -> str:
    return (f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={AMZ_CRED}%2F20240101%2F"
            f"us-east-1%2Fs3%2Faws4_request&X-Amz-Date={date}&X-Amz-Expires=3600"
            f"&X-Amz-SignedHeaders=host&X-Amz-Security-Token={AMZ_TOKEN}&X-Amz-Signature={sig}")


def planted(base: str, prefix: str = "f") -> dict[str, str]:
    """Identifiers of NAME.bin on the origin at ``base``, one per kind of secret."""
    host = base.removeprefix("http://")
    return {
        "userinfo": f"direct:http://alice:{PW}@{host}/{prefix}/userinfo.bin",
        "amz": f"{base}/{prefix}/amz.bin?{_amz()}",
        "goog": (f"{base}/{prefix}/goog.bin?X-Goog-Algorithm=GOOG4-RSA-SHA256"
                 f"&X-Goog-Credential={GOOG_CRED}&X-Goog-Date=20240101T000000Z"
                 f"&X-Goog-Signature={GOOG_SIG}"),
        "azure": f"{base}/{prefix}/azure.bin?sv=2022-11-02&sp=r&se=2030-01-01&sr=b&sig={AZ_SIG}",
        "token": f"direct:{base}/{prefix}/token.bin?id=7&token={TOKEN}",
    }


def _files_leaking(root: Path) -> list[str]:
    """``file: secret`` for every file under ``root`` whose bytes hold a secret."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        raw = path.read_bytes()
        found += [f"{path.relative_to(root)}: {s}" for s in SECRETS if s.encode() in raw]
    return found


def _leaks(texts: list[str]) -> list[str]:
    return [f"{s} in {t[:300]!r}" for t in texts for s in SECRETS if s in t]


def _out(proc) -> str:
    return proc.stdout + proc.stderr


def test_no_secret_in_cli_output_or_cache_files(origin, settings):
    idents = planted(origin.url)
    shas = {name: origin.add(f"{name}.bin", data(3000 + i, 80 + i))
            for i, name in enumerate(idents)}
    outputs = []
    for name, ident in idents.items():
        plain = run_cli("resolve", ident, "-v")  # trust on first use: the note, the log lines
        assert plain.returncode == 0, plain.stderr
        as_json = run_cli("resolve", ident, "--json", "-v")
        assert json.loads(as_json.stdout)["sha256"] == shas[name]
        pinned = run_cli("resolve", ident, shas[name], "--json", "--offline", "-v")
        fast = run_cli("resolve", ident, shas[name])  # the fast path answers a known hash
        outputs += [_out(p) for p in (plain, as_json, pinned, fast)]
    ls = run_cli("cache", "ls", check=True)
    ls_json = run_cli("cache", "ls", "--json", check=True)
    entries = json.loads(ls_json.stdout)["entries"]
    assert len(entries) == len(idents)
    outputs += [_out(ls), _out(ls_json)]
    for entry in entries:
        for key in (entry["key"], entry["identifier"], entry["sha256"]):
            info = run_cli("cache", "info", key, check=True)
            info_json = run_cli("cache", "info", key, "--json", check=True)
            assert json.loads(info_json.stdout)["entries"], key
            outputs += [_out(info), _out(info_json)]
    assert _leaks(outputs) == []
    assert _files_leaking(settings.cache_dir) == []
    for name, ident in idents.items():  # an identifier given with its secrets finds its entry
        info = json.loads(run_cli("cache", "info", ident, "--json", check=True).stdout)
        assert info["entries"][0]["sha256"] == shas[name]
        outputs.append(json.dumps(info))
    missing = run_cli("cache", "info", f"http://x:{PW}@h/none?sig={AZ_SIG}")
    assert missing.returncode == 2
    outputs.append(_out(missing))
    assert _leaks(outputs) == []
    assert _files_leaking(settings.cache_dir) == []
    # what is shown still says what it is, with the secret values masked
    shown = {e["identifier"] for e in entries}
    assert any("X-Amz-Signature=***" in s for s in shown)
    assert any("sig=***" in s and "sp=r" in s for s in shown)
    assert any("id=7&token=***" in s for s in shown)


def test_two_signatures_of_one_object_share_an_entry_but_queries_name_files(origin):
    sha = origin.add("shared.bin", data(2000, 90))
    first = f"{origin.url}/f/shared.bin?{_amz('SigOne1')}"
    second = f"{origin.url}/f/shared.bin?{_amz('SigTwo2', date='20240102T000000Z')}"
    assert not json.loads(run_cli("resolve", first, sha, "--json", check=True).stdout)["cached"]
    out = json.loads(run_cli("resolve", second, sha, "--json", "--offline",
                             check=True).stdout)
    assert out["cached"] and out["sha256"] == sha
    assert len(origin.gets("/f/shared.bin")) == 1
    one, two = origin.add("q1.bin", b"one" * 100), origin.add("q2.bin", b"two" * 100)
    origin.files["q.bin"] = b"one" * 100
    run_cli("resolve", f"{origin.url}/f/q.bin?id=1&token=A1", one, check=True)
    origin.files["q.bin"] = b"two" * 100
    got = json.loads(run_cli("resolve", f"{origin.url}/f/q.bin?id=2&token=B2", two, "--json",
                             check=True).stdout)
    assert got["sha256"] == two and not got["cached"]
    keys = {e["key"] for e in json.loads(run_cli("cache", "ls", "--json").stdout)["entries"]}
    assert {f"{origin.url}/f/q.bin?id=1", f"{origin.url}/f/q.bin?id=2"} <= keys


def test_no_secret_in_a_resume_sidecar(origin, settings):
    ident = planted(origin.url, prefix="reset-once")["userinfo"] + f"?{_amz()}"
    sha = origin.add("userinfo.bin", data(600_000, 91))
    cut = run_cli("resolve", ident, sha, "-v", env={"HOSTKIT_RETRIES": "0"})
    assert cut.returncode == 4, cut.stderr  # cut mid-body, no retry: the partial is kept
    sidecars = list((settings.cache_dir / "tmp").glob("*.json"))
    assert sidecars and json.loads(sidecars[0].read_text())["key"]
    assert _files_leaking(settings.cache_dir) == []
    resumed = run_cli("resolve", ident, sha, "--json", "-v", check=True)
    assert json.loads(resumed.stdout)["sha256"] == sha
    assert origin.gets("/reset-once/userinfo.bin")[-1].range  # it resumed from the sidecar
    assert _leaks([_out(cut), _out(resumed)]) == []
    assert _files_leaking(settings.cache_dir) == []


@pytest.mark.parametrize("ident", [
    f"direct:http://carol:{PW}@host/a b.bin",
    f"http://dave:{PW}@host:99999/x.bin",
    f"http://dave:{PW}@host/a/../x.bin?X-Amz-Signature={AMZ_SIG}",
    f"s3://AKIA:{PW}@bucket/key",
    f"s3://bucket/key?X-Amz-Signature={AMZ_SIG}",
    f"gs://bucket/key?X-Goog-Signature={GOOG_SIG}",
    f"az://container/blob?sv=1&sig={AZ_SIG}",
    f"github:owner/repo@main/x.bin?token={TOKEN}",
    f"https://raw.githubusercontent.com/owner/repo/main/x.bin?token={TOKEN}",
    f"ftp://erin:{PW}@host/x?token={TOKEN}",
    f"direct:ftp://erin:{PW}@host/x",
    f"synapse:syn1?token={TOKEN}",
    f"https://drive.google.com/file/d/x/view?X-Goog-Signature={GOOG_SIG}",
])
def test_no_secret_in_parse_errors(ident):
    # a github branch is looked up to name its commit in the refusal: no GitHub here
    env = {"HOSTKIT_GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"}
    plain = run_cli("resolve", ident, env=env)
    as_json = run_cli("resolve", ident, "--json", "-v", env=env)
    assert plain.returncode in (2, 4) and as_json.returncode == plain.returncode, plain.stderr
    assert "Traceback" not in plain.stderr and json.loads(as_json.stdout)["error"]
    assert _leaks([_out(plain), _out(as_json)]) == []


def test_no_secret_through_a_daemon_process(tmp_path, origin):
    idents = planted(origin.url)
    shas = {name: origin.add(f"{name}.bin", data(4000 + i, 95 + i))
            for i, name in enumerate(idents)}
    cache = tmp_path / "dcache"
    d = DaemonProcess(tmp_path, socket_path=str(tmp_path / "run" / "d.sock"),
                      env={"HOSTKIT_CACHE_DIR": str(cache)})
    bodies = []
    try:
        for name in ("userinfo", "amz"):
            status, _, body = call(d.url, "POST", "/v1/resolve", {"identifier": idents[name]})
            assert status == 200, body
            bodies.append(body.decode())
        status, _, body = call(d.url, "POST", "/v1/resolve",
                               {"identifier": idents["goog"], "wait": False})
        assert status in (200, 202), body
        bodies.append(body.decode())
        status, _, body = call(d.url, "POST", "/v1/prefetch", {"items": [
            idents["azure"], {"identifier": idents["token"], "hash": shas["token"]},
            {"identifier": idents["userinfo"], "hash": "0" * 64},  # fails: an error item
            f"http://frank:{PW}@127.0.0.1:1/x?sig={AZ_SIG}"]})  # fails: unreachable
        assert status in (200, 202), body
        bodies.append(body.decode())
        jobs = [json.loads(b)["href"] for b in bodies[2:]]
        for job in jobs:
            wait_until(lambda job=job: call_json(d.url, "GET", job)[1]["state"]
                       not in ("queued", "running"), timeout=60, what="the job to finish")
            status, _, body = call(d.url, "GET", job)
            bodies.append(body.decode())
            assert idents["goog"].split("?")[0] in body.decode() or "azure" in body.decode()
        for path in ("/v1/cache", "/v1/status", "/metrics",
                     f"/v1/cache/{shas['userinfo']}"):
            bodies.append(call(d.url, "GET", path)[2].decode())
        bad = call(d.url, "POST", "/v1/resolve",
                   {"identifier": f"direct:http://gina:{PW}@h:99999/x?sig={AZ_SIG}"})
        assert bad[0] == 400
        bodies.append(bad[2].decode())
        time.sleep(0.3)  # the daemon writes its log lines once per event-loop pass
    finally:
        d.stop()
    log = d.log()
    assert '"event"' in log and "userinfo.bin" in log  # the request lines were written
    assert _leaks(bodies) == []
    assert _leaks([log]) == []
    assert _files_leaking(cache) == []
    assert _files_leaking(tmp_path / "run") == []


def test_an_index_written_before_keys_were_secret_free_is_rewritten(origin, isolated_env,
                                                                    monkeypatch):
    """An older release stored identifiers as given; the upgrade forgets their secrets."""
    import hashlib
    import sqlite3

    from hostkit.store.index import _SCHEMA

    cache = isolated_env / "cache"
    blobs = cache / "blobs" / "sha256"
    blobs.mkdir(parents=True)
    rows = []
    for kind, ident in planted(origin.url).items():
        content = data(4000 + len(kind))
        origin.add(f"{kind}.bin", content)
        sha = hashlib.sha256(content).hexdigest()
        (blobs / sha).write_bytes(content)
        raw = ident.removeprefix("direct:")
        rows.append((raw, sha, len(content)))
    (cache / "tmp").mkdir()
    (cache / "tmp" / "0123.1-ab.json").write_text(json.dumps({"key": rows[0][0]}))
    (cache / "tmp" / "0123.1-ab.part").write_bytes(b"partial")
    db = sqlite3.connect(cache / "index.db")
    db.executescript(_SCHEMA)
    now = time.time()
    for raw, sha, size in rows:
        db.execute("INSERT OR IGNORE INTO blobs VALUES(?,?,?,?,?)",
                   (sha, size, json.dumps({"sha256": sha}), now, now))
        db.execute("INSERT INTO entries(key,identifier,sha256,size,validator,immutable,"
                   "verified,pinned,created,accessed,checked) VALUES(?,?,?,?,NULL,0,1,0,?,?,?)",
                   (raw, raw, sha, size, now, now, now))
    db.commit()
    db.close()
    assert _files_leaking(cache)  # the old layout did hold them
    listing = run_cli("cache", "ls", "--json", check=True)
    assert not [s for s in SECRETS if s in listing.stdout]
    assert _files_leaking(cache) == []
    assert not (cache / "tmp" / "0123.1-ab.part").exists()
    monkeypatch.setenv("HOSTKIT_OFFLINE", "1")
    for kind, ident in planted(origin.url).items():  # still answered, under the new keys
        hit = run_cli("resolve", ident, "--json", check=True)
        assert json.loads(hit.stdout)["cached"] is True, kind


def test_secrets_under_other_names_and_inside_nested_urls(origin, isolated_env):
    """``api-key``, ``x-api-key``, ``jwt`` and a URL with userinfo inside a parameter value."""
    origin.add("other.bin", data(3000))
    hidden = ("NestedPw5521", "ApiKey8812", "XApiKey1177", "JwtSecret4490")
    url = (f"{origin.url}/f/other.bin?src=http://bob:{hidden[0]}@x.example/f"
           f"&api-key={hidden[1]}&x-api-key={hidden[2]}&jwt={hidden[3]}&id=7")
    outputs = [run_cli("resolve", url, *args, check=True) for args in ((), ("--json", "-v"))]
    outputs.append(run_cli("cache", "ls", "--json", check=True))
    text = "".join(p.stdout + p.stderr for p in outputs)
    assert "id=7" in text  # an ordinary parameter stays
    cache = isolated_env / "cache"
    leaks = [s for s in hidden if s in text] + [
        f"{p.name}: {s}" for p in cache.rglob("*") if p.is_file()
        for s in hidden if s.encode() in p.read_bytes()]
    assert leaks == []
