"""Fixtures for the object-store tests: real servers, a fault-injecting TCP relay, helpers.

Servers are module-scoped and fail the tests (never skip them) when they cannot
start. Each test gets an environment with only the credentials it sets: no
AWS_*, AZURE_*, GOOGLE_* or MLFLOW_* variables leak in from the shell.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import threading
import urllib.request

import pytest

from tests.servers import AzuriteServer, GcsEmulatorServer, SeaweedS3Server, free_port

KEY, SECRET = "testkey", "testsecret-3f9c1e"
BUCKETS = ("plain", "vers")  # "vers" has versioning enabled


class TcpProxy:
    """A loopback TCP relay in front of a server: counts connections and bytes, cuts or refuses.

    ``cut_after``: abort every connection once this many bytes went server -> client.
    ``refuse``: accept and immediately drop new connections (the server looks down).
    """

    def __init__(self, target_port: int, host: str = "127.0.0.1"):
        self.target = (host, target_port)
        self.port = free_port()
        self.connections = self.active = self.max_active = 0
        self.down = 0
        self.cut_after: int | None = None
        self.refuse = False
        self._pairs: set = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    @property
    def hostport(self) -> str:
        return f"127.0.0.1:{self.port}"

    async def _listen(self):
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)

    async def _handle(self, reader, writer):
        if self.refuse:
            writer.transport.abort()
            return
        self.connections += 1
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            writer.transport.abort()
            self.active -= 1
            return
        pair = (writer, up_writer)
        self._pairs.add(pair)
        try:
            await asyncio.gather(self._pump(reader, up_writer, False),
                                 self._pump(up_reader, writer, True))
        finally:
            self._pairs.discard(pair)
            self.active -= 1

    async def _pump(self, src, dst, downstream: bool):
        try:
            while data := await src.read(256 << 10):
                if downstream:
                    self.down += len(data)
                    if self.cut_after is not None and self.down > self.cut_after:
                        self._cut()
                        return
                dst.write(data)
                await dst.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                dst.close()

    def _cut(self):
        for a, b in list(self._pairs):
            a.transport.abort()
            b.transport.abort()

    def reset(self):
        """Zero the counters and let traffic through again."""
        self.connections = self.max_active = self.down = 0
        self.cut_after, self.refuse = None, False

    def close(self):
        async def stop():
            self._server.close()
            self._cut()

        asyncio.run_coroutine_threadsafe(stop(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)


# -- servers -------------------------------------------------------------------


def s3_admin(server: SeaweedS3Server):
    import boto3
    from botocore.config import Config

    return boto3.client("s3", endpoint_url=server.endpoint_url, region_name="us-east-1",
                        aws_access_key_id=server.access_key,
                        aws_secret_access_key=server.secret_key,
                        config=Config(s3={"addressing_style": "path"}))


def start_seaweed(buckets=BUCKETS) -> SeaweedS3Server:
    server = SeaweedS3Server(access_key=KEY, secret_key=SECRET)
    admin = s3_admin(server)
    for bucket in buckets:
        admin.create_bucket(Bucket=bucket)
    if "vers" in buckets:
        admin.put_bucket_versioning(Bucket="vers",
                                    VersioningConfiguration={"Status": "Enabled"})
    server.admin = admin
    return server


@pytest.fixture(scope="module")
def seaweed():
    """SeaweedFS with an identities file (unsigned or wrongly signed requests get 403)."""
    server = start_seaweed()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def seaweed_proxy(seaweed):
    """A relay in front of SeaweedFS, to count, cut or refuse connections."""
    proxy = TcpProxy(seaweed.port)
    yield proxy
    proxy.close()


@pytest.fixture
def proxy(seaweed_proxy):
    seaweed_proxy.reset()
    yield seaweed_proxy
    seaweed_proxy.reset()


@pytest.fixture(scope="module")
def azurite():
    server = AzuriteServer()
    from azure.storage.blob import BlobServiceClient

    with BlobServiceClient.from_connection_string(server.connection_string) as service:
        service.create_container("cont")
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs_emulator():
    server = GcsEmulatorServer()
    req = urllib.request.Request(f"{server.endpoint_url}/storage/v1/b?project=test",
                                 data=json.dumps({"name": "gbucket"}).encode(),
                                 headers={"Content-Type": "application/json"}, method="POST")
    urllib.request.urlopen(req, timeout=10).read()
    yield server
    server.stop()


@pytest.fixture(scope="module")
def gcs_proxy(gcs_emulator):
    proxy = TcpProxy(gcs_emulator.port)
    yield proxy
    proxy.close()


# -- environments ------------------------------------------------------------------


def _clear_cloud_env(monkeypatch, tmp_path):
    for key in list(os.environ):
        if key.startswith(("AWS_", "AZURE_", "GOOGLE_", "MLFLOW_", "STORAGE_EMULATOR", "GCE_")):
            monkeypatch.delenv(key)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "aws-credentials"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    monkeypatch.setenv("CLOUDSDK_CONFIG", str(tmp_path / "gcloud"))
    monkeypatch.setenv("HOSTKIT_RETRIES", "1")


@pytest.fixture
def s3env(monkeypatch, tmp_path, seaweed):
    """Keys in the environment; 127.0.0.1 spoken to over plain http. Returns the minio base."""
    _clear_cloud_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("HOSTKIT_MINIO_INSECURE_HOSTS", "127.0.0.1")
    return f"minio://127.0.0.1:{seaweed.port}"


@pytest.fixture
def gcsenv(monkeypatch, tmp_path, gcs_emulator):
    _clear_cloud_env(monkeypatch, tmp_path)
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs_emulator.endpoint_url)
    monkeypatch.setenv("HOSTKIT_GCS_ANONYMOUS", "1")  # the emulator checks no credentials
    return gcs_emulator


@pytest.fixture
def azenv(monkeypatch, tmp_path, azurite):
    _clear_cloud_env(monkeypatch, tmp_path)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", azurite.connection_string)
    return azurite


# -- running hostkit in-process -----------------------------------------------------------


def resolve(identifier: str, expected: str | None = None, **kwargs):
    """Resolve with a fresh Resolver (settings from the environment); return (Resolved, stats)."""
    from hostkit.resolver import Resolver

    async def go():
        resolver = Resolver()
        try:
            return await resolver.resolve(identifier, expected, **kwargs), dict(resolver.stats)
        finally:
            await resolver.aclose()

    return asyncio.run(go())


def upload(source, destination: str, **kwargs):
    """Upload with a fresh Resolver; return the UploadResult."""
    from hostkit.resolver import Resolver

    async def go():
        resolver = Resolver()
        try:
            return await resolver.upload(source, destination, **kwargs)
        finally:
            await resolver.aclose()

    return asyncio.run(go())


def write_random(path, size: int) -> str:
    """Write ``size`` random bytes to ``path``; return their sha256 hex."""
    import hashlib

    digest = hashlib.sha256()
    with open(path, "wb") as f:
        left = size
        while left:
            block = os.urandom(min(left, 8 << 20))
            digest.update(block)
            f.write(block)
            left -= len(block)
    return digest.hexdigest()
