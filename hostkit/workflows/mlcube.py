"""MedPerf's MLCube rules, and ``hostkit package``: validate a cube folder, write its assets.

The rules are those of MedPerf's packaging script (``../shared/notes/medperf.md``),
with two differences on purpose: every problem is reported in one run and an
invalid cube is an error (exit 2), and the archives are reproducible (sorted
members, mtime 0, owner 0:0, fixed modes, a gzip header without time or name),
so packaging the same folder twice gives byte-identical files.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import os
import secrets
import shutil
import stat
import tarfile
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from ..errors import HostkitError, UsageError, register
from . import CUBE_TYPES

#: Per type: task -> (inputs it must have, outputs it must have exactly).
TASKS: dict[str, dict[str, tuple[tuple[str, ...], tuple[str, ...]]]] = {
    "data-preparator": {
        "prepare": (("data_path", "labels_path"),
                    ("output_path", "output_labels_path", "report_file")),
        "sanity_check": (("data_path", "labels_path", "report_file"), ()),
        "statistics": (("data_path", "labels_path"), ("output_path",)),
    },
    "model": {"infer": (("data_path",), ("output_path",))},
    "metrics": {"evaluate": (("predictions", "labels"), ("output_path",))},
}
#: The command line lists these without importing this module (a test keeps them TASKS's).
TYPES = CUBE_TYPES
PARAMETERS = "parameters.yaml"
ADDITIONAL = "additional_files"
ADDITIONAL_TARBALL = "additional_files.tar.gz"
IMAGE_DIR = ".image"


@dataclass(frozen=True)
class Problem:
    """One rule a cube breaks: the file and key at fault, and what is wrong."""

    file: str
    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.file}: {self.key}: {self.message}" if self.key else \
            f"{self.file}: {self.message}"


@register
class InvalidCube(UsageError):
    """A cube folder breaks MedPerf's packaging rules; ``problems`` lists every one."""

    kind = "invalid_cube"

    def __init__(self, folder: str, problems: list[Problem]):
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(f"{folder} is not a valid MLCube for MedPerf ({len(problems)} "
                         f"problem{'s' if len(problems) != 1 else ''}):\n{lines}",
                         hint="fix each problem above, then run `hostkit package` again")
        self.problems = problems

    def to_dict(self) -> dict:
        return {**super().to_dict(),
                "problems": [{"file": p.file, "key": p.key, "message": p.message}
                             for p in self.problems]}


@dataclass
class Cube:
    """A validated (or not) cube folder: what packaging needs to know."""

    folder: Path
    cube_type: str
    config: dict[str, Any] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)
    uses_parameters: bool = False
    uses_additional: bool = False
    image: str | None = None  # the singularity image file name, when the cube names one


def read_manifest(text: str) -> dict[str, Any]:
    """Parse ``mlcube.yaml`` text (safe YAML); raise UsageError unless it is a mapping."""
    import yaml

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise UsageError(f"mlcube.yaml is not valid YAML: {exc}") from None
    if not isinstance(data, dict):
        raise UsageError("mlcube.yaml does not hold a mapping")
    return data


def singularity_image(config: dict[str, Any]) -> str | None:
    """The singularity image file name ``config`` names, or None (UsageError if unsafe)."""
    runner = config.get("singularity")
    image = runner.get("image") if isinstance(runner, dict) else None
    if image in (None, ""):
        return None
    if not isinstance(image, str) or not _plain_name(image):
        raise UsageError(f"singularity.image {image!r} is not a plain file name",
                         hint="name the image file, e.g. image.sif")
    return image


#: Where MLCube's runners mount a task's N-th parameter; the container form keeps it.
MOUNT = "/mlcube_io{}"


def container_tasks(config: dict[str, Any]) -> dict[str, Any]:
    """``mlcube.yaml``'s tasks in the form of MedPerf's current ``container_config``.

    MLCube runs ``ENTRYPOINT TASK --NAME=PATH ...`` with each parameter's host
    folder mounted at ``/mlcube_io<N>``; the current MedPerf client mounts the
    volumes a ``container_config`` task names (``input_volumes`` /
    ``output_volumes``: ``mount_path`` and ``type``) from its own paths by label
    (``data_path``, ``parameters_file``, ``additional_files``...) and runs
    ``run_args.command``. So each parameter keeps its label and gets a mount
    point as MLCube gave it, and the command passes the same arguments. An input
    under ``additional_files/`` mounts the ``additional_files`` folder (MedPerf's
    label for it) and points inside it.
    """
    tasks = config.get("tasks")
    out: dict[str, Any] = {}
    if not isinstance(tasks, dict):
        return out
    for task, spec in tasks.items():
        params = spec.get("parameters") if isinstance(spec, dict) else None
        params = params if isinstance(params, dict) else {}
        volumes: dict[str, dict[str, Any]] = {"input_volumes": {}, "output_volumes": {}}
        args = [str(task)]
        index = 0
        for side, key in (("inputs", "input_volumes"), ("outputs", "output_volumes")):
            group = params.get(side)
            for name, value in (group.items() if isinstance(group, dict) else ()):
                default = PurePosixPath(str(_input_value(value) or name))
                kind = value.get("type") if isinstance(value, dict) else None
                mount = MOUNT.format(index)
                index += 1
                if key == "input_volumes" and default.parts[:1] == (ADDITIONAL,):
                    # the additional_files folder, mounted once, the argument inside it
                    folder = volumes[key].setdefault(
                        ADDITIONAL, {"mount_path": mount, "type": "directory"})
                    path = "/".join((folder["mount_path"], *default.parts[1:]))
                elif kind == "file":
                    path = f"{mount}/{default.name}"
                    volumes[key][str(name)] = {"mount_path": path, "type": "file"}
                else:
                    path = mount
                    volumes[key][str(name)] = {"mount_path": mount, "type": "directory"}
                args.append(f"--{name}={path}")
        out[str(task)] = {"run_args": {"command": " ".join(args)},
                          **{k: v for k, v in volumes.items() if v}}
    return out


def _plain_name(name: str) -> bool:
    return name not in (".", "..") and "/" not in name and "\\" not in name and "\x00" not in name


def _input_value(value: Any) -> Any:
    return value.get("default") if isinstance(value, dict) else value


def validate(folder: Path | str, cube_type: str) -> Cube:
    """Check ``folder`` (``mlcube.yaml`` and ``workspace/``) against the rules of ``cube_type``.

    Returns a :class:`Cube` whose ``problems`` lists every rule broken (empty
    when the cube is valid); never stops at the first problem.
    """
    folder = Path(folder)
    if cube_type not in TASKS:
        raise UsageError(f"unknown cube type {cube_type!r}", hint=f"one of {', '.join(TYPES)}")
    cube = Cube(folder, cube_type)
    add = cube.problems.append
    manifest = folder / "mlcube.yaml"
    if not folder.is_dir():
        raise UsageError(f"{folder} is not a folder", hint="pass the cube's folder")
    try:
        cube.config = read_manifest(manifest.read_text(encoding="utf-8"))
    except FileNotFoundError:
        add(Problem("mlcube.yaml", "", "missing"))
        return cube
    except (OSError, UnicodeDecodeError) as exc:
        add(Problem("mlcube.yaml", "", f"cannot be read ({exc})"))
        return cube
    except UsageError as exc:
        add(Problem("mlcube.yaml", "", exc.message.removeprefix("mlcube.yaml ")))
        return cube
    tasks = cube.config.get("tasks")
    if not isinstance(tasks, dict):
        add(Problem("mlcube.yaml", "tasks", "missing or not a mapping"))
        tasks = {}
    for task, (inputs, outputs) in TASKS[cube_type].items():
        _check_task(cube, task, tasks.get(task), inputs, outputs)
    _check_images(cube)
    workspace = folder / "workspace"
    if cube.uses_parameters and not (workspace / PARAMETERS).is_file():
        add(Problem(f"workspace/{PARAMETERS}", "", "missing, but a task's parameters_file "
                                                   "references it"))
    if cube.uses_additional and not (workspace / ADDITIONAL).is_dir():
        add(Problem(f"workspace/{ADDITIONAL}/", "", "missing, but a task input points under it"))
    elif cube.uses_additional:
        for rel, problem in _additional_entries(workspace / ADDITIONAL)[1]:
            add(Problem(f"workspace/{ADDITIONAL}/{rel}", "", problem))
    return cube


def _check_task(cube: Cube, task: str, spec: Any, inputs: tuple[str, ...],
                outputs: tuple[str, ...]) -> None:
    add = cube.problems.append
    key = f"tasks.{task}"
    if spec is None:
        add(Problem("mlcube.yaml", key,
                    f"missing: a {cube.cube_type} cube needs the {task!r} task"))
        return
    if not isinstance(spec, dict) or not isinstance(spec.get("parameters"), dict):
        add(Problem("mlcube.yaml", f"{key}.parameters", "missing or not a mapping"))
        return
    params = spec["parameters"]
    for extra in sorted(set(params) - {"inputs", "outputs"}, key=str):
        add(Problem("mlcube.yaml", f"{key}.parameters.{extra}",
                    "not allowed: parameters holds only inputs and outputs"))
    given_in = params.get("inputs") or {}
    given_out = params.get("outputs") or {}
    if not isinstance(given_in, dict):
        add(Problem("mlcube.yaml", f"{key}.parameters.inputs", "not a mapping"))
        given_in = {}
    if not isinstance(given_out, dict):
        add(Problem("mlcube.yaml", f"{key}.parameters.outputs", "not a mapping"))
        given_out = {}
    for name in inputs:
        if name not in given_in:
            add(Problem("mlcube.yaml", f"{key}.parameters.inputs.{name}", "missing"))
    for name in outputs:
        if name not in given_out:
            add(Problem("mlcube.yaml", f"{key}.parameters.outputs.{name}", "missing"))
    for name in sorted(set(given_out) - set(outputs), key=str):
        add(Problem("mlcube.yaml", f"{key}.parameters.outputs.{name}",
                    f"not allowed: {task} has exactly the outputs "
                    f"{', '.join(outputs) or '(none)'}"))
    for name, raw in given_in.items():
        where = f"{key}.parameters.inputs.{name}"
        value = _input_value(raw)
        if isinstance(raw, dict) and "default" not in raw:
            add(Problem("mlcube.yaml", where, "a mapping input needs a 'default'"))
            continue
        if not isinstance(value, str) or not value:
            add(Problem("mlcube.yaml", where, "must be a path (text)"))
            continue
        if name in inputs:
            continue
        if name == "parameters_file":
            if value != PARAMETERS:
                add(Problem("mlcube.yaml", where, f"must be {PARAMETERS!r}, not {value!r}"))
            else:
                cube.uses_parameters = True
            continue
        path = PurePosixPath(value)
        if (path.is_absolute() or ".." in path.parts or len(path.parts) < 2
                or path.parts[0] != ADDITIONAL):
            add(Problem("mlcube.yaml", where, f"an extra input must point under {ADDITIONAL}/, "
                                              f"not {value!r}"))
        else:
            cube.uses_additional = True


def _check_images(cube: Cube) -> None:
    images = []
    for runner in ("docker", "singularity"):
        section = cube.config.get(runner)
        if isinstance(section, dict) and section.get("image"):
            images.append(f"{runner}.image")
    if len(images) > 1:
        cube.problems.append(Problem("mlcube.yaml", " and ".join(images),
                                     "at most one image across the docker and singularity "
                                     "runners"))
    try:
        cube.image = singularity_image(cube.config)
    except UsageError as exc:
        cube.problems.append(Problem("mlcube.yaml", "singularity.image", exc.message))
        return
    if cube.image and not (cube.folder / "workspace" / IMAGE_DIR / cube.image).is_file():
        cube.problems.append(Problem(f"workspace/{IMAGE_DIR}/{cube.image}", "singularity.image",
                                     "the image file is missing (build it first)"))


def _additional_entries(root: Path) -> tuple[list[tuple[str, Path]], list[tuple[str, str]]]:
    """Every entry under ``root`` (sorted, relative POSIX names), and problems with some."""
    entries: list[tuple[str, Path]] = []
    problems: list[tuple[str, str]] = []
    for here, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(dirs + files):
            path = Path(here) / name
            rel = path.relative_to(root).as_posix()
            st = path.lstat()
            if stat.S_ISLNK(st.st_mode):
                target = os.readlink(path)
                real = os.path.realpath(path)
                if os.path.isabs(target) or not real.startswith(os.path.realpath(root) + os.sep):
                    problems.append((rel, f"a symlink pointing outside {ADDITIONAL}/ "
                                          f"({target!r})"))
                    continue
            elif not (stat.S_ISREG(st.st_mode) or stat.S_ISDIR(st.st_mode)):
                problems.append((rel, "not a regular file or folder"))
                continue
            entries.append((rel, path))
    entries.sort()
    return entries, problems


def _tarinfo(name: str, path: Path) -> tarfile.TarInfo:
    st = path.lstat()
    info = tarfile.TarInfo(name)
    info.mtime = 0
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    if stat.S_ISLNK(st.st_mode):
        info.type = tarfile.SYMTYPE
        info.linkname = os.readlink(path)
        info.mode = 0o777
    elif stat.S_ISDIR(st.st_mode):
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
    else:
        info.size = st.st_size
        info.mode = 0o755 if st.st_mode & 0o111 else 0o644
    return info


def write_tarball(out: Path, entries: list[tuple[str, Path]]) -> None:
    """Write a reproducible ``.tar.gz`` of ``entries`` (name in the archive, source path)."""
    with open(out, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name, path in sorted(entries):
            info = _tarinfo(name, path)
            if info.isfile():
                with open(path, "rb") as f:
                    tar.addfile(info, f)
            else:
                tar.addfile(info)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


@dataclass
class Packaged:
    """What ``hostkit package`` wrote: the assets folder, its parts, and the optional tarball."""

    assets: Path
    parts: list[dict[str, Any]]
    output: Path | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``hostkit package --json`` prints it."""
        return {"assets": str(self.assets), "parts": self.parts,
                "output": str(self.output) if self.output else None}


def package(folder: Path | str, cube_type: str, output: Path | str | None = None) -> Packaged:
    """Validate ``folder`` as a ``cube_type`` cube and write ``folder/assets/``.

    Raises :class:`InvalidCube` (listing every problem) and writes nothing when
    the cube is invalid. The assets folder is built next to its final place and
    renamed in, so it is never half-written; with ``output`` a reproducible
    tarball of ``assets/`` is written too (atomically).
    """
    folder = Path(folder)
    cube = validate(folder, cube_type)
    if cube.problems:
        raise InvalidCube(str(folder), cube.problems)
    workspace = folder / "workspace"
    assets = folder / "assets"
    tmp = folder / f".assets.tmp-{secrets.token_hex(4)}"
    try:
        tmp.mkdir()
        shutil.copyfile(folder / "mlcube.yaml", tmp / "mlcube.yaml")
        if cube.uses_parameters:
            shutil.copyfile(workspace / PARAMETERS, tmp / PARAMETERS)
        if cube.uses_additional:
            entries, _ = _additional_entries(workspace / ADDITIONAL)
            write_tarball(tmp / ADDITIONAL_TARBALL, entries)
        if cube.image:
            shutil.copyfile(workspace / IMAGE_DIR / cube.image, tmp / cube.image)
        parts = [{"name": p.name, "size": p.stat().st_size, "sha256": _sha256(p)}
                 for p in sorted(tmp.iterdir())]
        (tmp / "assets.json").write_text(
            json.dumps({"type": cube_type, "parts": parts}, indent=2, sort_keys=True) + "\n",
            encoding="utf-8")
        _replace_dir(tmp, assets)
    except OSError as exc:
        raise HostkitError(f"cannot write {assets}: {exc}",
                           hint="check the folder is writable and the disk has room") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    result = Packaged(assets, parts)
    if output is not None:
        result.output = _write_output(assets, Path(output))
    return result


def _replace_dir(new: Path, final: Path) -> None:
    old = None
    if final.exists() or final.is_symlink():
        old = final.with_name(f".{final.name}.old-{secrets.token_hex(4)}")
        os.rename(final, old)
    os.rename(new, final)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def _write_output(assets: Path, output: Path) -> Path:
    entries = [("assets", assets)] + [(f"assets/{p.name}", p) for p in sorted(assets.iterdir())]
    tmp = output.with_name(f".{output.name}.tmp-{secrets.token_hex(4)}")
    try:
        write_tarball(tmp, entries)
        os.replace(tmp, output)
    except OSError as exc:
        raise UsageError(f"cannot write {output}: {exc.strerror or exc}") from None
    finally:
        with contextlib.suppress(OSError):
            tmp.unlink()
    return output


__all__ = ["TYPES", "Cube", "InvalidCube", "Packaged", "Problem", "package", "read_manifest",
           "singularity_image", "validate", "write_tarball"]
