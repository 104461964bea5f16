"""``hostkit check ID...``: will MedPerf's users be able to download this, today and later?

MedPerf's hosting guides ask three things of a link: a plain anonymous GET
(``wget URL``) returns the file itself; it is permanent; a GitHub file is
addressed through a commit. Authors learn they got one wrong when a consumer's
download breaks, weeks later, elsewhere. ``check`` answers at the source, one
:class:`~hostkit.hookspecs.Verdict` per question, each failure with its fix:

- ``anonymous`` (reachable anonymously): it needs no credential at all;
- ``direct`` (a direct download): the answer is the file, not a page;
- ``permanent``: it names the same bytes for good (a commit, a version, no expiry);
- ``download`` (size and sha256): the bytes, fetched into the cache through the
  resolver, so the hash to submit is the hash of verified bytes.

Decide, then do (pooch's ``download_action`` before ``stream_download``, and
its downloaders' ``check_only``). Deciding is the backends' business and goes
through the resolver and the hooks, never a backend import: the backend's
``hostkit_resolve`` rules (a share link or a branch is refused, with the
identifier to use instead as the error's ``suggestion``) become verdicts, and
its ``hostkit_check`` hook probes the first bytes with no credential and
judges what only it knows (an expiry, a bucket's versioning, a Synapse
entity's access). Then the bytes are fetched by :func:`hostkit.api.resolve_info`,
the path every resolve takes. Nothing is rewritten behind the author's back: a
fix is a suggestion, checked like any identifier when asked (``--fix``).

Everything shown is the display form of an identifier (:mod:`hostkit.redact`):
signatures, tokens and passwords never reach the output.
"""

from __future__ import annotations

import asyncio
import re
from dataclasses import dataclass, field
from typing import Any

from .. import api
from ..errors import (
    HostkitError,
    NotAFile,
    NotDirectLink,
    NotPermanent,
    UsageError,
)
from ..hookspecs import Findings, Verdict
from ..identifiers import Ref, parse_identifier
from ..redact import redact_url

#: The checks, in the order they are shown: name -> label.
CHECKS = {"anonymous": "reachable anonymously", "direct": "direct download",
          "permanent": "permanent", "download": "size and sha256"}
#: How many identifiers are probed at once.
PARALLEL = 8
#: How many fixes in a row ``--fix`` follows (a fix may need a fix of its own).
FIX_DEPTH = 3


@dataclass
class Report:
    """What ``hostkit check`` found for one identifier.

    ``identifier`` is the display form; the text as given (which may carry a
    credential) stays in memory for the download and is never shown.
    """

    identifier: str
    verdicts: dict[str, Verdict] = field(default_factory=dict)
    #: The identifier MedPerf accepts for this object (None: there is none).
    medperf: str | None = None
    size: int | None = None
    sha256: str | None = None
    #: The identifier is not one hostkit can read (malformed, no backend): exit 2.
    invalid: bool = False
    #: ``--fix``: the report of the first suggestion, when there is one.
    fixed: Report | None = None
    fetch: bool = field(default=True, repr=False)
    _given: str = field(default="", repr=False)

    @property
    def ok(self) -> bool:
        """True when no check failed."""
        return not self.invalid and all(v.ok is not False for v in self.verdicts.values())

    @property
    def submit(self) -> str | None:
        """The value of MedPerf's URL field, once every check passes; None before."""
        return self.medperf if self.ok and self.sha256 else None

    @property
    def suggestion(self) -> str | None:
        """The first identifier a failed check suggests instead (as given: may not be shown)."""
        return next((v.suggestion for v in self.verdicts.values()
                     if v.ok is False and v.suggestion), None)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form (``hostkit check --json`` prints a list of these)."""
        # every check named, always, in one order: scripts index them by name
        verdicts = {**self.verdicts, **{name: self.verdicts.get(name) or Verdict(
            None, "not checked") for name in CHECKS}}
        out: dict[str, Any] = {
            "identifier": self.identifier, "ok": self.ok,
            "checks": [{"name": name, "label": CHECKS.get(name, name), "ok": v.ok,
                        "message": v.message, "fix": v.fix,
                        "suggestion": redact_url(v.suggestion) if v.suggestion else None}
                       for name, v in verdicts.items()],
            "size": self.size, "sha256": self.sha256,
            "submit": redact_url(self.submit) if self.submit else None}
        if self.fixed is not None:
            out["fixed"] = self.fixed.to_dict()
        return out


def check(identifiers: list[str], *, settings=None, download: bool = True, fix: bool = False,
          cache_dir=None, progress=None) -> list[Report]:
    """Check each identifier against MedPerf's hosting rules; one :class:`Report` each.

    ``download=False`` skips the size/sha256 step (a quick probe). ``fix``
    checks each failing identifier's suggested replacement too (``Report.fixed``),
    following up to :data:`FIX_DEPTH` fixes. ``cache_dir`` (with ``progress``)
    is passed to :func:`hostkit.api.resolve_info` for the downloads.

    :raises hostkit.errors.UsageError: no identifiers, or offline mode (a check
        needs the network).
    """
    from ..settings import load_settings

    settings = settings or load_settings()
    if not identifiers:
        raise UsageError("nothing to check", hint="name one or more identifiers: "
                                                  "hostkit check https://host/file")
    if settings.offline:
        raise UsageError("hostkit check asks the servers: it cannot run offline",
                         hint="unset HOSTKIT_OFFLINE (or drop --offline)")
    reports = _judge(identifiers, settings)
    if download:
        for report in reports:
            _download(report, settings, cache_dir, progress)
    else:
        for report in reports:
            if not report.invalid:
                report.verdicts["download"] = Verdict(None, "skipped (--no-download)")
    if fix:
        _fix(reports, settings, download=download, cache_dir=cache_dir, progress=progress)
    return reports


def _fix(reports: list[Report], settings, *, download: bool, cache_dir, progress,
         depth: int = 1) -> None:
    """Check the suggestion of each failed report (and of its fix, up to FIX_DEPTH)."""
    pending = [r for r in reports if not r.ok and r.suggestion]
    if not pending or depth > FIX_DEPTH:
        return
    fixed = check([r.suggestion for r in pending if r.suggestion], settings=settings,
                  download=download, cache_dir=cache_dir, progress=progress)
    for report, fix in zip(pending, fixed, strict=True):
        report.fixed = fix
    _fix(fixed, settings, download=download, cache_dir=cache_dir, progress=progress,
         depth=depth + 1)


# -- deciding: the backends' rules and their probes, concurrently ---------------------------


def _judge(identifiers: list[str], settings) -> list[Report]:
    resolver = api.get_resolver(settings)

    async def all_of_them() -> list[Report]:
        gate = asyncio.Semaphore(PARALLEL)

        async def one(text: str) -> Report:
            async with gate:
                return await judge(resolver, text)

        return list(await asyncio.gather(*(one(t) for t in identifiers)))

    return api.run(all_of_them())


async def judge(resolver, text: str) -> Report:
    """The verdicts on one identifier, short of downloading it (``resolver``: a Resolver)."""
    try:
        ref = parse_identifier(text)
    except UsageError as exc:
        # shown as text any reader takes: argv's undecodable bytes are lone surrogates
        shown = re.sub("[\ud800-\udfff]", "\ufffd", text.strip())
        return _invalid(redact_url(shown) if shown else repr(text), exc)
    report = Report(ref.display, _given=text)
    refusal: HostkitError | None = None
    remote = None
    # one limit for all of it: a branch's look-up retries, and may meet a silent API
    limit = resolver.settings.connect_timeout + 2 * resolver.settings.read_timeout
    try:
        async with asyncio.timeout(limit):
            try:
                remote = resolver.remote_for(ref)
                if getattr(remote, "movable", False):  # a branch: looked up, then refused
                    remote = await remote.pin(allow=False, offline=False)
            except (NotPermanent, NotDirectLink) as exc:
                refusal, remote = exc, None
            except UsageError as exc:
                return _invalid(ref.display, exc)
            except HostkitError as exc:  # a folder, a lookup that failed
                report.verdicts = _unreached(exc)
                report.fetch = False
                return report
            if remote is not None and await _names_folder(remote):
                report.verdicts = _unreached(_folder(remote.display))
                report.fetch = False
                return report
            findings = await _findings(resolver, ref, remote, refusal)
    except TimeoutError:
        findings = Findings(anonymous=Verdict(
            False, f"{ref.display}: no answer within {limit:g} s",
            "the server is slow or stuck; try again later, or raise HOSTKIT_READ_TIMEOUT"),
            fetch=False)
        if remote is None or getattr(remote, "movable", False):
            # what it names was never learnt: nothing to say about permanence either
            findings.permanent, remote = Verdict(None, "not reached"), None
    _merge(report, findings, refusal, remote)
    return report


async def _names_folder(remote) -> bool:
    """Whether ``remote`` names a folder (one request when only the backend can tell; a
    failure there is left for the checks that follow to report)."""
    if remote.tree is not None:
        return bool(remote.tree)
    try:
        return bool(await remote.is_tree())
    except HostkitError:
        return False


def _folder(display: str) -> NotAFile:
    return NotAFile(
        f"{display} is a folder: MedPerf downloads one file per asset (a model's weights, "
        "an MLCube's additional files as one tarball)",
        hint="host one file: pack the folder as a tarball (for an MLCube, `hostkit package` "
             "writes additional_files.tar.gz) and check that file; `hostkit resolve` still "
             "fetches the folder itself, pinned by its manifest's sha256",
        identifier=display)


def _unreached(error: HostkitError) -> dict[str, Verdict]:
    """The verdicts when ``error`` stopped the check before any probe: it fails its own check
    (a folder or a site is no direct download; anything else is not reachable)."""
    failed = "direct" if isinstance(error, NotAFile) else "anonymous"
    verdicts = {name: Verdict(None, "not reached") for name in ("anonymous", "direct",
                                                                 "permanent")}
    verdicts[failed] = Verdict.failed(error)
    return verdicts


async def _findings(resolver, ref: Ref, remote, refusal: HostkitError | None) -> Findings:
    """The backend's findings; for one that gives only a URL, that URL's own (anonymous GET);
    for one refused with a suggestion no backend judges, the suggested file's."""
    found = await _ask(resolver, ref, remote)
    if found is None and remote is None and refusal is not None:
        found = await _as_suggested(resolver, refusal.suggestion) if refusal.suggestion \
            else None
        if found is None:  # refused, and no file named to look at instead
            return Findings(anonymous=Verdict(None, "not reached: it names no one file to "
                                                    "probe yet"), fetch=False)
    if found is None:
        display = getattr(remote, "display", "") or ""
        if remote is not None and display.startswith(("http://", "https://")) \
                and display != ref.display:
            found = Findings(medperf=display)  # e.g. github:owner/repo@commit/path -> raw URL
        else:
            return Findings(anonymous=Verdict(
                False, f"MedPerf cannot download {ref.scheme}: identifiers",
                "host the file where MedPerf can read it: an https URL a plain GET returns, "
                "or synapse:synN"), fetch=remote is not None)
    if found.anonymous is None and found.direct is None and found.medperf \
            and found.medperf != ref.identifier:
        try:
            url = parse_identifier(found.medperf)
            public = await _ask(resolver, url, None)
        except HostkitError as exc:
            public = Findings(anonymous=Verdict.failed(exc))
        if public is not None:
            found.anonymous, found.direct = public.anonymous, public.direct
            if found.permanent is None:
                found.permanent = public.permanent
    return found


async def _as_suggested(resolver, suggestion: str) -> Findings | None:
    """Whether the suggested identifier (e.g. a branch's file at the commit it names now) is
    reachable and direct: what the refused one would give today. Nothing to submit."""
    try:
        ref = parse_identifier(suggestion)
        remote = resolver.remote_for(ref)
    except HostkitError:
        return None
    found = await _ask(resolver, ref, remote)
    if found is None:
        return None
    now = "at what it names now, "
    return Findings(
        anonymous=found.anonymous and Verdict(found.anonymous.ok, now + found.anonymous.message,
                                              found.anonymous.fix),
        direct=found.direct and Verdict(found.direct.ok, now + found.direct.message,
                                        found.direct.fix),
        fetch=False)


async def _ask(resolver, ref: Ref, remote) -> Findings | None:
    """Call the ``hostkit_check`` hook; a plugin failing there is a verdict, not a crash."""
    from ..plugins import call_first

    try:
        pending = call_first(resolver.plugins, "hostkit_check", ref=ref, remote=remote,
                             context=resolver.context)
        if pending is None:
            return None
        return await pending
    except HostkitError as exc:
        return Findings(anonymous=Verdict.failed(exc), fetch=False)
    except Exception as exc:  # a plugin's bug: say so, keep checking the others
        return Findings(anonymous=Verdict(
            False, f"{ref.display}: the check of its backend failed ({type(exc).__name__})",
            "run with -v; report it to the plugin's authors"), fetch=False)


def _merge(report: Report, found: Findings, refusal: HostkitError | None, remote) -> None:
    """The backend's refusal overrides the check it is about; defaults fill the rest."""
    anonymous = found.anonymous or Verdict(None, "not checked")
    direct = found.direct
    permanent = found.permanent
    if isinstance(refusal, NotPermanent):
        permanent = Verdict.failed(refusal)
    elif isinstance(refusal, NotDirectLink):
        direct = Verdict.failed(refusal)
    if direct is None:
        direct = Verdict(None, "not reached" if anonymous.ok is False else "not checked")
    if permanent is None:
        permanent = Verdict(True, "pinned: it always names the same bytes") \
            if getattr(remote, "immutable", False) else Verdict(
            True, "nothing in it moves or expires (no branch, no unpinned version, no "
                  "signature); the sha256 you submit guards the bytes")
    report.verdicts = {"anonymous": anonymous, "direct": direct, "permanent": permanent}
    report.medperf = found.medperf
    report.fetch = found.fetch and remote is not None and refusal is None \
        and direct.ok is not False


def _invalid(display: str, exc: HostkitError) -> Report:
    report = Report(display, invalid=True, fetch=False)
    report.verdicts["identifier"] = Verdict.failed(exc)
    return report


# -- doing: the download, through the one resolver ----------------------------------------


def _download(report: Report, settings, cache_dir, progress) -> None:
    """Fetch the bytes into the cache (verified as every resolve is); record size and sha256."""
    if report.invalid:
        return
    if not report.fetch:
        report.verdicts["download"] = Verdict(None, "skipped: there is no file to download "
                                                    "until the failures above are fixed")
        return
    from ..formatting import format_size

    try:
        resolved = api.resolve_info(report._given, settings=settings, cache_dir=cache_dir,
                                    progress=progress)
    except HostkitError as exc:
        report.verdicts["download"] = Verdict.failed(exc)
        return
    report.size, report.sha256 = resolved.size, resolved.sha256
    where = "in the cache already" if resolved.cached else "downloaded into the cache"
    report.verdicts["download"] = Verdict(
        True, f"{format_size(resolved.size)} ({resolved.size} bytes), {where}, "
              f"sha256 {resolved.sha256}")


__all__ = ["CHECKS", "Report", "check", "judge"]
