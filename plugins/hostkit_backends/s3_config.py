"""Which S3 endpoint, region and profile an ``s3://`` or ``minio://`` identifier means.

Decided without I/O beyond reading the AWS config file. Endpoint of ``s3://``
(first found): ``AWS_ENDPOINT_URL_S3``, the profile's ``services`` s3
``endpoint_url``, ``AWS_ENDPOINT_URL``, the profile's ``endpoint_url``
(``AWS_CONFIG_FILE``), MLflow's ``MLFLOW_S3_ENDPOINT_URL``; otherwise AWS. A
``minio://`` host with no keys in the environment and no ``AWS_PROFILE`` uses the
profile whose ``endpoint_url`` names that host.
"""

from __future__ import annotations

import configparser
import contextlib
import os
import re
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from hostkit.errors import UsageError

from .objectstore import Location, after_slashes, env_true, shown

AWS_ENDPOINT = "https://s3.amazonaws.com"


@dataclass(frozen=True)
class S3Config:
    """How to reach one endpoint: what the client needs, decided without I/O."""

    endpoint: str | None  # None: AWS itself (region found per bucket)
    region: str | None = None
    profile: str | None = None
    anonymous: bool = False
    verify: bool = True
    path_style: bool = False
    #: where the endpoint came from, for messages
    source: str = "AWS"

    @property
    def client_key(self) -> str:
        return "s3|" + "|".join(str(v) for v in (self.endpoint, self.region, self.profile,
                                                   self.anonymous, self.verify, self.path_style))

    @property
    def where(self) -> str:
        return f"{self.endpoint} ({self.source})" if self.endpoint else "AWS S3"


def parse(ref, context) -> tuple[Location, S3Config]:
    """Split an ``s3://`` / ``minio://`` identifier and decide the endpoint and credentials."""
    form = "minio://host:port/bucket/key" if ref.scheme == "minio" else "s3://bucket/key"
    body, version = _split_version(ref, after_slashes(ref, form))
    if ref.scheme == "minio":
        host, _, body = body.partition("/")
        if not host:
            raise UsageError(f"{shown(ref)}: no host", hint=f"write {form}")
        conf = _minio_config(host.lower(), context)
        base = f"minio://{host.lower()}/"
    else:
        conf = _aws_config(context)
        base = "s3://"
    bucket, _, key = body.partition("/")
    if not 3 <= len(bucket) <= 63 or not re.fullmatch(r"[A-Za-z0-9._-]+", bucket):
        raise UsageError(f"{shown(ref)}: {bucket!r} is not a bucket name",
                         hint=f"write {form}; bucket names are 3 to 63 characters")
    loc = Location(backend="s3", base=base, endpoint=conf.endpoint or AWS_ENDPOINT,
                   bucket=bucket, key=key, version=version, version_form="?versionId={}")
    return loc, conf


def _split_version(ref, body: str) -> tuple[str, str | None]:
    key, sep, query = body.partition("?")
    if not sep:
        return body, None
    match = re.fullmatch(r"versionId=([^&]+)", query)
    if not match:
        raise UsageError(f"{shown(ref)}: unexpected query",
                         hint="the only query an s3 identifier takes is ?versionId=ID")
    return key, match.group(1)


def _normalize(url: str) -> str:
    parts = urlsplit(url.strip())
    scheme = (parts.scheme or "https").lower()
    host = (parts.hostname or "").lower()
    port = parts.port
    if port and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path.rstrip('/')}"


def _aws_file(env: str, default: str) -> configparser.ConfigParser:
    cfg = configparser.ConfigParser(interpolation=None)
    path = Path(os.path.expanduser(os.environ.get(env) or default))
    # a broken file: botocore says so with a better message when the client starts
    with contextlib.suppress(configparser.Error, OSError, UnicodeDecodeError):
        cfg.read(path)
    return cfg


def _section(cfg: configparser.ConfigParser, profile: str) -> dict[str, str]:
    name = "default" if profile == "default" else f"profile {profile}"
    return dict(cfg[name]) if cfg.has_section(name) else {}


def _nested(value: str) -> dict[str, str]:
    out = {}
    for line in value.splitlines():
        key, sep, val = line.partition("=")
        if sep:
            out[key.strip()] = val.strip()
    return out


def _profile_endpoint(cfg, section: dict[str, str]) -> tuple[str | None, str | None]:
    """(services s3 endpoint_url, endpoint_url) of a profile section."""
    service = None
    if (name := section.get("services")) and cfg.has_section(f"services {name}"):
        service = _nested(cfg[f"services {name}"].get("s3", "")).get("endpoint_url")
    return service, section.get("endpoint_url")


def _region(cfg, section) -> str | None:
    return (os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION")
            or section.get("region"))


def _aws_config(context) -> S3Config:
    """The endpoint botocore would use for S3, then MLflow's fallback; else AWS."""
    cfg = _aws_file("AWS_CONFIG_FILE", "~/.aws/config")
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    section = _section(cfg, profile)
    endpoint, source = None, "AWS"
    if not env_true("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS"):
        service_url, profile_url = _profile_endpoint(cfg, section)
        for value, where in ((os.environ.get("AWS_ENDPOINT_URL_S3"), "AWS_ENDPOINT_URL_S3"),
                             (service_url, f"services for profile {profile}"),
                             (os.environ.get("AWS_ENDPOINT_URL"), "AWS_ENDPOINT_URL"),
                             (profile_url, f"endpoint_url of profile {profile}")):
            if value:
                endpoint, source = value, where
                break
    if endpoint is None and os.environ.get("MLFLOW_S3_ENDPOINT_URL"):
        endpoint, source = os.environ["MLFLOW_S3_ENDPOINT_URL"], "MLFLOW_S3_ENDPOINT_URL"
    if endpoint is None:
        return S3Config(None, anonymous=context.option("s3", "anonymous"))
    return S3Config(_normalize(endpoint), region=_region(cfg, section) or "us-east-1",
                    anonymous=context.option("s3", "anonymous"),
                    verify=not env_true("MLFLOW_S3_IGNORE_TLS"), path_style=True, source=source)


def _minio_config(host: str, context) -> S3Config:
    listed = context.option("minio", "insecure_hosts") or ""
    insecure = {h.strip().lower() for h in listed.split(",") if h.strip()}
    plain = host in insecure or host.rsplit(":", 1)[0] in insecure
    endpoint = _normalize(f"{'http' if plain else 'https'}://{host}")
    cfg = _aws_file("AWS_CONFIG_FILE", "~/.aws/config")
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE")
    explicit = None
    if not profile and not os.environ.get("AWS_ACCESS_KEY_ID"):
        explicit = _profile_for_host(cfg, host)
    section = _section(cfg, explicit or profile or "default")
    source = f"the identifier, profile {explicit}" if explicit else "the identifier"
    return S3Config(endpoint, region=_region(cfg, section) or "us-east-1", profile=explicit,
                    anonymous=context.option("s3", "anonymous"),
                    verify=not env_true("MLFLOW_S3_IGNORE_TLS"), path_style=True, source=source)


def _profile_for_host(cfg, host: str) -> str | None:
    """The AWS profile whose endpoint_url names ``host`` (``host:port``), if exactly one does."""
    found = []
    for name in cfg.sections():
        if name != "default" and not name.startswith("profile "):
            continue
        for url in _profile_endpoint(cfg, dict(cfg[name])):
            if url and urlsplit(_normalize(url)).netloc == host:
                found.append(name.removeprefix("profile ").strip())
                break
    return found[0] if len(found) == 1 else None


def default_region() -> str:
    """The region botocore would default to: environment, then the profile's, else us-east-1."""
    profile = os.environ.get("AWS_PROFILE") or os.environ.get("AWS_DEFAULT_PROFILE") or "default"
    cfg = _aws_file("AWS_CONFIG_FILE", "~/.aws/config")
    return _region(cfg, _section(cfg, profile)) or "us-east-1"
