"""The persisted MSAL token cache file.

Written atomically (temporary file in the same directory, fsync, then ``os.replace``) with mode
0600, in a directory created with mode 0700, under a lock file beside it, so that concurrent runs
sharing the cache never lose a rotated refresh token. A change another process wrote is read
back before the next token request.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import msal

from etl.auth.explain import LOGIN
from etl.config import env_name
from etl.errors import AuthError, ConfigError

if sys.platform != "win32":
    import fcntl

log = logging.getLogger(__name__)


class CacheFile:
    """The persisted MSAL token cache: 0600 file, 0700 directory, atomic writes, a lock file."""

    def __init__(self, path: str) -> None:
        self.path = Path(path).expanduser()
        self._stamp: tuple[int, int, int] | None = None

    def _where(self) -> str:
        return f"token cache {self.path}"

    def _stat(self) -> tuple[int, int, int] | None:
        try:
            st = self.path.stat()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise self._config_error("read", exc) from None
        return (st.st_ino, st.st_mtime_ns, st.st_size)

    def _config_error(self, action: str, exc: OSError) -> ConfigError:
        return ConfigError(
            f"cannot {action} the {self._where()} ({exc.strerror}): auth.token_cache_path "
            f"({env_name('auth', 'token_cache_path')}) must be a file this user can write, on a "
            "persistent volume for scheduled runs"
        )

    def read(self) -> msal.SerializableTokenCache:
        cache = msal.SerializableTokenCache()
        self.load_into(cache)
        return cache

    def load_into(self, cache: msal.SerializableTokenCache) -> None:
        stamp = self._stat()
        text = ""
        if stamp is not None:
            try:
                text = self.path.read_text(encoding="utf-8")
                mode = self.path.stat().st_mode & 0o777
            except OSError as exc:
                raise self._config_error("read", exc) from None
            if mode & 0o077:
                log.warning(
                    "%s is readable by other users (mode %03o); it is rewritten with mode 0600 "
                    "when tokens are next refreshed",
                    self._where(),
                    mode,
                )
        try:
            cache.deserialize(text or None)
        except ValueError:
            raise AuthError(
                f"the {self._where()} is not valid: delete it, then rerun (mode device_code: "
                f"{LOGIN} again)"
            ) from None
        self._stamp = stamp

    def reload_if_changed(self, cache: msal.SerializableTokenCache) -> None:
        """Take in what another process wrote since we last read or wrote the file."""
        if self._stat() != self._stamp:
            log.debug("the %s changed on disk; reloading it", self._where())
            self.load_into(cache)

    def save(self, cache: msal.SerializableTokenCache, *, force: bool = False) -> bool:
        """Write the cache back if it changed: temp file + ``os.replace``, mode 0600."""
        if not (force or cache.has_state_changed):
            return False
        directory = self.ensure_directory()
        fd, temp = tempfile.mkstemp(dir=directory, prefix=f".{self.path.name}.", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                os.fchmod(fh.fileno(), 0o600)
                fh.write(cache.serialize())
                fh.flush()
                os.fsync(fh.fileno())
            Path(temp).replace(self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                Path(temp).unlink()
            raise self._config_error("write", exc) from None
        _fsync_directory(directory)
        self._stamp = self._stat()
        log.debug("wrote the %s", self._where())
        return True

    def ensure_directory(self) -> Path:
        directory = self.path.parent
        if not directory.is_dir():
            try:
                directory.mkdir(mode=0o700, parents=True, exist_ok=True)
                directory.chmod(0o700)
            except OSError as exc:
                raise self._config_error("create the directory of", exc) from None
        return directory

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive lock (a ``.lock`` file beside the cache) across processes."""
        if sys.platform == "win32":
            yield
            return
        directory = self.ensure_directory()
        lock_path = directory / f"{self.path.name}.lock"
        try:
            fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError as exc:
            raise self._config_error("lock", exc) from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock


def _fsync_directory(directory: Path) -> None:
    if sys.platform == "win32":
        return
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


def cached_accounts(cache: msal.SerializableTokenCache) -> list[dict[str, Any]]:
    """Accounts in the cache, read offline (no MSAL application, no network)."""
    return list(cache.search(msal.TokenCache.CredentialType.ACCOUNT))
