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

from .errors import HostkitError
from .resolver import Resolver
from .results import BatchProgress, Progress, Resolved
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
            output: str | Path | None = None, pin: bool | None = None,
            require_same: bool | None = None) -> Path:
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

    A folder identifier (``s3://bucket/prefix/``, a Synapse folder, ...) returns a
    read-only snapshot folder of its files; its hash is the sha256 of its
    manifest (see :mod:`hostkit.store.snapshots`), and ``output=DIR`` places the
    folder at DIR (:func:`hostkit.place.place_tree`).

    ``pin=True`` (default: the ``pin`` setting, ``HOSTKIT_PIN``) resolves a
    movable reference, such as a github branch, as the commit it names now
    (recorded under the pinned identifier) instead of refusing it.

    Trust on first use notices changes: when ``identifier``, resolved without a
    hash, gives other bytes than it did before, a
    :class:`~hostkit.errors.ContentChangedWarning` names the old and the new
    sha256 (the cache now holds the new bytes). With ``require_same=True``
    (default: the ``require_same`` setting, ``HOSTKIT_REQUIRE_SAME``) that is a
    :class:`~hostkit.errors.ContentChanged` error instead, and the cache keeps the
    old bytes.
    """
    return _resolved_and_placed(identifier, expected, offline=offline,
                                require_hash=require_hash, cache_dir=cache_dir,
                                progress=progress, settings=settings, output=output, pin=pin,
                                require_same=require_same).path


def resolve_info(identifier: str, expected: str | None = None, *, offline: bool | None = None,
                 require_hash: bool | None = None, cache_dir: str | Path | None = None,
                 progress: Progress | bool | None = None,
                 settings: Settings | None = None,
                 output: str | Path | None = None, pin: bool | None = None,
                 require_same: bool | None = None) -> Resolved:
    """Like :func:`resolve`, but return the full :class:`~hostkit.results.Resolved` record.

    With ``output=PATH`` the file is placed at PATH (see :func:`resolve`) and
    the record's ``path`` is PATH, the file that is yours to read; without it,
    ``path`` is the cache's blob. A pinned branch's record names the pinned
    identifier, and the one asked for as ``pinned_from``. A change trust on first
    use noticed is in ``changed_from`` (and warned about, as by :func:`resolve`).
    """
    return _resolved_and_placed(identifier, expected, offline=offline,
                                require_hash=require_hash, cache_dir=cache_dir,
                                progress=progress, settings=settings, output=output, pin=pin,
                                require_same=require_same)


def _resolved_and_placed(identifier: str, expected: str | None, *, offline, require_hash,
                         cache_dir, progress, settings, output, pin, require_same) -> Resolved:
    """:func:`resolve_info`'s work, shared with :func:`resolve`: resolve, warn about a
    change (pointing at the caller of the public function), place at ``output``."""
    check_output(output)
    resolved = _resolve_info(identifier, expected, offline=offline, require_hash=require_hash,
                             cache_dir=cache_dir, progress=progress, settings=settings,
                             pin=pin, require_same=require_same)
    _warn_changed(resolved, stacklevel=4)
    if output is None:
        return resolved
    return place_resolved(resolved, Path(output), identifier, settings=settings,
                          cache_dir=cache_dir, offline=offline, pin=pin)


def check_output(output: str | Path | None) -> None:
    """UsageError, before any download, for an ``output`` path written as a folder
    (``"models/"``): the file it would name has no name (``Path`` drops the slash)."""
    import os

    if isinstance(output, str) and output.endswith(("/", os.sep)):
        from .errors import UsageError

        raise UsageError(f"cannot place the file at {output}: the path names a folder",
                         hint=f"give the path of the file to create, e.g. {output}NAME")


def place_resolved(resolved: Resolved, target: Path, identifier: str, *,
                   settings: Settings | None = None, cache_dir: str | Path | None = None,
                   offline: bool | None = None, pin: bool | None = None) -> Resolved:
    """Place what ``identifier`` resolved to at ``target`` (:func:`hostkit.place.place`, or
    ``place_tree`` for a folder); return the record with ``path`` = ``target``.

    A file's blob removed from the cache between the resolve and the placing
    (``hostkit cache rm`` or ``prune`` in another process) is resolved once more by its
    sha256, so exactly the same bytes are placed, instead of failing as if ``target``'s
    folder could not be written.
    """
    import dataclasses
    import os

    from .errors import CacheError
    from .failpoints import failpoint
    from .place import place, place_tree

    placer = place_tree if resolved.tree else place
    failpoint("place")  # tests: stop here, remove the blob, go on
    try:
        return dataclasses.replace(resolved, path=placer(resolved.path, target))
    except CacheError:
        if resolved.tree or os.path.exists(resolved.path):
            raise
    import logging

    logging.getLogger("hostkit").info("%s: its blob left the cache before it was placed; "
                                      "resolving it again", resolved.identifier)
    again = _resolve_info(identifier, f"sha256:{resolved.sha256}", offline=offline,
                          require_hash=None, cache_dir=cache_dir, progress=None,
                          settings=settings, pin=pin)
    return dataclasses.replace(resolved, path=placer(again.path, target))


def _warn_changed(resolved: Resolved, stacklevel: int = 3) -> None:
    """A ContentChangedWarning when trust on first use noticed other bytes (pointing at the
    caller of the public function)."""
    if (message := resolved.change_message()) is not None:
        import warnings

        from .errors import ContentChangedWarning

        warnings.warn(message, ContentChangedWarning, stacklevel=stacklevel)


def _resolve_info(identifier: str, expected: str | None, *, offline: bool | None,
                  require_hash: bool | None, cache_dir: str | Path | None,
                  progress: Progress | bool | None, settings: Settings | None,
                  pin: bool | None = None, require_same: bool | None = None) -> Resolved:
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
                                              progress=progress, require_same=require_same)
            if resolved is not None:
                return resolved
    resolver = get_resolver(settings)
    return run(resolver.resolve(identifier, expected, offline=offline,
                                require_hash=require_hash, progress=progress, pin=pin,
                                require_same=require_same))


def resolve_many(items, *, jobs: int = 4, offline: bool | None = None,
                 require_hash: bool | None = None, require_same: bool | None = None,
                 cache_dir: str | Path | None = None,
                 progress: BatchProgress | bool | None = None,
                 settings: Settings | None = None,
                 pin: bool | None = None) -> list[Resolved | HostkitError]:
    """Resolve several identifiers at once, at most ``jobs`` at a time (and at most
    :data:`~hostkit.remote.HTTP_CONNECTIONS`, the connections the shared session opens:
    a download waiting for one is not timed as a stalled server).

    ``items`` are identifiers, or ``(identifier, expected)`` pairs (``expected``
    may be None), as :func:`resolve` takes them. Every item is checked first,
    with no I/O (:func:`check_many`); when any is refused, nothing is resolved
    and :class:`~hostkit.errors.ItemsRefused` names each refused item. After
    that no single failure raises: the answer has one entry per item, in
    order, its :class:`~hostkit.results.Resolved` or the
    :class:`~hostkit.errors.HostkitError` it failed with. Resolves run on the
    background loop (shared downloads, pooled connections), or through the
    daemon when one runs, as :func:`resolve` does.

    ``progress=True`` shows one bar for all downloads (a widget in a notebook);
    or pass a :class:`~hostkit.results.BatchProgress`. A change that trust on
    first use noticed is warned about once per item (see :func:`resolve`).
    """
    from .settings import load_settings

    settings = settings or load_settings()
    if cache_dir is not None:
        settings = settings.with_overrides(cache_dir=Path(cache_dir))
    if isinstance(jobs, bool) or not isinstance(jobs, int) or jobs < 1:
        from .errors import UsageError

        raise UsageError(f"jobs must be a whole number of 1 or more, not {jobs!r}",
                         hint="e.g. -j 4: four downloads at a time")
    from .remote import HTTP_CONNECTIONS

    jobs = min(jobs, HTTP_CONNECTIONS)
    wanted = [_wanted(item) for item in items]
    strict = settings.require_hash if require_hash is None else require_hash
    refused = check_many(wanted, settings=settings, require_hash=strict)
    if refused:
        from .errors import ItemsRefused

        raise ItemsRefused(refused, len(wanted))
    if progress is True:
        from .progress import BatchBar

        batch: BatchProgress = BatchBar(len(wanted), settings.progress_min_bytes,
                                        notebook_aware=True)
    else:
        batch = progress or BatchProgress()
    bars = [batch.item(i, identifier) for i, (identifier, _) in enumerate(wanted)]
    results: list[Resolved | HostkitError | None] = [None] * len(wanted)
    options = {"offline": offline, "require_hash": require_hash, "require_same": require_same}

    def done(index: int, outcome: Resolved | HostkitError) -> None:
        results[index] = outcome
        batch.finished(index, outcome)

    todo = list(range(len(wanted)))
    try:
        from .client import daemon_url

        if cache_dir is None and (url := daemon_url(settings)):
            pinning = settings.pin if pin is None else pin
            local = [i for i in todo if pinning and
                     get_resolver(settings).remote_for(wanted[i][0]).movable]
            todo = local + _many_through_daemon(
                settings, url, [i for i in todo if i not in local], wanted, jobs, bars, done,
                options)
        if todo:
            run(_many_in_process(get_resolver(settings), todo, wanted, jobs, bars, done,
                                 {**options, "pin": pin}))
    finally:
        batch.close()
    answers: list[Resolved | HostkitError] = []
    for outcome in results:
        assert outcome is not None  # every item ran to an outcome
        if isinstance(outcome, Resolved):
            _warn_changed(outcome)
        answers.append(outcome)
    return answers


def check_many(items, *, settings: Settings | None = None,
               require_hash: bool | None = None) -> list[tuple[int, HostkitError]]:
    """The items :func:`resolve_many` would refuse, as ``(index, error)``; no I/O.

    An item is refused when its identifier is malformed or no backend accepts
    it (the backend's own rules included), when its hash does not parse, when
    a hash is required (``require_hash``) and it has none, or when another item
    names the same identifier (the same cache key) with a different hash (both
    are refused). Each error's ``identifier`` is the item's, as it may be shown.
    """
    from .errors import HashRequired, UsageError
    from .hashes import parse_hash
    from .identifiers import parse_identifier
    from .redact import redact_url
    from .settings import load_settings

    settings = settings or load_settings()
    strict = settings.require_hash if require_hash is None else require_hash
    refused: list[tuple[int, HostkitError]] = []
    resolver = None
    hashed: dict[tuple[str, str], tuple[int, str]] = {}  # (cache key, alg) -> (index, hex)
    for index, (identifier, expected) in enumerate(_wanted(item) for item in items):
        shown = redact_url(identifier.strip()) if isinstance(identifier, str) else None
        try:
            if not isinstance(identifier, str):
                raise UsageError(f"item {index + 1} is not an identifier: "
                                 f"{type(identifier).__name__}",
                                 hint="pass identifiers as strings")
            shown = parse_identifier(identifier).display
            resolver = resolver or get_resolver(settings)
            key = resolver.remote_for(identifier).cache_key
            if expected is not None:
                digest = parse_hash(expected)
                # one of two hashes for one identifier is wrong; which item would "pass"
                # must not depend on which bytes happen to be cached
                first = hashed.setdefault((key, digest.alg), (index, digest.hex))
                if first[1] != digest.hex:
                    clash = (f"{shown} is given two different hashes (items {first[0] + 1} "
                             f"and {index + 1}): {digest.alg}:{first[1]} and {digest}")
                    if all(i != first[0] for i, _ in refused):
                        refused.append((first[0], UsageError(
                            clash, hint="one of them is wrong: keep the right one",
                            identifier=shown)))
                    raise UsageError(clash, hint="one of them is wrong: keep the right one",
                                     identifier=shown)
            elif strict:
                raise HashRequired(f"{shown}: a hash is required (strict mode)",
                                   hint="pass --hash sha256:<hex>, or unset "
                                        "HOSTKIT_REQUIRE_HASH", identifier=shown)
        except UsageError as exc:
            if exc.identifier is None:
                exc.identifier = shown
            refused.append((index, exc))
    return sorted(refused, key=lambda pair: pair[0])


def _wanted(item) -> tuple[str, str | None]:
    """``(identifier, expected)`` of one :func:`resolve_many` item."""
    if isinstance(item, tuple | list) and len(item) == 2:
        return item[0], item[1]
    return item, None


def _many_through_daemon(settings: Settings, url: str, todo: list[int],
                         wanted: list[tuple[str, str | None]], jobs: int, bars, done,
                         options: dict) -> list[int]:
    """Resolve ``todo`` through the daemon, ``jobs`` requests at a time (threads: the client
    is synchronous); return the items no daemon answered, for the in-process resolver."""
    import queue

    from .client import resolve_through_daemon

    waiting: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in todo:
        waiting.put(index)
    unanswered: list[int] = []

    def work() -> None:
        while True:
            try:
                index = waiting.get_nowait()
            except queue.Empty:
                return
            identifier, expected = wanted[index]
            answer: Resolved | HostkitError | None
            try:
                answer = resolve_through_daemon(settings, url, identifier, expected,
                                                progress=bars[index], **options)
            except HostkitError as exc:
                answer = exc
            except Exception as exc:  # one item's surprise must not lose the others' answers
                answer = _unexpected(identifier, exc)
            if answer is None:
                unanswered.append(index)  # list.append is atomic: no lock needed
            else:
                done(index, answer)

    # daemon threads: Ctrl-C ends the program without waiting for the daemon's answers
    threads = [threading.Thread(target=work, name=f"hostkit-many-{n}", daemon=True)
               for n in range(min(jobs, len(todo)))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sorted(unanswered)


async def _many_in_process(resolver: Resolver, todo: list[int],
                           wanted: list[tuple[str, str | None]], jobs: int, bars, done,
                           options: dict) -> None:
    """Resolve ``todo`` on this process's resolver, ``jobs`` at a time."""
    slots = asyncio.Semaphore(jobs)

    async def one(index: int) -> None:
        identifier, expected = wanted[index]
        async with slots:
            try:
                answer: Resolved | HostkitError = await resolver.resolve(
                    identifier, expected, progress=bars[index], **options)
            except HostkitError as exc:
                answer = exc
            except Exception as exc:  # one item's surprise must not lose the others' answers
                answer = _unexpected(identifier, exc)
        done(index, answer)

    await asyncio.gather(*(one(index) for index in todo))


def _unexpected(identifier: str, exc: Exception) -> HostkitError:
    """A HostkitError for an exception no layer turned into one (a bug): logged in full."""
    import logging

    from .redact import redact_url

    shown = redact_url(identifier)
    logging.getLogger("hostkit").info("%s failed unexpectedly", shown, exc_info=exc)
    return HostkitError(f"{shown}: unexpected {type(exc).__name__}",
                        hint="run with -v for the details, and please report it",
                        identifier=shown)


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
