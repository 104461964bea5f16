"""Hash strings (``alg:hex``) and hashing several algorithms in one pass."""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from .errors import BadHash

#: Algorithms accepted in ``alg:hex`` strings, with their hex digest length.
ALGORITHMS = {"sha256": 64, "sha1": 40, "md5": 32, "sha512": 128, "blake2b": 128,
              "sha384": 96, "blake2s": 64}
#: The algorithm that names blobs in the cache.
CONTENT_ALG = "sha256"
_HEX = re.compile(r"^[0-9a-f]+$")
CHUNK = 1 << 20


@dataclass(frozen=True)
class Digest:
    """An expected digest: algorithm and lowercase hex."""

    alg: str
    hex: str

    def __str__(self) -> str:
        return f"{self.alg}:{self.hex}"


def parse_hash(text: str) -> Digest:
    """Parse ``alg:hex``, ``sha256:hex`` (registry style) or MedPerf's bare hex.

    Bare hex is sha256 when 64 long and sha1 (older MedPerf releases) when 40.
    """
    raw = text.strip()
    alg, sep, value = raw.partition(":")
    if not sep:
        alg, value = {64: "sha256", 40: "sha1"}.get(len(raw), ""), raw
        if not alg:
            raise BadHash(f"cannot read hash {text!r}",
                          hint="write it as alg:hex, e.g. sha256:<64 hex digits>, "
                               f"with alg one of {', '.join(ALGORITHMS)}")
    alg = alg.lower().replace("-", "")
    value = value.lower()
    if alg not in ALGORITHMS:
        raise BadHash(f"unknown hash algorithm {alg!r} in {text!r}",
                      hint=f"use one of {', '.join(ALGORITHMS)}")
    if len(value) != ALGORITHMS[alg] or not _HEX.match(value):
        raise BadHash(f"{alg} digest in {text!r} must be {ALGORITHMS[alg]} hex digits",
                      hint="copy the hash again; it may be cut short or contain spaces")
    return Digest(alg, value)


class MultiHasher:
    """Feeds the same bytes to several hash objects (sha256 always, plus others)."""

    def __init__(self, algs=()):
        names = dict.fromkeys([CONTENT_ALG, *algs])
        self._hashers = {alg: hashlib.new(alg) for alg in names}

    def update(self, data) -> None:
        """Hash ``data`` with every algorithm (hashlib releases the GIL on big buffers)."""
        for h in self._hashers.values():
            h.update(data)

    def update_from_file(self, path: Path | str, limit: int | None = None, pace=None) -> int:
        """Hash the file's bytes (its first ``limit`` only, if given); return how many.

        ``pace(n)``, if given, is called after each read of ``n`` bytes (it may
        sleep, to keep a background re-hash under a rate).
        """
        done = 0
        buf = bytearray(4 * CHUNK)
        view = memoryview(buf)
        with open(path, "rb", buffering=0) as f:
            while limit is None or done < limit:
                want = len(buf) if limit is None else min(len(buf), limit - done)
                n = f.readinto(view[:want])
                if not n:
                    break
                self.update(view[:n])
                done += n
                if pace is not None:
                    pace(n)
        return done

    def hexdigests(self) -> dict[str, str]:
        """All digests so far, as ``{alg: hex}``."""
        return {alg: h.hexdigest() for alg, h in self._hashers.items()}


def hash_file(path: Path | str, algs=(CONTENT_ALG,), pace=None) -> dict[str, str]:
    """Hash a local file with sha256 and each of ``algs`` (``pace``: see ``update_from_file``)."""
    hasher = MultiHasher(algs)
    hasher.update_from_file(path, pace=pace)
    return hasher.hexdigests()
