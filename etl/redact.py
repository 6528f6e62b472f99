"""Masking secrets out of anything a server answers, before it is stored, logged or printed.

``mask(text)`` hides: every token this process has put on a request (remembered by
:func:`remember` when a token is made), the value of any ``Authorization`` header or
``access_token`` / ``refresh_token`` / ``client_secret`` / ``password`` field a server echoes,
and anything shaped like a bearer token or a JWT. The client masks error answers at the source;
logs, ``status`` and the store mask again as a last line of defence.
"""

from __future__ import annotations

import re
import threading

MASK = "***"
_MIN_SECRET = 8  # shorter strings are too likely to occur by chance to be masked as a secret
_REMEMBERED = 16  # the newest tokens kept (a long schedule refreshes its token many times)

_PATTERNS = re.compile(
    r"(?P<key>\bauthorization[\"']?\s*[:=]\s*[\"']?)(?P<auth>[^\"'\r\n,;}&]+)"
    r"|(?P<field>\b(?:access_token|refresh_token|id_token|client_secret|password)[\"']?\s*[:=]"
    r"\s*[\"']?)(?P<value>[^\"'\s,;}&]+)"
    r"|(?P<bearer>\bBearer\s+)[A-Za-z0-9._~+/=-]{8,}"
    r"|eyJ[A-Za-z0-9_-]{10,}\.[A-Za-z0-9._-]+",
    re.IGNORECASE,
)

_lock = threading.Lock()
_secrets: list[str] = []


def remember(secret: str) -> None:
    """Mask ``secret`` from now on wherever it appears (a token this process uses)."""
    if len(secret) < _MIN_SECRET:
        return
    with _lock:
        if secret in _secrets:
            return
        _secrets.append(secret)
        del _secrets[:-_REMEMBERED]


def _replace(match: re.Match[str]) -> str:
    prefix = match.group("key") or match.group("field") or match.group("bearer") or ""
    return prefix + MASK


def mask(text: str) -> str:
    """``text`` with every secret hidden (see the module's documentation)."""
    with _lock:
        known = list(_secrets)
    for secret in known:
        if secret in text:
            text = text.replace(secret, MASK)
    return _PATTERNS.sub(_replace, text)
