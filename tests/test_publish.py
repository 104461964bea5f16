"""hostkit publish: package, upload, anonymous check, MedPerf's record; pull takes it back.

Against real servers: SeaweedFS with a public-read bucket (an ``anonymous``
identity granted Read on it) and a private one, and the Synapse stand-in.
"""

from __future__ import annotations

import hashlib
import json
import urllib.error
import urllib.request

import pytest

from tests.conftest import run_cli
from tests.objectstore_fixtures import KEY, SECRET, gcs_emulator, s3_admin  # noqa: F401
from tests.servers import SeaweedS3Server
from tests.synapse_standin import TOKEN, config_text
from tests.test_mlcube import make_cube
from tests.test_pull import check_layout
from tests.test_synapse import synapse, synapse_server  # noqa: F401 (fixtures)

FIELDS = ("git_mlcube_url", "mlcube_hash", "git_parameters_url", "parameters_hash",
          "additional_files_tarball_url", "additional_files_tarball_hash",
          "image_tarball_url", "image_tarball_hash")


@pytest.fixture(scope="module")
def weed():
    """SeaweedFS whose bucket ``public`` unsigned requests may read; ``private`` they may not."""
    server = SeaweedS3Server(access_key=KEY, secret_key=SECRET, anonymous_read=("public",))
    admin = s3_admin(server)
    for bucket in ("public", "private"):
        admin.create_bucket(Bucket=bucket)
    server.admin = admin
    yield server
    server.stop()


@pytest.fixture
def env(weed, tmp_path):
    """The publisher's environment: keys for SeaweedFS, plain http to 127.0.0.1, own cache."""
    return {"AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
            "HOSTKIT_MINIO_INSECURE_HOSTS": "127.0.0.1", "HOME": str(tmp_path / "home"),
            "HOSTKIT_CACHE_DIR": str(tmp_path / "cache"), "HOSTKIT_DAEMON_URL": ""}


def assets_hashes(cube) -> dict[str, str]:
    parts = json.loads((cube / "assets/assets.json").read_text())["parts"]
    return {p["name"]: p["sha256"] for p in parts}


def publish_json(cube, dest, env, *extra) -> dict:
    proc = run_cli("publish", cube, "--type", "model", "--to", dest, "--json", *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    assert SECRET not in proc.stdout + proc.stderr
    return json.loads(proc.stdout)


def check_record(record: dict, cube) -> None:
    hashes = assets_hashes(cube)
    assert record["mlcube_hash"] == hashes["mlcube.yaml"]
    assert record["parameters_hash"] == hashes["parameters.yaml"]
    assert record["additional_files_tarball_hash"] == hashes["additional_files.tar.gz"]
    assert record["image_tarball_hash"] == hashes["cube.sif"]
    container = record["container"]
    config = container["container_config"]
    assert (config["container_type"], config["image"]) == ("SingularityFile",
                                                           record["image_tarball_url"])
    # MedPerf's own schema check (SimpleContainerParser.check_schema), then what it mounts
    for task in config["tasks"].values():
        for volume in {**task.get("input_volumes", {}), **task.get("output_volumes", {})}.values():
            assert set(volume) == {"mount_path", "type"} and volume["type"] in ("file",
                                                                               "directory")
    infer = config["tasks"]["infer"]
    assert infer["input_volumes"]["parameters_file"] == {
        "mount_path": "/mlcube_io1/parameters.yaml", "type": "file"}
    weights = infer["input_volumes"]["additional_files"]["mount_path"] + "/cnn_weights.pth"
    assert f"--weights={weights}" in infer["run_args"]["command"].split()
    assert container["parameters_config"] == {"threshold": 0.5, "labels": ["a", "b"]}
    assert container["image_hash"] == hashes["cube.sif"]
    assert container["additional_files_tarball_url"] == record["additional_files_tarball_url"]
    assert container["additional_files_tarball_hash"] == hashes["additional_files.tar.gz"]


def pull(record: dict, into, tmp_path, env) -> None:
    rec = tmp_path / f"{into.name}.json"
    rec.write_text(json.dumps(record))
    proc = run_cli("pull", rec, "--into", into, "--cache-dir", tmp_path / f"{into.name}-cache",
                   env=env)
    assert proc.returncode == 0, proc.stderr


def test_public_bucket_publish_then_pull_round_trip_and_republish_is_a_noop(
        weed, env, tmp_path):
    cube = make_cube(tmp_path / "model", "model")
    dest = f"minio://127.0.0.1:{weed.port}/public/cubes/"
    record = publish_json(cube, dest, env)
    assert set(FIELDS) <= set(record)
    check_record(record, cube)
    base = f"http://127.0.0.1:{weed.port}/public/cubes/"
    for url_field, hash_field in zip(FIELDS[::2], FIELDS[1::2], strict=True):
        assert record[url_field].startswith(base), record[url_field]
        # what MedPerf does: a plain anonymous GET returns the file itself
        with urllib.request.urlopen(record[url_field], timeout=30) as answer:
            body = answer.read()
        assert hashlib.sha256(body).hexdigest() == record[hash_field]
    # pull takes exactly what publish printed, and the current form under "container"
    pull(record, tmp_path / "pulled", tmp_path, {"HOME": str(tmp_path / "nobody")})
    check_layout(tmp_path / "pulled", cube)
    pull(record["container"], tmp_path / "pulled-current", tmp_path,
         {"HOME": str(tmp_path / "nobody")})
    assert (tmp_path / "pulled-current/workspace/.image/cube.sif").read_bytes() == \
        (cube / "workspace/.image/cube.sif").read_bytes()

    # again: nothing uploaded (count the objects' versions and the CLI's count), same record
    listed = weed.admin.list_objects_v2(Bucket="public", Prefix="cubes/")["Contents"]
    proc = run_cli("publish", cube, "--type", "model", "--to", dest, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "0 part(s) uploaded, 4 already there" in proc.stderr
    again = weed.admin.list_objects_v2(Bucket="public", Prefix="cubes/")["Contents"]
    assert [(o["Key"], o["LastModified"]) for o in again] == \
        [(o["Key"], o["LastModified"]) for o in listed]
    assert publish_json(cube, dest, env) == record


def test_private_bucket_fails_unless_private(weed, env, tmp_path):
    cube = make_cube(tmp_path / "model", "model")
    dest = f"minio://127.0.0.1:{weed.port}/private/cubes/"
    proc = run_cli("publish", cube, "--type", "model", "--to", dest, "--json", env=env)
    assert proc.returncode == 4
    assert "not anonymously readable" in proc.stderr and "MedPerf" in proc.stderr
    assert json.loads(proc.stdout)["error"] == "credentials_needed"  # no record printed
    assert "git_mlcube_url" not in proc.stdout
    assert SECRET not in proc.stdout + proc.stderr
    record = publish_json(cube, dest, env, "--private")
    assert "MedPerf cannot use" in run_cli("publish", cube, "--type", "model", "--to", dest,
                                           "--private", env=env).stderr
    for field in FIELDS[::2]:
        assert record[field].startswith(f"minio://127.0.0.1:{weed.port}/private/cubes/")
        with pytest.raises(urllib.error.HTTPError) as refused:  # indeed not anonymous
            urllib.request.urlopen(record[field].replace("minio://", "http://"), timeout=30)
        assert refused.value.code == 403
    check_record(record, cube)


def test_invalid_cube_uploads_nothing(weed, env, tmp_path):
    cube = make_cube(tmp_path / "bad", "model")
    (cube / "workspace/parameters.yaml").unlink()
    proc = run_cli("publish", cube, "--type", "model", "--to",
                   f"minio://127.0.0.1:{weed.port}/public/bad/", env=env)
    assert proc.returncode == 2
    assert "Contents" not in weed.admin.list_objects_v2(Bucket="public", Prefix="bad/")


def test_synapse_publish_then_pull_round_trip(synapse, tmp_path):  # noqa: F811
    folder = synapse.add_folder("cubes")
    cube = make_cube(tmp_path / "model", "model")
    env = {"SYNAPSE_AUTH_TOKEN": TOKEN, "HOSTKIT_CACHE_DIR": str(tmp_path / "cache"),
           "HOSTKIT_DAEMON_URL": ""}
    record = publish_json(cube, f"synapse:{folder}", env)
    check_record(record, cube)
    for field in FIELDS[::2]:
        assert record[field].startswith("synapse:syn") and "." not in record[field]
    # pulled back with no token at all
    pull(record, tmp_path / "pulled", tmp_path, {"SYNAPSE_AUTH_TOKEN": ""})
    check_layout(tmp_path / "pulled", cube)
    assert publish_json(cube, f"synapse:{folder}", env) == record


def test_synapse_endpoints_from_the_config_file_reach_the_anonymous_check(
        synapse, tmp_path):  # noqa: F811
    """A publisher whose Synapse (and token) live in its config file: the anonymous check
    keeps the [endpoints], never the token, instead of asking production."""
    folder = synapse.add_folder("cfg-cubes")
    cube = make_cube(tmp_path / "model", "model", image=None)
    config = tmp_path / "publisher.synapseConfig"
    config.write_text(config_text(synapse.url, TOKEN))
    env = {"HOSTKIT_SYNAPSE_ENDPOINT": "", "HOSTKIT_SYNAPSE_CONFIG": str(config),
           "SYNAPSE_AUTH_TOKEN": "", "HOSTKIT_CACHE_DIR": str(tmp_path / "cache"),
           "HOSTKIT_DAEMON_URL": ""}
    record = publish_json(cube, f"synapse:{folder}", env)
    assert record["git_mlcube_url"].startswith("synapse:syn")
    checks = [h for h in synapse.hits if h.path == "/repo/v1/userProfile"]
    assert checks and all(h.authorization == f"Bearer {TOKEN}" for h in checks)
    anonymous = [h for h in synapse.requests("/fileHandle/batch") if h.authorization is None]
    assert anonymous  # the check downloaded through the same Synapse, with no token


def test_gcs_emulator_publish_prints_media_urls_and_pulls_back(gcs_emulator, tmp_path):  # noqa: F811
    """gs:// destinations print the object's plain download URL (the emulator checks no
    credentials, so this shows the URL form and the round trip, not access control)."""
    server = gcs_emulator
    cube = make_cube(tmp_path / "model", "model")
    env = {"STORAGE_EMULATOR_HOST": server.endpoint_url, "HOSTKIT_GCS_ANONYMOUS": "1",
           "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false", "HOME": str(tmp_path / "home"),
           "HOSTKIT_CACHE_DIR": str(tmp_path / "cache"), "HOSTKIT_DAEMON_URL": ""}
    record = publish_json(cube, "gs://gbucket/cubes/", env)
    check_record(record, cube)
    for field in FIELDS[::2]:
        assert record[field].startswith(f"{server.endpoint_url}/download/storage/v1/b/"
                                        "gbucket/o/cubes%2F")
    pull(record, tmp_path / "pulled", tmp_path, {"HOME": str(tmp_path / "nobody")})
    check_layout(tmp_path / "pulled", cube)
