"""The store layer: the cache's layout, index, blob tiers and partial downloads.

Nothing outside this package names a cache path or writes SQL:

- :mod:`.layout`: every path name (the CLI's fast path uses it too);
- :mod:`.index`: the SQLite index and all its SQL;
- :mod:`.tiers`: where blobs are kept (the local directory; a shared tier later);
- :mod:`.partials`: partial downloads, hashed while written, resumable;
- :mod:`.cache`: :class:`Cache`, the store's face to the resolver and the CLI.
"""

from __future__ import annotations

from .cache import Cache
from .index import Blob, Entry
from .layout import Layout, key_hash

__all__ = ["Blob", "Cache", "Entry", "Layout", "key_hash"]
