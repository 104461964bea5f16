"""What a resolve returns, and the progress callbacks it reports to."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path


@dataclass
class Resolved:
    """The answer: a local path to verified bytes, and how it was obtained."""

    path: Path
    sha256: str
    size: int
    cached: bool
    identifier: str
    #: True when the bytes matched a hash the caller gave; False for trust on first use.
    verified: bool
    digests: dict[str, str] = field(default_factory=dict)
    #: The identifier as asked, when it named a movable reference (a branch) that was
    #: pinned (``--pin``): ``identifier`` is then the pinned one. None otherwise.
    pinned_from: str | None = None
    #: Trust on first use noticed a change: resolved without a hash, the identifier gave
    #: other bytes than before. ``{"sha256": old hex, "recorded_at": ISO-8601 UTC}`` of
    #: the bytes it gave before; None when nothing changed.
    changed_from: dict[str, str] | None = None
    #: True when the identifier names a folder: ``path`` is then a read-only snapshot
    #: folder of its files, ``sha256`` its manifest's (the tree's digest, see
    #: :mod:`hostkit.store.snapshots`), ``size`` the bytes of its files.
    tree: bool = False
    #: How many files the folder has (None for a file).
    files: int | None = None

    def to_dict(self) -> dict:
        """JSON form (``--json``, daemon answers); ``pinned_from``, ``changed_from`` only
        when set, ``tree`` and ``files`` only for a folder."""
        d = asdict(self)
        d["path"] = str(self.path)
        for optional in ("pinned_from", "changed_from", "files"):
            if d[optional] is None:
                del d[optional]
        if not self.tree:
            del d["tree"]
        return d

    def change_message(self) -> str | None:
        """What to tell people about ``changed_from`` (None when nothing changed)."""
        if not self.changed_from:
            return None
        return (f"{self.identifier} changed: sha256:{self.changed_from.get('sha256')} "
                f"(recorded {self.changed_from.get('recorded_at')}) is now "
                f"sha256:{self.sha256}; the cache now holds the new bytes. Pin them with "
                f"--hash sha256:{self.sha256}, or refuse changes with --require-same")


class Progress:
    """Download progress callbacks; the default does nothing."""

    def start(self, identifier: str, total: int | None, done: int) -> None:
        """A download of ``total`` bytes (None if unknown) starts, ``done`` already on disk."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more arrived."""

    def close(self) -> None:
        """The download ended (well or not)."""


class BatchProgress:
    """Progress of several resolves at once (:func:`hostkit.api.resolve_many`); the default
    shows nothing. Its methods may be called from several threads at once."""

    def item(self, index: int, identifier: str) -> Progress:
        """The :class:`Progress` of item ``index`` (called once per item, before it starts)."""
        return Progress()

    def finished(self, index: int, outcome) -> None:
        """Item ``index`` ended: ``outcome`` is its :class:`Resolved` or its error."""

    def close(self) -> None:
        """Every item ended."""


class ProgressListener:
    """Turns the resolver's events for one download into :class:`Progress` calls.

    Subscribed for the duration of one resolve, so every caller sees the
    download's progress: the one that started it, one that joined it, and
    one waiting for another process's download (from that process's partial).
    """

    def __init__(self, progress: Progress):
        self.progress = progress
        self._done = 0
        self._open = False

    def __call__(self, event) -> None:
        """Handle one event (see :mod:`hostkit.events`)."""
        from . import events

        if isinstance(event, events.DownloadStarted):
            self._begin(event.identifier, event.total, event.offset)
        elif isinstance(event, events.Progressed | events.Waiting):
            if event.done is None:  # waiting on a download whose bytes cannot be seen
                return
            if not self._open:
                self._begin(event.identifier, event.total, event.done)
            self._advance(event.done)
        elif isinstance(event, events.Finished | events.Failed | events.Retrying):
            self.progress.close()
            self._open = False

    def _begin(self, identifier: str, total: int | None, done: int) -> None:
        self.progress.start(identifier, total, done)
        self._done, self._open = done, True

    def _advance(self, done: int) -> None:
        if done > self._done:
            self.progress.advance(done - self._done)
            self._done = done
