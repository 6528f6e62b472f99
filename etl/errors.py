"""One exception tree for the whole job; each class carries the exit code the CLI uses.

::

    EtlError                      1  something failed (base class)
    ├── ConfigError               2  usage or configuration error
    ├── AuthError                 3  token, consent or referrals role
    ├── ApiUnavailableError       4  the API could not be used at all
    │   └── IdentityProviderUnavailableError  4  the identity provider could not be reached
    ├── DatabaseError             5  database unreachable or failing
    │   └── SchemaNotAtHeadError  5  migrations not applied: run `referrals-etl db upgrade`
    ├── RatesFileError            1  a currency rates file with bad lines (nothing was loaded)
    ├── LockHeldError            75  another run holds the lock (or took over this run's lease)
    ├── InterruptedRunError  130/143  SIGINT / SIGTERM, after in-flight work was recorded
    └── ReferralError             1  one referral could not be fetched or stored (never stops a run)
        ├── BadDocumentError         the API answered with something that is not a referral
        └── InvalidIdError           an id that can never be a referral id

Messages say what failed, where, and what to do; they never contain a token or secret.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from etl.report import SyncReport


class EtlError(Exception):
    """Base of every error the job raises on purpose.

    An error that ended a run carries that run's report (``report``): what was done before it,
    for the summary line and the metrics of a failed run.
    """

    exit_code: int = 1
    report: SyncReport | None = None


class ConfigError(EtlError):
    """A configuration or usage error; the message names the key, its source and what is valid."""

    exit_code = 2


class AuthError(EtlError):
    """Authentication or authorization failed (token, consent, missing referrals role)."""

    exit_code = 3


class ApiUnavailableError(EtlError):
    """The Referrals API could not be used at all (unreachable, or failing beyond retries)."""

    exit_code = 4


class IdentityProviderUnavailableError(ApiUnavailableError):
    """The identity provider could not be reached (DNS, timeout, 5xx) after retries: an outage,
    not a rejection; a later run may succeed."""


class DatabaseError(EtlError):
    """The database is unreachable or keeps failing."""

    exit_code = 5


class SchemaNotAtHeadError(DatabaseError):
    """The database schema is not at the migrations' head revision."""


class RatesFileError(EtlError):
    """A currency rates file has bad lines; nothing of it was loaded. The message lists them."""

    def __init__(self, message: str, lines: list[int]) -> None:
        super().__init__(message)
        self.lines = lines


class LockHeldError(EtlError):
    """Another run holds the sync lock; nothing was done."""

    exit_code = 75


class InterruptedRunError(EtlError):
    """The run was stopped by a signal after in-flight work was recorded."""

    def __init__(self, message: str, signal_number: int) -> None:
        super().__init__(message)
        self.signal_number = signal_number
        self.exit_code = 128 + signal_number


class ReferralError(EtlError):
    """One referral failed; recorded in `sync_state` and retried later, the run goes on."""


class BadDocumentError(ReferralError):
    """The API answered 200 with something that is not a usable referral document."""


class InvalidIdError(ReferralError):
    """A string that can never be a referral id (it is rejected before any request)."""


def first_line(exc: BaseException, limit: int = 300) -> str:
    """The first line of ``exc``'s message, at most ``limit`` characters ("" when it has none).

    The one way an error becomes one log or status line: a message may carry a whole SQL
    statement, a response body or a traceback on its later lines.
    """
    lines = str(exc).strip().splitlines()
    return lines[0][:limit] if lines else ""
