"""Raw setting values (TOML or environment text) made typed, or a ConfigError naming them."""

from __future__ import annotations

import dataclasses
import math
import re
from typing import Any
from urllib.parse import urlsplit

from etl.errors import ConfigError


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


def convert(section: str, f: dataclasses.Field[Any], raw: Any, origin: str) -> Any:
    """``raw`` (from ``origin``) as the type key ``f`` of ``section`` declares."""
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
