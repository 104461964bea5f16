"""hostkit's daemon: one aiohttp service, a thin HTTP face on the same Resolver.

Modules, one idea each:

- :mod:`.app`        routes and thin handlers; startup/cleanup hooks
- :mod:`.frontdoor`  what every route is behind: draining, address and token checks,
                     errors as JSON, metrics, the request log line
- :mod:`.state`      what the handlers share, kept on the app
- :mod:`.jobs`       background resolves (``"wait": false``) and prefetch jobs
- :mod:`.downloads`  what is downloading right now, from the resolver's events
- :mod:`.metrics`    counters and the Prometheus text at ``/metrics``
- :mod:`.openapi`    route declarations and the OpenAPI document generated from them
- :mod:`.logs`       one JSON line per request and per download, secrets redacted
- :mod:`.server`     binding (TCP or unix socket), token rules, graceful shutdown
- :mod:`.errors`     the daemon's refusals, registered error classes
- :mod:`.runtime`    the private runtime directory and the token files
- :mod:`.commands`   ``hostkit daemon`` and ``hostkit status``
- :mod:`.defaults`   what ``hostkit daemon`` starts with (its flags' defaults)
- :mod:`.tier_cli`   ``hostkit tier status|ls|prune``: the site's shared tier
- :mod:`.plugin`     the entry point: registers the commands (hook) and error kinds

The client the CLI and ``hostkit.resolve`` use is the core's
:mod:`hostkit.client`; the core never imports this package.

The daemon never downloads by itself: every byte comes through
:meth:`hostkit.resolver.Resolver.resolve`, whose single flight (in-process
task + ``asyncio.shield`` + a cross-process file lock) it relies on.
"""

DEFAULT_HOST = "127.0.0.1"
DEFAULT_PORT = 8765
