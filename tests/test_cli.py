"""The command line: output forms, exit codes, cache management, plugins."""

from __future__ import annotations

import hashlib
import json
import os
import stat
import subprocess
import sys
import textwrap
import time

from tests.conftest import run_cli
from tests.servers import free_port
from tests.test_resolve import data


def test_resolve_prints_path_then_json(origin, settings):
    sha = origin.add("w.bin", data(10_000, 30))
    url = f"{origin.url}/f/w.bin"
    plain = run_cli("resolve", url, "--hash", f"sha256:{sha}", check=True)
    assert plain.stdout.strip() == str(settings.cache_dir / "blobs" / "sha256" / sha)
    out = json.loads(run_cli("resolve", url, sha, "--json", check=True).stdout)
    assert {k: out[k] for k in ("sha256", "size", "cached", "identifier")} == {
        "sha256": sha, "size": 10_000, "cached": True, "identifier": url}


def test_fast_path_and_full_path_print_the_same(origin):
    sha = origin.add("same.bin", data(1000, 31))
    url = f"{origin.url}/f/same.bin"
    run_cli("resolve", url, sha, check=True)
    fast = json.loads(run_cli("resolve", f"direct:{url}", sha, "--json", check=True).stdout)
    full = json.loads(run_cli("resolve", f"direct:{url}", sha, "--json", "--offline",
                              check=True).stdout)  # --offline is not on the fast path
    assert fast == full
    signed = f"{url}?X-Amz-Signature=SECRETSIG"
    fast = json.loads(run_cli("resolve", signed, sha, "--json", check=True).stdout)
    full = json.loads(run_cli("resolve", signed, sha, "--json", "--offline", check=True).stdout)
    assert fast == full and "SECRETSIG" not in fast["identifier"]


def test_trust_on_first_use_prints_the_hash_to_pin(origin):
    sha = origin.add("tofu.bin", data(500, 32))
    proc = run_cli("resolve", f"{origin.url}/f/tofu.bin", check=True)
    assert f"sha256:{sha}" in proc.stderr and "--hash" in proc.stderr


def test_exit_codes_and_messages(origin):
    origin.add("e.bin", data(100, 33))
    cases = [
        (["resolve", "nope"], 2, "not an identifier"),
        (["resolve", "ftp://x/y"], 2, "accepted forms"),
        (["resolve", f"{origin.url}/f/e.bin", "sha256:12"], 2, "64 hex digits"),
        (["resolve", f"{origin.url}/f/e.bin", "0" * 64], 3, "hash mismatch"),
        (["resolve", f"{origin.url}/f/missing"], 4, "not found"),
        (["resolve", f"{origin.url}/page"], 4, "web page"),
        (["resolve", f"{origin.url}/f/other.bin", "--offline"], 5, "offline"),
        (["resolve", f"{origin.url}/f/e.bin", "--require-hash"], 2, "hash is required"),
        (["cache", "info", "nothing-like-this"], 2, "nothing in the cache"),
        (["cache", "prune", "--max-size", "lots"], 2, "cannot read size"),
        (["hash", "/nonexistent/file"], 2, "cannot read"),
        (["hash", "README.md", "--alg", "foo"], 2, "invalid choice"),
    ]
    for args, code, text in cases:
        proc = run_cli(*args)
        assert proc.returncode == code, (args, proc.returncode, proc.stderr)
        assert text in proc.stderr, (args, proc.stderr)
        assert "Traceback" not in proc.stderr


def test_json_errors_are_machine_readable(origin):
    proc = run_cli("resolve", f"{origin.url}/f/missing", "--json")
    assert proc.returncode == 4
    assert json.loads(proc.stdout)["error"] == "not_found"


def test_env_switches_offline_and_strict(origin):
    origin.add("env.bin", data(100, 34))
    url = f"{origin.url}/f/env.bin"
    assert run_cli("resolve", url, env={"HOSTKIT_REQUIRE_HASH": "1"}).returncode == 2
    assert run_cli("resolve", url, env={"HOSTKIT_OFFLINE": "1"}).returncode == 5
    assert origin.hits == []


def test_secrets_never_printed(origin):
    secret = "s3cr3t-PASSWORD-value"
    proc = run_cli("resolve", f"http://alice:{secret}@127.0.0.1:1/x?token={secret}", "--json")
    assert proc.returncode != 0
    assert secret not in proc.stdout + proc.stderr


def test_hash_command(tmp_path):
    f = tmp_path / "f.bin"
    f.write_bytes(b"hello")
    out = run_cli("hash", f, "--alg", "sha256", "--alg", "md5", check=True).stdout
    assert f"sha256:{hashlib.sha256(b'hello').hexdigest()}" in out
    assert f"md5:{hashlib.md5(b'hello').hexdigest()}" in out


def test_cache_ls_info_pin_prune_rm(origin, settings):
    shas = {}
    for i, name in enumerate(("one", "two", "three")):
        shas[name] = origin.add(name, data(100_000, 40 + i))
        run_cli("resolve", f"{origin.url}/f/{name}", shas[name], check=True)
        time.sleep(0.05)  # distinct access times
    listing = json.loads(run_cli("cache", "ls", "--json", check=True).stdout)
    assert listing["total_bytes"] == 300_000 and len(listing["entries"]) == 3
    info = json.loads(run_cli("cache", "info", shas["two"][:10], "--json", check=True).stdout)
    assert info["entries"][0]["identifier"].endswith("/f/two")
    run_cli("cache", "pin", f"{origin.url}/f/one", check=True)  # oldest, but pinned
    pruned = json.loads(run_cli("cache", "prune", "--max-size", "250K", "--json",
                                check=True).stdout)
    assert pruned["evicted"] == [shas["two"]] and pruned["total_bytes"] == 200_000
    pruned = json.loads(run_cli("cache", "prune", "--max-size", "0", "--json", check=True).stdout)
    assert pruned["evicted"] == [shas["three"]]  # the pinned one survives
    assert (settings.cache_dir / "blobs" / "sha256" / shas["one"]).exists()
    run_cli("cache", "unpin", shas["one"], check=True)
    removed = json.loads(run_cli("cache", "rm", shas["one"], "--json", check=True).stdout)
    assert removed["removed_blobs"] == [shas["one"]]
    assert os.listdir(settings.cache_dir / "blobs" / "sha256") == []


def test_cache_verify_finds_and_removes_corruption(origin, settings):
    sha = origin.add("v.bin", data(5000, 50))
    run_cli("resolve", f"{origin.url}/f/v.bin", sha, check=True)
    assert run_cli("cache", "verify").returncode == 0
    blob = settings.cache_dir / "blobs" / "sha256" / sha
    blob.chmod(stat.S_IWUSR | stat.S_IRUSR)
    blob.write_bytes(b"tampered" + blob.read_bytes()[8:])
    report = run_cli("cache", "verify", "--json")
    assert report.returncode == 8
    assert json.loads(report.stdout)["problems"][0]["sha256"] == sha
    assert not blob.exists()
    again = run_cli("resolve", f"{origin.url}/f/v.bin", sha, "--json", check=True)
    assert json.loads(again.stdout)["cached"] is False  # fetched afresh, verified


def test_help_explains_commands():
    out = run_cli("--help", check=True).stdout
    for word in ("resolve", "hash", "cache", "plugins", "demo"):
        assert word in out
    assert "synapse:syn123" in run_cli("resolve", "--help", check=True).stdout


def _third_party(tmp_path, modules: dict[str, str]) -> dict[str, str]:
    """Install ``modules`` (entry-point name -> module source) as one plugin distribution;
    the environment that makes ``hostkit`` find it."""
    site = tmp_path / "site"
    dist = site / "broken_backend-1.0.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-backend\nVersion: 1.0\n")
    (dist / "entry_points.txt").write_text("[hostkit]\n" + "".join(
        f"{name} = {name}_backend\n" for name in modules))
    for name, source in modules.items():
        (site / f"{name}_backend.py").write_text(textwrap.dedent(source))
    return {"PYTHONPATH": os.pathsep.join([str(site), *sys.path])}


def test_broken_third_party_plugin_is_named_and_isolated(tmp_path, origin):
    env = _third_party(tmp_path, {"broken": "raise ImportError('needs libfoo')\n", "crashy": """
        from hostkit.hookspecs import hookimpl

        @hookimpl(tryfirst=True)
        def hostkit_resolve(ref, context):
            raise RuntimeError("bug in crashy")
    """})
    proc = run_cli("plugins", "--json", env=env)
    report = json.loads(proc.stdout)
    assert "broken" in report["broken"] and "needs libfoo" in report["broken"]["broken"]
    assert any(b["backend"] == "http" for b in report["backends"])
    sha = origin.add("ok.bin", data(100, 51))
    resolved = run_cli("resolve", f"{origin.url}/f/ok.bin", sha, env=env)
    assert resolved.returncode == 0, resolved.stderr
    assert "crashy" in resolved.stderr and "broken" in resolved.stderr


#: A plugin whose exception quotes the identifier it was given, as written.
_QUOTING_PLUGIN = {"crashy": """
    from hostkit.hookspecs import hookimpl

    @hookimpl(tryfirst=True)
    def hostkit_resolve(ref, context):
        raise RuntimeError(f"cannot read {ref.identifier}")
"""}


def test_log_lines_never_carry_a_secret(tmp_path, origin):
    """A plugin's exception quoting the identifier as given (userinfo, a signature) is
    logged on stderr, and with -v a traceback too: every log line is redacted."""
    env = _third_party(tmp_path, _QUOTING_PLUGIN)
    sha = origin.add("logged.bin", data(100, 52))
    host = origin.url.split("://", 1)[1]
    signed = f"http://me:PASSWORD1@{host}/f/logged.bin?X-Amz-Signature=SECRETSIG"
    for args in (("resolve", signed, sha), ("-v", "resolve", signed, f"{signed}&n=2")):
        proc = run_cli(*args, env=env)
        assert proc.returncode == 0, proc.stderr
        assert "crashy" in proc.stderr and "cannot read http://" in proc.stderr
        for secret in ("PASSWORD1", "SECRETSIG"):
            assert secret not in proc.stderr + proc.stdout, (args, proc.stderr)


def test_api_users_never_see_a_plugins_secret_quote_either(tmp_path, origin):
    """The same plugin through the Python API: its failure as recorded (``plugins
    --json``'s ``broken``) and as logged by the library is redacted too."""
    env = _third_party(tmp_path, _QUOTING_PLUGIN)
    sha = origin.add("api-logged.bin", data(100, 53))
    host = origin.url.split("://", 1)[1]
    signed = f"http://me:PASSWORD2@{host}/f/api-logged.bin?X-Amz-Signature=SECRETSIG2"
    script = ("import json, sys, hostkit\n"
              "from hostkit.plugins import load_plugins\n"
              "hostkit.resolve(sys.argv[1], sys.argv[2])\n"
              "print(json.dumps(load_plugins().failures))\n")
    proc = subprocess.run([sys.executable, "-c", script, signed, sha], capture_output=True,
                          text=True, env={**os.environ, **env}, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "cannot read http://" in json.loads(proc.stdout)["crashy"]
    for secret in ("PASSWORD2", "SECRETSIG2"):
        assert secret not in proc.stdout + proc.stderr, proc.stdout + proc.stderr


def test_demo_runs_offline_and_shows_hits(tmp_path):
    proc = run_cli("demo", "--json", check=True)
    steps = {e["step"].split()[0] + " " + e["step"].split()[-1]: e
             for e in json.loads(proc.stdout) if "path" in e}
    assert "downloaded" in steps["first weights.bin"]["message"]
    assert "cache hit" in steps["again weights.bin"]["message"]
    assert "trust on first use" in steps["first parameters.yaml"]["message"]
    assert any(e["step"] == "refused" for e in json.loads(proc.stdout))


def test_prune_drops_only_old_abandoned_partials(settings):
    from hostkit.store.cache import Cache

    cache = Cache(settings.cache_dir)
    cache.total_size()  # creates the layout
    dead = 2 ** 22 + 11
    old = settings.cache_dir / "tmp" / f"{'a' * 32}.{dead}-0001.part"
    young = settings.cache_dir / "tmp" / f"{'b' * 32}.{dead}-0002.part"
    mine = settings.cache_dir / "tmp" / f"{'c' * 32}.{os.getppid()}-0003.part"  # alive owner
    for p in (old, young, mine):
        p.write_bytes(b"partial")
    week_ago = time.time() - 7 * 86400
    os.utime(old, (week_ago, week_ago))
    os.utime(mine, (week_ago, week_ago))
    run_cli("cache", "prune", "--max-size", "0", check=True)
    assert not old.exists() and young.exists() and mine.exists()


def test_demo_assets_are_the_same_bytes_every_time():
    from hostkit.demo import sample_files

    first = {name: hashlib.sha256(b).hexdigest() for name, b in sample_files().items()}
    time.sleep(1.1)  # gzip headers carry seconds
    assert {name: hashlib.sha256(b).hexdigest() for name, b in sample_files().items()} == first


def test_a_cached_hash_never_answers_for_an_identifier_its_backend_refuses(origin):
    """Fast path and full path both check the identifier before any cached answer."""
    sha = origin.add("rules.bin", b"r" * 5000)
    run_cli("resolve", f"{origin.url}/f/rules.bin", sha, check=True)  # the blob is cached
    unknown = run_cli("resolve", "ftp://x/y", sha)
    assert unknown.returncode == 2 and "no backend accepts" in unknown.stderr
    # (its commit is looked up to name it in the refusal: no GitHub here, refused all the same)
    branch = run_cli("resolve", "github:owner/repo@main/rules.bin", sha,
                     env={"HOSTKIT_GITHUB_API_URL": f"http://127.0.0.1:{free_port()}"})
    assert branch.returncode == 4 and "branch or tag" in branch.stderr
    never = run_cli("resolve", f"{origin.url}/f/other-name.bin", sha, "--offline")
    assert never.returncode == 0  # a hash held answers for an identifier its backend accepts


def test_the_fast_path_answers_a_warm_hit_without_loading_plugins(origin):
    """The common MedPerf call (identifier + sha256, cached) costs about a Python start-up."""
    import os
    import subprocess
    import sys

    sha = origin.add("fast.bin", data(2000, 33))
    url = f"{origin.url}/f/fast.bin"
    run_cli("resolve", url, sha, check=True)
    probe = ("import sys, hostkit.cli as c; rc = c.main(['resolve', sys.argv[1], sys.argv[2]]); "
             "print('plugins loaded' if 'hostkit.plugins' in sys.modules else 'fast'); "
             "sys.exit(rc)")
    proc = subprocess.run([sys.executable, "-c", probe, url, sha], capture_output=True,
                          text=True, env=os.environ, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[-1] == "fast"
    other = subprocess.run([sys.executable, "-c", probe, "ftp://x/y", sha], capture_output=True,
                           text=True, env=os.environ, timeout=60)
    assert other.returncode == 2 and other.stdout.splitlines()[-1] == "plugins loaded"


def test_a_cold_resolve_loads_no_http_server(origin, tmp_path):
    """The daemon plugin adds its commands on every start; its server (aiohttp.web, about
    0.1 s to import) is loaded only by the daemon itself."""
    import os
    import subprocess
    import sys

    sha = origin.add("cold-light.bin", data(3000, 34))
    probe = ("import sys, hostkit.cli as c; rc = c.main(['resolve', '--quiet', sys.argv[1], "
             "sys.argv[2]]); print(rc, 'aiohttp.web' in sys.modules)")
    proc = subprocess.run([sys.executable, "-c", probe, f"{origin.url}/f/cold-light.bin", sha],
                          capture_output=True, text=True, timeout=60,
                          env={**os.environ, "HOSTKIT_CACHE_DIR": str(tmp_path / "c")})
    assert proc.stdout.split()[-2:] == ["0", "False"], proc.stderr


def test_config_shows_every_setting_and_its_source(isolated_env, monkeypatch):
    (isolated_env / "config.toml").write_text("retries = 7\n[backends.s3]\nanonymous = true\n")
    proc = run_cli("config", "--json", env={"HOSTKIT_OFFLINE": "yes"}, check=True)
    shown = json.loads(proc.stdout)
    assert shown["core"]["retries"]["value"] == "7"
    assert shown["core"]["retries"]["source"].endswith("config.toml")
    assert shown["core"]["offline"] == {"name": "offline", "value": "True",
                                        "source": "HOSTKIT_OFFLINE"}
    assert shown["core"]["read_timeout"]["source"] == "default"
    s3 = next(r for r in shown["backends"] if (r["backend"], r["key"]) == ("s3", "anonymous"))
    assert s3["value"] == "True" and "[backends.s3]" in s3["source"]
    plain = run_cli("config", env={"HOSTKIT_OFFLINE": "1"}, check=True).stdout
    assert "[backends.s3]" in plain and "HOSTKIT_OFFLINE" in plain


def test_a_setting_that_does_not_parse_is_an_error_naming_it(origin):
    sha = origin.add("strict.bin", b"s" * 100)
    run_cli("resolve", f"{origin.url}/f/strict.bin", sha, check=True)
    for args in (("resolve", f"{origin.url}/f/strict.bin", sha), ("config",)):
        proc = run_cli(*args, env={"HOSTKIT_OFFLINE": "ture"})
        assert proc.returncode == 2, proc.stdout
        assert "HOSTKIT_OFFLINE" in proc.stderr and "ture" in proc.stderr
