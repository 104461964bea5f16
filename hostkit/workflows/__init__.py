"""Workflows built on the resolver: MedPerf's MLCube packaging (``mlcube``), ``pull``, ``publish``.

They sit above :mod:`hostkit.api` (they resolve through it, hence through the
cache or the machine's daemon) and below the command line.
"""

#: MedPerf's MLCube types (``hostkit package --type``); :mod:`.mlcube` holds each one's tasks.
CUBE_TYPES = ("data-preparator", "model", "metrics")
