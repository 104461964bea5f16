"""``hostkit pull RECORD --into DIR``: rebuild a MedPerf cube folder from its hosted parts.

A record is MedPerf's cube record in either form (``../shared/notes/medperf.md``):

- the MLCube era: ``git_mlcube_url``/``mlcube_hash``, ``git_parameters_url``/
  ``parameters_hash``, ``additional_files_tarball_url``/``_hash``,
  ``image_tarball_url``/``_hash`` (``""`` for an absent part);
- the current form: ``container_config``, ``parameters_config``, ``image_hash``,
  ``additional_files_tarball_url``/``_hash`` (also found under a ``container`` key).

Every part resolves through :mod:`hostkit.api` (the cache, or the machine's
daemon) and is verified when the record has its hash; a part without one is
trusted on first use and its sha256 is reported under the record's own field
name. Archives are extracted by :mod:`hostkit.store.trees` (safely, once per
archive digest). DIR is built in a temporary folder next to it and renamed into
place: on any failure DIR is absent, empty or as it was.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any
from urllib.parse import urlsplit

from .. import api
from ..errors import AlreadyExists, HostkitError, UsageError
from ..failpoints import failpoint
from ..place import place
from ..redact import redact_url
from ..store import trees
from ..store.layout import Layout, pid_alive
from .mlcube import ADDITIONAL, IMAGE_DIR, PARAMETERS, read_manifest, singularity_image

#: MLCube-era record: part -> (url field, hash field).
MLCUBE_FIELDS = {
    "mlcube": ("git_mlcube_url", "mlcube_hash"),
    "parameters": ("git_parameters_url", "parameters_hash"),
    "additional_files": ("additional_files_tarball_url", "additional_files_tarball_hash"),
    "image": ("image_tarball_url", "image_tarball_hash"),
}
ARCHIVE_TYPES = ("DockerArchive", "EncryptedDockerArchive", "SingularityFile",
                 "EncryptedSingularityFile")
CONTAINER_TYPES = ("DockerImage", *ARCHIVE_TYPES)

_DOMAIN_PART = r"[a-zA-Z0-9](?:[a-zA-Z0-9-]*[a-zA-Z0-9])?"
_PATH_PART = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
#: A registry digest, as image_hash holds it.
DOCKER_DIGEST = re.compile(r"sha256:[0-9a-f]{64}")
#: A Docker image reference (distribution/reference's grammar, IPv6 hosts aside).
DOCKER_REFERENCE = re.compile(
    rf"(?:{_DOMAIN_PART}(?:\.{_DOMAIN_PART})*(?::[0-9]+)?/)?{_PATH_PART}(?:/{_PATH_PART})*"
    rf"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}})?(?:@{DOCKER_DIGEST.pattern})?")


@dataclass
class Part:
    """One hosted part of a record: its identifier and expected hash (None: trust on first use)."""

    name: str
    url: str
    hash_field: str
    expected: str | None


@dataclass
class Pulled:
    """What a pull built: the folder, its files, each part's digest, the TOFU hashes."""

    into: Path
    form: str
    files: list[str] = field(default_factory=list)
    parts: dict[str, dict[str, Any]] = field(default_factory=dict)
    trusted_on_first_use: dict[str, str] = field(default_factory=dict)
    docker_image: str | None = None
    extracted: bool | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``hostkit pull --json`` prints it (``hashes``: the record's fields)."""
        return {"into": str(self.into), "form": self.form, "files": self.files,
                "parts": self.parts, "hashes": self.trusted_on_first_use,
                "docker_image": self.docker_image, "extracted": self.extracted}


#: The largest record read: MedPerf's are a few KiB; a hostile one must not cost minutes.
MAX_RECORD_BYTES = 16 << 20


def load_record(path: Path | str) -> dict[str, Any]:
    """Read a record file: a JSON object of at most :data:`MAX_RECORD_BYTES`, else
    UsageError."""
    try:
        with open(path, "rb") as f:
            raw = f.read(MAX_RECORD_BYTES + 1)
        if len(raw) > MAX_RECORD_BYTES:
            raise UsageError(f"the record {path} is over {MAX_RECORD_BYTES >> 20} MiB; a "
                             "MedPerf cube record is a few KiB",
                             hint="pass the cube's record as the MedPerf server gives it")
        text = raw.decode("utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise UsageError(f"cannot read the record {path}: {exc}") from None
    try:
        record = json.loads(text)
    except json.JSONDecodeError as exc:
        raise UsageError(f"the record {path} is not JSON: {exc}") from None
    except RecursionError:
        raise UsageError(f"the record {path} is nested too deeply to be a cube record"
                         ) from None
    if not isinstance(record, dict):
        raise UsageError(f"the record {path} is not a JSON object")
    return record


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise UsageError(f"the record's {key!r} is not text")
    return value.strip()


def _inline(record: dict[str, Any], key: str) -> Any:
    value = record.get(key)
    if isinstance(value, str) and value.strip():
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            raise UsageError(f"the record's {key!r} is not JSON") from None
        except RecursionError:
            raise UsageError(f"the record's {key!r} is nested too deeply") from None
    return value


def record_form(record: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """``("mlcube", record)`` or ``("container", the current-form part)``, else UsageError."""
    if _text(record, "git_mlcube_url"):
        return "mlcube", record
    if isinstance(record.get("container"), dict) and "container_config" in record["container"]:
        return "container", record["container"]
    if record.get("container_config"):
        return "container", record
    raise UsageError("the record has neither git_mlcube_url nor container_config",
                     hint="pass a MedPerf cube record (MLCube era or current form) or what "
                          "`hostkit publish --json` printed")


def _plain_file_name(url: str, default: str) -> str:
    name = PurePosixPath(urlsplit(url.removeprefix("direct:")).path).name
    return name if name and name not in (".", "..") and "\\" not in name else default


@dataclass
class _Fetched:
    """A part resolved into the cache, and how to place it again if its blob leaves."""

    resolved: Any
    identifier: str
    settings: Any
    cache_dir: Path | None

    @property
    def path(self) -> Path:
        return Path(self.resolved.path)

    def place(self, target: Path) -> None:
        """Place the part at ``target``; a blob pruned meanwhile is resolved again by sha256."""
        api.place_resolved(self.resolved, target, self.identifier, settings=self.settings,
                           cache_dir=self.cache_dir)

    def read_text(self, encoding: str = "utf-8") -> str:
        return self.path.read_text(encoding=encoding)


def _resolve(part: Part, settings, pulled: Pulled, cache_dir: Path | None = None) -> _Fetched:
    resolved = api.resolve_info(part.url, part.expected or None, settings=settings,
                                cache_dir=cache_dir)
    # as the resolver shows it (a presigned URL's signature masked), never as given
    pulled.parts[part.name] = {"identifier": resolved.identifier, "sha256": resolved.sha256,
                               "size": resolved.size, "verified": bool(part.expected),
                               "cached": resolved.cached}
    if not part.expected:
        pulled.trusted_on_first_use[part.hash_field] = resolved.sha256
    return _Fetched(resolved, part.url, settings, cache_dir)


def _caps() -> dict[str, int]:
    caps = {"max_members": trees.MAX_MEMBERS, "max_bytes": trees.MAX_BYTES}
    for key, env in (("max_members", "HOSTKIT_EXTRACT_MAX_MEMBERS"),
                     ("max_bytes", "HOSTKIT_EXTRACT_MAX_BYTES")):
        if raw := os.environ.get(env):
            try:
                caps[key] = int(raw)
                if caps[key] <= 0:
                    raise ValueError
            except ValueError:
                raise UsageError(f"{env}={raw!r} is not a positive whole number") from None
    return caps


def _check_target(into: Path, force: bool) -> None:
    if into.is_symlink() or (into.exists() and not into.is_dir()):
        raise UsageError(f"{into} exists and is not a folder", hint="choose another --into")
    if into.is_dir() and any(into.iterdir()) and not force:
        raise AlreadyExists(f"{into} exists and is not empty",
                            hint="pass --force to replace its contents, or choose another --into")


def pull(record: dict[str, Any], into: Path | str, *, force: bool = False,
         settings=None, cache_dir: Path | str | None = None) -> Pulled:
    """Build MedPerf's cube layout in ``into`` from ``record``'s hosted parts.

    Resolves every part first (verified when hashed), then builds the folder
    next to ``into`` and renames it into place. Raises a
    :class:`~hostkit.errors.HostkitError` on any failure, leaving ``into``
    absent, empty, or (with ``force``) as it was. Refuses a non-empty
    ``into`` unless ``force``. Parts resolve through the machine's daemon
    when one runs, unless ``cache_dir`` names a cache to use in-process.
    """
    from ..settings import load_settings

    settings = settings or load_settings()
    if cache_dir is not None:
        settings = settings.with_overrides(cache_dir=Path(cache_dir))
    local = Path(cache_dir) if cache_dir is not None else None
    into = Path(into)
    _check_target(into, force)
    form, rec = record_form(record)
    caps = _caps()
    pulled = Pulled(into=into, form=form)
    layout = Layout(settings.cache_dir)
    # everything that can fail on the network happens before DIR is touched
    files: dict[str, _Fetched] = {}  # relative path in DIR -> the part (a cache blob)
    texts: dict[str, str] = {}   # relative path in DIR -> text written
    archive: tuple[Part, _Fetched] | None = None

    def fetch(part: Part) -> _Fetched:
        return _resolve(part, settings, pulled, local)

    if form == "mlcube":
        parts = {name: Part(name, _text(rec, u), h, _text(rec, h) or None)
                 for name, (u, h) in MLCUBE_FIELDS.items() if _text(rec, u)}
        manifest = fetch(parts["mlcube"])
        files["mlcube.yaml"] = manifest
        try:
            config = read_manifest(manifest.read_text(encoding="utf-8"))
        except UnicodeDecodeError:
            raise UsageError("the record's mlcube.yaml is not text") from None
        if "parameters" in parts:
            files[f"workspace/{PARAMETERS}"] = fetch(parts["parameters"])
        if "image" in parts:
            name = singularity_image(config) or _plain_file_name(parts["image"].url, "image")
            files[f"workspace/{IMAGE_DIR}/{name}"] = fetch(parts["image"])
        if "additional_files" in parts:
            part = parts["additional_files"]
            archive = (part, fetch(part))
    else:
        config = _inline(rec, "container_config")
        if not isinstance(config, dict):
            raise UsageError("the record's container_config is not an object")
        kind = config.get("container_type")
        image = config.get("image")
        if kind not in CONTAINER_TYPES:
            raise UsageError(f"unknown container_type {kind!r}",
                             hint=f"one of {', '.join(CONTAINER_TYPES)}")
        if not isinstance(image, str) or not image:
            raise UsageError("the record's container_config has no image")
        image_hash = _text(rec, "image_hash")
        params = _inline(rec, "parameters_config")
        try:
            texts["container_config.json"] = json.dumps(config, indent=2,
                                                         sort_keys=True) + "\n"
            if params is not None:
                import yaml

                texts[f"workspace/{PARAMETERS}"] = yaml.safe_dump(params, sort_keys=False)
        except RecursionError:
            raise UsageError("the record's container_config or parameters_config is nested "
                             "too deeply") from None
        if kind == "DockerImage":
            # printed for `docker pull`: a reference, never any text (control characters)
            if not DOCKER_REFERENCE.fullmatch(image):
                raise UsageError(f"the record's DockerImage {image!r} is not a Docker image "
                                 "reference", hint="e.g. registry.example.org/org/model:1.0")
            if image_hash and not DOCKER_DIGEST.fullmatch(image_hash):
                raise UsageError(f"image_hash {image_hash!r} is not a registry digest "
                                 "(sha256:<64 hex digits>)")
            base = image.split("@", 1)[0]
            pulled.docker_image = f"{base}@{image_hash}" if image_hash else image
        else:
            part = Part("image", image, "image_hash", image_hash or None)
            name = _plain_file_name(image, "image")
            files[f"workspace/{IMAGE_DIR}/{name}"] = fetch(part)
        url = _text(rec, "additional_files_tarball_url")
        if url:
            part = Part("additional_files", url, "additional_files_tarball_hash",
                        _text(rec, "additional_files_tarball_hash") or None)
            archive = (part, fetch(part))
    tree = None
    if archive is not None:
        part, fetched = archive
        blob = fetched.path
        sha = pulled.parts[part.name]["sha256"]
        tree, was_cached = trees.cached_tree(layout, blob, sha, label=redact_url(part.url),
                                             **caps)
        pulled.extracted = not was_cached
    _build(into, force, files, texts, tree, pulled)
    return pulled


def _build(into: Path, force: bool, files: dict[str, _Fetched], texts: dict[str, str],
           tree: Path | None, pulled: Pulled) -> None:
    try:
        into.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise UsageError(f"cannot create {into.parent}: {exc.strerror}") from None
    _remove_stale(into)
    tmp = into.with_name(f".{into.name}.pull-{os.getpid()}-{secrets.token_hex(4)}")
    try:
        tmp.mkdir()
        (tmp / "workspace").mkdir()
        for rel, fetched in files.items():
            fetched.place(tmp / rel)
        for rel, text in texts.items():
            (tmp / rel).parent.mkdir(parents=True, exist_ok=True)
            (tmp / rel).write_text(text, encoding="utf-8")
        if tree is not None:
            _link_tree(tree, tmp / "workspace" / ADDITIONAL)
        pulled.files = sorted(p.relative_to(tmp).as_posix() for p in tmp.rglob("*")
                              if not p.is_dir() or p.is_symlink())
        failpoint("pull-swap")  # tests kill here: built, not yet in place
        _swap_in(tmp, into, force)
    except OSError as exc:
        if isinstance(exc, HostkitError):
            raise
        raise HostkitError(f"cannot build {into}: {exc}",
                           hint="check the folder is writable and the disk has room") from None
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)


def _remove_stale(into: Path) -> None:
    """Remove the temporary folders that killed pulls into ``into`` left next to it."""
    for leftover in into.parent.glob(f".{into.name}.pull-*-*"):
        try:
            pid = int(leftover.name.rsplit(".pull-", 1)[1].split("-")[0])
        except (IndexError, ValueError):
            continue
        if pid != os.getpid() and not pid_alive(pid):
            shutil.rmtree(leftover, ignore_errors=True)


def _link_tree(tree: Path, dest: Path) -> None:
    """Recreate ``tree`` at ``dest``: folders made, files placed (hard links or copies),
    symlinks (checked relative and inside at extraction) copied as links."""
    dest.mkdir(parents=True, exist_ok=True)
    for here, dirs, names in os.walk(tree):
        rel = Path(here).relative_to(tree)
        for name in dirs:
            source = Path(here) / name
            if source.is_symlink():
                os.symlink(os.readlink(source), dest / rel / name)
            else:
                (dest / rel / name).mkdir()
        for name in names:
            source = Path(here) / name
            if source.is_symlink():
                os.symlink(os.readlink(source), dest / rel / name)
            else:
                place(source, dest / rel / name)


def _swap_in(tmp: Path, into: Path, force: bool) -> None:
    old = None
    if into.is_dir() and any(into.iterdir()):
        if not force:  # appeared meanwhile
            raise AlreadyExists(f"{into} is not empty", hint="pass --force to replace it")
        old = into.with_name(f".{into.name}.old-{secrets.token_hex(4)}")
        os.rename(into, old)
    os.rename(tmp, into)  # over an empty folder too
    if old is not None:
        with contextlib.suppress(OSError):
            shutil.rmtree(old)
