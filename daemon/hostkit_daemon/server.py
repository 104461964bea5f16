"""Running the daemon: bind, refuse unsafe setups, serve, shut down gracefully.

- Binds ``--socket PATH``, or ``--host/--port``, or the address in
  ``HOSTKIT_DAEMON_URL``, or else this user's default socket
  ``$XDG_RUNTIME_DIR/hostkit/daemon.sock`` (:mod:`.runtime`). Sockets are
  created 0600 (0660 and group-owned with ``--group``: the shared mode); a stale
  socket left by a killed daemon is replaced.
- Every TCP listener needs a token (every route but ``/healthz`` then needs
  ``Authorization: Bearer <token>``). On loopback one is generated when none is
  given; either way it is written 0600 to ``daemon-<port>.json`` in the runtime
  dir, where this user's CLI and API find it. Off loopback a token must be given.
- SIGTERM / SIGINT: stop accepting, answer 503 to new requests on open
  connections, let downloads in flight finish for up to ``grace`` seconds,
  then cancel what is left. A cancelled download leaves at most a resumable
  partial under ``tmp/`` (never an index entry or a blob); the next resolve
  resumes it. A second signal skips the wait.
- After kill -9 nothing needs repair: blobs appear only whole and verified,
  the kernel drops the file locks, partials of a dead process are resumed.
"""

from __future__ import annotations

import asyncio
import contextlib
import grp
import ipaddress
import os
import secrets
import signal
import socket
import stat
import time
from pathlib import Path

from aiohttp import web

from hostkit.client import TOKEN_ENV, Address, default_socket, parse_url, runtime_dir
from hostkit.errors import UsageError

from . import DEFAULT_HOST, logs, runtime
from .access import Policy, uids
from .app import create_app, stop_scrub
from .defaults import SCRUB_RATE
from .state import STATE

#: Seconds to wait for the handlers of open connections once downloads are settled.
HANDLER_TIMEOUT = 5.0


def is_loopback(host: str) -> bool:
    """True when every address ``host`` names is a loopback address."""
    host = host.strip("[]")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        pass
    try:
        infos = socket.getaddrinfo(host, None)
    except OSError:
        return False
    return bool(infos) and all(ipaddress.ip_address(i[4][0]).is_loopback for i in infos)


def bind_address(settings, host: str | None = None, port: int | None = None,
                 socket_path: str | None = None) -> Address:
    """Flags first, then ``settings.daemon_url``, then this user's default socket."""
    if socket_path:
        return Address(path=os.path.expanduser(socket_path))
    if host is not None or port is not None:
        from . import DEFAULT_PORT

        return Address(host=host or DEFAULT_HOST, port=DEFAULT_PORT if port is None else port)
    if settings.daemon_url:
        return parse_url(settings.daemon_url)
    return Address(path=str(default_socket(settings)))


def read_token(token: str | None = None, token_file: str | None = None) -> str | None:
    """``--token``, else the first line of ``--token-file``, else ``HOSTKIT_DAEMON_TOKEN``."""
    if token:
        return token.strip() or None
    if token_file:
        try:
            return Path(token_file).read_text().strip() or None
        except OSError as exc:
            raise UsageError(f"cannot read token file {token_file}: {exc.strerror}",
                             hint="check the path and its permissions") from None
    return os.environ.get(TOKEN_ENV, "").strip() or None


def _group_id(group: str | None, address: Address) -> int | None:
    if group is None:
        return None
    if address.path is None:
        raise UsageError("--group shares a unix socket", hint="add --socket PATH")
    try:
        return int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    except KeyError:
        raise UsageError(f"no such group: {group!r}", hint="create it, or name another") from None


def run_daemon(settings, *, host: str | None = None, port: int | None = None,
               socket_path: str | None = None, token: str | None = None,
               token_file: str | None = None, grace: float = 30.0, verbose: bool = False,
               group: str | None = None, allow_users: list[str] | None = None,
               allow_hosts: list[str] | None = None, scrub_rate: int = SCRUB_RATE,
               **job_options) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code. Raises UsageError on unsafe setups."""
    address = bind_address(settings, host, port, socket_path)
    token = read_token(token, token_file)
    if address.path is None and not is_loopback(address.host) and not token:
        raise UsageError(
            f"refusing to listen on {address.host}: it is not a loopback address and no "
            "token is set, so anyone who can reach it could use this daemon",
            hint=f"pass --token TOKEN (or --token-file, or set {TOKEN_ENV}) and give clients "
                 f"{TOKEN_ENV}; or bind 127.0.0.1 or a unix socket (--socket)")
    if address.path is None and not token:
        token = secrets.token_urlsafe(32)  # loopback is shared by every local user
    gid = _group_id(group, address)
    hosts = {h.strip().lower() for h in allow_hosts or () if h.strip()}
    if address.host:
        hosts.add(address.host.strip("[]").lower())
    policy = Policy(frozenset({os.geteuid()}) | uids(allow_users), frozenset(hosts))
    logs.configure(verbose)
    app = create_app(settings, token=token, listen=address.url, policy=policy,
                     scrub_rate=scrub_rate, **job_options)
    app[STATE].resolver.shared_tier()  # a tier setting no backend serves: refuse to start
    return asyncio.run(_serve(app, settings, address, gid, grace))


async def _serve(app: web.Application, settings, address: Address, gid: int | None,
                 grace: float) -> int:
    runner = web.AppRunner(app, handle_signals=False, access_log=None,
                           handler_cancellation=True, shutdown_timeout=HANDLER_TIMEOUT)
    await runner.setup()
    token_path = None
    try:
        site, url, inode = await _start_site(runner, address, gid, settings)
        app[STATE].listen = url
        if address.path is None:
            port = parse_url(url).port
            token_path = runtime.write_token_file(settings, url, port, app[STATE].token)
    except BaseException:
        await runner.cleanup()
        raise
    stop, hurry = asyncio.Event(), asyncio.Event()
    loop = asyncio.get_running_loop()

    def on_signal(name: str) -> None:
        logs.event("signal", signal=name, again=stop.is_set() or None)
        (hurry if stop.is_set() else stop).set()

    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, on_signal, sig.name)
    state = app[STATE]
    logs.attach(loop)
    logs.event("listening", url=url, pid=os.getpid(), cache=str(state.resolver.cache.root),
               auth=state.token is not None, token_file=str(token_path) if token_path else None,
               group=gid, trusted_uids=sorted(state.policy.trusted_uids),
               tier=tier.url if (tier := state.resolver.shared_tier()) else None)
    try:
        await stop.wait()
        await _shutdown(app, runner, site, grace, hurry)
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(sig)
        if address.path is not None:
            _remove_socket(address.path, inode)
        if token_path is not None:
            runtime.remove_token_file(token_path)
        logs.attach(None)  # writes what is queued
    return 0


async def _start_site(runner: web.AppRunner, address: Address, gid: int | None, settings):
    if address.path is not None:
        path = address.path
        _clear_stale_socket(path)
        parent = Path(path).parent
        if parent == runtime_dir(settings):
            runtime.private_dir(parent)
        elif not parent.exists():
            parent.mkdir(mode=0o700, parents=True)
            if gid is not None:  # the group may reach the socket, not list or add files
                os.chown(parent, -1, gid)
                os.chmod(parent, 0o710)
        mode = 0o600 if gid is None else 0o660
        old = os.umask(0o777 ^ mode)  # the socket is born with its mode: no window
        try:
            site = web.UnixSite(runner, path)
            await _start(site, address)
        finally:
            os.umask(old)
        if gid is not None:
            os.chown(path, -1, gid)
        os.chmod(path, mode)
        return site, address.url, os.stat(path).st_ino
    site = web.TCPSite(runner, address.host, address.port, backlog=1024)
    await _start(site, address)
    port = address.port
    with contextlib.suppress(Exception):
        port = runner.addresses[0][1]  # the real port when asked for port 0
    return site, Address(host=address.host, port=port).url, None


async def _start(site, address: Address) -> None:
    try:
        await site.start()
    except OSError as exc:
        raise UsageError(f"cannot listen on {address.url}: {exc.strerror or exc}",
                         hint="another daemon may already run there; `hostkit status` "
                              "checks, or pick another --port / --socket") from None


def _clear_stale_socket(path: str) -> None:
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise UsageError(f"{path} exists and is not a socket",
                         hint="remove it or choose another --socket")
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    probe.settimeout(1.0)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody listens: left behind by a daemon that was killed
        return
    finally:
        probe.close()
    raise UsageError(f"a daemon is already listening on {path}",
                     hint="stop it first (`hostkit status` shows it) or choose another --socket")


def _remove_socket(path: str, inode: int | None) -> None:
    with contextlib.suppress(OSError):
        if inode is not None and os.stat(path).st_ino == inode:
            os.unlink(path)


async def _shutdown(app: web.Application, runner: web.AppRunner, site, grace: float,
                    hurry: asyncio.Event) -> None:
    state = app[STATE]
    state.draining = True
    stop_scrub(state)  # its worker thread returns within one read: no disk reads at exit
    state.jobs.stop()
    await site.stop()  # no new connections; requests on open ones get 503
    started = time.monotonic()
    waited = state.resolver.downloads()
    logs.event("draining", downloads=len(waited), jobs=state.jobs.active(), grace=grace)
    hurry_wait = asyncio.ensure_future(hurry.wait())
    try:
        while True:
            pending = state.resolver.downloads() + state.jobs.tasks()
            left = grace - (time.monotonic() - started)
            if not pending or left <= 0 or hurry.is_set():
                break
            await asyncio.wait([*pending, hurry_wait], timeout=left,
                               return_when=asyncio.FIRST_COMPLETED)
    finally:
        hurry_wait.cancel()
    cancelled = state.resolver.downloads() + state.jobs.tasks()
    for task in cancelled:
        task.cancel()
    if cancelled:  # downloads clean up: partials kept for resume or deleted, locks released
        await asyncio.wait(cancelled, timeout=10.0)
    await runner.cleanup()  # closes connections; on_cleanup closes the resolver
    logs.event("stopped", finished=len([t for t in waited if t not in cancelled]),
               cancelled=len(cancelled),
               duration_ms=round((time.monotonic() - started) * 1000, 1))
