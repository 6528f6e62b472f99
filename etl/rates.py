"""Currency rates: a strictly checked CSV file, loaded into ``currency_rates`` all or nothing.

The file (UTF-8, a header line, then one rate per line)::

    currency,rate,valid_from
    EUR,1,2026-01-01
    USD,0.9213,2026-01-01
    SEK,0.0871,2026-01-01T00:00:00Z

``rate`` is what one unit of ``currency`` is worth in the reporting currency (so the reporting
currency itself has rate 1); ``valid_from`` is a date (midnight UTC) or an ISO timestamp (UTC
unless it carries an offset). A rate applies from ``valid_from`` until the currency's next one.
Blank lines and lines starting with ``#`` are skipped. Every line is checked before anything is
written; one bad line and nothing is loaded, and the error lists each bad line by number. A
good file is written in one transaction: a (currency, valid_from) already in the table gets the
new rate, the other rows stay.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Final

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.errors import ConfigError, RatesFileError
from etl.models import TABLES

HEADER: Final = ("currency", "rate", "valid_from")
_CURRENCY = re.compile(r"[A-Z]{3}")
_RATE_LIMIT: Final = Decimal(10) ** 10  # NUMERIC(20, 10)
_RATE_DECIMALS: Final = 10
_SHOWN_PROBLEMS: Final = 50


@dataclass(frozen=True, slots=True)
class Rate:
    """One line of the file: ``currency`` is worth ``rate`` reporting units from ``valid_from``."""

    currency: str
    rate: Decimal
    valid_from: datetime
    line: int


@dataclass(frozen=True, slots=True)
class LoadResult:
    loaded: int
    replaced: int


def read_rates(path: str | Path) -> list[Rate]:
    """Every rate of the file, or :class:`RatesFileError` naming each bad line."""
    try:
        data = Path(path).read_bytes()
    except OSError as exc:
        raise ConfigError(f"rates file {path}: {exc.strerror or exc}") from None
    problems: list[tuple[int, str]] = []
    rates: list[Rate] = []
    seen: dict[tuple[str, datetime], int] = {}
    header_seen = False
    for number, raw in enumerate(data.splitlines(), start=1):
        try:
            text = raw.decode("utf-8-sig" if number == 1 else "utf-8")
        except UnicodeDecodeError:
            problems.append((number, "not UTF-8 text"))
            continue
        if not text.strip() or text.lstrip().startswith("#"):
            continue
        fields = [f.strip() for f in next(csv.reader([text]), [])]
        if not header_seen:
            header_seen = True
            if tuple(f.lower() for f in fields) != HEADER:
                problems.append((number, f"the header must be {','.join(HEADER)}, not {text!r}"))
            continue
        rate, problem = _parse_line(fields, number)
        if problem is not None:
            problems.append((number, problem))
            continue
        assert rate is not None
        key = (rate.currency, rate.valid_from)
        if key in seen:
            again = f"{rate.currency} from {_when(key[1])} is on line {seen[key]} already"
            problems.append((number, again))
            continue
        seen[key] = number
        rates.append(rate)
    if not problems and not rates:
        problems.append((0, "no rates (expected a header line and at least one rate)"))
    if problems:
        raise RatesFileError(_message(str(path), problems), [n for n, _ in problems])
    return rates


def _parse_line(fields: list[str], number: int) -> tuple[Rate | None, str | None]:
    if len(fields) != len(HEADER):
        return None, f"expected 3 fields ({','.join(HEADER)}), found {len(fields)}"
    currency, rate_text, when_text = fields
    if not _CURRENCY.fullmatch(currency):
        return None, f"currency {currency!r} is not a 3-letter upper-case ISO 4217 code"
    try:
        rate = Decimal(rate_text)
    except InvalidOperation:
        return None, f"rate {rate_text!r} is not a number"
    if not rate.is_finite() or rate <= 0 or rate >= _RATE_LIMIT:
        return None, f"rate {rate_text!r} must be a number above 0 and below 10000000000"
    exponent = rate.as_tuple().exponent
    if isinstance(exponent, int) and -exponent > _RATE_DECIMALS:
        return None, f"rate {rate_text!r} has more than {_RATE_DECIMALS} decimals"
    valid_from = _parse_when(when_text)
    if valid_from is None:
        return None, f"valid_from {when_text!r} is not a date (YYYY-MM-DD) or ISO timestamp"
    return Rate(currency, rate, valid_from, number), None


def _parse_when(text: str) -> datetime | None:
    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        return parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def _when(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


def _message(path: str, problems: list[tuple[int, str]]) -> str:
    shown = [f"{path}:{n}: {text}" if n else f"{path}: {text}" for n, text in problems]
    more = len(shown) - _SHOWN_PROBLEMS
    lines = shown[:_SHOWN_PROBLEMS] + ([f"... and {more} more"] if more > 0 else [])
    bad = sum(1 for n, _ in problems if n)
    head = f"rates file {path}: {bad or 1} bad line(s), nothing was loaded"
    return "\n".join([head, *lines])


def load_rates(engine: Engine, rates: Iterable[Rate]) -> LoadResult:
    """Write ``rates`` in one transaction (all or nothing); an existing key gets the new rate."""
    table = TABLES["currency_rates"]
    rows = [{"currency": r.currency, "rate": r.rate, "valid_from": r.valid_from} for r in rates]
    replaced = 0
    with engine.begin() as conn:
        for row in rows:
            result = conn.execute(
                sa.delete(table).where(
                    table.c.currency == row["currency"], table.c.valid_from == row["valid_from"]
                )
            )
            replaced += max(result.rowcount, 0)
        if rows:
            conn.execute(sa.insert(table), rows)
    return LoadResult(loaded=len(rows), replaced=replaced)
