"""A tqdm progress bar for long downloads, shown only on a terminal."""

from __future__ import annotations

import sys

from .results import Progress


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
