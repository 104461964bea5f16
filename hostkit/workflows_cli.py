"""``hostkit package`` and ``hostkit pull``: the MedPerf workflows on the command line."""

from __future__ import annotations

import sys

PACKAGE_EPILOG = """\
examples:
  hostkit package ./my_model --type model                # writes ./my_model/assets/
  hostkit package ./prep --type data-preparator --output prep.tar.gz
  hostkit package ./metrics --type metrics --json        # parts with name, size, sha256
exit codes: 0 packaged, 2 invalid cube (every problem listed, naming file and key)
"""

PULL_EPILOG = """\
examples:
  hostkit pull cube.json --into ./cubes/model            # MedPerf's cube record (either form)
  hostkit pull cube.json --into ./cubes/model --force    # replace a non-empty folder
  hostkit pull cube.json --into ./cubes/model --json     # TOFU hashes under the record's fields
RECORD is a JSON file: the MLCube-era fields (git_mlcube_url, mlcube_hash, git_parameters_url,
parameters_hash, additional_files_tarball_url/_hash, image_tarball_url/_hash; "" when absent),
or the current form (container_config, parameters_config, image_hash, additional files).
environment: HOSTKIT_EXTRACT_MAX_MEMBERS, HOSTKIT_EXTRACT_MAX_BYTES (tar bomb caps)
"""


def add_workflow_commands(sub, common) -> None:
    """Add ``package`` and ``pull`` to the ``hostkit`` subparsers."""
    import argparse

    from .workflows.mlcube import TYPES

    p = sub.add_parser("package", parents=[common], epilog=PACKAGE_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="validate an MLCube folder for MedPerf and write its assets/",
                       description="Check DIR (mlcube.yaml, workspace/) against MedPerf's rules "
                                   "for its type and write DIR/assets/: mlcube.yaml, "
                                   "parameters.yaml and additional_files.tar.gz when referenced, "
                                   "the singularity image file when named, and assets.json. "
                                   "Archives are reproducible.")
    p.add_argument("dir")
    p.add_argument("--type", required=True, choices=TYPES, dest="cube_type")
    p.add_argument("--output", metavar="FILE", help="also write one tarball of assets/")
    p.set_defaults(handler=run_package)
    q = sub.add_parser("pull", parents=[common], epilog=PULL_EPILOG,
                       formatter_class=argparse.RawDescriptionHelpFormatter,
                       help="rebuild a MedPerf cube folder from its record, verified and cached",
                       description="Resolve every hosted part of a MedPerf cube record through "
                                   "the cache (or the daemon), verify it, extract the additional "
                                   "files safely, and build DIR atomically.")
    q.add_argument("record", metavar="RECORD")
    q.add_argument("--into", required=True, metavar="DIR")
    q.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    q.set_defaults(handler=run_pull)


def run_package(args, settings) -> int:
    """``hostkit package DIR --type T [--output FILE]``."""
    from .formatting import print_json
    from .workflows.mlcube import package

    result = package(args.dir, args.cube_type, args.output)
    if args.json:
        print_json(result.to_dict())
        return 0
    for part in result.parts:
        print(f"{part['sha256']}  {part['size']:>12}  {result.assets / part['name']}")
    if result.output:
        print(f"wrote {result.output}")
    return 0


def run_pull(args, settings) -> int:
    """``hostkit pull RECORD --into DIR [--force]``."""
    from .formatting import print_json
    from .workflows.pull import load_record, pull

    pulled = pull(load_record(args.record), args.into, force=args.force, settings=settings,
                  cache_dir=settings.cache_dir if args.cache_dir else None)
    if args.json:
        print_json(pulled.to_dict())
        return 0
    print(pulled.into)
    if pulled.docker_image:
        print(pulled.docker_image)
    if not args.quiet:
        for name, sha in pulled.trusted_on_first_use.items():
            print(f"note: no {name} in the record; {sha} trusted on first use. "
                  f"Store it as {name} to pin these bytes.", file=sys.stderr)
    return 0
