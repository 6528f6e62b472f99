"""`sandbox` and `demo`: a simulated Referrals API, and the whole job on it."""

from __future__ import annotations

from pathlib import Path

import click

from etl.cli.app import cli, common_options, say


@cli.command()
@common_options
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8080, show_default=True, type=int)
@click.option("--count", default=1000, show_default=True, help="Referrals to generate.")
@click.option("--seed", default=1, show_default=True, help="Seed of the generator.")
@click.option("--latency", default=0.0, help="Seconds of latency per API answer.")
@click.option("--throttle", default=0.0, help="Answer 429 beyond this many requests per second.")
@click.option(
    "--no-304", is_flag=True, help="Never answer 304 (like an API that ignores If-None-Match)."
)
@click.option(
    "--token", "tokens", multiple=True, help="Accept only this bearer token (repeatable)."
)
@click.option(
    "--webhook-url",
    help="POST a signed Partner Center callback here for every change the sandbox makes.",
)
@click.option(
    "--webhook-ca-file",
    default="sandbox-webhook-ca.pem",
    show_default=True,
    type=click.Path(dir_okay=False),
    help="With --webhook-url: write the sandbox's test CA here (the receiver's webhook.ca_bundle).",
)
def sandbox(
    host: str,
    port: int,
    count: int,
    seed: int,
    latency: float,
    throttle: float,
    no_304: bool,
    tokens: tuple[str, ...],
    webhook_url: str | None,
    webhook_ca_file: str,
) -> None:
    """Serve a simulated Referrals API (for trying the tool and for tests)."""
    from etl.errors import ConfigError
    from etl.sandbox import Sandbox, serve
    from etl.sandbox.server import listen_socket

    try:
        sock = listen_socket(host, port)  # before saying anything: a busy port is one line
    except OSError as exc:
        raise ConfigError(
            f"the sandbox cannot listen on {host}:{port} ({exc.strerror or exc}); is another "
            "server using that port? pick another with --port"
        ) from None
    box = Sandbox(count=count, seed=seed)
    box.faults.latency_seconds = latency
    box.faults.throttle_rps = throttle
    box.faults.send_304 = not no_304
    box.faults.accepted_tokens = set(tokens) or None
    url = f"http://{host}:{sock.getsockname()[1]}"
    exports = [
        f"export REFERRALS_ETL_API_BASE_URL={url}/v1.0",
        "export REFERRALS_ETL_AUTH_MODE=access_token "
        f"REFERRALS_ETL_AUTH_ACCESS_TOKEN={tokens[0] if tokens else 'sandbox-token'}",
    ]
    say(
        f"sandbox: {count} referrals at {url}/v1.0; its ids: curl {url}/_sandbox/ids; "
        f"control endpoints: {url}/_sandbox/; Ctrl-C stops it. Point the job at it with:",
        event="sandbox_listening",
        base_url=f"{url}/v1.0",
    )
    for line in exports:
        say(line, event="sandbox_export")
    if webhook_url is None:
        serve(box, sock=sock)
        return
    from etl.sandbox.signing import TestAuthority
    from etl.sandbox.webhooks import CertificateServer, WebhookSender

    authority = TestAuthority()
    Path(webhook_ca_file).write_bytes(authority.ca_pem())
    with (
        CertificateServer(authority) as certificates,
        WebhookSender(box, webhook_url, authority, certificates.url()),
    ):
        say(
            f"sandbox: signed callbacks to {webhook_url}; for the receiver set "
            f"REFERRALS_ETL_WEBHOOK_CA_BUNDLE={webhook_ca_file} "
            f"REFERRALS_ETL_WEBHOOK_CERTIFICATE_HOSTS={certificates.host}",
            event="sandbox_webhooks",
        )
        serve(box, sock=sock)


@cli.command()
@common_options
@click.option(
    "--database",
    default="sqlite:///referrals-demo.db",
    show_default=True,
    help="Where the demo writes (recreated on each demo run when it is the default).",
)
@click.option("--count", default=200, show_default=True, help="Referrals in the sandbox.")
def demo(database: str, count: int) -> None:
    """The whole job on embedded defaults: sandbox, SQLite, migrate, backfill, change, sync."""
    from etl.demo import run_demo

    run_demo(database, count, lambda line: say(line, event="demo"))
