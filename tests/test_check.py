"""hostkit check: MedPerf's hosting rules, checked through the real CLI against real servers.

Public hosts (Dropbox, Google Drive, OneDrive, SharePoint, GitHub) are HTTPS
stand-ins under their real names (tests/standins/webhosts.py): the CLI reaches
them through HOSTKIT_RESOLVE with SSL_CERT_FILE naming the stand-in's throwaway
CA. Object stores are SeaweedFS (a public-read, a private and a versioned
bucket); Synapse is its stand-in.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import time

import pytest

from tests.conftest import run_cli
from tests.objectstore_fixtures import KEY, SECRET, gcs_emulator, s3_admin  # noqa: F401
from tests.servers import SeaweedS3Server, free_port
from tests.standins.webhosts import WebHostsServer
from tests.synapse_standin import TOKEN, config_text
from tests.test_synapse import synapse, synapse_server  # noqa: F401 (fixtures)

COMMIT = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture(scope="module")
def hosts(tmp_path_factory):
    server = WebHostsServer(tmp_path_factory.mktemp("webhosts"))
    hosts = server.start()
    hosts.files["model.bin"] = os.urandom(200_000)
    hosts.files["weights"] = os.urandom(5_000)
    hosts.files["bigfile"] = os.urandom(1_000)
    hosts.big.add("bigfile")
    hosts.commits["main"] = COMMIT
    yield hosts
    server.stop()


@pytest.fixture
def web(hosts, monkeypatch):
    """The CLI's environment: the stand-in hosts under their real names, one retry."""
    hosts.hits.clear()
    for key, value in {**hosts.env(), "HOSTKIT_RETRIES": "1"}.items():
        monkeypatch.setenv(key, value)
    return hosts


def check(*args, env=None):
    """``hostkit check ARGS`` in a subprocess: (exit status, stdout, stderr)."""
    proc = run_cli("check", *args, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def check_json(*args, env=None):
    status, out, err = check(*args, "--json", env=env)
    return status, json.loads(out), err


def verdicts(report: dict) -> dict[str, dict]:
    return {c["name"]: c for c in report["checks"]}


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- plain links ----------------------------------------------------------------------------


def test_a_direct_link_passes_and_prints_the_value_and_hash_to_submit(web):
    url = "https://files.example.org/f/model.bin"
    status, out, _ = check(url, "direct:" + url)
    assert status == 0, out
    digest = sha(web.files["model.bin"])
    for label in ("reachable anonymously", "direct download", "permanent", "size and sha256"):
        assert re.search(rf"✓ {label}", out), label
    assert out.count(f"submit: {url}  hash: {digest}") == 2  # direct: is MedPerf's too
    probes = [h for h in web.seen("files.example.org") if h.range]
    # the probe asked for the first 4 KiB only, with no credential
    assert {h.range for h in probes} == {"bytes=0-4095"}
    assert all(h.authorization is None for h in web.hits)
    status, reports, _ = check_json(url)
    assert status == 0
    [report] = reports
    assert set(report) == {"identifier", "ok", "checks", "size", "sha256", "submit"}
    assert (report["identifier"], report["ok"], report["submit"]) == (url, True, url)
    assert (report["size"], report["sha256"]) == (200_000, digest)
    assert [c["name"] for c in report["checks"]] == ["anonymous", "direct", "permanent",
                                                     "download"]
    assert all(c["ok"] is True and set(c) == {"name", "label", "ok", "message", "fix",
                                              "suggestion"} for c in report["checks"])
    assert "in the cache already" in verdicts(report)["download"]["message"]


def test_an_html_page_is_not_a_direct_download(web):
    status, out, _ = check("https://files.example.org/page")
    assert status == 1
    assert re.search(r"✓ reachable anonymously", out)
    assert re.search(r"✗ direct download +https://files.example.org/page returned a web page "
                     r"\(HTML\), not a file", out)
    assert "fix: " in out and "submit:" not in out
    assert "not ready for MedPerf: 1 check failed" in out
    status, out, _ = check("https://files.example.org/page", "--no-download",
                           env={"PYTHONIOENCODING": "ascii"})  # no ✓ ✗ there: words
    assert status == 1 and re.search(r"PASS reachable anonymously", out)
    assert re.search(r"FAIL direct download", out) and re.search(r"SKIP size and sha256", out)


@pytest.mark.parametrize("path, said", [
    ("/private/x", "refused anonymous access (401)"),
    ("/login", "returned a login page (an HTML form asking for a password)"),
])
def test_a_login_page_is_not_reachable_anonymously(web, path, said):
    status, reports, _ = check_json("https://files.example.org" + path)
    assert status == 1
    found = verdicts(reports[0])
    assert found["anonymous"]["ok"] is False and said in found["anonymous"]["message"]
    assert "anonymous GET" in found["anonymous"]["fix"]
    assert found["direct"]["ok"] is None  # not reached: a login comes first
    assert found["download"]["ok"] is None and reports[0]["submit"] is None


def test_an_unreachable_host(web):
    port = free_port()  # nothing listens there
    status, out, _ = check(f"http://127.0.0.1:{port}/x.bin")
    assert status == 1
    assert re.search(rf"✗ reachable anonymously +http://127.0.0.1:{port}/x.bin: cannot connect",
                     out)
    assert "fix: check the host name and your network" in out
    assert re.search(r"- size and sha256 +skipped", out)


def test_bad_usage_exits_2(web):
    assert run_cli("check").returncode == 2  # argparse: nothing to check
    status, out, _ = check("not an identifier", "https://files.example.org/f/model.bin")
    assert status == 2  # the others are still checked
    assert "✗ identifier" in out and "submit: https://files.example.org/f/model.bin" in out
    status, reports, _ = check_json("nosuch:thing")
    assert status == 2 and reports[0]["checks"][0]["name"] == "identifier"
    assert "no backend accepts" in reports[0]["checks"][0]["message"]


# -- share links ----------------------------------------------------------------------------


def test_dropbox_share_link_suggests_dl_1_and_fix_checks_it(web):
    link = "https://www.dropbox.com/s/k3y/model.bin?dl=0"
    direct = "https://www.dropbox.com/s/k3y/model.bin?dl=1"
    status, out, _ = check(link)
    assert status == 1
    assert re.search(r"✗ direct download +.* is a Dropbox share page, not the file", out)
    assert f"fix: use the same link with dl=1: {direct}" in out
    assert "fixed:" not in out and not web.seen("dl.dropboxusercontent.com")  # never rewritten
    status, reports, _ = check_json(link, "--fix")
    assert status == 1  # the link as given still fails: the fix is a suggestion
    report = reports[0]
    assert verdicts(report)["direct"]["suggestion"] == direct
    fixed = report["fixed"]
    assert (fixed["identifier"], fixed["ok"], fixed["submit"]) == (direct, True, direct)
    assert fixed["sha256"] == sha(web.files["model.bin"])
    # hostkit resolve refuses the share link as before, naming the direct form
    proc = run_cli("resolve", link, "--json")
    assert proc.returncode == 4
    error = json.loads(proc.stdout)
    assert (error["error"], error["suggestion"]) == ("not_direct_link", direct)


def test_google_drive_view_link_suggests_the_direct_form(web):
    status, out, _ = check("https://drive.google.com/file/d/weights/view", "--fix")
    assert status == 1
    direct = "https://drive.google.com/uc?export=download&id=weights"
    assert "is a Google Drive share page" in out and f"use Drive's direct form {direct}" in out
    assert "virus-scan confirmation page" in out  # big files: a page, not the file
    assert f"fixed: {direct}" in out
    assert f"submit: {direct}  hash: {sha(web.files['weights'])}" in out
    for link in ("https://drive.google.com/open?id=weights", direct):  # resolve agrees
        proc = run_cli("resolve", link, "--json")
        if link == direct:
            assert proc.returncode == 0, proc.stderr
        else:
            assert proc.returncode == 4 and json.loads(proc.stdout)["suggestion"] == direct


def test_google_drive_direct_form_of_a_big_file_answers_a_page(web):
    status, reports, _ = check_json("https://drive.google.com/uc?export=download&id=bigfile")
    assert status == 1
    direct = verdicts(reports[0])["direct"]
    assert direct["ok"] is False and "web page (HTML)" in direct["message"]
    assert "virus-scan confirmation page" in direct["fix"]


@pytest.mark.parametrize("link", ["https://1drv.ms/u/s!AbC123", "https://onedrive.live.com/"
                                  "?cid=1&resid=ABC%21123", "https://contoso.sharepoint.com/:u:"
                                  "/g/personal/a/EbCd?e=x1"])
def test_onedrive_and_sharepoint_links_are_not_permanent_direct_links(web, link):
    status, reports, _ = check_json(link)
    assert status == 1
    found = verdicts(reports[0])
    assert found["permanent"]["ok"] is False
    assert "not a permanent direct link" in found["permanent"]["message"]
    assert "host the file where a plain GET returns it" in found["permanent"]["fix"]
    assert found["direct"]["ok"] is False  # the stand-in answers a page, as they do
    assert run_cli("resolve", link).returncode == 4


def test_github_blob_links_suggest_the_raw_url_at_a_commit(web):
    blob = f"https://github.com/org/repo/blob/{COMMIT}/models/model.bin"
    raw = f"https://raw.githubusercontent.com/org/repo/{COMMIT}/models/model.bin"
    status, out, _ = check(blob, "--fix")
    assert status == 1
    assert re.search(r"✗ direct download +.* is GitHub's page for the file, not the file", out)
    assert re.search(r"✓ permanent +pinned", out)
    assert f"fixed: {raw}" in out and f"submit: {raw}  hash: {sha(web.files['model.bin'])}" in out
    # at a branch: the commit it names now is looked up, and suggested
    status, reports, _ = check_json("https://github.com/org/repo/blob/main/models/model.bin",
                                    "--fix")
    assert status == 1
    permanent = verdicts(reports[0])["permanent"]
    assert permanent["ok"] is False and "'main'" in permanent["message"]
    assert permanent["suggestion"] == raw and reports[0]["fixed"]["submit"] == raw


# -- presigned URLs and object stores (SeaweedFS) ---------------------------------------------


@pytest.fixture(scope="module")
def weed():
    """SeaweedFS: ``public`` and ``vers`` (versioned) anonymous-readable, ``private`` not."""
    server = SeaweedS3Server(access_key=KEY, secret_key=SECRET,
                             anonymous_read=("public", "vers"))
    admin = s3_admin(server)
    for bucket in ("public", "private", "vers"):
        admin.create_bucket(Bucket=bucket)
    admin.put_bucket_versioning(Bucket="vers", VersioningConfiguration={"Status": "Enabled"})
    server.admin = admin
    yield server
    server.stop()


@pytest.fixture
def keys(weed, tmp_path):
    """The author's environment: keys for SeaweedFS (an anonymous check must not use them)."""
    return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "AWS_CONFIG_FILE": str(tmp_path / "aws-config"),
            "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "aws-credentials"),
            "HOSTKIT_MINIO_INSECURE_HOSTS": "127.0.0.1", "HOSTKIT_RETRIES": "1"}


def put(weed, bucket: str, key: str, data: bytes) -> str | None:
    return weed.admin.put_object(Bucket=bucket, Key=key, Body=data).get("VersionId")


def test_public_and_private_objects(weed, keys):
    data = os.urandom(70_000)
    put(weed, "public", "m/open.bin", data)
    put(weed, "private", "m/closed.bin", data)
    base = f"minio://127.0.0.1:{weed.port}"
    status, reports, err = check_json(f"{base}/public/m/open.bin", env=keys)
    assert status == 0, reports
    url = f"http://127.0.0.1:{weed.port}/public/m/open.bin"
    assert (reports[0]["submit"], reports[0]["sha256"]) == (url, sha(data))
    assert "keeps no versions" in verdicts(reports[0])["permanent"]["message"]
    status, out, _ = check(f"{base}/private/m/closed.bin", env=keys)
    assert status == 1
    assert re.search(r"✗ reachable anonymously +the object is private .*\(403\)", out)
    assert "fix: make it public-read" in out
    # the author's keys still fetch it: the hash is known, only MedPerf's users are locked out
    assert re.search(rf"✓ size and sha256 .*sha256 {sha(data)}", out)
    assert "submit:" not in out and SECRET not in out


def test_a_key_in_a_versioned_bucket_suggests_its_current_version(weed, keys):
    data = os.urandom(20_000)
    version = put(weed, "vers", "m/w.bin", data)
    assert version
    base = f"minio://127.0.0.1:{weed.port}"
    status, reports, _ = check_json(f"{base}/vers/m/w.bin", "--fix", env=keys)
    assert status == 1
    permanent = verdicts(reports[0])["permanent"]
    pinned = f"{base}/vers/m/w.bin?versionId={version}"
    assert permanent["ok"] is False and "keeps versions" in permanent["message"]
    assert permanent["suggestion"] == pinned
    fixed = reports[0]["fixed"]
    assert fixed["identifier"] == pinned and fixed["ok"] is True, fixed
    assert fixed["submit"] == f"http://127.0.0.1:{weed.port}/vers/m/w.bin?versionId={version}"
    assert fixed["sha256"] == sha(data)


def presign(weed, bucket: str, key: str, seconds: int) -> str:
    """A SigV4 presigned GET (X-Amz-Date, X-Amz-Expires, X-Amz-Signature)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=weed.endpoint_url, region_name="us-east-1",
                          aws_access_key_id=KEY, aws_secret_access_key=SECRET,
                          config=Config(signature_version="s3v4",
                                        s3={"addressing_style": "path"}))
    return client.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key},
                                         ExpiresIn=seconds)


def test_presigned_urls_expire(weed, keys):
    data = os.urandom(30_000)
    put(weed, "private", "p/x.bin", data)
    put(weed, "public", "p/y.bin", data)
    expired = presign(weed, "private", "p/x.bin", 1)
    valid = presign(weed, "private", "p/x.bin", 3 * 3600)
    signature = re.search(r"X-Amz-Signature=(\w+)", valid).group(1)
    status, out, err = check(valid, env=keys)
    assert status == 1
    assert re.search(r"✗ permanent +a presigned URL \(S3\): it expires "
                     r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC \(in (2 hours|179 minutes)\)", out)
    assert re.search(r"✗ reachable anonymously +the link carries its own credential "
                     r"\(a signature\)", out)
    assert re.search(r"✓ direct download", out)  # until it expires, it does serve the file
    assert signature not in out + err and SECRET not in out + err
    time.sleep(1.5)  # the short one has expired by now
    status, reports, err = check_json(expired, env=keys)
    assert status == 1
    permanent = verdicts(reports[0])["permanent"]
    assert re.search(r"it expired \S+ \S+ UTC \(\d+ seconds? ago\)", permanent["message"])
    assert verdicts(reports[0])["download"]["ok"] is not True
    # a public object's signed URL: the fix is its plain URL, readable by anyone
    status, reports, _ = check_json(presign(weed, "public", "p/y.bin", 600), "--fix", env=keys)
    assert status == 1
    plain = f"http://127.0.0.1:{weed.port}/public/p/y.bin"
    assert verdicts(reports[0])["anonymous"]["suggestion"] == plain
    assert reports[0]["fixed"]["submit"] == plain and reports[0]["fixed"]["ok"] is True


@pytest.mark.parametrize("query, who", [
    ("X-Amz-Date=20240101T000000Z&X-Amz-Expires=" + "9" * 20 + "&X-Amz-Signature=SIG-0042", "S3"),
    ("Expires=99999999999999&Signature=SIG-0042&Key-Pair-Id=K", "a signed URL"),
    ("X-Amz-Date=20240101T000000Z&X-Amz-Expires=%C2%B2&X-Amz-Signature=SIG-0042", "S3"),
    ("X-Amz-Date=yesterday&X-Amz-Expires=3600&X-Amz-Signature=SIG-0042", "S3"),
    ("X-Goog-Signature=SIG-0042&X-Goog-Algorithm=GOOG4-RSA-SHA256", "Google Cloud Storage"),
    ("sv=2021-08-06&si=policy-1&sr=b&sig=SIG-0042", "Azure (a SAS)"),  # its expiry is in a policy
    ("sv=2021-08-06&se=soon&sr=b&sig=SIG-0042", "Azure (a SAS)"),
])
def test_a_signed_url_whose_expiry_cannot_be_read_is_not_permanent(web, query, who):
    """Before, huge or odd dates made the http backend's check fail (OverflowError,
    ValueError: every verdict lost), and unreadable ones passed as 'no signature'."""
    status, reports, err = check_json(f"https://files.example.org/f/model.bin?{query}",
                                      "--no-download")
    assert status == 1 and "Traceback" not in err
    found = verdicts(reports[0])
    assert found["permanent"]["ok"] is False, found["permanent"]
    assert found["permanent"]["message"] == (
        f"a presigned URL ({who}): when it expires cannot be read from it; a signed link "
        "stops working when it does")
    assert found["direct"]["ok"] is True  # the probe still ran: the file itself
    assert "carries its own credential (a signature)" in found["anonymous"]["message"]
    assert found["anonymous"]["suggestion"] == "https://files.example.org/f/model.bin"
    assert "SIG-0042" not in json.dumps(reports) + err


def test_gcs_object_is_checked_at_its_plain_url(gcs_emulator, tmp_path):  # noqa: F811
    """gs:// through the GCS emulator (it checks no credentials: every object is readable)."""
    env = {"STORAGE_EMULATOR_HOST": gcs_emulator.endpoint_url, "HOSTKIT_GCS_ANONYMOUS": "1",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "HOME": str(tmp_path / "home")}
    data = os.urandom(9_000)
    (tmp_path / "x.bin").write_bytes(data)
    uploaded = run_cli("upload", tmp_path / "x.bin", "gs://gbucket/check/x.bin", env=env)
    assert uploaded.returncode == 0, uploaded.stderr
    pinned = uploaded.stdout.split()[0]
    status, reports, _ = check_json("gs://gbucket/check/x.bin", pinned, env=env)
    assert status == 0, reports
    media = f"{gcs_emulator.endpoint_url}/download/storage/v1/b/gbucket/o/check%2Fx.bin?alt=media"
    assert reports[0]["submit"] == media and reports[0]["sha256"] == sha(data)
    assert pinned != "gs://gbucket/check/x.bin"  # gs://...#GENERATION
    assert verdicts(reports[1])["permanent"]["message"].startswith("pinned to generation")
    assert reports[1]["submit"].startswith(media + "&generation=")


def test_secrets_never_reach_the_output(web):
    link = ("https://alice:hunter2-Pa55@files.example.org/f/model.bin"
            "?token=tok-SECRET-0042&X-Api-Key=k3y-SECRET")
    for args in ((link,), (link, "--json"), (link, "--fix"), (link, "--fix", "--json")):
        status, out, err = check(*args)
        assert status == 1
        for secret in ("hunter2-Pa55", "tok-SECRET-0042", "k3y-SECRET", "alice"):
            assert secret not in out + err, (args, secret)
    assert "carries its own credential (a user name and password)" in out
    report = json.loads(out)[0]
    plain = "https://files.example.org/f/model.bin"
    assert report["fixed"]["identifier"] == plain and report["fixed"]["submit"] == plain


# -- Synapse ------------------------------------------------------------------------------


def test_unpinned_synapse_id_suggests_its_current_version(synapse, tmp_path):  # noqa: F811
    data = os.urandom(40_000)
    sid = synapse.add_file("w.bin", data)
    synapse.add_version(sid, data + b"2")
    status, out, _ = check(f"synapse:{sid}", "--fix")
    assert status == 1
    assert re.search(rf"✓ reachable anonymously +synapse:{sid} is public", out)
    assert re.search(rf"✗ permanent +synapse:{sid} names whatever version is current "
                     r"\(now 2\)", out)
    assert f"fixed: synapse:{sid}.2" in out
    # MedPerf stores no version: the value to submit is synapse:synN, with version 2's hash
    assert f"submit: synapse:{sid}  hash: {sha(data + b'2')}" in out
    status, reports, _ = check_json(f"synapse:{sid}.1")  # an older version than MedPerf gets
    assert status == 1
    permanent = verdicts(reports[0])["permanent"]
    assert "downloads the current version, 2" in permanent["message"]
    assert permanent["suggestion"] == f"synapse:{sid}.2"


def test_private_synapse_file_needs_a_login_even_when_the_author_has_one(synapse, tmp_path):  # noqa: F811
    data = os.urandom(10_000)
    sid = synapse.add_file("p.bin", data, access="private")
    (tmp_path / "synapseConfig").write_text(config_text(synapse.url, TOKEN))
    status, reports, err = check_json(f"synapse:{sid}.1")
    assert status == 1
    found = verdicts(reports[0])
    assert found["anonymous"]["ok"] is False and "is private" in found["anonymous"]["message"]
    assert "synapse login" in found["anonymous"]["fix"]
    assert found["download"]["ok"] is True and reports[0]["sha256"] == sha(data)  # the author's
    bundles = [h for h in synapse.requests(f"/entity/{sid}/") if h.authorization is None]
    assert bundles  # the anonymous question went out with no token
    assert TOKEN not in json.dumps(reports) + err


# -- HOSTKIT_RESOLVE -------------------------------------------------------------------------


def test_hostkit_resolve_override_is_parsed_strictly(origin):
    from hostkit.errors import UsageError
    from hostkit.hostmap import parse_overrides

    assert parse_overrides("A.example:443:127.0.0.1:8443, b:80:[::1]") == {
        ("a.example", 443): ("127.0.0.1", 8443), ("b", 80): ("::1", 80)}
    for bad in ("a:443", "a:x:127.0.0.1", "a:443:not-an-ip", "a:443:127.0.0.1:0"):
        with pytest.raises(UsageError, match="HOSTKIT_RESOLVE"):
            parse_overrides(bad)
    origin.add("o.bin", b"over")
    port = origin.url.rsplit(":", 1)[1]
    proc = run_cli("resolve", "http://mirror.invalid:8000/f/o.bin",
                   env={"HOSTKIT_RESOLVE": f"mirror.invalid:8000:127.0.0.1:{port}"})
    assert proc.returncode == 0, proc.stderr
    assert origin.gets("/f/o.bin")[0].host == "mirror.invalid:8000"
    proc = run_cli("resolve", "http://mirror.invalid:8000/f/o.bin",
                   env={"HOSTKIT_RESOLVE": "mirror.invalid"})
    assert proc.returncode == 2 and "HOSTKIT_RESOLVE" in proc.stderr


def test_who_may_download_a_synapse_entity_in_words():
    """Synapse's access lists (benefactor ACLs; the stand-in has none) read as sentences."""
    from hostkit_backends.synapse import who_can_download

    def acl(*entries):
        return {"resourceAccess": [{"principalId": p, "accessType": list(t)} for p, t in entries]}

    assert who_can_download(None) is None and who_can_download({}) is None
    assert who_can_download(acl((273948, ("READ", "DOWNLOAD")))).startswith("anyone")
    assert who_can_download(acl((273949, ("READ", "DOWNLOAD")), (7, ("READ",)))) == (
        "any Synapse user who logs in (its access list lets all registered users download)")
    assert who_can_download(acl((7, ("DOWNLOAD",)), (8, ("READ",)))) == (
        "only the 1 user or team on its access list")
    assert who_can_download(acl((7, ("READ",)))) == "nobody but its administrators"
