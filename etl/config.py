"""Settings: built-in defaults, then the TOML file, then environment variables (later wins).

This is the only module that reads ``os.environ``. Every key is declared once, as a field of a
frozen dataclass below, with its default, its kind and the help text that `config.example.toml`
repeats; ``load_settings`` turns raw values into typed settings and raises :class:`ConfigError`
naming the key, where the value came from and what would be valid.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from etl.errors import ConfigError

ENV_PREFIX = "REFERRALS_ETL_"
CONFIG_ENV = "REFERRALS_ETL_CONFIG"
# Variables with the prefix that are not settings keys (tests use their own prefix).
_ENV_NOT_KEYS = ("REFERRALS_ETL_CONFIG", "REFERRALS_ETL_TEST_")


class Secret:
    """A secret value that never shows itself in ``str``, ``repr``, logs or tracebacks."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return "Secret('***')"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Secret) and other._value == self._value

    def __hash__(self) -> int:
        return hash(self._value)


def _key(help_text: str, **meta: Any) -> dict[str, Any]:
    return {"help": help_text, **meta}


def _default_token_cache() -> str:
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return str(Path(state) / "referrals-etl" / "token_cache.json")


@dataclass(frozen=True)
class DatabaseSettings:
    url: str = field(
        default="sqlite:///referrals.db",
        metadata=_key(
            "SQLAlchemy URL: sqlite:///path.db, postgresql+psycopg://user@host/db, "
            "mysql+pymysql://user@host/db?charset=utf8mb4",
            secret_in_url=True,
            database_url=True,
        ),
    )


@dataclass(frozen=True)
class ApiSettings:
    base_url: str = field(
        default="https://api.partner.microsoft.com/v1.0",
        metadata=_key("Referrals API base URL, up to and including /v1.0", http_url=True),
    )
    timeout_seconds: float = field(
        default=30.0,
        metadata=_key(
            "deadline of one HTTP request (connect, headers and whole body), in seconds",
            min=0.1,
            max=600,
        ),
    )
    concurrency: int = field(default=8, metadata=_key("requests in flight at most", min=1, max=256))
    max_requests_per_second: float = field(
        default=0.0, metadata=_key("cap on requests per second, 0 = no cap", min=0, max=10_000)
    )
    max_retry_after_seconds: float = field(
        default=120.0,
        metadata=_key(
            "longest pause a Retry-After header may ask for; a longer one is cut to this",
            min=0,
            max=3600,
        ),
    )
    max_attempts: int = field(
        default=6, metadata=_key("attempts per request before the id fails", min=1, max=50)
    )
    max_body_bytes: int = field(
        default=10_000_000,
        metadata=_key("a response body larger than this is refused", min=1_000, max=1_000_000_000),
    )
    breaker_failures: int = field(
        default=30,
        metadata=_key(
            "consecutive failed requests (after retries) that stop the run with exit 4, 0 = never",
            min=0,
            max=1_000_000,
        ),
    )


AUTH_MODES = ("refresh_token", "device_code", "access_token")


@dataclass(frozen=True)
class AuthSettings:
    mode: str = field(
        default="refresh_token",
        metadata=_key("how to get tokens: " + ", ".join(AUTH_MODES), choices=AUTH_MODES),
    )
    tenant_id: str = field(default="", metadata=_key("Entra ID tenant (GUID or domain)"))
    client_id: str = field(default="", metadata=_key("application (client) id"))
    authority_host: str = field(
        default="https://login.microsoftonline.com",
        metadata=_key("identity provider; sovereign clouds use their own host"),
    )
    scope: str = field(
        default="https://api.partner.microsoft.com/.default",
        metadata=_key("scope asked for (.default or .../user_impersonation)"),
    )
    instance_discovery: bool = field(
        default=True,
        metadata=_key("MSAL instance discovery; turn off for private or sovereign authorities"),
    )
    token_cache_path: str = field(
        default_factory=_default_token_cache,
        metadata=_key("MSAL token cache file (mode 0600)", default_text="~/.local/state/..."),
    )
    ca_bundle: str = field(
        default="", metadata=_key("CA bundle for the identity provider, empty = system default")
    )
    client_certificate_path: str = field(
        default="",
        metadata=_key("PEM file with private key and certificate, instead of a client secret"),
    )
    client_secret_file: str = field(
        default="", metadata=_key("file holding the client secret (e.g. a mounted Secret)")
    )
    refresh_token_file: str = field(
        default="", metadata=_key("file holding the refresh token (e.g. a mounted Secret)")
    )
    access_token_file: str = field(
        default="", metadata=_key("file holding a bearer token, for mode access_token")
    )
    # Secrets: only from the environment or the files above, never from the TOML file.
    client_secret: Secret | None = field(default=None, metadata=_key("client secret", secret=True))
    refresh_token: Secret | None = field(default=None, metadata=_key("refresh token", secret=True))
    access_token: Secret | None = field(
        default=None, metadata=_key("bearer token obtained elsewhere", secret=True)
    )


@dataclass(frozen=True)
class SyncSettings:
    batch_size: int = field(
        default=100, metadata=_key("referrals written per transaction", min=1, max=10_000)
    )
    discover: bool = field(
        default=True, metadata=_key("page through the list endpoint for new and changed ids")
    )
    discover_filter: str = field(
        default="", metadata=_key("OData $filter that narrows discovery, e.g. status eq 'Active'")
    )
    discover_time_filter: bool = field(
        default=True,
        metadata=_key(
            "ask the list endpoint for recent changes only ($filter on updatedDateTime); "
            "a refusal (400) falls back to reading pages until the high-water mark"
        ),
    )
    discover_overlap: float = field(
        default=600.0,
        metadata=_key("how far before the last high-water mark discovery re-reads", duration=True),
    )
    full_listing_every: float = field(
        default=7 * 86400.0,
        metadata=_key(
            "read the whole listing this often; ids it does not show are fetched by id "
            "(a deleted referral answers 404), 0 = never",
            duration=True,
        ),
    )
    refresh_listed_after: float = field(
        default=30 * 86400.0,
        metadata=_key(
            "with discovery reading every referral (no discover_filter), fetch one by id this "
            "long after the API last showed it (a safety net: the full listing confirms them)",
            duration=True,
        ),
    )
    refresh_open_after: float = field(
        default=3600.0,
        metadata=_key(
            "outside the listing (discovery off or narrowed): refresh an open referral this "
            "long after its last fetch",
            duration=True,
        ),
    )
    refresh_closed_after: float = field(
        default=7 * 86400.0,
        metadata=_key(
            "outside the listing: refresh a closed referral this long after its last fetch",
            duration=True,
        ),
    )
    refresh_not_found_after: float = field(
        default=7 * 86400.0,
        metadata=_key("look again at an id that answered 404 after this long", duration=True),
    )
    retry_backoff_max: float = field(
        default=86400.0,
        metadata=_key("longest wait before retrying an id that keeps failing", duration=True),
    )
    writer_process: bool = field(
        default=False,
        metadata=_key(
            "parse and write referrals in a second process (a second CPU core); off: a thread"
        ),
    )
    lock_lease: float = field(
        default=120.0,
        metadata=_key(
            "lease of the run lock, renewed every third of it while the run lives (at least "
            "3s: renewals come at most once a second)",
            duration=True,
            min=3,
        ),
    )

    @property
    def listing_covers_all(self) -> bool:
        """Whether discovery reads every referral (on, and not narrowed by a filter)."""
        return self.discover and not self.discover_filter.strip()


@dataclass(frozen=True)
class ScheduleSettings:
    cron: str = field(
        default="*/30 * * * *", metadata=_key("crontab expression for `schedule` (UTC)")
    )
    interval: float = field(
        default=0.0,
        metadata=_key("run every this long instead of cron, 0 = use cron", duration=True),
    )
    run_at_start: bool = field(
        default=True,
        metadata=_key("`schedule` runs one sync as soon as it starts, then on its schedule"),
    )
    metrics_port: int = field(
        default=0,
        metadata=_key(
            "`schedule` serves the last run's metrics at /metrics on this port, 0 = off",
            min=0,
            max=65535,
        ),
    )


WEBHOOK_CERTIFICATE_HOST = "3psostorageacct.blob.core.windows.net"


@dataclass(frozen=True)
class WebhookSettings:
    path: str = field(
        default="/webhooks/partner-center",
        metadata=_key("where `serve` receives Partner Center callbacks (POST)"),
    )
    certificate_hosts: str = field(
        default=WEBHOOK_CERTIFICATE_HOST,
        metadata=_key(
            "comma-separated host[:port] allowed in x-ms-certificate-url; any other is refused "
            "without a download"
        ),
    )
    ca_bundle: str = field(
        default="",
        metadata=_key(
            "PEM file of trusted roots for the signing certificate and its download; "
            "empty = the system's trust store"
        ),
    )
    certificate_organization: str = field(
        default="Microsoft Corporation",
        metadata=_key("the organization (O=) the signing certificate's subject must name"),
    )
    max_body_bytes: int = field(
        default=65536,
        metadata=_key("a callback body larger than this is refused (413)", min=256, max=10_000_000),
    )
    registration_base_url: str = field(
        default="https://api.partnercenter.microsoft.com/webhooks/v1",
        metadata=_key("Partner Center webhook registration API, up to and including /v1"),
    )
    registration_scope: str = field(
        default="https://api.partnercenter.microsoft.com/.default",
        metadata=_key("scope of the token for the registration API (not the Referrals API's)"),
    )
    batch_size: int = field(
        default=200,
        metadata=_key("referrals the receiver's worker fetches in one run", min=1, max=10_000),
    )
    poll_interval: float = field(
        default=5.0,
        metadata=_key(
            "how often the worker looks for due events it was not told about (other replicas, "
            "a restart)",
            duration=True,
        ),
    )

    lock_lease: float = field(
        default=30.0,
        metadata=_key(
            "lease of the worker's run lock ('webhook'); after a crash the next worker waits "
            "at most this long",
            duration=True,
        ),
    )

    def certificate_host_list(self) -> tuple[str, ...]:
        """The allowlist, lower-case, without blanks."""
        return tuple(h.strip().lower() for h in self.certificate_hosts.split(",") if h.strip())


@dataclass(frozen=True)
class Settings:
    database: DatabaseSettings = field(default_factory=DatabaseSettings)
    api: ApiSettings = field(default_factory=ApiSettings)
    auth: AuthSettings = field(default_factory=AuthSettings)
    sync: SyncSettings = field(default_factory=SyncSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    webhook: WebhookSettings = field(default_factory=WebhookSettings)
    source: str = "built-in defaults"

    def replace(self, **sections: Any) -> Settings:
        """A copy with some keys changed: ``settings.replace(api={"concurrency": 4})``."""
        changed = {}
        for name, values in sections.items():
            fields_by_name = {f.name: f for f in dataclasses.fields(SECTIONS[name])}
            converted = {
                key: value
                if isinstance(value, Secret) or value is None
                else _convert(name, fields_by_name[key], value, "override")
                for key, value in values.items()
            }
            changed[name] = dataclasses.replace(getattr(self, name), **converted)
        return dataclasses.replace(self, **changed)


SECTIONS: dict[str, type[Any]] = {
    "database": DatabaseSettings,
    "api": ApiSettings,
    "auth": AuthSettings,
    "sync": SyncSettings,
    "schedule": ScheduleSettings,
    "webhook": WebhookSettings,
}


def env_name(section: str, key: str) -> str:
    return f"{ENV_PREFIX}{section}_{key}".upper()


def all_keys() -> list[tuple[str, dataclasses.Field[Any]]]:
    """Every (section, field) pair, secrets included, in declaration order."""
    return [(s, f) for s, cls in SECTIONS.items() for f in dataclasses.fields(cls)]


_DURATION_MAX = 100 * 366 * 86400.0  # a century: anything longer is a typo
_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*$")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, None: 1}


def parse_duration(text: str) -> float:
    """``"90s"``, ``"30m"``, ``"1h"``, ``"7d"``, ``"1w"`` or a plain number of seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(text)
    return float(match.group(1)) * _UNIT_SECONDS[match.group(2)]


def _describe(f: dataclasses.Field[Any]) -> str:
    meta = f.metadata
    if "choices" in meta:
        return "one of " + ", ".join(meta["choices"])
    if meta.get("duration"):
        least = f", at least {meta['min']:g}s" if "min" in meta else ""
        return f"a duration such as 90s, 30m, 1h, 7d (or seconds){least}"
    if meta.get("http_url"):
        return "an http:// or https:// URL with a host"
    if meta.get("database_url"):
        return "a database URL (a port, when given, is a number from 1 to 65535)"
    kind = {"bool": "true or false", "int": "a whole number", "float": "a number"}.get(
        str(f.type), "a string"
    )
    if "min" in meta:
        kind += f" from {meta['min']} to {meta['max']}"
    return kind


def _convert(section: str, f: dataclasses.Field[Any], raw: Any, origin: str) -> Any:
    meta = f.metadata
    where = f"{origin}: [{section}] {f.name}"
    bad = ConfigError(f"{where} must be {_describe(f)}, got {_shown(f, raw)}")
    typ = str(f.type)
    value: Any
    if meta.get("secret"):
        if not isinstance(raw, str):
            raise bad
        return Secret(raw.strip()) if raw.strip() else None
    if meta.get("duration"):
        if isinstance(raw, bool):
            raise bad
        if isinstance(raw, int | float):
            value = float(raw)
        elif isinstance(raw, str):
            try:
                value = parse_duration(raw)
            except ValueError:
                raise bad from None
        else:
            raise bad
        if not math.isfinite(value) or not meta.get("min", 0) <= value <= _DURATION_MAX:
            raise bad
        return value
    if typ == "bool":
        if isinstance(raw, bool):
            return raw
        if isinstance(raw, str) and raw.strip().lower() in {"1", "true", "yes", "on"}:
            return True
        if isinstance(raw, str) and raw.strip().lower() in {"0", "false", "no", "off"}:
            return False
        raise bad
    if typ in {"int", "float"}:
        if isinstance(raw, bool):
            raise bad
        try:
            value = int(raw) if typ == "int" else float(raw)
        except (TypeError, ValueError, OverflowError):  # 1e400 is a float infinity
            raise bad from None
        if not math.isfinite(value):
            raise bad
        if typ == "int" and isinstance(raw, float) and raw != int(raw):
            raise bad
        if "min" in meta and not meta["min"] <= value <= meta["max"]:
            raise bad
        return value
    if not isinstance(raw, str):
        raise bad
    value = raw.strip()
    if "choices" in meta and value not in meta["choices"]:
        raise bad
    if meta.get("http_url") and not _is_http_url(value):
        raise bad
    if meta.get("database_url") and not _has_valid_port(value):
        raise bad
    return value


def _is_http_url(text: str) -> bool:
    try:
        parts = urlsplit(text)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        return False
    return parts.scheme in {"http", "https"} and bool(parts.hostname)


def _has_valid_port(text: str) -> bool:
    """A database URL's port, when there is one, is a number (SQLAlchemy would raise late)."""
    try:
        port = urlsplit(text).port
    except ValueError:
        return False
    return port is None or port > 0


def _shown(f: dataclasses.Field[Any], raw: Any) -> str:
    if f.metadata.get("secret"):
        return "a value that is not a string"
    if f.metadata.get("secret_in_url") and isinstance(raw, str):
        return repr(redact_url(raw))
    return repr(raw)


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (for logs and messages)."""
    return re.sub(r"(//[^/:@]*:)[^@/]*@", r"\1***@", url)


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
                kwargs[f.name] = _convert(section, f, value, origin)
        built[section] = cls(**kwargs)

    auth: AuthSettings = built["auth"]
    for secret in ("client_secret", "refresh_token", "access_token"):
        file_path = getattr(auth, f"{secret}_file")
        if getattr(auth, secret) is None and file_path:
            secret_value: Any = _read_secret_file("auth", f"{secret}_file", file_path)
            built["auth"] = auth = dataclasses.replace(auth, **{secret: secret_value})
    source = str(config_path) if config_path is not None else "built-in defaults"
    return Settings(**built, source=source)
