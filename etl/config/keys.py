"""Every setting, declared once: a field of a frozen dataclass per section, with its default,
its kind and the help text that `config.example.toml` repeats."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from etl.config.values import Secret, convert

ENV_PREFIX = "REFERRALS_ETL_"
CONFIG_ENV = "REFERRALS_ETL_CONFIG"


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
            "at most this long (at least 3s, as sync.lock_lease)",
            duration=True,
            min=3,
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
                else convert(name, fields_by_name[key], value, "override")
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
