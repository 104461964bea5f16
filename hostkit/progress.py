"""tqdm progress bars for long downloads, shown only on a terminal: one per download, or
one for several at once (``hostkit resolve ID ID...``)."""

from __future__ import annotations

import sys
import threading

from .results import BatchProgress, Progress


class BarProgress(Progress):
    """Draws one bar per download on stderr once it is worth showing."""

    def __init__(self, min_bytes: int, *, notebook_aware: bool = False):
        self.min_bytes = min_bytes
        #: ``tqdm.auto``: a widget in Jupyter, text elsewhere (for the Python API).
        self.notebook_aware = notebook_aware
        self._bar = None

    def start(self, identifier: str, total: int | None, done: int) -> None:
        """Open a bar when the download is large (or of unknown size)."""
        self.close()
        if total is not None and total < self.min_bytes:
            return
        if self.notebook_aware:
            from tqdm.auto import tqdm
        else:
            from tqdm import tqdm

        name = identifier.rsplit("/", 1)[-1][:40]
        self._bar = tqdm(total=total, initial=done, unit="B", unit_scale=True,
                         unit_divisor=1024, desc=name, file=sys.stderr, leave=False,
                         mininterval=0.25)

    def advance(self, nbytes: int) -> None:
        """Move the bar."""
        if self._bar is not None:
            self._bar.update(nbytes)

    def close(self) -> None:
        """Remove the bar."""
        if self._bar is not None:
            self._bar.close()
            self._bar = None


def progress_for(settings) -> Progress | None:
    """A bar when stderr is a terminal and not ``--quiet``; else nothing."""
    if settings.quiet or not sys.stderr.isatty():
        return None
    return BarProgress(settings.progress_min_bytes)


class BatchBar(BatchProgress):
    """One bar for several downloads at once: their bytes together, and how many are done.

    Opened once the downloads' known sizes reach ``min_bytes`` (or one has no
    known size); each item's restarts (a retry from another offset) move the
    bar back or forth instead of counting bytes twice. Thread-safe: items
    resolved through the daemon report from threads of their own.
    """

    def __init__(self, count: int, min_bytes: int, *, notebook_aware: bool = False):
        self.count = count
        self.min_bytes = min_bytes
        self.notebook_aware = notebook_aware
        self._lock = threading.Lock()
        self._bar = None
        self._items: dict[int, list] = {}  # index -> [total or None, done]
        # the sums over _items, kept as items start and advance (not summed again each time)
        self._known, self._unknown, self._done = 0, 0, 0
        self._finished = 0

    def item(self, index: int, identifier: str) -> Progress:
        """The progress of one item, feeding this bar."""
        return _ItemProgress(self, index)

    def finished(self, index: int, outcome) -> None:
        """Count an item as done."""
        with self._lock:
            self._finished += 1
            if self._bar is not None:
                self._bar.set_description_str(self._desc(), refresh=True)

    def close(self) -> None:
        """Remove the bar."""
        with self._lock:
            if self._bar is not None:
                self._bar.close()
                self._bar = None

    def _desc(self) -> str:
        return f"{self._finished}/{self.count} done"

    def _count(self, total: int | None, done: int, sign: int) -> None:
        if total is None:
            self._unknown += sign
        else:
            self._known += sign * total
        self._done += sign * done

    def _start(self, index: int, total: int | None, done: int) -> None:
        with self._lock:
            if (before := self._items.get(index)) is not None:  # a restart
                self._count(before[0], before[1], -1)
            self._items[index] = [total, done]
            self._count(total, done, 1)
            all_total = None if self._unknown else self._known
            all_done = self._done
            if self._bar is None:
                if all_total is not None and all_total < self.min_bytes:
                    return
                if self.notebook_aware:
                    from tqdm.auto import tqdm
                else:
                    from tqdm import tqdm

                self._bar = tqdm(total=all_total, initial=all_done, unit="B", unit_scale=True,
                                 unit_divisor=1024, desc=self._desc(), file=sys.stderr,
                                 leave=False, mininterval=0.25)
                return
            self._bar.total = all_total
            self._bar.update(all_done - self._bar.n)

    def _advance(self, index: int, nbytes: int) -> None:
        with self._lock:
            if index in self._items:
                self._items[index][1] += nbytes
                self._done += nbytes
            if self._bar is not None:
                self._bar.update(nbytes)


class _ItemProgress(Progress):
    """One item's :class:`Progress`, reporting to its :class:`BatchBar`."""

    def __init__(self, batch: BatchBar, index: int):
        self.batch = batch
        self.index = index

    def start(self, identifier: str, total: int | None, done: int) -> None:
        """The item's download (re)starts at ``done`` of ``total``."""
        self.batch._start(self.index, total, done)

    def advance(self, nbytes: int) -> None:
        """More bytes of the item arrived."""
        self.batch._advance(self.index, nbytes)


def batch_progress_for(settings, count: int) -> BatchProgress | None:
    """One bar for ``count`` items when stderr is a terminal and not ``--quiet``; else None."""
    if settings.quiet or not sys.stderr.isatty():
        return None
    return BatchBar(count, settings.progress_min_bytes)
