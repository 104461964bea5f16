"""MedPerf's parts, attacked: the drop-in with MedPerf's call patterns, hostile records.

Each test here failed before the change it came with (a second, hostile review of
issue 9); real processes against the real origin (tests/origin.py).
"""

from __future__ import annotations

import pytest

from tests.conftest import run_cli
from tests.test_medperf_dropin import call
from tests.test_resolve import data

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("medperf", [False, True])
def test_an_output_path_naming_a_folder_is_refused_before_any_request(origin, tmp_path,
                                                                     medperf):
    """``output_path="cubes/1/"`` names a folder: MedPerf's own rename fails there. The
    drop-in wrote a file named ``1`` (the slash dropped)."""
    origin.add("slash.bin", data(1000, 130))
    origin.hits.clear()
    got = call(f"{origin.url}/f/slash.bin", f"{tmp_path}/cubes/1/", medperf=medperf)
    assert "UsageError" in got["hostkit"], got
    if medperf:
        assert got["medperf"] == ["InvalidArgumentError", "MedperfException"]
    assert not (tmp_path / "cubes").exists()
    assert origin.hits == []


def _record(path, text: str):
    path.write_text(text)
    return path


DOCKER = {"container_type": "DockerImage", "image": "org/model:1.0"}


@pytest.mark.parametrize("case", ["nested record", "nested inline parameters",
                                  "nested parameters", "huge record"])
def test_hostile_records_are_clean_errors(origin, tmp_path, case):
    """A record nested 100,000 deep (or a parameters_config nested past what YAML writes)
    ended in a RecursionError traceback; a 200 MB record took minutes and most of a GiB.
    Records are a few KiB: over 16 MiB is refused unread."""
    import json

    text = {
        "nested record": '{"a":' * 100_000 + "1" + "}" * 100_000,
        "nested inline parameters": json.dumps({"container_config": DOCKER,
                                                "parameters_config": "[" * 100_000
                                                + "]" * 100_000}),
        "nested parameters": json.dumps({"container_config": DOCKER,
                                         "parameters_config": json.loads("[" * 900
                                                                         + "]" * 900)}),
        "huge record": json.dumps({"container_config": DOCKER,
                                   "parameters_config": {"k": "x" * (17 << 20)}}),
    }[case]
    proc = run_cli("pull", _record(tmp_path / "r.json", text), "--into", tmp_path / "d",
                   timeout=60)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr and "record" in proc.stderr
    assert not (tmp_path / "d").exists()


@pytest.mark.parametrize("image,image_hash", [
    ("org/model:1.0\x1b]0;owned\x07\x1b[2J", ""),        # terminal escapes, printed raw
    ("../../etc/passwd", ""),
    ("org/model:1.0", "sha256:../../x"),
    ("Org/Model", ""),                                   # not a Docker reference either
])
def test_a_docker_image_that_is_no_docker_reference_is_refused(origin, tmp_path, image,
                                                              image_hash):
    """A DockerImage record's image (and image_hash) were printed as given: any text, control
    characters included, for the user to paste into `docker pull`."""
    import json

    record = {"container_config": {**DOCKER, "image": image}, "image_hash": image_hash}
    proc = run_cli("pull", _record(tmp_path / "r.json", json.dumps(record)), "--into",
                   tmp_path / "d")
    assert proc.returncode == 2, proc.stdout
    assert "\x1b" not in proc.stdout + proc.stderr and proc.stdout == ""
    assert not (tmp_path / "d").exists()


def test_docker_references_medperf_uses_are_accepted(origin, tmp_path):
    import json

    digest = "sha256:" + "cd" * 32
    for i, image in enumerate(("alpine", "mlcommons/medperf-model:0.1.2",
                               "registry.example.org:5000/org/sub/model_x-y:v1.0-rc",
                               f"ghcr.io/org/model@{digest}", f"localhost/m:t@{digest}")):
        record = {"container_config": {**DOCKER, "image": image}, "image_hash": ""}
        proc = run_cli("pull", _record(tmp_path / f"r{i}.json", json.dumps(record)),
                       "--into", tmp_path / f"d{i}")
        assert proc.returncode == 0, (image, proc.stderr)
        assert proc.stdout.splitlines()[1] == image
