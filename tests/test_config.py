"""Configuration: defaults, TOML, environment (later wins), and errors that say what to do."""

from __future__ import annotations

import dataclasses
import tomllib
from pathlib import Path

import pytest

from etl.config import SECTIONS, Settings, all_keys, env_name, load_settings
from etl.errors import ConfigError

EXAMPLE = Path(__file__).parent.parent / "config.example.toml"


def test_defaults_match_the_interface() -> None:
    s = load_settings(environ={}, path=None)
    assert s.database.url == "sqlite:///referrals.db"
    assert s.api.base_url == "https://api.partner.microsoft.com/v1.0"
    assert (s.api.timeout_seconds, s.api.concurrency, s.api.max_requests_per_second) == (30, 8, 0)
    assert s.api.max_attempts == 6
    assert s.auth.mode == "refresh_token"
    assert s.auth.scope == "https://api.partner.microsoft.com/.default"
    assert (s.sync.batch_size, s.sync.discover) == (100, True)
    assert (s.sync.refresh_open_after, s.sync.refresh_closed_after) == (3600, 7 * 86400)
    assert s.schedule.cron == "*/30 * * * *"


def test_example_file_lists_every_key_with_its_default() -> None:
    document = tomllib.loads(EXAMPLE.read_text("utf-8"))
    text = EXAMPLE.read_text("utf-8")
    defaults = Settings()
    for section, f in all_keys():
        if f.metadata.get("secret"):
            assert env_name(section, f.name) in text  # documented as a variable
            continue
        if f.name == "token_cache_path":
            assert "token_cache_path" in text
            continue
        assert f.name in document[section], f"[{section}] {f.name} missing from the example"
    loaded = load_settings(EXAMPLE, environ={})
    for section in SECTIONS:
        ours = dataclasses.replace(getattr(loaded, section))
        theirs = getattr(defaults, section)
        assert ours == theirs, section


def test_environment_wins_over_file(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_text('[api]\nconcurrency = 4\n[sync]\nrefresh_open_after = "2h"\n')
    s = load_settings(path, environ={"REFERRALS_ETL_API_CONCURRENCY": "12"})
    assert s.api.concurrency == 12
    assert s.sync.refresh_open_after == 7200


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        (
            "[api]\nconcurrency = 0\n",
            {},
            "c.toml: [api] concurrency must be a whole number from 1 to 256, got 0",
        ),
        ("[api]\nconcurency = 3\n", {}, "c.toml: unknown key [api] concurency"),
        ("[nope]\n", {}, "unknown section [nope]"),
        (
            "",
            {"REFERRALS_ETL_API_CONCURRENCY": "many"},
            "environment variable REFERRALS_ETL_API_CONCURRENCY: [api] concurrency must be",
        ),
        (
            "",
            {"REFERRALS_ETL_API_CONCURENCY": "3"},
            "REFERRALS_ETL_API_CONCURENCY is not a setting",
        ),
        (
            '[auth]\nmode = "password"\n',
            {},
            "[auth] mode must be one of refresh_token, device_code, access_token",
        ),
        ('[sync]\nrefresh_open_after = "soon"\n', {}, "must be a duration such as 90s"),
        ('[auth]\nclient_secret = "x"\n', {}, "is a secret and is not read from the file"),
        ("[api\n", {}, "not valid TOML"),
    ],
)
def test_errors_name_key_source_and_valid_values(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=env)
    assert message in str(caught.value)
    assert caught.value.exit_code == 2


def test_secrets_from_environment_or_file_never_show(tmp_path: Path) -> None:
    secret_file = tmp_path / "secret"
    secret_file.write_text("s3cr3t-from-file\n")
    path = tmp_path / "c.toml"
    path.write_text(f'[auth]\nclient_secret_file = "{secret_file}"\n')
    s = load_settings(path, environ={"REFERRALS_ETL_AUTH_REFRESH_TOKEN": "rt-value"})
    assert s.auth.client_secret is not None and s.auth.client_secret.reveal() == "s3cr3t-from-file"
    assert s.auth.refresh_token is not None and s.auth.refresh_token.reveal() == "rt-value"
    assert "s3cr3t" not in repr(s) and "rt-value" not in repr(s)


def test_database_password_is_hidden_in_errors() -> None:
    with pytest.raises(ConfigError) as caught:
        load_settings(
            environ={"REFERRALS_ETL_DATABASE_URL": "x", "REFERRALS_ETL_API_TIMEOUT_SECONDS": "-1"}
        )
    assert "timeout_seconds" in str(caught.value)


def test_a_byte_order_mark_is_accepted_and_a_binary_file_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "c.toml"
    path.write_bytes(b"\xef\xbb\xbf[api]\nconcurrency = 4\n")
    assert load_settings(path, environ={}).api.concurrency == 4
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR\xff\xfe")
    with pytest.raises(ConfigError, match=r"c.toml: not a TOML text file \(byte 0 is not UTF-8\)"):
        load_settings(path, environ={})
    secret = tmp_path / "secret"
    secret.write_bytes(b"\xef\xbb\xbfs3cr3t\n")
    path.write_text(f'[auth]\nclient_secret_file = "{secret}"\n')
    loaded = load_settings(path, environ={}).auth.client_secret
    assert loaded is not None and loaded.reveal() == "s3cr3t"
    secret.write_bytes(b"\xff\xfes\x00")
    with pytest.raises(ConfigError, match="is not UTF-8 text"):
        load_settings(path, environ={})


@pytest.mark.parametrize(
    ("toml", "env", "message"),
    [
        ("[api]\nmax_body_bytes = 1e400\n", {}, "[api] max_body_bytes must be a whole number"),
        ("[api]\ntimeout_seconds = inf\n", {}, "[api] timeout_seconds must be a number"),
        ("[api]\ntimeout_seconds = nan\n", {}, "[api] timeout_seconds must be a number"),
        ("", {"REFERRALS_ETL_API_MAX_ATTEMPTS": "1e400"}, "[api] max_attempts must be"),
        ("[sync]\nlock_lease = 0\n", {}, "[sync] lock_lease must be a duration"),
        ('[sync]\nlock_lease = "2s"\n', {}, "at least 3s"),
        ('[webhook]\nlock_lease = "2s"\n', {}, "at least 3s"),
        ("[sync]\nretry_backoff_max = 1e400\n", {}, "[sync] retry_backoff_max must be"),
        ('[sync]\nrefresh_open_after = "' + "9" * 400 + '"\n', {}, "refresh_open_after must be"),
        ('[api]\nbase_url = "not a url"\n', {}, "[api] base_url must be an http:// or https://"),
        ('[api]\nbase_url = "ftp://h/v1.0"\n', {}, "[api] base_url must be an http"),
        ('[api]\nbase_url = "https://h:port/v1.0"\n', {}, "[api] base_url must be an http"),
        (
            '[database]\nurl = "postgresql://u:pw@h:notaport/db"\n',
            {},
            "[database] url must be a database URL (a port, when given, is a number",
        ),
    ],
)
def test_values_that_make_no_sense_are_configuration_errors(
    tmp_path: Path, toml: str, env: dict[str, str], message: str
) -> None:
    path = tmp_path / "c.toml"
    path.write_text(toml)
    with pytest.raises(ConfigError) as caught:
        load_settings(path, environ=env)
    assert message in str(caught.value)
    assert "pw" not in str(caught.value)
    assert len(str(caught.value).splitlines()) == 1
