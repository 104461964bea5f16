"""MedPerf's parts, attacked: the drop-in with MedPerf's call patterns, hostile records.

Each test here failed before the change it came with (a second, hostile review of
issue 9); real processes against the real origin (tests/origin.py).
"""

from __future__ import annotations

import pytest

from tests.test_medperf_dropin import call
from tests.test_resolve import data

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("medperf", [False, True])
def test_an_output_path_naming_a_folder_is_refused_before_any_request(origin, tmp_path,
                                                                     medperf):
    """``output_path="cubes/1/"`` names a folder: MedPerf's own rename fails there. The
    drop-in wrote a file named ``1`` (the slash dropped)."""
    origin.add("slash.bin", data(1000, 130))
    origin.hits.clear()
    got = call(f"{origin.url}/f/slash.bin", f"{tmp_path}/cubes/1/", medperf=medperf)
    assert "UsageError" in got["hostkit"], got
    if medperf:
        assert got["medperf"] == ["InvalidArgumentError", "MedperfException"]
    assert not (tmp_path / "cubes").exists()
    assert origin.hits == []
