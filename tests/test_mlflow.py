"""The mlflow backend against a real MLflow tracking server (``mlflow server`` from PyPI).

One server for the module (SQLite store, artifacts proxied to a SeaweedFS bucket)
and an experiment whose artifact location is ``s3://`` (read directly, as a
``--no-serve-artifacts`` server's runs are). The tests log runs with MLflow's own
client, register two versions of a model from each (one from a run's path, one a
MLflow 3 logged model) and set an alias. hostkit talks to the server through
:class:`tests.mlflow_server.Gate`, an aiohttp reverse proxy that demands a token
(or basic credentials) as MLflow's basic-auth app would, counts requests, cuts
or redirects answers. Three ways to the bytes are tested: ``proxied`` (the
server's proxy in front of S3: chunked, no length, not resumable), ``direct``
(S3 credentials set: the store itself, md5-checked) and ``s3_via_server`` (an
``s3://`` store but no S3 credentials: the server's ``/get-artifact``).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from hostkit.errors import (
    BackendError,
    CredentialsNeeded,
    CredentialsRefused,
    NotFound,
    OfflineMiss,
    TransientError,
    UsageError,
)
from tests.conftest import run_cli
from tests.mlflow_server import Gate, MlflowServer
from tests.objectstore_fixtures import (
    KEY,
    SECRET,
    TcpProxy,
    _clear_cloud_env,
    resolve,
    start_seaweed,
)
from tests.servers import LOOPBACK

TOKEN = "mlflow-token-5c1d9e"
USER, PASSWORD = "alice", "pw-8a7f2b"
QUIET = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
FILE = b"hello from a run\n"
MLMODEL = {1: b"flavors: {v: 1}\n", 2: b"flavors: {v: 2, longer: true}\n"}
FOLDER = {"a.txt": b"aaa\n", "sub/b.bin": os.urandom(3000)}
BIG = os.urandom(1536 << 10)


@dataclass
class Stack:
    server: MlflowServer
    seaweed: object
    store: TcpProxy  # hostkit's own way to SeaweedFS: counts direct reads
    gate: Gate  # the MLflow server behind a token
    catcher: Gate  # another origin, no auth: a redirect target
    runs: dict[str, str]  # mode -> run id
    data: Path

    def client(self):
        from mlflow import MlflowClient

        return MlflowClient(tracking_uri=self.server.url)


MODES = ("proxied", "direct", "s3_via_server")
#: which run / model each mode reads: s3_via_server reads the direct run without S3 keys
SIDE = {"proxied": "proxied", "direct": "direct", "s3_via_server": "direct"}


@contextlib.contextmanager
def _client_env(seaweed):
    """The environment MLflow's client needs to log to both experiments."""
    with pytest.MonkeyPatch.context() as mp:
        for key in list(os.environ):
            if key.startswith(("AWS_", "MLFLOW_")):
                mp.delenv(key)
        for key, value in {**QUIET, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
                           "AWS_DEFAULT_REGION": "us-east-1",
                           "MLFLOW_S3_ENDPOINT_URL": seaweed.endpoint_url}.items():
            mp.setenv(key, value)
        yield


def _log_everything(server: MlflowServer, seaweed, data: Path) -> dict[str, str]:
    """Two runs (one per experiment) with a file, a folder and a model; two versions each."""
    (data / "folder" / "sub").mkdir(parents=True)
    (data / "file.txt").write_bytes(FILE)
    (data / "big.bin").write_bytes(BIG)
    for name, body in FOLDER.items():
        (data / "folder" / name).write_bytes(body)
    for version, body in MLMODEL.items():
        (data / f"model{version}").mkdir()
        (data / f"model{version}" / "MLmodel").write_bytes(body)
        (data / f"model{version}" / "weights.bin").write_bytes(bytes([version]) * 1000)
    runs = {}
    with _client_env(seaweed):
        import mlflow
        from mlflow import MlflowClient

        mlflow.set_tracking_uri(server.url)
        client = MlflowClient(tracking_uri=server.url)
        for side, location in (("proxied", None), ("direct", "s3://direct/exp")):
            experiment = mlflow.create_experiment(side, artifact_location=location)
            with mlflow.start_run(experiment_id=experiment) as run:
                mlflow.log_artifact(str(data / "file.txt"))
                mlflow.log_artifact(str(data / "big.bin"))
                mlflow.log_artifacts(str(data / "folder"), "folder")
                mlflow.log_artifacts(str(data / "model1"), "model")
            run_id = runs[side] = run.info.run_id
            name = f"m-{side}"
            client.create_registered_model(name)
            client.create_model_version(name, f"runs:/{run_id}/model", run_id=run_id)
            logged = client.create_logged_model(experiment, name="net", source_run_id=run_id)
            client.log_model_artifacts(logged.model_id, str(data / "model2"))
            client.finalize_logged_model(logged.model_id, "READY")
            mlflow.register_model(f"models:/{logged.model_id}", name)
            client.set_registered_model_alias(name, "champion", "1")
    return runs


@pytest.fixture(scope="module")
def stack(tmp_path_factory):
    """The MLflow server (started first: its ~20-40 s start overlaps SeaweedFS's and the
    client's import), SeaweedFS, the data, the gate. Stopped with its whole process group."""
    relay = TcpProxy(1)  # the server's way to SeaweedFS, pointed there once it is up
    s3_env = {**QUIET, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET,
              "AWS_DEFAULT_REGION": "us-east-1",
              "MLFLOW_S3_ENDPOINT_URL": f"http://{relay.hostport}"}
    server = MlflowServer(destination="s3://proxied/", s3_env=s3_env)
    group = server.pid
    closing: list = [relay]
    try:
        seaweed = start_seaweed(("proxied", "direct"))
        closing.append(seaweed)
        relay.target = (LOOPBACK, seaweed.port)
        with _client_env(seaweed):
            import mlflow  # noqa: F401  (seconds of imports, while the server starts)
        server.wait()
        runs = _log_everything(server, seaweed, tmp_path_factory.mktemp("mlflow-data"))
        store = TcpProxy(seaweed.port)
        gate = Gate(server.url, token=TOKEN, username=USER, password=PASSWORD)
        catcher = Gate(server.url)
        closing += [store, gate, catcher]
        yield Stack(server, seaweed, store, gate, catcher, runs,
                    tmp_path_factory.getbasetemp())
    finally:
        server.stop()
        for thing in reversed(closing):
            (thing.stop if hasattr(thing, "stop") else thing.close)()
        left = subprocess.run(["ps", "-o", "pid=,args=", "-g", str(group)],
                              capture_output=True, text=True).stdout.strip()
        assert not left, f"the MLflow server left processes behind:\n{left}"


@pytest.fixture
def env(stack, monkeypatch, tmp_path):
    """hostkit's environment: the gate as MLFLOW_TRACKING_URI with its token, no S3 keys."""
    _clear_cloud_env(monkeypatch, tmp_path)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", stack.gate.url)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    stack.gate.reset()
    stack.catcher.reset()
    stack.store.reset()
    return stack


def _mode_env(monkeypatch, stack: Stack, mode: str) -> tuple[str, str]:
    """S3 keys for ``direct`` (hostkit's endpoint: the counting relay); the run and model."""
    if mode == "direct":
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", KEY)
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
        monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://{stack.store.hostport}")
    side = SIDE[mode]
    return stack.runs[side], f"m-{side}"


def _tree(path: Path) -> dict[str, bytes]:
    return {p.relative_to(path).as_posix(): p.read_bytes()
            for p in sorted(path.rglob("*")) if p.is_file()}


def _sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _gets(stack: Stack, route: str) -> list[str]:
    return [h for h in stack.gate.hits if route in h]


# -- runs:/ ------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_run_file_then_revalidated(env, monkeypatch, mode):
    run, _ = _mode_env(monkeypatch, env, mode)
    got, _ = resolve(f"runs:/{run}/file.txt")
    assert got.path.read_bytes() == FILE and not got.cached
    assert got.identifier == f"runs:/{run}/file.txt"
    if mode == "direct":  # from the store: md5 of the single-part ETag checked
        assert env.store.connections > 0 and not _gets(env, "/get-artifact")
        assert got.digests["md5"] == hashlib.md5(FILE).hexdigest()
    else:  # through the server: hostkit never spoke to the store
        assert env.store.connections == 0 and len(_gets(env, "/get-artifact")) == 1
    env.gate.reset()
    again, _ = resolve(f"runs:/{run}/file.txt")
    # runs:/ can be logged again: asked (the listing), not downloaded again
    assert again.cached and again.sha256 == got.sha256
    assert _gets(env, "/artifacts/list") and not _gets(env, "/get-artifact")


@pytest.mark.parametrize("mode", MODES)
def test_run_folder_is_a_tree(env, monkeypatch, mode):
    run, _ = _mode_env(monkeypatch, env, mode)
    got, _ = resolve(f"runs:/{run}/folder")
    assert got.tree and got.files == 2
    assert _tree(got.path) == FOLDER
    whole, _ = resolve(f"runs:/{run}")  # the run's whole artifact folder
    assert _tree(whole.path) == {"file.txt": FILE, "big.bin": BIG,
                                 **{f"folder/{k}": v for k, v in FOLDER.items()},
                                 "model/MLmodel": MLMODEL[1],
                                 "model/weights.bin": bytes([1]) * 1000}


# -- models:/ ----------------------------------------------------------------------------


@pytest.mark.parametrize("mode", MODES)
def test_model_versions_are_immutable(env, monkeypatch, mode):
    _, model = _mode_env(monkeypatch, env, mode)
    one, _ = resolve(f"models:/{model}/1/MLmodel")  # registered from a run's path
    assert one.path.read_bytes() == MLMODEL[1]
    two, _ = resolve(f"models:/{model}/2")  # an MLflow 3 logged model: a folder
    assert two.tree and _tree(two.path) == {"MLmodel": MLMODEL[2],
                                            "weights.bin": bytes([2]) * 1000}
    assert env.gate.hits and (env.store.connections > 0) == (mode == "direct")
    env.gate.reset()
    env.store.reset()
    for identifier, first in ((f"models:/{model}/1/MLmodel", one),
                              (f"models:/{model}/2", two)):
        again, _ = resolve(identifier)
        assert again.cached and again.sha256 == first.sha256
    # a version cannot change: the cached answer needs no request at all
    assert env.gate.hits == [] and env.store.connections == 0


@pytest.mark.parametrize("mode", MODES)
def test_alias_names_its_version(env, monkeypatch, mode):
    _, model = _mode_env(monkeypatch, env, mode)
    got, _ = resolve(f"models:/{model}@champion")
    assert got.identifier == f"models:/{model}/1" and got.pinned_from == f"models:/{model}@champion"
    assert got.tree and _tree(got.path)["MLmodel"] == MLMODEL[1]
    env.gate.reset()
    again, _ = resolve(f"models:/{model}@champion/MLmodel")
    assert again.identifier == f"models:/{model}/1/MLmodel"
    assert again.path.read_bytes() == MLMODEL[1]
    # aliases move: looked up every time (the version's bytes were cached by the tree)
    assert _gets(env, "/registered-models/alias")


def test_moved_alias_is_noticed(env, monkeypatch):
    _, model = _mode_env(monkeypatch, env, "proxied")
    before, _ = resolve(f"models:/{model}@champion/MLmodel")
    assert before.identifier == f"models:/{model}/1/MLmodel"
    with _client_env(env.seaweed):
        env.client().set_registered_model_alias(model, "champion", "2")
    try:
        after, _ = resolve(f"models:/{model}@champion/MLmodel")
    finally:
        with _client_env(env.seaweed):
            env.client().set_registered_model_alias(model, "champion", "1")
    assert after.identifier == f"models:/{model}/2/MLmodel" and not after.cached
    assert after.path.read_bytes() == MLMODEL[2]
    assert after.pinned_from == f"models:/{model}@champion/MLmodel"
    latest, _ = resolve(f"models:/{model}/latest/MLmodel")
    assert latest.identifier == f"models:/{model}/2/MLmodel"


def test_offline(env, monkeypatch):
    _, model = _mode_env(monkeypatch, env, "proxied")
    resolve(f"models:/{model}/1/MLmodel")
    monkeypatch.setenv("HOSTKIT_OFFLINE", "1")
    env.gate.reset()
    cached, _ = resolve(f"models:/{model}/1/MLmodel")
    assert cached.cached and env.gate.hits == []
    with pytest.raises(OfflineMiss, match="alias 'champion'"):
        resolve(f"models:/{model}@champion/MLmodel")


# -- changes, cuts, redirects ---------------------------------------------------------------


@pytest.mark.parametrize("mode", ("proxied", "direct"))
def test_logged_again_is_noticed(env, monkeypatch, mode):
    run, _ = _mode_env(monkeypatch, env, mode)
    path = env.data / f"again-{mode}"
    path.mkdir()
    (path / "notes.txt").write_bytes(b"first\n")
    with _client_env(env.seaweed):
        env.client().log_artifact(run, str(path / "notes.txt"))
    first, _ = resolve(f"runs:/{run}/notes.txt")
    # direct: the store's ETag sees other bytes of the same size; through the proxy only
    # the listed size is compared (MLflow keeps no digest), so the new bytes differ in size
    (path / "notes.txt").write_bytes(b"later\n" if mode == "direct" else b"rewritten\n")
    with _client_env(env.seaweed):
        env.client().log_artifact(run, str(path / "notes.txt"))
    second, _ = resolve(f"runs:/{run}/notes.txt")
    assert second.path.read_bytes() == (path / "notes.txt").read_bytes()
    assert second.changed_from and second.changed_from["sha256"] == first.sha256


def test_proxy_cut_starts_over(env, monkeypatch, caplog):
    run, _ = _mode_env(monkeypatch, env, "proxied")
    env.gate.cut_once["/get-artifact"] = 64 << 10
    with caplog.at_level(logging.INFO, logger="hostkit"):
        got, _ = resolve(f"runs:/{run}/big.bin")
    assert got.sha256 == _sha(BIG)
    assert len(_gets(env, "/get-artifact")) == 2  # cut once, then the whole file again
    assert "starting over from byte 0" in caplog.text


@pytest.mark.parametrize("mode", ("direct", "proxied"))
def test_a_cut_resumes_only_from_the_store(env, monkeypatch, mode):
    run, _ = _mode_env(monkeypatch, env, mode)
    monkeypatch.setenv("HOSTKIT_RETRIES", "0")
    # the relay reads up to 256 KiB at a time: some of the body comes before the cut
    if mode == "direct":
        env.store.cut_after = 700 << 10
    else:
        env.gate.cut_once["/get-artifact"] = 700 << 10
    with pytest.raises(TransientError):
        resolve(f"runs:/{run}/big.bin")
    parts = [p.stat().st_size
             for p in (Path(os.environ["HOSTKIT_CACHE_DIR"]) / "tmp").glob("*.part")]
    env.store.reset()
    got, stats = resolve(f"runs:/{run}/big.bin")
    assert got.sha256 == _sha(BIG)
    if mode == "direct":  # the store's ETag vouches for the bytes kept: only the rest comes
        (kept,) = parts
        assert kept > 0 and stats["bytes_from_origin"] == len(BIG) - kept
    else:  # nothing to resume against: nothing kept, all of it again
        assert parts == [] and stats["bytes_from_origin"] == len(BIG)


def test_redirect_elsewhere_loses_the_credentials(env, monkeypatch):
    run, _ = _mode_env(monkeypatch, env, "proxied")
    env.gate.redirect = ("/get-artifact", env.catcher.url)
    got, _ = resolve(f"runs:/{run}/file.txt")
    assert got.path.read_bytes() == FILE
    assert env.catcher.hits and set(env.catcher.auth_seen) == {None}
    assert set(env.gate.auth_seen) == {f"Bearer {TOKEN}"}


# -- credentials and secrets -----------------------------------------------------------------


def test_credentials(env, monkeypatch):
    run, _ = _mode_env(monkeypatch, env, "proxied")
    identifier = f"runs:/{run}/file.txt"
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    with pytest.raises(CredentialsNeeded, match="needs credentials") as needed:
        resolve(identifier)
    assert "MLFLOW_TRACKING_TOKEN" in needed.value.hint
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "not-" + TOKEN)
    with pytest.raises(CredentialsRefused, match="refused the credentials") as refused:
        resolve(identifier)
    assert TOKEN not in str(refused.value)
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", "x" + PASSWORD)
    with pytest.raises(CredentialsRefused):
        resolve(identifier)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    got, _ = resolve(identifier)  # basic auth
    assert got.path.read_bytes() == FILE
    # credentials in the URI are basic auth too, and never part of the key or the display
    monkeypatch.delenv("MLFLOW_TRACKING_USERNAME")
    monkeypatch.delenv("MLFLOW_TRACKING_PASSWORD")
    monkeypatch.setenv("MLFLOW_TRACKING_URI",
                       env.gate.url.replace("://", f"://{USER}:{PASSWORD}@"))
    from hostkit.resolver import Resolver

    remote = Resolver().remote_for(identifier)
    assert remote.cache_key == f"mlflow+{env.gate.url}/{identifier}"
    assert PASSWORD not in remote.cache_key + remote.display and not remote.anonymous
    env.gate.reset()
    resolve(f"runs:/{run}/folder/a.txt")
    assert env.gate.hits and env.gate.auth_seen[-1].startswith("Basic ")


def test_anonymous_only_without_any_credential(env, monkeypatch):
    from hostkit.resolver import Resolver

    run, _ = _mode_env(monkeypatch, env, "proxied")
    assert not Resolver().remote_for(f"runs:/{run}/file.txt").anonymous  # the token
    monkeypatch.delenv("MLFLOW_TRACKING_TOKEN")
    assert Resolver().remote_for(f"runs:/{run}/file.txt").anonymous
    _mode_env(monkeypatch, env, "direct")  # S3 keys: a direct read is signed
    assert not Resolver().remote_for(f"runs:/{run}/file.txt").anonymous


def test_secrets_never_in_output(env, monkeypatch):
    run, model = _mode_env(monkeypatch, env, "proxied")
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", USER)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", PASSWORD)
    outputs = []
    for args in (("-v", "resolve", "--json", f"runs:/{run}/file.txt"),
                 ("-v", "resolve", f"models:/{model}@champion/MLmodel"),
                 ("-v", "resolve", "--json", f"runs:/{run}/folder")):
        done = run_cli(*args, check=True)
        outputs.append(done.stdout + done.stderr)
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", "wrong-" + TOKEN)
    refused = run_cli("-v", "resolve", f"runs:/{run}/nothing-cached.txt")
    assert refused.returncode != 0 and "refused the credentials" in refused.stderr
    outputs.append(refused.stdout + refused.stderr)
    monkeypatch.setenv("MLFLOW_TRACKING_URI",
                       env.gate.url.replace("://", f"://{USER}:{PASSWORD}@") + "?x=1")
    bad = run_cli("resolve", f"runs:/{run}/file.txt")
    assert bad.returncode != 0 and "MLFLOW_TRACKING_URI" in bad.stderr
    outputs.append(bad.stdout + bad.stderr)
    for text in outputs:
        assert TOKEN not in text and PASSWORD not in text
    cache = Path(os.environ["HOSTKIT_CACHE_DIR"])
    for path in cache.rglob("*"):
        if path.is_file() and not path.is_symlink():
            data = path.read_bytes()
            assert TOKEN.encode() not in data and PASSWORD.encode() not in data, path


# -- what the identifier and the environment must be -------------------------------------------


def test_tracking_uri_is_required(env, monkeypatch):
    run, _ = _mode_env(monkeypatch, env, "proxied")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    with pytest.raises(UsageError, match="MLFLOW_TRACKING_URI is not set"):
        resolve(f"runs:/{run}/file.txt")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///mlflow.db")
    with pytest.raises(UsageError, match="http:// or https://"):
        resolve(f"runs:/{run}/file.txt")
    done = run_cli("resolve", "models:/m-proxied/1")
    assert done.returncode != 0 and "MLFLOW_TRACKING_URI" in done.stderr


@pytest.mark.parametrize("identifier, words", [
    ("models:/m-proxied", "names no version"),
    ("models:/m-proxied/Production", "stages are not supported"),
    ("models:/m-proxied/v1", "not a version number"),
    ("models:/m-proxied@bad.alias", "not an alias"),
    ("runs://abc/file", "host in the identifier"),
    ("runs:/abc//file", "empty"),
    ("runs:/abc/file?x=1", "no query"),
    ("mlflow-artifacts://host:5000/a/b", "host in the identifier"),
])
def test_malformed_identifiers(env, identifier, words):
    with pytest.raises(UsageError, match=words):
        resolve(identifier)


def test_missing_things(env, monkeypatch):
    run, model = _mode_env(monkeypatch, env, "proxied")
    for identifier, words in ((f"runs:/{run}/no/such.txt", "no such artifact"),
                              ("runs:/0123456789abcdef0123456789abcdef/x", "not found"),
                              (f"models:/{model}/9/MLmodel", "not found"),
                              ("models:/no-such-model/1", "not found"),
                              (f"models:/{model}@nobody/MLmodel", "not found")):
        with pytest.raises(NotFound, match=words):
            resolve(identifier)


def test_mlflow_artifacts_paths(env, monkeypatch):
    run, _ = _mode_env(monkeypatch, env, "proxied")
    root = f"mlflow-artifacts:/1/{run}/artifacts"
    got, _ = resolve(f"{root}/folder/a.txt")
    assert got.path.read_bytes() == FOLDER["a.txt"]
    folder, _ = resolve(f"{root}/folder")
    assert _tree(folder.path) == FOLDER
    assert _gets(env, "/api/2.0/mlflow-artifacts/artifacts")



def test_check_says_what_can_change(env, monkeypatch):
    import json

    _, model = _mode_env(monkeypatch, env, "proxied")
    done = run_cli("check", "--json", "--no-download", f"models:/{model}@champion/MLmodel",
                   f"models:/{model}/2/MLmodel")
    alias, version = ({c["name"]: c for c in report["checks"]}
                      for report in json.loads(done.stdout))
    assert alias["permanent"]["ok"] is False
    assert alias["permanent"]["suggestion"] == f"models:/{model}/1/MLmodel"
    assert version["permanent"]["ok"] is True
    assert alias["anonymous"]["ok"] is False and "MedPerf cannot download" in \
        alias["anonymous"]["message"]


def test_artifacts_setting_forces_the_way(env, monkeypatch):
    run, _ = _mode_env(monkeypatch, env, "direct")  # S3 keys set: auto would read the store
    monkeypatch.setenv("HOSTKIT_MLFLOW_ARTIFACTS", "proxy")
    got, _ = resolve(f"runs:/{run}/folder/a.txt")
    assert got.path.read_bytes() == FOLDER["a.txt"]
    assert env.store.connections == 0 and _gets(env, "/get-artifact")
    for key in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(key)
    monkeypatch.setenv("HOSTKIT_MLFLOW_ARTIFACTS", "direct")  # no keys: the store refuses
    with pytest.raises(CredentialsNeeded, match="reading the artifact store directly") as no:
        resolve(f"runs:/{run}/file.txt")
    assert "HOSTKIT_MLFLOW_ARTIFACTS=proxy" in no.value.hint
    monkeypatch.setenv("HOSTKIT_MLFLOW_ARTIFACTS", "sideways")
    with pytest.raises(UsageError, match="HOSTKIT_MLFLOW_ARTIFACTS"):
        resolve(f"runs:/{run}/file.txt")


# -- a server that lies (an aiohttp stand-in: no MLflow server needed) -------------------------

RUN = "0123456789abcdef0123456789abcdef"


@pytest.fixture
def liar(monkeypatch, tmp_path):
    """A stand-in tracking server answering what ``answers[route]`` says (a function of the
    request returning an aiohttp response); every request is counted in ``hits``."""
    from aiohttp import web

    from tests.daemon_fixtures import serve_in_thread

    answers: dict = {
        "/api/2.0/mlflow/runs/get": lambda request: web.json_response(
            {"run": {"info": {"artifact_uri": f"mlflow-artifacts:/1/{RUN}/artifacts"}}}),
    }
    hits: list[str] = []

    def make_app():
        async def handle(request):
            hits.append(request.path_qs)
            answer = answers.get(request.path)
            return answer(request) if answer else web.json_response(
                {"error_code": "RESOURCE_DOES_NOT_EXIST", "message": "no"}, status=404)

        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handle)
        return app

    _clear_cloud_env(monkeypatch, tmp_path)
    monkeypatch.setenv("HOSTKIT_RETRIES", "0")
    _, loop, url = serve_in_thread(make_app, "lying-mlflow")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    yield answers, hits
    loop.call_soon_threadsafe(loop.stop)


def _listing(*files, token=None):
    from aiohttp import web

    return lambda request: web.json_response(
        {"files": list(files), **({"next_page_token": token} if token else {})})


@pytest.mark.parametrize("case, listing, words", [
    ("size not a number", _listing({"path": "f", "is_dir": False, "file_size": "abc"}),
     "size"),
    ("negative size", _listing({"path": "f", "is_dir": False, "file_size": -5}), "size"),
    ("a page token forever", _listing(token="again"), "repeats"),
])
def test_a_lying_listing_is_a_clear_error(liar, case, listing, words):
    answers, hits = liar
    answers["/api/2.0/mlflow/artifacts/list"] = listing
    with pytest.raises(BackendError, match=words) as error:
        resolve(f"runs:/{RUN}/f")
    assert "MLflow" in error.value.hint or "MLFLOW" in error.value.hint
    assert len(hits) < 10


def test_a_folder_listing_itself_is_an_error_not_a_loop(liar):
    from aiohttp import web

    answers, hits = liar
    answers["/api/2.0/mlflow/artifacts/list"] = lambda request: web.json_response(
        {"files": [{"path": request.query.get("path") or "d", "is_dir": True}]})
    with pytest.raises(BackendError, match="listed"):
        resolve(f"runs:/{RUN}/d/")
    assert len(hits) < 10


@pytest.mark.parametrize("answer", [{"run": [1, 2]}, {"run": {"info": "x"}}, {"run": None}])
def test_an_answer_of_another_shape_is_a_clear_error(liar, answer):
    from aiohttp import web

    answers, _ = liar
    answers["/api/2.0/mlflow/runs/get"] = lambda request: web.json_response(answer)
    with pytest.raises(BackendError, match="artifact location"):
        resolve(f"runs:/{RUN}/f")


def test_a_huge_answer_is_refused(liar, monkeypatch):
    from aiohttp import web
    from hostkit_backends import mlflow_api

    answers, _ = liar
    monkeypatch.setattr(mlflow_api, "_MAX_JSON", 1000)
    answers["/api/2.0/mlflow/runs/get"] = lambda request: web.json_response(
        {"run": {"info": {"artifact_uri": "mlflow-artifacts:/x", "pad": "x" * 5000}}})
    with pytest.raises(BackendError, match="more than"):
        resolve(f"runs:/{RUN}/f")


def test_a_login_page_and_a_dead_server(liar, monkeypatch):
    from aiohttp import web

    from hostkit.errors import Unreachable

    answers, _ = liar
    answers["/api/2.0/mlflow/runs/get"] = lambda request: web.Response(
        text="<html><form><input type=password name=pw></form></html>",
        content_type="text/html")
    with pytest.raises(CredentialsNeeded, match="login page") as page:
        resolve(f"runs:/{RUN}/f")
    assert "MLFLOW_TRACKING_TOKEN" in page.value.hint
    from tests.servers import free_port

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://{LOOPBACK}:{free_port()}")
    monkeypatch.setenv("MLFLOW_TRACKING_TOKEN", TOKEN)
    with pytest.raises(Unreachable) as dead:
        resolve(f"runs:/{RUN}/f")
    assert TOKEN not in str(dead.value)
