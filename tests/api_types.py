"""Checked by mypy in ./dev test (not collected by pytest): the public API is typed.

If ``hostkit.resolve`` and friends were hidden behind ``Any`` (a lazy module
``__getattr__`` does that), ``assert_type`` below would fail the type check.
"""

from __future__ import annotations

from pathlib import Path
from typing import assert_type

import hostkit
from hostkit.results import Resolved


def check_public_api() -> None:
    """Never run: mypy checks the types of these calls."""
    assert_type(hostkit.resolve("https://example.org/w.bin", "sha256:" + "0" * 64), Path)
    assert_type(hostkit.resolve_info("https://example.org/w.bin", progress=True), Resolved)
    info = hostkit.resolve_info("https://example.org/w.bin")
    assert_type(info.sha256, str)
    assert_type(info.path, Path)
    resolver = hostkit.Resolver()
    assert_type(resolver.settings.cache_dir, Path)
    hostkit.resolve(42)  # type: ignore[arg-type]  # an identifier is a str
