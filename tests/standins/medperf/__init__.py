"""A stand-in for the ``medperf`` package: only its exceptions (tests put it on sys.path)."""
