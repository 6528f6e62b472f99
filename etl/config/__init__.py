"""Settings: built-in defaults, then the TOML file, then environment variables (later wins).

This is the only package that reads ``os.environ``. Every key is declared once, as a field of a
frozen dataclass in :mod:`etl.config.keys`, with its default, its kind and the help text that
`config.example.toml` repeats; ``load_settings`` (:mod:`etl.config.load`) turns raw values into
typed settings (:mod:`etl.config.values`) and raises :class:`ConfigError` naming the key, where
the value came from and what would be valid.
"""

from etl.config.keys import (
    AUTH_MODES,
    CONFIG_ENV,
    ENV_PREFIX,
    SECTIONS,
    WEBHOOK_CERTIFICATE_HOST,
    ApiSettings,
    AuthSettings,
    DatabaseSettings,
    ScheduleSettings,
    Settings,
    SyncSettings,
    WebhookSettings,
    all_keys,
    env_name,
)
from etl.config.load import default_config_path, load_settings
from etl.config.values import Secret, parse_duration, redact_url

__all__ = [
    "AUTH_MODES",
    "CONFIG_ENV",
    "ENV_PREFIX",
    "SECTIONS",
    "WEBHOOK_CERTIFICATE_HOST",
    "ApiSettings",
    "AuthSettings",
    "DatabaseSettings",
    "ScheduleSettings",
    "Secret",
    "Settings",
    "SyncSettings",
    "WebhookSettings",
    "all_keys",
    "default_config_path",
    "env_name",
    "load_settings",
    "parse_duration",
    "redact_url",
]
