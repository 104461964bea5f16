"""``hostkit publish DIR --type T --to DEST``: host a MedPerf cube's parts where MedPerf reads them.

Packages DIR with :func:`hostkit.workflows.mlcube.package`, uploads each part
through its backend's ``hostkit_upload`` hook (:func:`hostkit.api.upload`),
then resolves every identifier to be printed in a separate process with no
credentials (a scrubbed environment, a fresh cache, anonymous backends) and
checks it gives the same sha256. The identifiers printed are ones MedPerf
accepts: an http(s) URL a plain anonymous GET reads (a public bucket's object
as its URL, path-style for a MinIO or SeaweedFS endpoint) or ``synapse:synN``.
An object no anonymous caller can read fails the publish, unless ``private``:
then its own identifier (``s3://...``) is printed, checked with the caller's
credentials, and flagged as unusable by MedPerf.

Object-store keys are ``DEST/<sha256>/<part name>``: content-addressed and
named, so publishing the same folder again uploads nothing (the upload hook
finds identical bytes) and prints the same record.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .. import api
from ..errors import CredentialsNeeded, HostkitError, UsageError
from ..redact import redact_text
from .mlcube import (
    ADDITIONAL_TARBALL,
    PARAMETERS,
    container_tasks,
    package,
    read_manifest,
    singularity_image,
)

#: part -> (url field, hash field) of MedPerf's MLCube-era record.
FIELDS = {
    "mlcube": ("git_mlcube_url", "mlcube_hash"),
    "parameters": ("git_parameters_url", "parameters_hash"),
    "additional_files": ("additional_files_tarball_url", "additional_files_tarball_hash"),
    "image": ("image_tarball_url", "image_tarball_hash"),
}
_SYNAPSE_VERSIONED = re.compile(r"^synapse:(syn\d+)\.\d+$")
#: environment kept for the anonymous check: no credentials, no config files.
_KEEP_ENV = ("PATH", "LANG", "LC_ALL", "LC_CTYPE", "TMPDIR", "SSL_CERT_FILE", "SSL_CERT_DIR",
             "REQUESTS_CA_BUNDLE", "HTTP_PROXY", "HTTPS_PROXY", "NO_PROXY", "http_proxy",
             "https_proxy", "no_proxy", "SYSTEMROOT", "VIRTUAL_ENV", "PYTHONPATH")
#: HOSTKIT_* settings that never hold a secret and say where servers are.
_KEEP_HOSTKIT = ("HOSTKIT_SYNAPSE_ENDPOINT", "HOSTKIT_MINIO_INSECURE_HOSTS",
                 "HOSTKIT_CONNECT_TIMEOUT", "HOSTKIT_READ_TIMEOUT")


@dataclass
class PublishedPart:
    """One uploaded part: what was uploaded, and the identifier printed for it."""

    name: str
    file: str
    sha256: str
    size: int
    uploaded: str          # the backend's identifier of the upload
    identifier: str        # the identifier printed (public form, or ``uploaded`` if private)
    public: bool
    created: bool


@dataclass
class Published:
    """What ``hostkit publish`` did: each part, and the record to submit to MedPerf."""

    parts: dict[str, PublishedPart] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    parameters: Any = None

    @property
    def public(self) -> bool:
        """True when MedPerf can download every part (anonymous GET or public Synapse)."""
        return all(p.public for p in self.parts.values())

    def record(self) -> dict[str, Any]:
        """MedPerf's fields (``""`` when absent) and, under ``container``, the current form."""
        out: dict[str, Any] = {}
        for name, (url_field, hash_field) in FIELDS.items():
            part = self.parts.get(name)
            out[url_field] = part.identifier if part else ""
            out[hash_field] = part.sha256 if part else ""
        out["container"] = self._container()
        return out

    def _container(self) -> dict[str, Any]:
        image = self.parts.get("image")
        docker_section = self.config.get("docker")
        docker: dict[str, Any] = docker_section if isinstance(docker_section, dict) else {}
        tasks = container_tasks(self.config)
        if image is not None:
            config = {"container_type": "SingularityFile", "image": image.identifier,
                      "tasks": tasks}
            image_hash = image.sha256
        elif docker.get("image"):
            name = str(docker["image"])
            config = {"container_type": "DockerImage", "image": name, "tasks": tasks}
            # a registry digest: hostkit does not ask registries, so only a pinned name
            # (image@sha256:...) gives one; otherwise MedPerf records it on first pull
            digest = name.rpartition("@")[2] if "@sha256:" in name else ""
            image_hash = digest
        else:
            config, image_hash = {}, ""
        extra = self.parts.get("additional_files")
        return {"container_config": config, "parameters_config": self.parameters,
                "image_hash": image_hash,
                "additional_files_tarball_url": extra.identifier if extra else "",
                "additional_files_tarball_hash": extra.sha256 if extra else ""}

    def to_dict(self) -> dict[str, Any]:
        """JSON form, as ``hostkit publish --json`` prints it: the record to submit."""
        return self.record()


def _destination(dest: str, sha256: str, name: str) -> str:
    """Where one part goes: into a Synapse folder as is, else ``DEST/<sha256>/<name>``."""
    if dest.startswith("synapse:"):
        return dest
    return f"{dest if dest.endswith('/') else dest + '/'}{sha256}/{name}"


def _public_form(uploaded: str, url: str | None) -> str | None:
    """The identifier MedPerf accepts for an upload, if the store has one."""
    if m := _SYNAPSE_VERSIONED.match(uploaded):
        return f"synapse:{m.group(1)}"  # MedPerf has no version form
    if uploaded.startswith("synapse:") or uploaded.startswith(("http://", "https://")):
        return uploaded
    return url


def anonymous_env(home: Path) -> dict[str, str]:
    """The environment of the anonymous check: no credentials, no config files, no daemon."""
    env = {k: v for k, v in os.environ.items() if k in _KEEP_ENV or k in _KEEP_HOSTKIT}
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home), HOSTKIT_CONFIG=str(home / "none.toml"),
               HOSTKIT_SYNAPSE_CONFIG=str(home / "synapseConfig"),
               AWS_SHARED_CREDENTIALS_FILE=str(home / "none"), AWS_CONFIG_FILE=str(home / "none"),
               HOSTKIT_S3_ANONYMOUS="1", HOSTKIT_GCS_ANONYMOUS="1", HOSTKIT_AZURE_ANONYMOUS="1")
    _copy_synapse_endpoints(home / "synapseConfig")
    return env


def _copy_synapse_endpoints(target: Path) -> None:
    """Keep the publisher's Synapse ``[endpoints]`` (not its token) for the anonymous check.

    Without them a publisher on another Synapse (a site's own, a stand-in) would be
    checked against production, where the entity does not exist.
    """
    import configparser

    source = os.environ.get("HOSTKIT_SYNAPSE_CONFIG") or str(Path.home() / ".synapseConfig")
    parser = configparser.RawConfigParser()
    try:
        parser.read(source)
    except (configparser.Error, OSError, UnicodeDecodeError):
        return  # the resolve in the check reports an unreadable file itself
    if not parser.has_section("endpoints"):
        return
    kept = configparser.RawConfigParser()  # keys are case-blind, as Synapse's client reads them
    kept.add_section("endpoints")
    for key, value in parser.items("endpoints"):
        kept.set("endpoints", key, value)
    with open(target, "w", encoding="utf-8") as out:
        kept.write(out)


def check_anonymously(identifiers: dict[str, tuple[str, str]], timeout: float = 600.0
                      ) -> dict[str, str | None]:
    """Resolve each ``name -> (identifier, sha256)`` with no credentials; name -> error or None.

    Each runs ``hostkit resolve`` in its own process (all at once) with a
    scrubbed environment and a fresh, throwaway cache, so nothing the caller
    is logged in with can help it.
    """
    errors: dict[str, str | None] = {}
    with tempfile.TemporaryDirectory(prefix="hostkit-anon-") as tmp:
        home = Path(tmp)
        env = anonymous_env(home)
        procs = {}
        for name, (ident, sha) in identifiers.items():
            argv = [sys.executable, "-c", "import sys; from hostkit.cli import main; "
                    "sys.exit(main())", "resolve", ident, sha, "--cache-dir",
                    str(home / "cache"), "--json", "-q"]
            procs[name] = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE,
                                           stderr=subprocess.PIPE, stdin=subprocess.DEVNULL,
                                           text=True)
        for name, proc in procs.items():
            try:
                out, err = proc.communicate(timeout=timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate()
                errors[name] = f"no answer within {timeout:.0f} s"
                continue
            if proc.returncode == 0:
                try:
                    got = json.loads(out).get("sha256")
                except (json.JSONDecodeError, AttributeError):
                    got = None
                expected = identifiers[name][1]
                errors[name] = None if got == expected else f"it gave {got}, not {expected}"
            else:
                lines = [ln for ln in err.strip().splitlines() if ln.strip()]
                said = [ln for ln in lines if ln.startswith("error:")] or lines
                errors[name] = said[0].removeprefix("error: ") if said else \
                    f"exit status {proc.returncode}"
    return errors


def publish(folder: Path | str, cube_type: str, dest: str, *, private: bool = False,
            settings=None) -> Published:
    """Package ``folder``, upload its parts under ``dest``, check them, return the record.

    Raises :class:`~hostkit.errors.CredentialsNeeded` naming every part that
    no anonymous caller can read (MedPerf could not download it), unless
    ``private``. Raises what :func:`~hostkit.workflows.mlcube.package` and
    :func:`hostkit.api.upload` raise (an invalid cube uploads nothing).
    """
    if not isinstance(dest, str) or not dest.strip():
        raise UsageError("--to needs a destination", hint="e.g. s3://bucket/cubes/ or "
                                                           "synapse:syn123")
    dest = dest.strip()
    folder = Path(folder)
    packaged = package(folder, cube_type)
    manifest = (packaged.assets / "mlcube.yaml").read_text(encoding="utf-8")
    config = read_manifest(manifest)
    image_name = singularity_image(config)
    names = {"mlcube.yaml": "mlcube", PARAMETERS: "parameters",
             ADDITIONAL_TARBALL: "additional_files"}
    if image_name:
        names[image_name] = "image"
    result = Published(config=config)
    if (packaged.assets / PARAMETERS).is_file():
        import yaml

        result.parameters = yaml.safe_load((packaged.assets / PARAMETERS).read_text("utf-8"))
    uploads = {}
    for entry in packaged.parts:
        part = names.get(entry["name"])
        if part is None:
            continue
        src = packaged.assets / entry["name"]
        up = api.upload(src, _destination(dest, entry["sha256"], entry["name"]),
                        settings=settings)
        if up.sha256 != entry["sha256"]:
            raise HostkitError(f"{up.identifier} holds {up.sha256}, not {entry['sha256']}",
                               hint="the assets changed during the upload; publish again")
        uploads[part] = (entry, up)
    candidates = {part: (form, up.sha256) for part, (_, up) in uploads.items()
                  if (form := _public_form(up.identifier, getattr(up, "url", None)))}
    checked = check_anonymously(candidates) if candidates else {}
    refused = []
    for part, (entry, up) in uploads.items():
        error = checked.get(part, "the store gives it no public URL")
        public = part in candidates and error is None
        ident = candidates[part][0] if public else up.identifier
        if not public:
            refused.append(f"{entry['name']} ({candidates.get(part, (up.identifier,))[0]}): "
                           f"{error}")
            if private:  # still check it resolves, with the caller's credentials
                with tempfile.TemporaryDirectory(prefix="hostkit-check-") as tmp:
                    api.resolve(up.identifier, up.sha256, cache_dir=tmp, settings=settings)
        result.parts[part] = PublishedPart(part, entry["name"], up.sha256, up.size,
                                           up.identifier, ident, public, up.created)
    if refused and not private:
        raise CredentialsNeeded(
            redact_text("not anonymously readable, so MedPerf cannot download it: "
                        + "; ".join(refused)),
            hint="make the bucket (or Synapse entity) publicly readable and publish again, "
                 "or pass --private to print the private identifiers anyway")
    return result


__all__ = ["FIELDS", "Published", "PublishedPart", "anonymous_env", "check_anonymously",
           "publish"]
