"""`auth login/status/logout`: the commands over :mod:`etl.auth.commands`."""

from __future__ import annotations

from etl.cli.app import cli, common_options, current_state, say


@cli.group("auth")
def auth_group() -> None:
    """Sign in (device code), show who is signed in, sign out."""


@auth_group.command("login")
@common_options
def auth_login() -> None:
    """Sign in: device code (mode device_code), or redeem the refresh token (refresh_token)."""
    from etl.auth.commands import login

    login(current_state().settings(), lambda line: say(line, event="auth_login"))


@auth_group.command("status")
@common_options
def auth_status() -> None:
    """Who is signed in, until when, and where the cache is (never a token)."""
    from etl.auth.commands import describe_status

    say(describe_status(current_state().settings()), event="auth_status")


@auth_group.command("logout")
@common_options
def auth_logout() -> None:
    """Remove the signed-in account from the token cache."""
    from etl.auth.commands import logout

    say(logout(current_state().settings()), event="auth_logout")
