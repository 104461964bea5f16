"""``hostkit check``: MedPerf's hosting rules, checked at the source.

The work is :mod:`hostkit.workflows.check`; this module is its command line.
"""

from __future__ import annotations

import sys

CHECK_EPILOG = """\
examples:
  hostkit check https://example.org/weights.bin            # the four checks, then what to submit
  hostkit check synapse:syn123 https://... --json          # a JSON list, one object per identifier
  hostkit check 'https://www.dropbox.com/s/x/w.bin?dl=0' --fix   # also check the suggested fix
  hostkit check https://example.org/w.bin --no-download    # a quick probe: no size or sha256
checks: reachable anonymously (no credential at all), direct download (the file, not a web or
login page), permanent (a commit, a version, no expiry), size and sha256 (downloaded into the
cache, verified). Each failure says how to fix it; a suggested identifier is never used in
place of yours: --fix prints it, checked like any other.
--json: a list of {"identifier", "ok", "checks": [{"name", "label", "ok", "message", "fix",
"suggestion"}], "size", "sha256", "submit", "fixed" (with --fix)}; a check's "ok" is true,
false or null (not checked); "submit" (MedPerf's URL field) is null until every check passes.
exit codes: 0 every check passed, 1 a check failed, 2 bad usage or an identifier hostkit cannot
read (argparse errors too)
"""


def add_check_command(sub, common) -> None:
    """Add ``check`` to the ``hostkit`` subparsers."""
    from .formatting import help_formatter

    c = sub.add_parser("check", parents=[common], epilog=CHECK_EPILOG,
                       formatter_class=help_formatter(),
                       help="check links against MedPerf's hosting rules; print what to submit",
                       description="For each identifier, check that MedPerf's users can "
                                   "download it with no credentials, that a plain GET returns "
                                   "the file itself, and that it is permanent; then download it "
                                   "into the cache and print the value and the bare sha256 to "
                                   "submit to MedPerf. Each failed check says how to fix it.")
    c.add_argument("identifiers", nargs="+", metavar="ID_OR_URL",
                   help="what to check: https://... (or direct:https://...), synapse:synN[.V], "
                        "s3://, minio://, gs://, az://, github:")
    c.add_argument("--fix", action="store_true",
                   help="also check each suggested replacement and print it (never used in "
                        "place of yours)")
    c.add_argument("--no-download", action="store_true",
                   help="skip the size and sha256 step (a quick probe)")
    c.set_defaults(handler=run_check)


def run_check(args, settings) -> int:
    """``hostkit check ID...``: 0 when every check passed, 1 when one failed, 2 bad usage."""
    from .formatting import print_json
    from .progress import progress_for
    from .workflows.check import check

    reports = check(list(args.identifiers), settings=settings, download=not args.no_download,
                    fix=args.fix, cache_dir=settings.cache_dir if args.cache_dir else None,
                    progress=progress_for(settings))
    if args.json:
        print_json([r.to_dict() for r in reports])
    else:
        marks = _marks()
        for i, report in enumerate(reports):
            if i:
                print()
            _print(report, marks, fix=args.fix)
    if any(r.invalid for r in reports):
        return 2
    return 0 if all(r.ok for r in reports) else 1


def _marks() -> dict:
    """✓ ✗ - where stdout can print them, else PASS FAIL SKIP."""
    try:
        "✓✗".encode(sys.stdout.encoding or "ascii")
    except (UnicodeEncodeError, LookupError):
        return {True: "PASS", False: "FAIL", None: "SKIP"}
    return {True: "✓", False: "✗", None: "-"}


def _print(report, marks: dict, *, fix: bool, indent: str = "") -> None:
    from .redact import redact_url
    from .workflows.check import CHECKS

    print(f"{indent}{report.identifier}")
    width = max(len(label) for label in CHECKS.values())
    for name, verdict in report.verdicts.items():
        label = CHECKS.get(name, name)
        print(f"{indent}  {marks[verdict.ok]} {label:<{width}}  {verdict.message}")
        if verdict.ok is False and verdict.fix:
            print(f"{indent}      fix: {verdict.fix}")
        if verdict.ok is False and verdict.suggestion and \
                redact_url(verdict.suggestion) not in (verdict.fix or ""):
            print(f"{indent}      use: {redact_url(verdict.suggestion)}")
    if report.submit:
        print(f"{indent}  submit: {redact_url(report.submit)}  hash: {report.sha256}")
    elif report.ok:
        print(f"{indent}  all checks passed (no download: run without --no-download for the "
              "hash to submit)")
    else:
        failed = sum(v.ok is False for v in report.verdicts.values())
        print(f"{indent}  not ready for MedPerf: {failed} check{'s' if failed > 1 else ''} "
              "failed")
    if report.fixed is not None:
        print(f"{indent}  fixed: {report.fixed.identifier}")
        _print(report.fixed, marks, fix=fix, indent=indent + "    ")
