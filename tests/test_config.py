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
