"""``hostkit package``: MedPerf's MLCube rules on real cube folders, and reproducible assets."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import tarfile
import time
from pathlib import Path

import pytest
import yaml

from hostkit.workflows.mlcube import InvalidCube, package, validate
from tests.conftest import run_cli

TASKS = {
    "data-preparator": {
        "prepare": ({"data_path": "data/", "labels_path": "labels/"},
                    {"output_path": "prepped/", "output_labels_path": "plabels/",
                     "report_file": {"type": "file", "default": "report.yaml"}}),
        "sanity_check": ({"data_path": "prepped/", "labels_path": "plabels/",
                          "report_file": "report.yaml"}, {}),
        "statistics": ({"data_path": "prepped/", "labels_path": "plabels/"},
                       {"output_path": {"type": "file", "default": "statistics.yaml"}}),
    },
    "model": {"infer": ({"data_path": "data/"}, {"output_path": "predictions/"})},
    "metrics": {"evaluate": ({"predictions": "predictions/", "labels": "labels/"},
                             {"output_path": {"type": "file", "default": "results.yaml"}})},
}


def make_cube(root: Path, cube_type: str, *, params: bool = True, additional: bool = True,
              image: str | None = "cube.sif", docker: str | None = None,
              extra_files: bool = True) -> Path:
    """A real MLCube folder of ``cube_type``: mlcube.yaml, workspace/, an image file."""
    root.mkdir(parents=True, exist_ok=True)
    ws = root / "workspace"
    (ws / "additional_files" / "sub").mkdir(parents=True, exist_ok=True)
    tasks = {}
    for task, (inputs, outputs) in TASKS[cube_type].items():
        inputs = dict(inputs)
        if params:
            inputs["parameters_file"] = {"type": "file", "default": "parameters.yaml"}
        if additional and task in ("infer", "prepare", "evaluate"):
            inputs["weights"] = {"type": "file", "default": "additional_files/cnn_weights.pth"}
        tasks[task] = {"parameters": {"inputs": inputs, "outputs": dict(outputs)}}
    config: dict = {"name": f"test-{cube_type}", "platform": {"accelerator_count": 0},
                    "tasks": tasks}
    if image:
        config["singularity"] = {"image": image}
        (ws / ".image").mkdir(exist_ok=True)
        (ws / ".image" / image).write_bytes(b"SIF\x00" + os.urandom(2048))
    if docker:
        config["docker"] = {"image": docker}
    (root / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))
    (ws / "parameters.yaml").write_text("threshold: 0.5\nlabels: [a, b]\n")
    if extra_files:
        (ws / "additional_files" / "cnn_weights.pth").write_bytes(os.urandom(4096))
        (ws / "additional_files" / "sub" / "vocab.txt").write_text("a\nb\n")
        (ws / "additional_files" / "run.sh").write_text("#!/bin/sh\n")
        (ws / "additional_files" / "run.sh").chmod(0o755)
    return root


def edit(cube: Path, change) -> None:
    config = yaml.safe_load((cube / "mlcube.yaml").read_text())
    change(config)
    (cube / "mlcube.yaml").write_text(yaml.safe_dump(config, sort_keys=False))


def sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("cube_type", ["data-preparator", "model", "metrics"])
def test_valid_cube_of_each_type_packages(tmp_path, cube_type):
    cube = make_cube(tmp_path / cube_type, cube_type)
    proc = run_cli("package", cube, "--type", cube_type, "--json", check=True)
    out = json.loads(proc.stdout)
    assets = cube / "assets"
    names = sorted(p.name for p in assets.iterdir())
    assert names == ["additional_files.tar.gz", "assets.json", "cube.sif", "mlcube.yaml",
                     "parameters.yaml"]
    listed = json.loads((assets / "assets.json").read_text())
    assert listed["parts"] == out["parts"]
    for part in listed["parts"]:
        assert part["sha256"] == sha(assets / part["name"])
        assert part["size"] == (assets / part["name"]).stat().st_size
    assert (assets / "mlcube.yaml").read_bytes() == (cube / "mlcube.yaml").read_bytes()
    assert (assets / "cube.sif").read_bytes() == \
        (cube / "workspace" / ".image" / "cube.sif").read_bytes()
    with tarfile.open(assets / "additional_files.tar.gz") as tar:
        members = tar.getmembers()
        # the folder's own entries: not ./x, not additional_files/x; sorted; owner 0:0; mtime 0
        assert [m.name for m in members] == ["cnn_weights.pth", "run.sh", "sub", "sub/vocab.txt"]
        assert all(m.uid == 0 and m.gid == 0 and m.mtime == 0 for m in members)
        assert {m.name: m.mode for m in members} == {
            "cnn_weights.pth": 0o644, "run.sh": 0o755, "sub": 0o755, "sub/vocab.txt": 0o644}
        assert tar.extractfile("cnn_weights.pth").read() == \
            (cube / "workspace/additional_files/cnn_weights.pth").read_bytes()


def test_parts_only_when_referenced(tmp_path):
    # parameters.yaml and additional files on disk but referenced by no input: not packed
    cube = make_cube(tmp_path / "c", "model", params=False, additional=False, image=None)
    package(cube, "model")
    assert sorted(p.name for p in (cube / "assets").iterdir()) == ["assets.json", "mlcube.yaml"]


def test_docker_image_alone_is_fine(tmp_path):
    cube = make_cube(tmp_path / "c", "metrics", image=None, docker="org/metrics:1.0")
    package(cube, "metrics")
    assert not any(p.suffix == ".sif" for p in (cube / "assets").iterdir())


def _drop(path):
    def change(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        del node[path[-1]]
    return change


def _set(path, value):
    def change(config):
        node = config
        for key in path[:-1]:
            node = node[key]
        node[path[-1]] = value
    return change


INPUTS = ("tasks", "infer", "parameters", "inputs")
OUTPUTS = ("tasks", "infer", "parameters", "outputs")


@pytest.mark.parametrize(("name", "change", "file", "key", "words"), [
    ("missing task", _drop(("tasks", "infer")), "mlcube.yaml", "tasks.infer", "missing"),
    ("missing input", _drop((*INPUTS, "data_path")), "mlcube.yaml",
     "tasks.infer.parameters.inputs.data_path", "missing"),
    ("missing output", _drop((*OUTPUTS, "output_path")), "mlcube.yaml",
     "tasks.infer.parameters.outputs.output_path", "missing"),
    ("extra output", _set((*OUTPUTS, "logs"), "logs/"), "mlcube.yaml",
     "tasks.infer.parameters.outputs.logs", "exactly"),
    ("extra parameters key", _set(("tasks", "infer", "parameters", "env"), {"A": 1}),
     "mlcube.yaml", "tasks.infer.parameters.env", "only inputs and outputs"),
    ("parameters_file renamed", _set((*INPUTS, "parameters_file"), "params.yaml"),
     "mlcube.yaml", "tasks.infer.parameters.inputs.parameters_file", "parameters.yaml"),
    ("extra input outside additional_files", _set((*INPUTS, "weights"), "weights/w.pth"),
     "mlcube.yaml", "tasks.infer.parameters.inputs.weights", "additional_files/"),
    ("extra input climbing out", _set((*INPUTS, "weights"), "additional_files/../../x"),
     "mlcube.yaml", "tasks.infer.parameters.inputs.weights", "additional_files/"),
    ("input mapping without default", _set((*INPUTS, "data_path"), {"type": "directory"}),
     "mlcube.yaml", "tasks.infer.parameters.inputs.data_path", "default"),
    ("two images", _set(("docker",), {"image": "org/model:1"}), "mlcube.yaml",
     "docker.image and singularity.image", "at most one image"),
    ("image name with a path", _set(("singularity", "image"), "../evil.sif"), "mlcube.yaml",
     "singularity.image", "plain file name"),
])
def test_each_kind_of_invalid_cube_is_named(tmp_path, name, change, file, key, words):
    cube = make_cube(tmp_path / "c", "model")
    edit(cube, change)
    proc = run_cli("package", cube, "--type", "model", "--json")
    assert proc.returncode == 2, proc.stderr
    problems = json.loads(proc.stdout)["problems"]
    assert any(p["file"] == file and p["key"] == key and words in p["message"]
               for p in problems), problems
    assert "Traceback" not in proc.stderr and f"{key}" in proc.stderr
    assert not (cube / "assets").exists()


def test_files_missing_on_disk_are_problems(tmp_path):
    cube = make_cube(tmp_path / "c", "model")
    (cube / "workspace" / "parameters.yaml").unlink()
    (cube / "workspace" / ".image" / "cube.sif").unlink()
    problems = validate(cube, "model").problems
    assert {p.file for p in problems} == {"workspace/parameters.yaml",
                                          "workspace/.image/cube.sif"}
    missing = make_cube(tmp_path / "m", "model")
    (missing / "mlcube.yaml").unlink()
    assert [str(p) for p in validate(missing, "model").problems] == ["mlcube.yaml: missing"]
    (missing / "mlcube.yaml").write_text("tasks: [unclosed\n")
    assert "not valid YAML" in str(validate(missing, "model").problems[0])


def test_every_problem_reported_in_one_run(tmp_path):
    cube = make_cube(tmp_path / "c", "data-preparator")

    def break_many(config):
        del config["tasks"]["statistics"]
        del config["tasks"]["prepare"]["parameters"]["inputs"]["labels_path"]
        config["tasks"]["sanity_check"]["parameters"]["outputs"] = {"x": "y"}
        config["tasks"]["prepare"]["parameters"]["inputs"]["parameters_file"] = "p.yaml"
        config["docker"] = {"image": "a/b"}
    edit(cube, break_many)
    with pytest.raises(InvalidCube) as caught:
        package(cube, "data-preparator")
    keys = {p.key for p in caught.value.problems}
    assert keys >= {"tasks.statistics", "tasks.prepare.parameters.inputs.labels_path",
                    "tasks.sanity_check.parameters.outputs.x",
                    "tasks.prepare.parameters.inputs.parameters_file",
                    "docker.image and singularity.image"}
    proc = run_cli("package", cube, "--type", "data-preparator")
    assert proc.returncode == 2 and proc.stderr.count("\n  - ") == len(caught.value.problems)
    # the wrong type is reported as the missing tasks of that type
    assert run_cli("package", cube, "--type", "metrics").returncode == 2


def test_packaging_twice_gives_identical_bytes(tmp_path):
    cube = make_cube(tmp_path / "c", "model")
    package(cube, "model", tmp_path / "one.tar.gz")
    first = {p.name: p.read_bytes() for p in (cube / "assets").iterdir()}
    time.sleep(1.1)  # a different second: no timestamp may leak into the archives
    for p in (cube / "workspace" / "additional_files").rglob("*"):
        os.utime(p, (time.time(), time.time()))
    run_cli("package", cube, "--type", "model", "--output", tmp_path / "two.tar.gz", check=True)
    second = {p.name: p.read_bytes() for p in (cube / "assets").iterdir()}
    assert first == second
    assert (tmp_path / "one.tar.gz").read_bytes() == (tmp_path / "two.tar.gz").read_bytes()
    raw = first["additional_files.tar.gz"]
    assert raw[4:8] == b"\x00\x00\x00\x00" and not raw[3] & 0x08  # no mtime, no file name
    with tarfile.open(tmp_path / "two.tar.gz") as tar:
        assert tar.getnames() == ["assets", "assets/additional_files.tar.gz",
                                  "assets/assets.json", "assets/cube.sif", "assets/mlcube.yaml",
                                  "assets/parameters.yaml"]
    assert gzip.decompress(raw)  # a plain gzip stream


def test_help_shows_examples():
    for command in ("package", "pull"):
        proc = run_cli(command, "--help", check=True)
        assert "examples:" in proc.stdout and "--json" in proc.stdout


def test_not_a_folder_is_a_clean_error(tmp_path):
    proc = run_cli("package", tmp_path / "nothing", "--type", "model")
    assert proc.returncode == 2 and "not a folder" in proc.stderr
    assert "Traceback" not in proc.stderr


def test_additional_files_links_and_special_files(tmp_path):
    cube = make_cube(tmp_path / "c", "model")
    extra = cube / "workspace" / "additional_files"
    (extra / "alias.pth").symlink_to("cnn_weights.pth")  # inside: packed as a link
    package(cube, "model")
    with tarfile.open(cube / "assets" / "additional_files.tar.gz") as tar:
        alias = tar.getmember("alias.pth")
        assert alias.issym() and alias.linkname == "cnn_weights.pth"
    (extra / "escape").symlink_to(tmp_path)
    os.mkfifo(extra / "pipe")
    with pytest.raises(InvalidCube) as caught:
        package(cube, "model")
    assert {p.file: p.message.split(" (")[0] for p in caught.value.problems} == {
        "workspace/additional_files/escape": "a symlink pointing outside additional_files/",
        "workspace/additional_files/pipe": "not a regular file or folder"}


def test_the_current_container_config_keeps_mlcubes_mounts_and_arguments(tmp_path):
    from hostkit.workflows.mlcube import container_tasks

    cube = make_cube(tmp_path / "prep", "data-preparator")
    tasks = container_tasks(yaml.safe_load((cube / "mlcube.yaml").read_text()))
    assert set(tasks) == {"prepare", "sanity_check", "statistics"}
    prepare = tasks["prepare"]
    command = prepare["run_args"]["command"].split()
    assert command[0] == "prepare"
    mounts = {**prepare["input_volumes"], **prepare["output_volumes"]}
    # each label is one MedPerf's client mounts: the task's parameters, parameters_file and
    # additional_files; each argument points at (or inside) its label's mount
    assert set(prepare["input_volumes"]) == {"data_path", "labels_path", "parameters_file",
                                             "additional_files"}
    assert set(prepare["output_volumes"]) == {"output_path", "output_labels_path",
                                              "report_file"}
    for arg in command[1:]:
        name, _, path = arg.removeprefix("--").partition("=")
        label = "additional_files" if name == "weights" else name
        assert path.startswith(mounts[label]["mount_path"]), arg
    assert len({m["mount_path"] for m in mounts.values()}) == len(mounts)  # no two share one


def test_the_command_line_offers_exactly_the_cube_types_there_are_tasks_for():
    from hostkit.workflows import CUBE_TYPES, mlcube

    assert tuple(mlcube.TASKS) == CUBE_TYPES
