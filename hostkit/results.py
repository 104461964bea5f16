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

    def to_dict(self) -> dict:
        """JSON form (``--json``, daemon answers)."""
        d = asdict(self)
        d["path"] = str(self.path)
        return d


class Progress:
    """Download progress callbacks; the default does nothing."""

    def start(self, identifier: str, total: int | None, done: int) -> None:
        """A download of ``total`` bytes (None if unknown) starts, ``done`` already on disk."""

    def advance(self, nbytes: int) -> None:
        """``nbytes`` more arrived."""

    def close(self) -> None:
        """The download ended (well or not)."""
