"""``hostkit pull``: MedPerf cube records (both forms) served by the test origin, verified,
extracted safely, built atomically, and served from the cache the second time."""

from __future__ import annotations

import io
import json
import os
import tarfile
import uuid
from pathlib import Path

import pytest
import yaml

from hostkit.workflows.mlcube import package
from tests.conftest import run_cli
from tests.test_mlcube import make_cube


def publish(origin, assets: Path) -> dict[str, tuple[str, str]]:
    """Serve each packaged part from the origin: name -> (url, sha256 from assets.json)."""
    prefix = uuid.uuid4().hex[:8]
    parts = json.loads((assets / "assets.json").read_text())["parts"]
    served = {}
    for part in parts:
        name = f"{prefix}-{part['name']}"
        assert origin.add(name, (assets / part["name"]).read_bytes()) == part["sha256"]
        served[part["name"]] = (f"{origin.url}/f/{name}", part["sha256"])
    return served


def mlcube_record(served, *, hashes: bool = True) -> dict:
    """A MedPerf server's MLCube-era record for the served parts (other keys ignored)."""
    def url(name):
        return served[name][0] if name in served else ""

    def digest(name):
        return served[name][1] if hashes and name in served else ""

    image = next((n for n in served if n.endswith(".sif")), None)
    return {"id": 7, "name": "cube", "owner": 1, "state": "OPERATION", "is_valid": True,
            "git_mlcube_url": url("mlcube.yaml"), "mlcube_hash": digest("mlcube.yaml"),
            "git_parameters_url": url("parameters.yaml"),
            "parameters_hash": digest("parameters.yaml"),
            "additional_files_tarball_url": url("additional_files.tar.gz"),
            "additional_files_tarball_hash": digest("additional_files.tar.gz"),
            "image_tarball_url": url(image) if image else "",
            "image_tarball_hash": digest(image) if image else "",
            "created_at": "2025-01-01T00:00:00Z"}


@pytest.fixture
def packaged(tmp_path):
    cube = make_cube(tmp_path / "src", "model")
    package(cube, "model")
    return cube


def write(path: Path, record: dict) -> Path:
    path.write_text(json.dumps(record))
    return path


def check_layout(into: Path, cube: Path) -> None:
    ws = cube / "workspace"
    assert (into / "mlcube.yaml").read_bytes() == (cube / "mlcube.yaml").read_bytes()
    assert (into / "workspace/parameters.yaml").read_bytes() == \
        (ws / "parameters.yaml").read_bytes()
    assert (into / "workspace/.image/cube.sif").read_bytes() == \
        (ws / ".image/cube.sif").read_bytes()
    extracted = into / "workspace/additional_files"
    assert sorted(p.relative_to(extracted).as_posix() for p in extracted.rglob("*")) == [
        "cnn_weights.pth", "run.sh", "sub", "sub/vocab.txt"]
    for rel in ("cnn_weights.pth", "sub/vocab.txt", "run.sh"):
        assert (extracted / rel).read_bytes() == (ws / "additional_files" / rel).read_bytes()
    assert os.access(extracted / "run.sh", os.X_OK)


def siblings(path: Path) -> list[str]:
    return sorted(p.name for p in path.parent.iterdir() if p.name.startswith(f".{path.name}."))


def test_pull_mlcube_record_then_second_pull_from_cache(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    record = write(tmp_path / "cube.json", mlcube_record(served))
    into = tmp_path / "cubes" / "model"
    out = json.loads(run_cli("pull", record, "--into", into, "--json", check=True).stdout)
    check_layout(into, packaged)
    assert out["hashes"] == {} and out["extracted"] is True
    assert all(p["verified"] for p in out["parts"].values())
    assert len(origin.gets()) == 4
    origin.hits.clear()
    again = tmp_path / "cubes" / "again"
    out = json.loads(run_cli("pull", record, "--into", again, "--json", check=True).stdout)
    check_layout(again, packaged)
    assert origin.hits == []  # no origin request at all
    assert out["extracted"] is False and all(p["cached"] for p in out["parts"].values())
    weights = "workspace/additional_files/cnn_weights.pth"
    assert (into / weights).stat().st_ino == (again / weights).stat().st_ino  # linked, shared
    assert siblings(into) == [] and siblings(again) == []


def test_trust_on_first_use_returns_hashes_under_the_record_fields(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    record = write(tmp_path / "cube.json", mlcube_record(served, hashes=False))
    proc = run_cli("pull", record, "--into", tmp_path / "d", "--json", check=True)
    hashes = json.loads(proc.stdout)["hashes"]
    assert hashes == {"mlcube_hash": served["mlcube.yaml"][1],
                      "parameters_hash": served["parameters.yaml"][1],
                      "additional_files_tarball_hash": served["additional_files.tar.gz"][1],
                      "image_tarball_hash": served["cube.sif"][1]}
    check_layout(tmp_path / "d", packaged)
    plain = run_cli("pull", record, "--into", tmp_path / "e", check=True)
    assert f"{served['mlcube.yaml'][1]} trusted on first use" in plain.stderr
    assert "mlcube_hash" in plain.stderr


def test_absent_parts_are_empty_strings(origin, tmp_path):
    cube = make_cube(tmp_path / "src", "metrics", params=False, additional=False, image=None,
                     docker="org/metrics:1")
    package(cube, "metrics")
    served = publish(origin, cube / "assets")
    record = write(tmp_path / "cube.json", mlcube_record(served))
    run_cli("pull", record, "--into", tmp_path / "d", check=True)
    assert sorted(p.relative_to(tmp_path / "d").as_posix()
                  for p in (tmp_path / "d").rglob("*")) == ["mlcube.yaml", "workspace"]


def current_record(origin, cube: Path, served, *, kind="SingularityFile") -> dict:
    params = yaml.safe_load((cube / "workspace/parameters.yaml").read_text())
    config = {"container_type": kind, "image": served["cube.sif"][0],
              "tasks": {"infer": {"input_volumes": {"data_path": {"mount_path": "/data"}},
                                  "output_volumes": {"output_path": {"mount_path": "/out"}}}}}
    return {"id": 3, "name": "model", "owner": 2, "state": "OPERATION",
            "container_config": config, "parameters_config": params,
            "image_hash": served["cube.sif"][1],
            "additional_files_tarball_url": served["additional_files.tar.gz"][0],
            "additional_files_tarball_hash": served["additional_files.tar.gz"][1]}


@pytest.mark.parametrize("kind", ["SingularityFile", "DockerArchive"])
def test_pull_current_form_record(origin, packaged, tmp_path, kind):
    served = publish(origin, packaged / "assets")
    record = current_record(origin, packaged, served, kind=kind)
    into = tmp_path / "d"
    run_cli("pull", write(tmp_path / "c.json", record), "--into", into, check=True)
    assert yaml.safe_load((into / "workspace/parameters.yaml").read_text()) == \
        record["parameters_config"]
    image_name = served["cube.sif"][0].rsplit("/", 1)[1]
    assert (into / "workspace/.image" / image_name).read_bytes() == \
        (packaged / "workspace/.image/cube.sif").read_bytes()
    assert (into / "workspace/additional_files/sub/vocab.txt").read_text() == "a\nb\n"
    assert json.loads((into / "container_config.json").read_text()) == record["container_config"]
    # what publish --json prints: the same record under a `container` key, inline JSON strings
    wrapped = {"git_mlcube_url": "", "container": {
        **record, "container_config": json.dumps(record["container_config"]),
        "parameters_config": json.dumps(record["parameters_config"])}}
    run_cli("pull", write(tmp_path / "w.json", wrapped), "--into", tmp_path / "w", check=True)
    assert (tmp_path / "w/workspace/parameters.yaml").read_bytes() == \
        (into / "workspace/parameters.yaml").read_bytes()


def test_docker_image_record_prints_its_reference(origin, tmp_path):
    digest = "sha256:" + "ab" * 32
    record = {"container_config": {"container_type": "DockerImage", "image": "org/model:1.0",
                                   "tasks": {}},
              "parameters_config": {"a": 1}, "image_hash": digest,
              "additional_files_tarball_url": "", "additional_files_tarball_hash": ""}
    proc = run_cli("pull", write(tmp_path / "c.json", record), "--into", tmp_path / "d",
                   check=True)
    assert f"org/model:1.0@{digest}" in proc.stdout.splitlines()
    assert (tmp_path / "d/workspace/parameters.yaml").read_text() == "a: 1\n"
    assert origin.hits == []


def test_failed_pull_leaves_nothing_then_rerun_works(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    good = mlcube_record(served)
    into = tmp_path / "d"
    missing = {**good, "additional_files_tarball_url": f"{origin.url}/f/no-such-{uuid.uuid4()}"}
    proc = run_cli("pull", write(tmp_path / "m.json", missing), "--into", into)
    assert proc.returncode == 4 and "not found" in proc.stderr and "Traceback" not in proc.stderr
    assert not into.exists() and siblings(into) == []
    wrong = {**good, "image_tarball_hash": "0" * 64}
    into.mkdir()  # an existing empty folder stays empty
    proc = run_cli("pull", write(tmp_path / "x.json", wrong), "--into", into, "--json")
    assert proc.returncode == 3 and json.loads(proc.stdout)["error"] == "hash_mismatch"
    assert list(into.iterdir()) == [] and siblings(into) == []
    run_cli("pull", write(tmp_path / "g.json", good), "--into", into, check=True)
    check_layout(into, packaged)


def test_non_empty_folder_needs_force(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    record = write(tmp_path / "c.json", mlcube_record(served))
    into = tmp_path / "d"
    into.mkdir()
    (into / "keep.txt").write_text("mine")
    proc = run_cli("pull", record, "--into", into)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert (into / "keep.txt").read_text() == "mine"
    run_cli("pull", record, "--into", into, "--force", check=True)
    assert not (into / "keep.txt").exists()
    check_layout(into, packaged)
    assert siblings(into) == []


def test_bad_records_are_clean_errors(tmp_path):
    cases = [("not json", "not JSON"), ("[1]", "not a JSON object"),
             ('{"name": "x"}', "neither git_mlcube_url nor container_config"),
             ('{"container_config": {"container_type": "Zip", "image": "x"}}',
              "unknown container_type")]
    for i, (text, words) in enumerate(cases):
        path = tmp_path / f"r{i}.json"
        path.write_text(text)
        proc = run_cli("pull", path, "--into", tmp_path / f"d{i}")
        assert proc.returncode == 2 and words in proc.stderr and "Traceback" not in proc.stderr
        assert not (tmp_path / f"d{i}").exists()


def _tar(members) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for info, data in members:
            tar.addfile(info, io.BytesIO(data) if data is not None else None)
    return buf.getvalue()


def _file(name: str, data: bytes = b"x") -> tuple[tarfile.TarInfo, bytes]:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    return info, data


def _special(name: str, kind: bytes, linkname: str = "") -> tuple[tarfile.TarInfo, None]:
    info = tarfile.TarInfo(name)
    info.type = kind
    info.linkname = linkname
    return info, None


HOSTILE = {
    "absolute path": ([_file("/tmp/evil-abs")], {}, "absolute path"),
    "dot-dot": ([_file("ok.txt"), _file("../evil-up")], {}, "'..'"),
    "symlink out": ([_special("link", tarfile.SYMTYPE, "../../../outside")], {},
                    "outside"),
    "absolute symlink": ([_special("link", tarfile.SYMTYPE, "/etc/passwd")], {},
                         "absolute path"),
    "hard link": ([_file("a.txt"), _special("b.txt", tarfile.LNKTYPE, "a.txt")], {},
                  "hard link"),
    "device": ([_special("dev", tarfile.CHRTYPE)], {}, "a device"),
    "fifo": ([_special("fifo", tarfile.FIFOTYPE)], {}, "a FIFO"),
    "too many members": ([_file(f"f{i}") for i in range(20)],
                         {"HOSTKIT_EXTRACT_MAX_MEMBERS": "10"}, "more than 10 members"),
    "too large": ([_file("big", b"\0" * 50_000)], {"HOSTKIT_EXTRACT_MAX_BYTES": "10000"},
                  "over 10000 bytes"),
}


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_archives_are_refused(origin, packaged, tmp_path, case):
    members, env, words = HOSTILE[case]
    served = publish(origin, packaged / "assets")
    name = f"hostile-{uuid.uuid4().hex[:8]}.tar.gz"
    digest = origin.add(name, _tar(members))
    record = {**mlcube_record(served), "additional_files_tarball_url": f"{origin.url}/f/{name}",
              "additional_files_tarball_hash": digest}
    into = tmp_path / "work" / "d"
    into.parent.mkdir()
    proc = run_cli("pull", write(tmp_path / "c.json", record), "--into", into, "--json", env=env)
    assert proc.returncode == 2, proc.stderr
    err = json.loads(proc.stdout)
    assert err["error"] == "unsafe_archive" and words in err["message"], err["message"]
    assert "Traceback" not in proc.stderr
    assert not into.exists() and siblings(into) == []
    assert sorted(p.name for p in (tmp_path / "work").iterdir()) == []
    assert not list(tmp_path.rglob("evil-*")) and not list(Path("/tmp").glob("evil-abs"))
    cache = tmp_path / "cache"
    assert not (cache / "trees" / digest).exists()
    assert not list((cache / "tmp").glob("tree-*"))


def test_safe_tree_keeps_inner_symlinks(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    name = f"inner-{uuid.uuid4().hex[:8]}.tar.gz"
    dirinfo = tarfile.TarInfo("d")
    dirinfo.type = tarfile.DIRTYPE
    digest = origin.add(name, _tar([(dirinfo, None), _file("d/real.txt", b"hello"),
                                    _special("d/alias.txt", tarfile.SYMTYPE, "real.txt"),
                                    _special("top", tarfile.SYMTYPE, "d/real.txt"),
                                    _file("./dot.txt", b"dot")]))
    record = {**mlcube_record(served), "additional_files_tarball_url": f"{origin.url}/f/{name}",
              "additional_files_tarball_hash": digest}
    into = tmp_path / "d"
    run_cli("pull", write(tmp_path / "c.json", record), "--into", into, check=True)
    extracted = into / "workspace/additional_files"
    assert (extracted / "d/alias.txt").read_text() == "hello"
    assert (extracted / "top").read_text() == "hello" and (extracted / "top").is_symlink()
    assert (extracted / "dot.txt").read_text() == "dot"


@pytest.mark.parametrize("with_filter", [True, False])
def test_safe_extract_without_the_stdlib_filter(tmp_path, monkeypatch, with_filter):
    """Pythons before 3.11.4 have no tarfile.data_filter: hostkit's own checks refuse the same."""
    from hostkit.store.trees import UnsafeArchive, safe_extract

    if not with_filter:
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
    for case in sorted(HOSTILE):
        members, env, words = HOSTILE[case]
        archive = tmp_path / f"{case}.tar.gz"
        archive.write_bytes(_tar(members))
        caps = {"max_members": int(env.get("HOSTKIT_EXTRACT_MAX_MEMBERS", 1000)),
                "max_bytes": int(env.get("HOSTKIT_EXTRACT_MAX_BYTES", 1 << 20))}
        with pytest.raises(UnsafeArchive, match="unsafe archive"):
            safe_extract(archive, tmp_path / "out" / case, **caps)
    assert not list(tmp_path.rglob("evil-*")) and not (tmp_path / "outside").exists()
    (tmp_path / "bad.tar.gz").write_bytes(b"not a tar at all")
    with pytest.raises(UnsafeArchive, match="not a readable tar"):
        safe_extract(tmp_path / "bad.tar.gz", tmp_path / "out" / "bad")


def test_leftovers_of_a_killed_pull_are_removed(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    into = tmp_path / "d"
    dead = tmp_path / ".d.pull-999999999-abcd1234"  # no such pid: a run killed mid-build
    (dead / "workspace").mkdir(parents=True)
    proc = run_cli("pull", write(tmp_path / "c.json", mlcube_record(served)), "--into", into,
                   "--cache-dir", tmp_path / "other-cache", check=True)
    assert proc.stdout.strip() == str(into)
    check_layout(into, packaged)
    assert siblings(into) == []
    assert (tmp_path / "other-cache" / "trees").is_dir()


def _pull_argv(record: Path, into: Path) -> list[str]:
    import sys

    return [sys.executable, "-m", "hostkit.cli", "pull", str(record), "--into", str(into)]


def test_pull_killed_during_a_download_and_while_building_then_rerun(origin, packaged,
                                                                     tmp_path):
    """SIGKILL mid-download, then SIGKILL after DIR was built but before it was put in
    place: DIR never appears half-built, nothing lands outside it, and each re-run works
    (the interrupted image download is never fetched twice)."""
    import signal
    import subprocess
    import time

    served = publish(origin, packaged / "assets")
    image = (packaged / "assets" / "cube.sif").read_bytes()
    big = image + os.urandom(8 << 20)  # ~2.6 s at the slow route's pace
    name = f"{uuid.uuid4().hex[:8]}-cube.sif"
    sha = origin.add(name, big)
    record = {**mlcube_record(served), "image_tarball_url": f"{origin.url}/slow/{name}",
              "image_tarball_hash": sha}
    rec, into, cache = write(tmp_path / "r.json", record), tmp_path / "d", tmp_path / "cache"
    before = sorted(p.name for p in tmp_path.iterdir())
    proc = subprocess.Popen(_pull_argv(rec, into), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, env=os.environ.copy())
    deadline = time.monotonic() + 30
    def written() -> int:
        total = 0
        for part in (cache / "tmp").glob("*.part") if (cache / "tmp").is_dir() else ():
            try:
                total += part.stat().st_size
            except FileNotFoundError:  # claimed (renamed) or finished meanwhile
                continue
        return total

    while not written() and time.monotonic() < deadline:  # some bytes of the image are on disk
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    assert not into.exists() and siblings(into) == []
    # nothing written but the cache (the partial it resumes from)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([*before, "cache"])

    killed = subprocess.run(_pull_argv(rec, into), capture_output=True, text=True, timeout=120,
                            env={**os.environ, "HOSTKIT_FAILPOINT": "pull-swap"})
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert not into.exists() and len(siblings(into)) == 1  # built, never renamed in
    # never fetched twice: resumed with Range, or (killed after its last byte) adopted as is
    again = origin.gets(name)[1:]
    assert all(h.range and h.range != "bytes=0-" for h in again), again

    done = subprocess.run(_pull_argv(rec, into), capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert (into / "workspace/.image/cube.sif").read_bytes() == big
    assert siblings(into) == []  # the killed run's folder was cleared


def test_pull_through_the_daemon(origin, packaged, tmp_path, daemon):
    """With a daemon running, every part resolves through it (its cache holds the blobs)."""
    served = publish(origin, packaged / "assets")
    record = write(tmp_path / "c.json", mlcube_record(served))
    out = json.loads(run_cli("pull", record, "--into", tmp_path / "d", "--json",
                             env=daemon.env, check=True).stdout)
    check_layout(tmp_path / "d", packaged)
    blobs = tmp_path / "dcache" / "blobs" / "sha256"
    assert {p["sha256"] for p in out["parts"].values()} <= {p.name for p in blobs.iterdir()}
    origin.hits.clear()
    run_cli("pull", record, "--into", tmp_path / "e", env=daemon.env, check=True)
    check_layout(tmp_path / "e", packaged)
    assert origin.hits == []


def test_current_form_without_hashes_is_trusted_on_first_use(origin, packaged, tmp_path):
    served = publish(origin, packaged / "assets")
    record = {**current_record(origin, packaged, served), "image_hash": "",
              "additional_files_tarball_hash": ""}
    out = json.loads(run_cli("pull", write(tmp_path / "c.json", record), "--into",
                             tmp_path / "d", "--json", check=True).stdout)
    assert out["hashes"] == {"image_hash": served["cube.sif"][1],
                             "additional_files_tarball_hash":
                                 served["additional_files.tar.gz"][1]}


def test_pruning_an_archive_drops_its_extracted_tree(origin, packaged, tmp_path, isolated_env):
    served = publish(origin, packaged / "assets")
    record = write(tmp_path / "cube.json", mlcube_record(served))
    run_cli("pull", record, "--into", tmp_path / "one", check=True)
    trees = isolated_env / "cache" / "trees"
    assert [p.name for p in trees.iterdir()]  # the tarball's tree is cached
    run_cli("cache", "prune", "--max-size", "0", check=True)
    assert list(trees.iterdir()) == []  # gone with the archive's blob
    run_cli("pull", record, "--into", tmp_path / "two", check=True)  # and rebuilt on demand
    check_layout(tmp_path / "two", packaged)


def test_signed_part_urls_never_appear_in_pull_output(origin, packaged, tmp_path):
    """A record may hold presigned URLs: pull shows them as the resolver does, signature masked."""
    secret = "SigPull7731"
    served = publish(origin, packaged / "assets")
    signed = {n: (f"{url}?X-Amz-Credential=AKIA{secret}&X-Amz-Signature={secret}", sha)
              for n, (url, sha) in served.items()}
    record = write(tmp_path / "cube.json", mlcube_record(signed))
    ok = run_cli("pull", record, "--into", tmp_path / "ok", "--json", check=True)
    assert secret not in ok.stdout + ok.stderr
    name = f"hostile-{uuid.uuid4().hex[:8]}.tar.gz"
    digest = origin.add(name, _tar([_file("../evil-signed", b"x")]))
    hostile = {**mlcube_record(signed),
               "additional_files_tarball_url": f"{origin.url}/f/{name}?X-Amz-Signature={secret}",
               "additional_files_tarball_hash": digest}
    bad = run_cli("pull", write(tmp_path / "h.json", hostile), "--into", tmp_path / "bad",
                  "--json")
    assert bad.returncode == 2 and "unsafe_archive" in bad.stdout, bad.stdout
    assert secret not in bad.stdout + bad.stderr


def test_a_part_pruned_before_it_is_placed_is_resolved_again(origin, packaged, tmp_path):
    """A `cache rm` (or a cron prune) between the parts' resolve and DIR's build: the part
    is resolved again by its sha256 and the pull completes (it failed "cannot build DIR")."""
    import contextlib
    import signal
    import subprocess

    from tests.test_many_faults import _stopped

    served = publish(origin, packaged / "assets")
    rec, into = write(tmp_path / "r.json", mlcube_record(served)), tmp_path / "d"
    manifest_url, manifest_sha = served["mlcube.yaml"]
    proc = subprocess.Popen(_pull_argv(rec, into), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HOSTKIT_FAILPOINT": "place:SIGSTOP"})

    try:
        _stopped(proc)  # at the first placing: every part is resolved by now
        run_cli("cache", "rm", manifest_sha, "-y", check=True)
        origin.hits.clear()
        while proc.poll() is None:  # each placing stops once more
            with contextlib.suppress(AssertionError):
                _stopped(proc, timeout=0.5)
                os.kill(proc.pid, signal.SIGCONT)
        stdout, stderr = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, stderr
    check_layout(into, packaged)
    assert len(origin.gets(manifest_url.rsplit("/", 1)[1])) == 1  # fetched again, once
