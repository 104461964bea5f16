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

PUBLISH_EPILOG = """\
examples:
  hostkit publish ./my_model --type model --to minio://host:9000/cubes/ --json
  hostkit publish ./my_model --type model --to synapse:syn123 --json > cube.json
  hostkit publish ./my_model --type model --to s3://private-bucket/cubes/ --private
Object-store keys are DEST/<sha256>/<name>: publishing again uploads nothing, prints the same.
Printed identifiers are checked by a resolve with no credentials (anonymous GET, public Synapse).
--json prints MedPerf's fields (git_mlcube_url, mlcube_hash, ...; "" when absent) and the
current form under "container"; `hostkit pull` takes that output as its RECORD.
exit codes: 0 published, 2 invalid cube, 4 a part is not anonymously readable (see --private)
"""


def add_workflow_commands(sub, common) -> None:
    """Add ``package``, ``pull`` and ``publish`` to the ``hostkit`` subparsers."""
    from .formatting import help_formatter
    from .workflows import CUBE_TYPES as TYPES

    p = sub.add_parser("package", parents=[common], epilog=PACKAGE_EPILOG,
                       formatter_class=help_formatter(),
                       help="validate an MLCube folder for MedPerf and write its assets/",
                       description="Check DIR (mlcube.yaml, workspace/) against MedPerf's rules "
                                   "for its type and write DIR/assets/: mlcube.yaml, "
                                   "parameters.yaml and additional_files.tar.gz when referenced, "
                                   "the singularity image file when named, and assets.json. "
                                   "Archives are reproducible.")
    p.add_argument("dir", metavar="DIR", help="the MLCube folder (mlcube.yaml, workspace/)")
    p.add_argument("--type", required=True, choices=TYPES, dest="cube_type",
                   help="the cube's MedPerf type: its rules decide what must be there")
    p.add_argument("--output", metavar="FILE", help="also write one tarball of assets/")
    p.set_defaults(handler=run_package)
    q = sub.add_parser("pull", parents=[common], epilog=PULL_EPILOG,
                       formatter_class=help_formatter(),
                       help="rebuild a MedPerf cube folder from its record, verified and cached",
                       description="Resolve every hosted part of a MedPerf cube record through "
                                   "the cache (or the daemon), verify it, extract the additional "
                                   "files safely, and build DIR atomically.")
    q.add_argument("record", metavar="RECORD",
                   help="the cube's MedPerf record: a JSON file (either form, see below)")
    q.add_argument("--into", required=True, metavar="DIR",
                   help="the folder to build (created; see --force)")
    q.add_argument("--force", action="store_true", help="replace a non-empty DIR")
    q.set_defaults(handler=run_pull)
    r = sub.add_parser("publish", parents=[common], epilog=PUBLISH_EPILOG,
                       formatter_class=help_formatter(),
                       help="package a cube, upload its parts and print MedPerf's record",
                       description="Package DIR (as `hostkit package`), upload each part under "
                                   "DEST through its backend, check every printed identifier "
                                   "resolves anonymously to the same sha256, and print the "
                                   "fields to submit to MedPerf.")
    r.add_argument("dir", metavar="DIR", help="the MLCube folder (as for `hostkit package`)")
    r.add_argument("--type", required=True, choices=TYPES, dest="cube_type",
                   help="the cube's MedPerf type")
    r.add_argument("--to", required=True, metavar="DEST", dest="dest",
                   help="where the parts go: s3://bucket/prefix/, minio://host:port/bucket/"
                        "prefix/, gs://..., az://..., or synapse:synPARENT")
    r.add_argument("--private", action="store_true",
                   help="print private identifiers (s3://...) instead of failing; MedPerf "
                        "cannot use them")
    r.set_defaults(handler=run_publish)


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


def run_publish(args, settings) -> int:
    """``hostkit publish DIR --type T --to DEST [--private]``."""
    from .formatting import print_json
    from .workflows.publish import publish

    published = publish(args.dir, args.cube_type, args.dest, private=args.private,
                        settings=settings)
    if not published.public:
        private = ", ".join(p.file for p in published.parts.values() if not p.public)
        print(f"warning: {private}: not anonymously readable; printed as private identifiers, "
              "which MedPerf cannot use", file=sys.stderr)
    if args.json:
        print_json(published.to_dict())
        return 0
    for key, value in published.record().items():
        if key != "container":
            print(f"{key}: {value}")
    if not args.quiet:
        uploaded = sum(p.created for p in published.parts.values())
        print(f"{uploaded} part(s) uploaded, {len(published.parts) - uploaded} already there",
              file=sys.stderr)
    return 0
