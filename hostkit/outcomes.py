"""What a download came to: its digests checked, its failure as an event, a change noted
or refused.

Shared by the single-file path (:mod:`hostkit.resolver`), a folder's small files
(:mod:`hostkit.small_files`) and a folder as a whole (:mod:`hostkit.trees`), so that
all judge received bytes by the same rules.
"""

from __future__ import annotations

import asyncio
import logging

from .errors import ContentChanged, HashMismatch, HostkitError
from .events import Changed, EventBus, Failed
from .formatting import iso_time
from .hashes import Digest
from .remote import Remote, RemoteInfo
from .store.index import Entry

log = logging.getLogger("hostkit")


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


def note_change(events: EventBus, remote: Remote, old: Entry, new_sha256: str,
                same: bool) -> dict[str, str]:
    """Trust on first use found other bytes (``new_sha256``) than ``old``, the entry (or a
    folder's row) recorded for ``remote``: the :class:`~hostkit.events.Changed` event, then
    :class:`ContentChanged` when ``same`` (strict: the old bytes stay recorded), else the
    answer's ``changed_from``."""
    events.publish(Changed(remote.cache_key, remote.display, old.sha256, new_sha256,
                           old.created, not same))
    if same:
        raise content_changed(remote.display, old, new_sha256)
    log.info("%s changed: sha256:%s (recorded %s) is now sha256:%s", remote.display,
             old.sha256, iso_time(old.created), new_sha256)
    return {"sha256": old.sha256, "recorded_at": iso_time(old.created)}
