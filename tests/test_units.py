"""Small pure pieces: hash strings, identifiers, redaction, settings, sizes."""

from __future__ import annotations

import json

import pytest

from hostkit import errors
from hostkit.formatting import parse_size
from hostkit.hashes import parse_hash
from hostkit.identifiers import parse_identifier
from hostkit.redact import redact_text, redact_url
from hostkit.settings import load_settings


def test_parse_hash_forms():
    assert str(parse_hash("A" * 64)) == "sha256:" + "a" * 64
    assert parse_hash("b" * 40).alg == "sha1"
    assert parse_hash("MD5:" + "c" * 32).alg == "md5"
    assert parse_hash("sha-512:" + "d" * 128).alg == "sha512"
    for bad in ("", "abc", "sha256:" + "z" * 64, "crc32:1234abcd", "sha1:" + "a" * 64):
        with pytest.raises(errors.BadHash):
            parse_hash(bad)


def test_parse_identifier():
    ref = parse_identifier("  direct:https://h/x.bin ")
    assert (ref.scheme, ref.identifier) == ("https", "https://h/x.bin")
    assert parse_identifier("synapse:syn123").rest == "syn123"
    assert parse_identifier("S3://b/k").identifier == "s3://b/k"
    for bad in ("", "no-scheme", "direct:ftp://x", "https://h/a b"):
        with pytest.raises(errors.UsageError):
            parse_identifier(bad)


def test_redaction():
    url = "https://u:pw@h/p?X-Amz-Signature=abc&X-Amz-Credential=AKIA&versionId=3"
    out = redact_url(url)
    assert "pw" not in out and "abc" not in out and "AKIA" not in out and "versionId=3" in out
    assert "hunter2" not in redact_text("failed: password=hunter2 at https://a:hunter2@h/")
    assert "KEYVALUE" not in redact_text("AccountKey=KEYVALUE;BlobEndpoint=x")
    assert "tok123" not in redact_text("sent Authorization: Bearer tok123 to h")


def test_settings_layering(tmp_path, monkeypatch):
    cfg = tmp_path / "config.toml"
    cfg.write_text('retries = 2\noffline = true\ncache_dir = "~/somewhere"\n')
    monkeypatch.setenv("HOSTKIT_CONFIG", str(cfg))
    monkeypatch.delenv("HOSTKIT_CACHE_DIR")
    monkeypatch.setenv("HOSTKIT_RETRIES", "7")
    s = load_settings()
    assert s.retries == 7 and s.offline is True and s.cache_dir.name == "somewhere"
    cfg.write_text("retires = 2\n")
    with pytest.raises(errors.UsageError, match="retires"):
        load_settings()
    cfg.write_text("retries = [")
    with pytest.raises(errors.UsageError, match="cannot read config"):
        load_settings()


def test_fast_path_cache_dir_matches_platformdirs(monkeypatch):
    from platformdirs import user_cache_path, user_config_path

    from hostkit.fastpath import _user_dir

    monkeypatch.delenv("XDG_CONFIG_HOME")
    assert _user_dir("XDG_CACHE_HOME", "~/.cache") == str(user_cache_path("hostkit",
                                                                          appauthor=False))
    assert _user_dir("XDG_CONFIG_HOME", "~/.config") == str(user_config_path("hostkit",
                                                                            appauthor=False))


def test_parse_size():
    assert parse_size("10G") == 10 << 30 and parse_size("1.5GiB") == 3 << 29
    assert parse_size("500m") == 500 << 20 and parse_size("0") == 0
    with pytest.raises(ValueError, match="cannot read size"):  # the CLI's exit 2: test_cli
        parse_size("lots")


def test_parts_waiting_for_their_turn_read_ahead_only_their_share():
    """ordered_parts: memory stays flat whatever the part size; bytes come out in order."""
    import asyncio
    import collections

    from hostkit.backend import ordered_parts

    MiB, step = 1 << 20, 64 << 10
    data = bytes(range(256)) * (16 * MiB // 256)
    pulled: collections.Counter = collections.Counter()

    async def fetch(a, b):
        for off in range(a, b, step):
            pulled[a] += min(step, b - off)
            yield data[off:min(off + step, b)]
            await asyncio.sleep(0)

    async def go():
        parts = ordered_parts(fetch, 0, len(data), 4 * MiB, 4, read_ahead=3 * MiB)
        out = bytearray(await parts.__anext__())
        for _ in range(500):  # the head waits for us; the other three read ahead meanwhile
            await asyncio.sleep(0)
        ahead = dict(pulled)
        async for chunk in parts:
            out += chunk
        return ahead, bytes(out)

    ahead, out = asyncio.run(go())
    assert out == data
    # each waiting part stopped at its share of the read-ahead (1 MiB of its 4 MiB)
    assert {a: n for a, n in ahead.items() if a} == {4 * MiB: MiB, 8 * MiB: MiB, 12 * MiB: MiB}
    assert sum(pulled.values()) == len(data)


def test_proxy_from_environment_honours_no_proxy(monkeypatch):
    from hostkit.remote import Context

    monkeypatch.setenv("HTTPS_PROXY", "http://proxy.invalid:3128")
    monkeypatch.setenv("NO_PROXY", "internal.example")
    assert Context.proxy_for("https://files.example/x")["proxy"].host == "proxy.invalid"
    assert Context.proxy_for("https://internal.example/x") == {}
    assert Context.proxy_for("http://files.example/x") == {}  # no HTTP_PROXY set


def test_retry_waits_back_off_and_honour_retry_after(monkeypatch):
    """The one rule of the resolver's and a folder listing's retries."""
    from hostkit.backend import retry_delay, retry_limit
    from hostkit.settings import Settings

    settings = Settings(retries=5, backoff=0.5, max_backoff=3.0)
    busy = errors.TransientError("busy", hint="h")
    assert retry_limit(busy, settings) == 5
    assert retry_limit(errors.Unreachable("refused", hint="h"), settings) == 2
    monkeypatch.setattr("random.random", lambda: 0.0)  # the jitter's two ends
    assert [retry_delay(busy, n, settings) for n in (1, 2, 3, 4)] == [0.25, 0.5, 1.0, 1.5]
    monkeypatch.setattr("random.random", lambda: 0.999)
    assert [round(retry_delay(busy, n, settings), 2) for n in (1, 4)] == [0.5, 3.0]
    told = errors.TransientError("busy", hint="h", retry_after=8.0)  # past max_backoff too
    monkeypatch.setattr("random.random", lambda: 0.0)
    assert retry_delay(told, 1, settings) == 8.0  # never sooner than the server asked
    monkeypatch.setattr("random.random", lambda: 0.999)
    assert 8.0 < retry_delay(told, 1, settings) <= 10.0


def test_an_errors_json_form_never_carries_a_secret_in_its_suggestion():
    """--json and the daemon print HostkitError.to_dict(); a backend's suggestion is made
    from what it was given, which may hold userinfo or a token."""
    from hostkit.errors import NotDirectLink

    exc = NotDirectLink("a share page", hint="use the direct form",
                        suggestion="https://me:PW@files.example/m.bin?dl=1&token=SECRETTOK")
    shown = json.dumps(exc.to_dict())
    assert "PW" not in shown and "SECRETTOK" not in shown
    assert exc.to_dict()["suggestion"].startswith("https://files.example/m.bin?dl=1&token=")
    assert exc.suggestion.endswith("SECRETTOK")  # kept for the program itself (check --fix)
