"""hostkit installs and works next to MedPerf's client: synapseclient==4.1.1, pydantic==1.10.13.

The ``medperf`` dependency group (pyproject.toml) asks for every hostkit extra
together with MedPerf's pins; ``uv lock`` resolved it into uv.lock as a fork of
its own, and ``./dev test`` installs that fork into ``.venv-medperf``. These
tests check that the committed lock still holds that resolution, then run
hostkit in that environment (synapseclient 4.1.1, urllib3 1.26) against the
Synapse stand-in: a download, MedPerf's drop-in, an upload and its round trip.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tomllib

from tests import test_synapse as syn
from tests.conftest import ROOT
from tests.synapse_standin import TOKEN
from tests.test_resolve import data

PINS = {"synapseclient": "4.1.1", "pydantic": "1.10.13"}
MEDPERF_PYTHON = ROOT / ".venv-medperf" / "bin" / "python"


def test_the_committed_lock_is_current_and_resolves_hostkit_with_medperfs_pins():
    uv = shutil.which("uv")
    assert uv, "uv is needed (./dev test installs it)"
    # --offline: the check compares uv.lock with pyproject.toml; it needs no index
    check = subprocess.run([uv, "lock", "--check", "--offline"], cwd=ROOT,
                           capture_output=True, text=True, timeout=120)
    assert check.returncode == 0, check.stderr
    lock = tomllib.loads((ROOT / "uv.lock").read_text())
    project = next(p for p in lock["package"] if p["name"] == "hostkit")
    group = {d["name"]: d for d in project["dev-dependencies"]["medperf"]}
    assert group["hostkit"]["extra"] == ["all"]
    for name, version in PINS.items():
        assert group[name].get("version", version) == version, group[name]
        assert any(p["name"] == name and p["version"] == version for p in lock["package"])
    declared = project["metadata"]["requires-dist"]
    synapse = next(d for d in declared if d["name"] == "synapseclient")
    assert synapse["marker"] == "extra == 'synapse'" and "4.1.1" in synapse["specifier"]


synapse_server = syn.synapse_server


SCRIPT = r"""
import hashlib, json, sys
import pydantic, synapseclient, urllib3
from hostkit import api
from hostkit.integrations.medperf import download_resource

public, private, folder, out, upload_file = sys.argv[1:6]
answer = {"versions": [synapseclient.__version__, pydantic.VERSION, urllib3.__version__]}
answer["public"] = api.resolve_info(f"synapse:{public}").sha256
answer["dropin"] = download_resource(f"synapse:{private}", out)
uploaded = api.upload(upload_file, f"synapse:{folder}")
answer["uploaded"] = [uploaded.identifier, uploaded.sha256, uploaded.created]
again = api.resolve_info(uploaded.identifier, uploaded.sha256)
answer["round_trip"] = [again.verified, open(again.path, "rb").read() == open(upload_file,
                                                                             "rb").read()]
print(json.dumps(answer))
"""


def test_hostkit_works_with_synapseclient_4_1_1(synapse_server, tmp_path):
    assert MEDPERF_PYTHON.exists(), (
        "the environment with MedPerf's pins is missing: `./dev test` makes it "
        "(UV_PROJECT_ENVIRONMENT=.venv-medperf uv sync --frozen --no-default-groups "
        "--group medperf)")
    synapse = synapse_server
    public = synapse.add_file("public.bin", data(40_000, 41))
    private = synapse.add_file("private.bin", data(30_000, 42), access="private")
    folder = synapse.add_folder("medperf-pins")
    source = tmp_path / "weights.bin"
    source.write_bytes(data(25_000, 43))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("HOSTKIT_", "SYNAPSE_"))}
    env.update(HOSTKIT_CACHE_DIR=str(tmp_path / "cache"), HOSTKIT_SYNAPSE_ENDPOINT=synapse.url,
               HOSTKIT_SYNAPSE_CONFIG=str(tmp_path / "synapseConfig"),
               HOSTKIT_CONFIG=str(tmp_path / "config.toml"), SYNAPSE_AUTH_TOKEN=TOKEN,
               HOME=str(tmp_path / "home"))
    env.pop("XDG_RUNTIME_DIR", None)  # no machine daemon: the in-process resolver
    proc = subprocess.run([str(MEDPERF_PYTHON), "-c", SCRIPT, public, private, folder,
                           str(tmp_path / "out" / "private.bin"), str(source)],
                          capture_output=True, text=True, timeout=180, env=env, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr
    answer = json.loads(proc.stdout)
    assert answer["versions"][:2] == ["4.1.1", "1.10.13"]
    assert answer["versions"][2].startswith("1.26.")  # synapseclient 4.1.1 needs urllib3<2
    assert answer["public"] == hashlib.sha256(data(40_000, 41)).hexdigest()
    assert answer["dropin"] == hashlib.sha256(data(30_000, 42)).hexdigest()
    assert (tmp_path / "out" / "private.bin").read_bytes() == data(30_000, 42)
    created = synapse.child(folder, "weights.bin").id
    sha = hashlib.sha256(source.read_bytes()).hexdigest()
    assert answer["uploaded"] == [f"synapse:{created}.1", sha, True]
    assert answer["round_trip"] == [True, True]
    assert TOKEN not in proc.stdout + proc.stderr
