"""Identity-provider outages: retried with the API's backoff, then exit 4 (never "sign in").

An attempt that could not reach the identity provider (DNS failure, refused or reset connection,
timeout, a 5xx or 429 answer) raises :class:`Outage`. :class:`Retry` runs an attempt again after
:func:`etl.backoff.full_jitter`, up to ``api.max_attempts`` attempts, and then raises
:class:`~etl.errors.IdentityProviderUnavailableError` (exit 4: a later run may well succeed, so
``schedule`` keeps going). A rejection (invalid_grant, consent, an AADSTS code) is an
:class:`~etl.errors.AuthError` raised by the attempt itself and is never retried here.

Waits between attempts end early when the run's :class:`~etl.stopping.StopRequest` is set.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from etl.backoff import full_jitter
from etl.errors import IdentityProviderUnavailableError
from etl.stopping import StopRequest, StopRequested

log = logging.getLogger(__name__)

T = TypeVar("T")

_SLICE = 0.1  # a stop request is noticed within this many seconds of a wait


class Outage(Exception):  # noqa: N818 - a condition to retry, caught by Retry.call
    """One attempt could not reach the identity provider; ``reason`` is safe to show."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class Retry:
    """How often, and how patiently, identity-provider requests are tried."""

    attempts: int
    host: str
    stop: StopRequest | None = None
    sleep: Callable[[float], None] = field(default=time.sleep, repr=False)  # tests inject one
    pause: Callable[[int], float] = field(default=full_jitter, repr=False)

    def call(self, attempt: Callable[[], T]) -> T:
        """``attempt()``, again after each :class:`Outage` while attempts remain."""
        tries = max(1, self.attempts)
        for number in range(1, tries + 1):
            try:
                return attempt()
            except Outage as exc:
                if number >= tries:
                    raise self._gave_up(exc, number) from None
                pause = self.pause(number)
                log.info(
                    "the identity provider %s could not be reached (%s); attempt %d of %d, "
                    "retrying in %.1fs",
                    self.host,
                    exc.reason,
                    number,
                    tries,
                    pause,
                )
                self._wait(pause)
        raise AssertionError("unreachable")  # pragma: no cover

    def _gave_up(self, exc: Outage, attempts: int) -> IdentityProviderUnavailableError:
        retries = attempts - 1
        return IdentityProviderUnavailableError(
            f"the identity provider could not be reached ({exc.reason}, {self.host}); retried "
            f"{retries} time{'' if retries == 1 else 's'} (api.max_attempts {attempts}): an "
            "outage, not a sign-in problem; the next run tries again (if it lasts, check the "
            "network or proxy and auth.authority_host)"
        )

    def _wait(self, seconds: float) -> None:
        """Sleep ``seconds`` in slices, ending early (raising) on a stop request."""
        left = seconds
        while True:
            if self.stop is not None and self.stop.is_set():
                raise StopRequested(self.stop.reason or "stop requested")
            if left <= 0:
                return
            step = min(_SLICE, left) if self.stop is not None else left
            self.sleep(step)
            left -= step
