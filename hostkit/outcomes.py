"""What a download came to: its digests checked, its failure as an event, a change refused.

Shared by the single-file path (:mod:`hostkit.resolver`) and a folder's small files
(:mod:`hostkit.small_files`), so that both judge received bytes by the same rules.
"""

from __future__ import annotations

import asyncio

from .errors import ContentChanged, HashMismatch, HostkitError
from .events import Failed
from .formatting import iso_time
from .hashes import Digest
from .remote import Remote, RemoteInfo
from .store.index import Entry


def check_digests(remote: Remote, info: RemoteInfo, digests: dict[str, str],
                  digest: Digest | None) -> None:
    """HashMismatch unless the received bytes' ``digests`` match what the server
    advertised (``info.digests``) and the caller's ``digest``."""
    for alg, advertised in info.digests.items():
        # an alg first advertised after a restart mid-download was not computed: skip it
        if alg in digests and digests[alg] != advertised:
            raise HashMismatch(
                remote.display, f"{alg}:{advertised} (advertised by the server)",
                f"{alg}:{digests[alg]}",
                hint="the bytes were damaged in transit or the server's metadata is "
                     "wrong; try again")
    if digest and digests[digest.alg] != digest.hex:
        raise HashMismatch(remote.display, str(digest), f"{digest.alg}:{digests[digest.alg]}")


def failed_event(remote: Remote, exc: BaseException) -> Failed:
    """The event for a download that ends in ``exc`` (a cancel or Ctrl-C included)."""
    if isinstance(exc, HostkitError):
        return Failed(remote.cache_key, remote.display, exc.kind, exc.message)
    if isinstance(exc, asyncio.CancelledError | KeyboardInterrupt):
        return Failed(remote.cache_key, remote.display, "cancelled",
                      "the download was stopped; its partial file is kept for a resume")
    return Failed(remote.cache_key, remote.display, "error", type(exc).__name__)


def content_changed(display: str, old: Entry, new_sha256: str) -> ContentChanged:
    """The error of strict trust on first use: ``display`` gave other bytes than ``old``."""
    return ContentChanged(
        display, f"sha256:{old.sha256}", f"sha256:{new_sha256}", iso_time(old.created),
        hint="if the change is expected, resolve once without --require-same "
             "(HOSTKIT_REQUIRE_SAME=0) to accept the new bytes; to keep using the old ones, "
             f"pass --hash sha256:{old.sha256}")
