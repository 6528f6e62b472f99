"""`serve` and `webhook register/status/test`: Partner Center's signed callbacks."""

from __future__ import annotations

import sys

import click

from etl.cli.app import cli, common_options, current_state, say


@cli.command()
@common_options
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="Address to listen on (0.0.0.0 in a container).",
)
@click.option("--port", default=8000, show_default=True, type=click.IntRange(0, 65535))
@click.option(
    "--no-schedule",
    is_flag=True,
    help="Receive and fetch only; the scheduled sync runs elsewhere (e.g. a CronJob).",
)
def serve(host: str, port: int, no_schedule: bool) -> None:
    """Receive Partner Center's signed webhooks, fetch what they name, and run the schedule."""
    from etl.webhooks.serve import run_serve

    sys.exit(run_serve(current_state().settings(), host, port, schedule=not no_schedule))


@cli.group("webhook")
def webhook_group() -> None:
    """Partner Center's webhook registration: register, status, test."""


@webhook_group.command("register")
@common_options
@click.argument("url")
@click.option(
    "--events",
    help="Comma-separated event names (default: every referral event).",
)
def webhook_register(url: str, events: str | None) -> None:
    """Register URL (the receiver's public https address) for the referral events."""
    from etl.webhooks.registration import DEFAULT_EVENTS, registration_client

    if not url.startswith("https://"):
        raise click.UsageError("URL must be an https:// address Partner Center can reach")
    names = [e.strip() for e in events.split(",") if e.strip()] if events else DEFAULT_EVENTS
    with registration_client(current_state().settings()) as client:
        answer = client.register(url, names)
    say(f"registered {answer.get('WebhookUrl', url)} for {', '.join(names)}", event="webhook")
    if answer.get("SubscriberId"):
        say(f"subscriber id: {answer['SubscriberId']}", event="webhook")


@webhook_group.command("status")
@common_options
def webhook_status() -> None:
    """Show the registration (URL and events), or that there is none."""
    from etl.webhooks.registration import registration_client

    with registration_client(current_state().settings()) as client:
        found = client.get()
    if found is None:
        say("no webhook is registered: run `referrals-etl webhook register URL`", event="webhook")
        sys.exit(1)
    say(f"url: {found.get('WebhookUrl', '-')}", event="webhook")
    say(f"events: {', '.join(found.get('WebhookEvents') or []) or '-'}", event="webhook")
    if found.get("SubscriberId"):
        say(f"subscriber id: {found['SubscriberId']}", event="webhook")


@webhook_group.command("test")
@common_options
@click.option(
    "--wait",
    default=60.0,
    show_default=True,
    type=click.FloatRange(0, 3600),
    help="Seconds to wait for Partner Center to report the delivery.",
)
def webhook_test(wait: float) -> None:
    """Have Partner Center send its validation event, and report how the delivery went."""
    from etl.webhooks.registration import delivered, registration_client

    with registration_client(current_state().settings()) as client:
        correlation = client.send_test()
        say(
            f"test event sent (correlation id {correlation}); waiting for its delivery",
            event="webhook",
        )
        attempts = client.wait_for_test(correlation, wait)
    if not attempts:
        say(
            f"no delivery reported within {wait:g}s; try `webhook test` again later",
            event="webhook",
        )
        sys.exit(4)
    for attempt in attempts:
        say(
            f"{attempt.get('dateTimeUtc', '-')}: response {attempt.get('responseCode', '-')} "
            f"{attempt.get('responseMessage') or ''} {attempt.get('systemError') or ''}".rstrip(),
            event="webhook",
        )
    sys.exit(0 if any(delivered(a) for a in attempts) else 1)
