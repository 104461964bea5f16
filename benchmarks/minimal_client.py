"""A minimal verified, durable download client in Python: what any Python tool pays here.

    python benchmarks/minimal_client.py http URL OUT
    python benchmarks/minimal_client.py get ENDPOINT BUCKET KEY OUT
    python benchmarks/minimal_client.py tree ENDPOINT BUCKET PREFIX OUTDIR [JOBS]

The benchmarks run it next to ``curl``/``s5cmd`` and ``hostkit`` as a second baseline: the
least a Python program does to give the same promise (every byte hashed while it
arrives, the S3 ETag's md5 checked for single-part objects, sizes checked, each file
fsynced before it is renamed into place), written as plainly as possible with
aiohttp and hashlib, on one event loop. Nothing else: no retries, no resume, no
cache, no index, no progress. Where hostkit is near this and both are far from
s5cmd, the distance is the interpreter's, not hostkit's.

Requests are signed with hostkit's own SigV4 module (``hostkit_backends.sigv4``,
hmac and hashlib alone) so that neither side pays for botocore. Keys come from
``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``; the region is ``us-east-1``.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import sys
import xml.etree.ElementTree as ET
from urllib.parse import quote

import aiohttp
from hostkit_backends.sigv4 import StaticCredentials, sign

_NS = "{http://s3.amazonaws.com/doc/2006-03-01/}"
_REGION = "us-east-1"


def _credentials() -> StaticCredentials:
    return StaticCredentials(os.environ["AWS_ACCESS_KEY_ID"], os.environ["AWS_SECRET_ACCESS_KEY"])


async def _fetch(session: aiohttp.ClientSession, credentials: StaticCredentials | None, url: str,
                 path: str, size: int | None, etag: str | None) -> str:
    """GET ``url`` (signed with ``credentials``, if any) into ``path``: hashed while
    written, checked, fsynced, renamed in."""
    sha = hashlib.sha256()
    md5 = hashlib.md5() if etag and "-" not in etag else None  # multipart ETags are no md5
    got = 0
    temp = path + ".part"
    with open(temp, "wb") as f:
        headers = sign(credentials, "GET", url, {}, _REGION) if credentials else {}
        async with session.get(url, headers=headers, read_bufsize=1 << 20) as response:
            response.raise_for_status()
            async for chunk in response.content.iter_any():
                sha.update(chunk)
                if md5 is not None:
                    md5.update(chunk)
                f.write(chunk)
                got += len(chunk)
        f.flush()
        os.fsync(f.fileno())
    if (size is not None and got != size) or (md5 is not None and md5.hexdigest() != etag):
        os.unlink(temp)
        raise SystemExit(f"{url}: {got} bytes, not the object listed")
    os.rename(temp, path)
    return sha.hexdigest()


async def _listing(session, credentials, endpoint: str, bucket: str, prefix: str):
    """``(key, size, etag)`` of every object under ``prefix`` (ListObjectsV2, page by page)."""
    found, token = [], None
    while True:
        query = "list-type=2&prefix=" + quote(prefix, safe="")
        if token:
            query += "&continuation-token=" + quote(token, safe="")
        url = f"{endpoint}/{bucket}?{query}"
        async with session.get(url, headers=sign(credentials, "GET", url, {}, _REGION)) as r:
            r.raise_for_status()
            root = ET.fromstring(await r.read())
        for item in root.iter(_NS + "Contents"):
            found.append((item.findtext(_NS + "Key"), int(item.findtext(_NS + "Size")),
                          item.findtext(_NS + "ETag").strip('"')))
        if root.findtext(_NS + "IsTruncated") != "true":
            return found
        token = root.findtext(_NS + "NextContinuationToken")


async def http(url: str, out: str) -> None:
    """One file, one plain GET."""
    async with aiohttp.ClientSession() as session:
        print(await _fetch(session, None, url, out, None, None))


async def get(endpoint: str, bucket: str, key: str, out: str) -> None:
    """One object, one GET."""
    async with aiohttp.ClientSession() as session:
        print(await _fetch(session, _credentials(), f"{endpoint}/{bucket}/{quote(key)}", out,
                           None, None))


async def tree(endpoint: str, bucket: str, prefix: str, out: str, jobs: int) -> None:
    """Every object under ``prefix``, ``jobs`` at a time, into ``out`` by relative path."""
    credentials = _credentials()
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=jobs)) as session:
        objects = await _listing(session, credentials, endpoint, bucket, prefix)
        slots = asyncio.Semaphore(jobs)

        async def one(key: str, size: int, etag: str) -> str:
            path = os.path.join(out, key[len(prefix):])
            os.makedirs(os.path.dirname(path), exist_ok=True)
            async with slots:
                return await _fetch(session, credentials, f"{endpoint}/{bucket}/{quote(key)}",
                                    path, size, etag)

        await asyncio.gather(*(one(*o) for o in objects))


def main(argv: list[str]) -> None:
    """``http``, ``get`` or ``tree`` (see the module's usage)."""
    if len(argv) >= 3 and argv[0] == "http":
        asyncio.run(http(*argv[1:3]))
    elif len(argv) >= 5 and argv[0] == "get":
        asyncio.run(get(*argv[1:5]))
    elif len(argv) >= 5 and argv[0] == "tree":
        asyncio.run(tree(*argv[1:5], int(argv[5]) if len(argv) > 5 else 16))
    else:
        raise SystemExit(__doc__.split("\n\n")[1])


if __name__ == "__main__":
    main(sys.argv[1:])
