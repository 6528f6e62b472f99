"""``load_settings``: defaults, then the TOML file, then environment variables (later wins)."""

from __future__ import annotations

import dataclasses
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from etl.config.keys import (
    CONFIG_ENV,
    ENV_PREFIX,
    SECTIONS,
    AuthSettings,
    Settings,
    all_keys,
    env_name,
)
from etl.config.values import Secret, convert
from etl.errors import ConfigError

# Variables with the prefix that are not settings keys (tests use their own prefix).
_ENV_NOT_KEYS = ("REFERRALS_ETL_CONFIG", "REFERRALS_ETL_TEST_")


def default_config_path(environ: Mapping[str, str]) -> Path | None:
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV])
    candidate = Path("config.toml")
    return candidate if candidate.is_file() else None


def _read_toml(path: Path) -> dict[str, Any]:
    """The TOML file as a dict; a UTF-8 byte-order mark (Windows editors add one) is accepted."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read configuration file ({exc.strerror})") from None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise ConfigError(
            f"{path}: not a TOML text file (byte {exc.start} is not UTF-8); "
            "give the configuration file, saved as UTF-8"
        ) from None
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML ({exc})") from None


def _read_secret_file(section: str, key: str, path: str) -> Secret:
    try:
        text = Path(path).read_bytes().decode("utf-8-sig").strip()
    except OSError as exc:
        raise ConfigError(
            f"[{section}] {key}: cannot read secret file {path} ({exc.strerror})"
        ) from None
    except UnicodeDecodeError:
        raise ConfigError(f"[{section}] {key}: secret file {path} is not UTF-8 text") from None
    if not text:
        raise ConfigError(f"[{section}] {key}: secret file {path} is empty")
    return Secret(text)


def load_settings(
    path: str | Path | None = None,
    environ: Mapping[str, str] | None = None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
) -> Settings:
    """Defaults, then the TOML file, then environment variables, then ``overrides`` (CLI flags).

    ``path=None`` means ``$REFERRALS_ETL_CONFIG``, else ``./config.toml`` if present.
    """
    env = os.environ if environ is None else environ
    config_path = Path(path) if path is not None else default_config_path(env)
    raw: dict[str, dict[str, tuple[Any, str]]] = {s: {} for s in SECTIONS}

    if config_path is not None:
        document = _read_toml(config_path)
        for section, table in document.items():
            if section not in SECTIONS:
                raise ConfigError(
                    f"{config_path}: unknown section [{section}]; "
                    f"valid sections: {', '.join(SECTIONS)}"
                )
            if not isinstance(table, dict):
                raise ConfigError(f"{config_path}: {section} must be a [table]")
            names = {f.name: f for f in dataclasses.fields(SECTIONS[section])}
            for key, value in table.items():
                fld = names.get(key)
                if fld is None:
                    raise ConfigError(
                        f"{config_path}: unknown key [{section}] {key}; valid keys: "
                        + ", ".join(n for n, f in names.items() if not f.metadata.get("secret"))
                    )
                if fld.metadata.get("secret"):
                    raise ConfigError(
                        f"{config_path}: [{section}] {key} is a secret and is not read from "
                        f"the file; set {env_name(section, key)} or {key}_file"
                    )
                raw[section][key] = (value, str(config_path))

    known_env = {env_name(s, f.name): (s, f.name) for s, f in all_keys()}
    for var, value in env.items():
        if not var.startswith(ENV_PREFIX) or var.startswith(_ENV_NOT_KEYS):
            continue
        if var not in known_env:
            raise ConfigError(
                f"environment variable {var} is not a setting; see config.example.toml "
                "for the valid keys (their variables are REFERRALS_ETL_<SECTION>_<KEY>)"
            )
        section, key = known_env[var]
        raw[section][key] = (value, f"environment variable {var}")

    for section, values in (overrides or {}).items():
        for key, value in values.items():
            if value is not None:
                raw[section][key] = (value, "command line")

    built: dict[str, Any] = {}
    for section, cls in SECTIONS.items():
        kwargs: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name in raw[section]:
                value, origin = raw[section][f.name]
                kwargs[f.name] = convert(section, f, value, origin)
        built[section] = cls(**kwargs)

    auth: AuthSettings = built["auth"]
    for secret in ("client_secret", "refresh_token", "access_token"):
        file_path = getattr(auth, f"{secret}_file")
        if getattr(auth, secret) is None and file_path:
            secret_value: Any = _read_secret_file("auth", f"{secret}_file", file_path)
            built["auth"] = auth = dataclasses.replace(auth, **{secret: secret_value})
    source = str(config_path) if config_path is not None else "built-in defaults"
    return Settings(**built, source=source)
