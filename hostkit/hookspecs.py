"""The hooks a hostkit plugin implements. Each docstring is the contract.

A plugin is a module (or object) with functions marked ``@hookimpl``,
registered through the ``hostkit`` entry-point group::

    [project.entry-points.hostkit]
    mystore = "my_package.mystore"

Built-in backends and the daemon register exactly the same way; the core
never imports them. A plugin implements only the hooks it needs.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import pluggy

if TYPE_CHECKING:
    from .errors import HostkitError
    from .identifiers import Ref
    from .remote import BackendInfo, Context, Remote, Uploader
    from .settings import Option, Settings
    from .tier import TierStore

hookspec = pluggy.HookspecMarker("hostkit")
#: Decorate plugin functions with this.
hookimpl = pluggy.HookimplMarker("hostkit")


@hookspec
def hostkit_backends() -> list[BackendInfo]:
    """Describe the backends this plugin provides.

    Called for ``hostkit plugins`` and to list accepted forms in an
    unknown-scheme error. Must not import heavy client libraries.

    :returns: :class:`hostkit.remote.BackendInfo` records (name, schemes,
        summary, example identifiers, the pip extra it needs).
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def hostkit_resolve(ref: Ref, context: Context) -> Remote | None:
    """Return a :class:`hostkit.remote.Remote` for ``ref``, or None if it is not yours.

    Stops at the first non-None result. Decide by ``ref.scheme`` (and
    ``ref.rest`` when two backends share a scheme: the github backend claims
    ``https://raw.githubusercontent.com/...`` before http does). Do no I/O:
    the resolver calls this before any cached answer, offline too, so that
    every identifier is checked by its backend's rules.

    A folder (``s3://bucket/prefix/``, a Synapse folder, an MLflow model) is a
    Remote too: set its ``tree`` (True, or None when only a request can tell,
    with :meth:`~hostkit.remote.Remote.is_tree`) and implement
    :meth:`~hostkit.remote.Remote.list`, an async iterator of
    :class:`~hostkit.remote.TreeEntry` (each file's relative path and its own
    Remote); the core checks the names, fetches each file through the
    single-file path and builds a snapshot folder pinned by its manifest's
    sha256. (Folders: since hostkit's trees, issue 13.)

    :param ref: the parsed identifier; ``ref.identifier`` may hold credentials
        (use it only for the request), ``ref.display`` and ``ref.key`` do not.
    :param context: settings (``context.option(backend, key)`` for this
        plugin's own), the pooled HTTP session, long-lived clients.
    :returns: the Remote (a file's, or a folder's), or None to let another
        backend answer.
    :raises hostkit.errors.UsageError: a malformed identifier of your scheme.
    :raises hostkit.errors.NotPermanent: a form that can change (a branch).
    :raises hostkit.errors.NotDirectLink: a share link that serves a page.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def hostkit_upload(destination: Ref, context: Context) -> Uploader | None:
    """Return a :class:`hostkit.remote.Uploader` for ``destination``, or None if not yours.

    Stops at the first non-None result. No I/O here: the uploader does the
    work when awaited.

    :param destination: where to put a file (a key, or a prefix ending in ``/``).
    :param context: as for :func:`hostkit_resolve`.
    :returns: the Uploader, or None.
    """
    raise NotImplementedError


@dataclass
class Verdict:
    """One answer of ``hostkit check``: passed (``ok``), failed, or not decided (None).

    ``message`` says what was found, ``fix`` what to do about a failure, and
    ``suggestion`` the one identifier to use instead, when there is one
    (``hostkit check --fix`` checks it too). None of them may hold a secret.
    """

    ok: bool | None
    message: str
    fix: str | None = None
    suggestion: str | None = None

    def __post_init__(self) -> None:
        # the texts quote servers (a content type, a reason phrase): no terminal commands
        from .errors import printable

        self.message = printable(self.message)
        self.fix = printable(self.fix) if self.fix is not None else None

    @classmethod
    def failed(cls, error: HostkitError) -> Verdict:
        """A failed verdict from an error: its message, its hint as the fix, its suggestion."""
        return cls(False, error.message, error.hint, error.suggestion)


@dataclass
class Findings:
    """What a backend found about one identifier for ``hostkit check`` (see :func:`hostkit_check`).

    A verdict left None is decided by the core: ``anonymous`` and ``direct`` by
    checking ``medperf`` through the backend that claims it (an http(s) URL: the
    http backend's anonymous GET), ``permanent`` from ``Remote.immutable``.
    """

    #: The identifier MedPerf accepts for this object (an http(s) URL a plain anonymous
    #: GET reads, or ``synapse:synN``), None when there is none. It may be shown: no secret.
    medperf: str | None = None
    #: Whether anyone can read it with no credential at all (and if not, who can).
    anonymous: Verdict | None = None
    #: Whether a plain GET returns the file itself (not a web page or a login page).
    direct: Verdict | None = None
    #: Whether the identifier always names the same bytes (a commit, a version, no expiry).
    permanent: Verdict | None = None
    #: Whether downloading it with the caller's own settings is worth trying (False when
    #: the probe showed there is no file to get, e.g. a web page).
    fetch: bool = True


@hookspec(firstresult=True)
def hostkit_check(ref: Ref, remote: Remote | None, context: Context
                  ) -> Awaitable[Findings] | None:
    """Judge ``ref`` for ``hostkit check``, or return None if it is not yours.

    Stops at the first non-None result. Return None at once for identifiers of
    other backends; for yours return an awaitable (the coroutine of an ``async
    def``) that resolves to :class:`Findings`. The awaitable may do I/O, but
    whatever decides ``anonymous`` must send **no credential at all** (no
    token, no signature, no configured keys: only what the identifier itself
    carries is the identifier's business), since that is what MedPerf's users
    have. Look-ups of your own (a bucket's versioning, the current version)
    may use the caller's credentials. Errors of your I/O are verdicts, not
    exceptions: raise only for a bug.

    :param ref: the parsed identifier (``ref.identifier`` may hold credentials).
    :param remote: what ``hostkit_resolve`` returned for it, or None when the
        backend refused it (a share link, a branch): the probe may still look.
    :param context: as for :func:`hostkit_resolve`.
    :returns: None, or an awaitable of :class:`Findings`.
    """
    raise NotImplementedError


@hookspec
def hostkit_settings() -> list[Option]:
    """Declare the settings this plugin reads.

    Each :class:`hostkit.settings.Option` names a backend and a key; its value
    comes from ``[backends.<backend>]`` in ``config.toml``, then from
    ``HOSTKIT_<BACKEND>_<KEY>`` in the environment, and is checked against
    the option's type (a value that does not parse is an error naming the
    variable or key). ``hostkit config`` lists them with their sources.
    Standard credential chains (``AWS_*``, ``GOOGLE_*``, ...) stay with their
    libraries and are not declared here.

    :returns: the options, read back with ``context.option(backend, key)``.
    """
    raise NotImplementedError


@hookspec(firstresult=True)
def hostkit_blob_tier(settings: Settings, context: Context) -> TierStore | None:
    """Return the requests on the site's shared tier ``settings.tier``, or None if not yours.

    Stops at the first non-None result. ``settings.tier`` is a URL such as
    ``s3://bucket/prefix``: claim it by its scheme and return a
    :class:`hostkit.tier.TierStore` on that bucket and prefix, reached with your
    backend's endpoint and credentials (keep it in ``context.clients``). Do no
    I/O here. The core keeps the rules (content addressing, create-only writes,
    leases, verification of every byte, fallback to the origin); the store only
    sends requests, and must refuse to write a blob it cannot write create-only.

    :param settings: the settings (``settings.tier``, ``settings.tier_timeout``).
    :param context: as for :func:`hostkit_resolve`.
    :returns: the TierStore, or None.
    :raises hostkit.errors.UsageError: a malformed tier URL of your scheme.
    """
    raise NotImplementedError


@hookspec
def hostkit_register_commands(subparsers: Any, common: Any) -> None:
    """Add subcommands to the ``hostkit`` command line.

    Called once while the CLI builds its parser, after the core commands.
    Add parsers with ``subparsers.add_parser(NAME, parents=[common], ...)``
    (``common`` carries ``--json``, ``--cache-dir``, ``-q``, ``-v``) and set
    the function that runs the command with ``set_defaults(handler=FN)``;
    ``FN(args, settings)`` returns the exit code and raises
    :class:`hostkit.errors.HostkitError` for failures (printed, and mapped
    to its exit code, by the CLI).

    :param subparsers: the ``argparse`` subparsers action of ``hostkit``.
    :param common: the parent parser of the common options.
    """
    raise NotImplementedError
