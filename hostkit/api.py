"""The synchronous Python API: ``hostkit.resolve(...)`` and friends.

All calls in a process share one resolver running on one background event
loop thread (the approach fsspec takes), so threads that ask for the same
identifier at once share one download, and HTTP connections are pooled.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import threading
from pathlib import Path

from .resolver import Resolver
from .results import Progress, Resolved
from .settings import Settings

_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_resolvers: dict[Path, Resolver] = {}


def _background_loop() -> asyncio.AbstractEventLoop:
    global _loop
    with _lock:
        if _loop is None:
            _loop = asyncio.new_event_loop()
            threading.Thread(target=_loop.run_forever, name="hostkit-io", daemon=True).start()
            atexit.register(_shutdown)
        return _loop


#: Seconds Ctrl-C, or the end of the program, waits for downloads to keep their partials.
INTERRUPT_GRACE = 10.0


def _shutdown() -> None:
    """At exit: stop downloads nobody waits for (their partials are kept), close sessions."""
    if _loop is None:
        return
    with _ignoring_sigint(), contextlib.suppress(Exception):
        asyncio.run_coroutine_threadsafe(_close_all(), _loop).result(timeout=INTERRUPT_GRACE)
    _resolvers.clear()
    _loop.call_soon_threadsafe(_loop.stop)


async def _close_all() -> None:
    await _cancel_downloads()
    for resolver in list(_resolvers.values()):
        with contextlib.suppress(Exception):
            await resolver.aclose()


def run(coro):
    """Run a coroutine on hostkit's background loop and wait for its result.

    Ctrl-C (KeyboardInterrupt in the waiting thread) cancels the call and the
    downloads running on the loop, waits until each has kept its partial file
    for the next run (further Ctrl-C are ignored meanwhile, up to
    :data:`INTERRUPT_GRACE` seconds), then re-raises KeyboardInterrupt.
    """
    loop = _background_loop()
    future = asyncio.run_coroutine_threadsafe(coro, loop)
    try:
        return future.result()
    except KeyboardInterrupt:
        with _ignoring_sigint():
            future.cancel()
            stop = asyncio.run_coroutine_threadsafe(_cancel_downloads(), loop)
            with contextlib.suppress(Exception):
                stop.result(timeout=INTERRUPT_GRACE)
        raise


async def _cancel_downloads() -> None:
    tasks = [t for r in list(_resolvers.values()) for t in r.downloads()]
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)


@contextlib.contextmanager
def _ignoring_sigint():
    """Ignore SIGINT meanwhile, in the main thread (signal handlers live there only)."""
    import signal

    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def get_resolver(settings=None) -> Resolver:
    """The shared resolver for ``settings`` (by cache dir), created on first use."""
    from .settings import load_settings

    settings = settings or load_settings()
    with _lock:
        resolver = _resolvers.get(settings.cache_dir)
        if resolver is None or resolver.settings != settings:
            resolver = _resolvers[settings.cache_dir] = Resolver(settings)
        return resolver


def resolve(identifier: str, expected: str | None = None, *, offline: bool | None = None,
            require_hash: bool | None = None, cache_dir: str | Path | None = None,
            progress: Progress | bool | None = None, settings: Settings | None = None,
            output: str | Path | None = None, pin: bool | None = None) -> Path:
    """Return the local path of the verified bytes ``identifier`` names.

    ``expected`` is ``alg:hex`` or bare sha256 hex (MedPerf). ``progress=True``
    shows a bar (``tqdm.auto``: a widget in a notebook, text in a terminal)
    while bytes arrive, whether this call downloads them, joins another
    thread's download or waits for another process's; or pass a
    :class:`~hostkit.results.Progress` of your own. Raises a
    :class:`hostkit.errors.HostkitError` subclass on any failure; nothing
    partial or unverified is ever left at the returned path.

    ``output=PATH`` also places the verified file at PATH (a hard link from
    the cache, else a reflink or copy; atomically; read-only: see
    :func:`hostkit.place.place`) and returns PATH. On any failure, a hash
    mismatch included, PATH is left as it was.

    ``pin=True`` (default: the ``pin`` setting, ``HOSTKIT_PIN``) resolves a
    movable reference, such as a github branch, as the commit it names now
    (recorded under the pinned identifier) instead of refusing it.
    """
    return resolve_info(identifier, expected, offline=offline, require_hash=require_hash,
                        cache_dir=cache_dir, progress=progress, settings=settings,
                        output=output, pin=pin).path


def resolve_info(identifier: str, expected: str | None = None, *, offline: bool | None = None,
                 require_hash: bool | None = None, cache_dir: str | Path | None = None,
                 progress: Progress | bool | None = None,
                 settings: Settings | None = None,
                 output: str | Path | None = None, pin: bool | None = None) -> Resolved:
    """Like :func:`resolve`, but return the full :class:`~hostkit.results.Resolved` record.

    With ``output=PATH`` the file is placed at PATH (see :func:`resolve`) and
    the record's ``path`` is PATH, the file that is yours to read; without it,
    ``path`` is the cache's blob. A pinned branch's record names the pinned
    identifier, and the one asked for as ``pinned_from``.
    """
    resolved = _resolve_info(identifier, expected, offline=offline, require_hash=require_hash,
                             cache_dir=cache_dir, progress=progress, settings=settings,
                             pin=pin)
    if output is None:
        return resolved
    import dataclasses

    from .place import place

    return dataclasses.replace(resolved, path=place(resolved.path, Path(output)))


def _resolve_info(identifier: str, expected: str | None, *, offline: bool | None,
                  require_hash: bool | None, cache_dir: str | Path | None,
                  progress: Progress | bool | None, settings: Settings | None,
                  pin: bool | None = None) -> Resolved:
    from .settings import load_settings

    settings = settings or load_settings()
    pinning = settings.pin if pin is None else pin
    if progress is True:
        from .progress import BarProgress

        progress = BarProgress(settings.progress_min_bytes, notebook_aware=True)
    elif progress is False:
        progress = None
    if cache_dir is not None:
        settings = settings.with_overrides(cache_dir=Path(cache_dir))
    else:
        from .client import daemon_url

        # HOSTKIT_DAEMON_URL or this user's default socket (one stat when there is none);
        # the daemon's answer, or None when no daemon answers: then resolve here, same result
        if (url := daemon_url(settings)) and not (
                pinning and get_resolver(settings).remote_for(identifier).movable):
            # (the daemon's protocol has no pin: a branch to pin is looked up here)
            from .client import resolve_through_daemon

            resolved = resolve_through_daemon(settings, url, identifier, expected,
                                              offline=offline, require_hash=require_hash,
                                              progress=progress)
            if resolved is not None:
                return resolved
    resolver = get_resolver(settings)
    return run(resolver.resolve(identifier, expected, offline=offline,
                                require_hash=require_hash, progress=progress, pin=pin))


def upload(source: str | Path, destination: str, *, overwrite: bool = False,
           content_addressed: bool = False, progress: Progress | None = None, settings=None):
    """Upload ``source`` to ``destination`` (``s3://bucket/key``, a ``.../prefix/``, ...).

    Returns a :class:`hostkit.remote.UploadResult` whose ``identifier`` resolves
    to exactly these bytes (pinned to the new version when the store keeps
    versions) and whose ``sha256`` is theirs. Refuses to replace a different
    object unless ``overwrite``; identical bytes already there are left alone.
    """
    resolver = get_resolver(settings)
    return run(resolver.upload(source, destination, overwrite=overwrite,
                               content_addressed=content_addressed, progress=progress))
