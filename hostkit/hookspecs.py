"""The hooks a hostkit backend implements. Each docstring is the contract.

A backend is a module (or object) with functions marked ``@hookimpl``,
registered through the ``hostkit`` entry-point group::

    [project.entry-points.hostkit]
    mystore = "my_package.mystore"

Built-in backends register exactly the same way.
"""

from __future__ import annotations

import pluggy

hookspec = pluggy.HookspecMarker("hostkit")
#: Decorate backend functions with this.
hookimpl = pluggy.HookimplMarker("hostkit")


@hookspec
def hostkit_backends():
    """Describe the backends this plugin provides.

    Return a list of :class:`hostkit.remote.BackendInfo` (name, schemes,
    summary, example identifiers, the pip extra it needs). Called for
    ``hostkit plugins`` and to list accepted forms in an unknown-scheme error.
    Must not import heavy client libraries.
    """


@hookspec(firstresult=True)
def hostkit_resolve(ref, context):
    """Return a :class:`hostkit.remote.Remote` for ``ref``, or None if not yours.

    ``ref`` is a :class:`hostkit.identifiers.Ref`; decide by ``ref.scheme``
    (and ``ref.rest`` when two backends share a scheme: the github-pinned
    backend claims ``https://raw.githubusercontent.com/...`` before http does).
    ``context`` is a :class:`hostkit.remote.Context` (settings, HTTP session).

    Do no I/O here: the resolver may answer from the cache, or be offline.
    Raise :class:`hostkit.errors.UsageError` for a malformed identifier of
    your scheme and :class:`hostkit.errors.NotPermanent` /
    :class:`hostkit.errors.NotDirectLink` for forms you know are unsafe.
    """


@hookspec(firstresult=True)
def hostkit_upload(destination, context):
    """Return a :class:`hostkit.remote.Uploader` for ``destination``, or None if not yours.

    ``destination`` is a :class:`hostkit.identifiers.Ref` naming where to
    put a file (a key, or a prefix ending in ``/``). No I/O here; the
    uploader does the work when awaited.
    """
