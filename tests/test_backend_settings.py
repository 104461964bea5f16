"""Backends' own settings: declared through hostkit_settings, read from [backends.NAME] or env.

Every environment variable users set before the settings moved out of the
core keeps working under the same name; a value that does not parse is an
error naming the key.
"""

from __future__ import annotations

import pytest

from hostkit import errors
from hostkit.plugins import load_plugins
from hostkit.remote import Context
from hostkit.settings import Settings, load_settings

#: (backend, key) -> the environment variable users have always set
NAMES = {("s3", "anonymous"): "HOSTKIT_S3_ANONYMOUS",
         ("minio", "insecure_hosts"): "HOSTKIT_MINIO_INSECURE_HOSTS",
         ("gcs", "anonymous"): "HOSTKIT_GCS_ANONYMOUS",
         ("azure", "anonymous"): "HOSTKIT_AZURE_ANONYMOUS",
         ("synapse", "config"): "HOSTKIT_SYNAPSE_CONFIG",
         ("synapse", "endpoint"): "HOSTKIT_SYNAPSE_ENDPOINT",
         ("github", "raw_url"): "HOSTKIT_GITHUB_RAW_URL"}


def context() -> Context:
    return Context(load_settings(), declared=load_plugins().options())


def test_backends_declare_their_settings_under_the_names_users_know():
    options = load_plugins().options()
    for (backend, key), env in NAMES.items():
        assert options[(backend, key)].env == env


def test_backend_settings_left_the_core():
    core = {f for f in Settings.__dataclass_fields__}
    assert not core & {"minio_insecure_hosts", "s3_anonymous", "gcs_anonymous",
                       "azure_anonymous"}
    assert {"part_size", "concurrency"} <= core  # the toolkit's parts reader uses them


def test_environment_config_file_and_defaults(isolated_env, monkeypatch):
    assert context().option("s3", "anonymous") is False
    (isolated_env / "config.toml").write_text(
        '[backends.s3]\nanonymous = true\n[backends.minio]\ninsecure_hosts = "a:9000,b"\n')
    ctx = context()
    assert ctx.option("s3", "anonymous") is True
    assert ctx.option("minio", "insecure_hosts") == "a:9000,b"
    monkeypatch.setenv("HOSTKIT_S3_ANONYMOUS", "0")
    assert context().option("s3", "anonymous") is False  # the environment wins


def test_a_bad_value_names_the_key(isolated_env, monkeypatch):
    (isolated_env / "config.toml").write_text('[backends.gcs]\nanonymous = "ture"\n')
    with pytest.raises(errors.UsageError, match=r"\[backends.gcs\] anonymous") as info:
        context().option("gcs", "anonymous")
    assert "true or false" in str(info.value)
    monkeypatch.setenv("HOSTKIT_AZURE_ANONYMOUS", "maybe")
    with pytest.raises(errors.UsageError, match="HOSTKIT_AZURE_ANONYMOUS"):
        context().option("azure", "anonymous")


def test_a_bad_backend_value_fails_the_resolve_naming_it(isolated_env):
    from tests.conftest import run_cli

    (isolated_env / "config.toml").write_text('[backends.s3]\nanonymous = "ture"\n')
    proc = run_cli("resolve", "s3://bucket/key.bin")
    assert proc.returncode == 2 and "anonymous" in proc.stderr and "ture" in proc.stderr


def test_top_level_keys_of_older_config_files_still_read(isolated_env):
    (isolated_env / "config.toml").write_text('s3_anonymous = true\nretries = 2\n')
    ctx = context()
    assert ctx.option("s3", "anonymous") is True and ctx.settings.retries == 2


def test_the_synapse_and_github_settings_reach_their_backends(isolated_env, monkeypatch):
    from hostkit_backends import github, synapse

    from hostkit.identifiers import parse_identifier

    (isolated_env / "config.toml").write_text(
        '[backends.synapse]\nendpoint = "http://syn.test"\n'
        '[backends.github]\nraw_url = "http://raw.test/"\n')
    ctx = context()
    assert synapse.config_for(ctx).repo == "http://syn.test/repo/v1"
    commit = "0" * 40
    remote = github.hostkit_resolve(parse_identifier(f"github:o/r@{commit}/f.bin"), ctx)
    assert remote.url == f"http://raw.test/o/r/{commit}/f.bin"
    monkeypatch.setenv("HOSTKIT_SYNAPSE_ENDPOINT", "not a url")
    with pytest.raises(errors.UsageError, match="HOSTKIT_SYNAPSE_ENDPOINT"):
        synapse.config_for(context())


def test_a_plugin_setting_that_does_not_parse_fails_every_resolve(origin, isolated_env):
    """Not only a resolve through that backend: the value is checked when plugins load."""
    from tests.conftest import run_cli

    sha = origin.add("plain.bin", b"p" * 100)
    url = f"{origin.url}/f/plain.bin"
    run_cli("resolve", url, sha, check=True)
    bad = run_cli("resolve", url, sha, env={"HOSTKIT_S3_ANONYMOUS": "ture"})  # warm hit too
    assert bad.returncode == 2 and "HOSTKIT_S3_ANONYMOUS" in bad.stderr, bad.stderr
    (isolated_env / "config.toml").write_text("[backends.s3]\nanonymus = true\n")
    typo = run_cli("resolve", url, sha)
    assert typo.returncode == 2 and "anonymus" in typo.stderr and "anonymous" in typo.stderr
    config = run_cli("config")
    assert config.returncode == 2 and "anonymus" in config.stderr


def test_numbers_that_are_not_settings_are_refused_on_every_path(origin):
    from tests.conftest import run_cli

    sha = origin.add("nums.bin", b"n" * 100)
    url = f"{origin.url}/f/nums.bin"
    run_cli("resolve", url, sha, check=True)
    for var, value in (("HOSTKIT_READ_TIMEOUT", "nan"), ("HOSTKIT_RETRIES", "1.5"),
                       ("HOSTKIT_DEADLINE", "inf"), ("HOSTKIT_MIN_RATE", "-5")):
        proc = run_cli("resolve", url, sha, env={var: value})  # a warm hit: the fast path
        assert proc.returncode == 2 and var in proc.stderr, (var, proc.stderr)
