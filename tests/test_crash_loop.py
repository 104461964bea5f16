"""The crash loop (tests/crash_loop.py) with a few rounds: ``./dev crash N`` runs more."""

from __future__ import annotations

import random

from tests import crash_loop


def test_crash_loop_leaves_nothing_corrupt_and_always_resumes():
    seed = random.randrange(1 << 30)
    lines: list[str] = []
    summary = crash_loop.run(8, seed=seed, size=2 << 20, log=lines.append)
    report = "\n".join([f"seed {seed}", *lines, *summary.failures, summary.line()])
    print(report)
    assert summary.runs == 8
    assert not summary.failures, report
    assert not summary.corrupt, report
    assert summary.resumed == summary.with_bytes, report


def test_tree_crash_loop_leaves_nothing_corrupt():
    """Folders on SeaweedFS killed at random moments and at every failpoint (the small
    files' batch points too): each undisturbed rerun gives the folder exactly."""
    seed = random.randrange(1 << 30)
    lines: list[str] = []
    summary = crash_loop.run_trees(6, seed=seed, log=lines.append)
    report = "\n".join([f"seed {seed}", *lines, *summary.failures, summary.line()])
    print(report)
    assert summary.runs == 6
    assert not summary.failures, report
    assert not summary.corrupt, report
