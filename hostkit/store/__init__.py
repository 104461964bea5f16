"""The store layer: the cache's layout, index, blob tiers and partial downloads.

Nothing outside this package names a cache path or writes SQL:

- :mod:`.layout`: every path name (the CLI's fast path uses it too, so this
  package imports nothing at import time: ``layout`` stays cheap to load);
- :mod:`.index`: the SQLite index and all its SQL;
- :mod:`.tiers`: where blobs are kept (the local directory; a shared tier later);
- :mod:`.partials`: partial downloads, hashed while written, resumable;
- :mod:`.cache`: :class:`~hostkit.store.cache.Cache`, the store's face to the
  resolver and the CLI.
"""
