"""`referrals-etl db ...` and `rates load`: the schema, the data dictionary, currency rates."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from etl.cli.app import cli, common_options, current_state, say


@cli.group("db")
def db_group() -> None:
    """Database schema: migrations and documentation."""


@db_group.command("upgrade")
@common_options
@click.option("--revision", default="head", show_default=True, help="Target revision.")
def db_upgrade(revision: str) -> None:
    """Apply the migrations (creates everything on an empty database)."""
    from etl import db

    engine = db.create_engine_for(current_state().settings().database.url)
    try:
        before = db.current_revision(engine)
        db.upgrade(engine, revision)
        after = db.current_revision(engine)
    finally:
        engine.dispose()
    say(
        f"database {db.describe(engine)}: {before or 'empty'} -> {after}",
        event="db_upgrade",
        revision_before=before or "empty",
        revision=after,
    )


@db_group.command("current")
@common_options
def db_current() -> None:
    """Print the schema revision and whether it is at head."""
    from etl import db

    engine = db.create_engine_for(current_state().settings().database.url)
    try:
        current, head = db.current_revision(engine), db.head_revision()
    finally:
        engine.dispose()
    state = "at head" if current == head else f"NOT at head {head}: run `referrals-etl db upgrade`"
    say(
        f"{current or 'empty (no revision)'} ({state})",
        event="db_current",
        revision=current or "empty",
        head=head,
    )
    if current != head:
        sys.exit(5)


@db_group.command("docs")
@common_options
@click.option(
    "--output",
    default="docs/data-dictionary.md",
    show_default=True,
    help="Where to write the data dictionary (- = stdout).",
)
@click.option(
    "--dbt-dir",
    help="Also write the dbt sources and staging models (e.g. integrations/dbt/models).",
)
def db_docs(output: str, dbt_dir: str | None) -> None:
    """Write the data dictionary (tables, views, columns, meanings) generated from the models."""
    from etl.dictionary import render_data_dictionary

    text = render_data_dictionary()
    if output == "-":
        click.echo(text, nl=False)
    else:
        Path(output).parent.mkdir(parents=True, exist_ok=True)
        Path(output).write_text(text, encoding="utf-8")
        say(f"wrote {output}", event="db_docs")
    if dbt_dir is not None:
        from etl.dbt import render_files

        for name, content in render_files().items():
            path = Path(dbt_dir) / name
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")
            say(f"wrote {path}", event="db_docs")


@cli.group("rates")
def rates_group() -> None:
    """Currency rates to the reporting currency (currency_rates)."""


@rates_group.command("load")
@common_options
@click.argument("file")
def rates_load(file: str) -> None:
    """Load FILE (CSV: currency,rate,valid_from) into currency_rates, all lines or none."""
    from etl import db
    from etl.rates import load_rates, read_rates

    rates = read_rates(file)  # every line checked before the database is touched
    settings = current_state().settings()
    engine = db.create_engine_for(settings.database.url)
    try:
        db.require_head(engine)
        result = load_rates(engine, rates)
    finally:
        engine.dispose()
    say(
        f"loaded {result.loaded} rate(s) from {file} ({result.replaced} replaced)",
        event="rates_load",
        loaded=result.loaded,
        replaced=result.replaced,
    )
