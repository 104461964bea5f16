"""``HOSTKIT_RESOLVE``: send a host name's connections to another address (curl's ``--resolve``).

``HOSTKIT_RESOLVE="host:port:addr[:port2],..."`` makes the shared HTTP session
connect to ``addr`` (port ``port2``, default ``port``) whenever a URL names
``host:port``. The URL, the ``Host`` header, TLS's server name and the
certificate check all keep the real host name: only the address changes.
``host`` may be ``*`` for every host on that port; IPv6 addresses go in
brackets (``[::1]``). Uses: tests and demos against stand-ins under real host
names (``www.dropbox.com:443:127.0.0.1:8443`` with ``SSL_CERT_FILE`` naming the
stand-in's CA), and air-gapped mirrors that serve a public host's paths.

Only the session the backends share (:meth:`hostkit.remote.Context.http_session`)
honours it; client libraries with their own connections (synapseclient's
requests, botocore's uploads) do not.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

from .errors import UsageError

_HINT = ("write host:port:address[:port] entries separated by commas, e.g. "
         "HOSTKIT_RESOLVE=files.example.org:443:127.0.0.1:8443")


def parse_overrides(text: str, source: str = "HOSTKIT_RESOLVE"
                    ) -> dict[tuple[str, int], tuple[str, int]]:
    """``"host:port:addr[:port2],..."`` -> ``{(host, port): (addr, port2)}`` (host lowercased).

    :raises hostkit.errors.UsageError: an entry that is not of that form, naming ``source``.
    """
    out: dict[tuple[str, int], tuple[str, int]] = {}
    for entry in (e.strip() for e in text.split(",")):
        if not entry:
            continue
        host, sep, rest = entry.partition(":")
        port_text, sep2, target = rest.partition(":")
        if not (sep and sep2 and host and target):
            raise UsageError(f"{source}: {entry!r} is not host:port:address[:port]", hint=_HINT)
        port = _port(port_text, entry, source)
        if target.startswith("["):
            addr, close, tail = target[1:].partition("]")
            if not close or (tail and not tail.startswith(":")):
                raise UsageError(f"{source}: {entry!r} has a malformed IPv6 address",
                                 hint="write IPv6 addresses in brackets: host:443:[::1]:8443")
            to_port = _port(tail[1:], entry, source) if tail else port
        else:
            addr, _, tail = target.partition(":")
            to_port = _port(tail, entry, source) if tail else port
        try:
            ipaddress.ip_address(addr)
        except ValueError:
            raise UsageError(f"{source}: {entry!r}: {addr!r} is not an IP address",
                             hint=_HINT) from None
        out[(host.lower().rstrip("."), port)] = (addr, to_port)
    return out


def _port(text: str, entry: str, source: str) -> int:
    if not (text.isascii() and text.isdigit() and 1 <= int(text) <= 65535):
        raise UsageError(f"{source}: {entry!r}: {text!r} is not a port (1-65535)", hint=_HINT)
    return int(text)


def resolver_for(text: str | None):
    """An aiohttp resolver applying the overrides in ``text``, or None when there are none."""
    overrides = parse_overrides(text) if text else {}
    if not overrides:
        return None
    from aiohttp.abc import AbstractResolver
    from aiohttp.resolver import DefaultResolver

    class OverrideResolver(AbstractResolver):
        """Answers overridden ``(host, port)`` pairs itself; asks the default resolver otherwise."""

        def __init__(self) -> None:
            self._default = DefaultResolver()

        async def resolve(self, host: str, port: int = 0,
                          family: socket.AddressFamily = socket.AF_INET) -> list[Any]:
            target = overrides.get((host.lower().rstrip("."), port)) or overrides.get(("*", port))
            if target is None:
                return await self._default.resolve(host, port, family)
            addr, to_port = target
            ip = ipaddress.ip_address(addr)
            return [{"hostname": host, "host": addr, "port": to_port,
                     "family": socket.AF_INET6 if ip.version == 6 else socket.AF_INET,
                     "proto": 0, "flags": socket.AI_NUMERICHOST | socket.AI_NUMERICSERV}]

        async def close(self) -> None:
            await self._default.close()

    return OverrideResolver()
