"""`referrals-etl rates load`: a bad line loads nothing and is named; good values convert right."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl.cli import main
from etl.errors import RatesFileError
from etl.models import TABLES
from etl.rates import read_rates


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(args)
    return int(caught.value.code or 0)


@pytest.fixture
def cli_engine(engine: Engine, monkeypatch: pytest.MonkeyPatch) -> Engine:
    """The migrated database of the ``engine`` fixture, as the CLI's database.url."""
    monkeypatch.setenv(
        "REFERRALS_ETL_DATABASE_URL", engine.url.render_as_string(hide_password=False)
    )
    return engine


def _rates(engine: Engine) -> list[tuple[str, datetime, Decimal]]:
    t = TABLES["currency_rates"]
    with engine.connect() as conn:
        rows = conn.execute(
            sa.select(t.c.currency, t.c.valid_from, t.c.rate).order_by(t.c.currency, t.c.valid_from)
        )
        out: list[tuple[str, datetime, Decimal]] = []
        for currency, valid_from, rate in rows:
            assert isinstance(valid_from, datetime)
            out.append((str(currency), valid_from, Decimal(str(rate))))
        return out


GOOD = """\
currency,rate,valid_from
EUR,1,2026-01-01
USD,0.9213,2026-01-01
USD,0.9000,2026-06-01T00:00:00Z
SEK,0.0871234567,2026-01-01
"""


def test_a_file_with_one_bad_line_loads_nothing(
    cli_engine: Engine, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One bad line among good ones: exit 1, the line named, and not even the good lines kept."""
    good = tmp_path / "good.csv"
    good.write_text(GOOD)
    assert run_cli(["rates", "load", str(good)]) == 0
    before = _rates(cli_engine)
    assert len(before) == 4
    bad = tmp_path / "rates.csv"
    bad.write_text(
        "currency,rate,valid_from\n"
        "EUR,1.5,2027-01-01\n"
        "\n"
        "GBP,1.1x,2027-01-01\n"  # line 4: not a number
        "CHF,0.95,2027-01-01\n"
    )
    capsys.readouterr()
    assert run_cli(["rates", "load", str(bad)]) == 1
    err = capsys.readouterr().err
    assert f"{bad}:4: rate '1.1x' is not a number" in err
    assert "nothing was loaded" in err
    assert "Traceback" not in err
    assert ":2:" not in err
    assert before == _rates(cli_engine)  # not even the good lines of the bad file


def test_every_kind_of_bad_line_is_reported_with_its_number(tmp_path: Path) -> None:
    """Bad currency, rate, date, field count, duplicate key and bytes: each line number listed."""
    path = tmp_path / "rates.csv"
    path.write_bytes(
        b"Currency, Rate, Valid_From\n"
        b"eur,1,2026-01-01\n"
        b"EUR,0,2026-01-01\n"
        b"EUR,-1,2026-01-01\n"
        b"EUR,NaN,2026-01-01\n"
        b"EUR,1.12345678901,2026-01-01\n"
        b"EUR,1,yesterday\n"
        b"EUR,1\n"
        b"EUR,1,2026-01-01\n"
        b"EUR,2,2026-01-01T00:00:00+00:00\n"
        b"\xff\xfe,1,2026-01-01\n"
        b"# a comment\n"
        b"USD,0.92,2026-01-01\n"
    )
    with pytest.raises(RatesFileError) as caught:
        read_rates(path)
    assert caught.value.lines == [2, 3, 4, 5, 6, 7, 8, 10, 11]
    message = str(caught.value)
    assert "9 bad line(s), nothing was loaded" in message
    assert f"{path}:10: EUR from 2026-01-01T00:00:00Z is on line 9 already" in message
    assert f"{path}:8: expected 3 fields" in message


def test_a_file_without_a_header_or_rates_is_refused(tmp_path: Path) -> None:
    """A headless file, a header alone and a missing file are refused (the CLI exits 2)."""
    headless = tmp_path / "headless.csv"
    headless.write_text("EUR,1,2026-01-01\n")
    with pytest.raises(RatesFileError, match="1: the header must be currency,rate,valid_from"):
        read_rates(headless)
    empty = tmp_path / "empty.csv"
    empty.write_text("currency,rate,valid_from\n")
    with pytest.raises(RatesFileError, match="no rates"):
        read_rates(empty)
    assert run_cli(["rates", "load", str(tmp_path / "missing.csv")]) == 2


def test_loading_again_replaces_only_the_keys_it_holds(cli_engine: Engine, tmp_path: Path) -> None:
    """A second file's (currency, valid_from) rows replace those keys; other rows stay."""
    path = tmp_path / "rates.csv"
    path.write_text(GOOD)
    assert run_cli(["rates", "load", str(path)]) == 0
    path.write_text("currency,rate,valid_from\nUSD,0.95,2026-01-01\n")
    assert run_cli(["rates", "load", str(path)]) == 0
    assert [(c, r) for c, _, r in _rates(cli_engine)] == [
        ("EUR", Decimal(1)),
        ("SEK", Decimal("0.0871234567")),
        ("USD", Decimal("0.95")),
        ("USD", Decimal("0.9")),
    ]


def test_reporting_values_match_a_hand_computation(cli_engine: Engine, tmp_path: Path) -> None:
    """The views convert deal values with the rate valid at the time, NULL where none exists.

    Rates from a file, referrals in four currencies: never a guess where no rate exists.
    """
    now = datetime.now(UTC)
    closed = datetime(2026, 3, 15, 12, 0, tzinfo=UTC)
    path = tmp_path / "rates.csv"
    path.write_text(
        "currency,rate,valid_from\n"
        "EUR,1,2000-01-01\n"
        "USD,0.9213,2026-01-01\n"  # valid when the won deal closed
        f"USD,0.8765,{(now - timedelta(days=1)).date().isoformat()}\n"  # valid now
        f"USD,0.5,{(now + timedelta(days=30)).date().isoformat()}\n"  # not yet valid
        "SEK,0.0871234567,2000-01-01\n"
    )
    assert run_cli(["rates", "load", str(path)]) == 0
    base = {"payload": {}, "first_seen_at": now, "last_changed_at": now, "last_checked_at": now}
    referrals = [
        ("open-usd", "New", None, "1234.5678", "USD"),
        ("open-sek", "Active", "Accepted", "250001", "SEK"),
        ("open-eur", "New", None, "99.9999", "EUR"),
        ("open-jpy", "Active", "Accepted", "5000000", "JPY"),
        ("open-none", "New", None, "10", None),
        ("won-usd", "Closed", "Won", "1000.0001", "USD"),
    ]
    with cli_engine.begin() as conn:
        conn.execute(
            sa.insert(TABLES["referrals"]),
            [
                {
                    **base,
                    "id": i,
                    "status": s,
                    "substatus": u,
                    "deal_value": Decimal(v),
                    "currency": c,
                }
                for i, s, u, v, c in referrals
            ],
        )
        conn.execute(
            sa.insert(TABLES["referral_history"]),
            [
                {
                    "referral_id": "won-usd",
                    "valid_from": now,
                    "status": "Closed",
                    "substatus": "Won",
                    "updated_at": closed,
                    "payload": {},
                }
            ],
        )
    with cli_engine.connect() as conn:
        overview: dict[str, Any] = dict(
            conn.execute(
                sa.text("SELECT referral_id, deal_value_reporting FROM referral_overview")
            ).all()
        )
        pipeline = {
            r[0]: (r[1], r[2])
            for r in conn.execute(
                sa.text(
                    "SELECT referral_id, reporting_rate, deal_value_reporting FROM referral_pipeline"
                )
            )
        }
        milestones = conn.execute(
            sa.text(
                "SELECT closed_month, deal_value_reporting FROM referral_milestones"
                " WHERE referral_id = 'won-usd'"
            )
        ).one()

    def dec(value: object) -> Decimal | None:
        return None if value is None else Decimal(str(value))

    # By hand: 1234.5678 * 0.8765 = 1082.09867670 -> 1082.0987; 250001 * 0.0871234567 =
    # 21780.9512984567 -> 21780.9513; 99.9999 * 1 = 99.9999; JPY has no rate; no currency: none.
    expected = {
        "open-usd": Decimal("1082.0987"),
        "open-sek": Decimal("21780.9513"),
        "open-eur": Decimal("99.9999"),
        "open-jpy": None,
        "open-none": None,
        "won-usd": Decimal("876.5001"),  # 1000.0001 * 0.8765: the overview uses today's rate
    }
    assert expected == {k: dec(v) for k, v in overview.items()}
    assert {k: (dec(r), dec(v)) for k, (r, v) in pipeline.items()} == {
        "open-usd": (Decimal("0.8765"), Decimal("1082.0987")),
        "open-sek": (Decimal("0.0871234567"), Decimal("21780.9513")),
        "open-eur": (Decimal(1), Decimal("99.9999")),
        "open-jpy": (None, None),
        "open-none": (None, None),
    }
    # The won deal at the rate valid when it closed: 1000.0001 * 0.9213 = 921.30009213 -> 921.3001
    assert (milestones[0], dec(milestones[1])) == ("2026-03", Decimal("921.3001"))
