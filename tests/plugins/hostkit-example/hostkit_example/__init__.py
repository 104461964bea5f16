"""An example third-party backend: ``example://NAME`` is NAME under one base URL, served
with nothing but hostkit's core and its backend toolkit (``hostkit.backend``)."""

from __future__ import annotations

import contextlib
import re

from hostkit.backend import HttpStatus, open_range, raise_for_status, request, status_error
from hostkit.errors import UsageError
from hostkit.formatting import help_formatter
from hostkit.hookspecs import hookimpl
from hostkit.remote import BackendInfo, Body, Remote, RemoteInfo
from hostkit.settings import Option

BASE_URL = Option("example", "base_url", "str", "http://127.0.0.1:8080", "where files are served")


@hookimpl
def hostkit_backends():
    """The example backend."""
    return [BackendInfo("example", ("example",), "files under one base URL", ("example://NAME",))]


@hookimpl
def hostkit_settings():
    """``base_url``: ``[backends.example]`` in config.toml or ``HOSTKIT_EXAMPLE_BASE_URL``."""
    return [BASE_URL]


@hookimpl
def hostkit_resolve(ref, context):
    """Claim ``example://NAME`` (no I/O)."""
    if ref.scheme != "example":
        return None
    name = ref.rest.removeprefix("//")
    if not re.fullmatch(r"\w[\w.-]*", name):
        raise UsageError(f"{ref.display!r} is not example://NAME", hint="write example://NAME")
    return ExampleRemote(context.option("example", "base_url"), name, context)


@hookimpl
def hostkit_register_commands(subparsers, common):
    """``hostkit example-url NAME``: where example://NAME is fetched from."""
    cmd = subparsers.add_parser(
        "example-url", parents=[common], help="URL of example://NAME",
        description="Print the URL example://NAME is fetched from: base_url + NAME.",
        epilog="example:\n  hostkit example-url weights.bin", formatter_class=help_formatter())
    cmd.add_argument("name", help="the NAME of example://NAME")
    cmd.set_defaults(handler=show_url)


def show_url(args, settings) -> int:
    """Print the URL ``example://NAME`` is fetched from."""
    print(f"{settings.option(BASE_URL).rstrip('/')}/{args.name}")
    return 0


class ExampleRemote(Remote):
    """One file on the example server, fetched anonymously."""

    anonymous = True

    def __init__(self, base: str, name: str, context):
        self.url, self.context = f"{base.rstrip('/')}/{name}", context
        self.display, self.cache_key = f"example://{name}", f"example+{base.rstrip('/')}/{name}"

    async def stat(self) -> RemoteInfo:
        """A HEAD: size and ETag."""
        async with request(self.context, "HEAD", self.url, display=self.display) as resp:
            raise_for_status(resp, self.display)
            return RemoteInfo(size=resp.content_length, validator=resp.headers.get("ETag"))

    @contextlib.asynccontextmanager
    async def open(self, offset: int = 0, validator: str | None = None):
        """The bytes from ``offset`` if the file is still ``validator``, else from 0."""
        try:
            async with open_range(self.context, self.url, offset if validator else 0,
                                  if_range=validator, display=self.display) as ranged:
                info = RemoteInfo(size=ranged.total, validator=ranged.response.headers.get("ETag"))
                yield Body(info, ranged.start, ranged.chunks())
        except HttpStatus as exc:
            raise status_error(exc.status, self.display) from None
