"""Authentication end to end: MSAL (unmodified) against a local fake Entra ID over HTTPS.

The fake identity provider (tests/fake_idp.py) issues the tokens; the sandbox API accepts exactly
the access tokens the identity provider currently considers valid (the same set object), so a
run only succeeds when the job really obtained, cached, refreshed and sent tokens correctly.
"""

from __future__ import annotations

import _thread
import json
import logging
import re
import shutil
import signal
import socket
import stat
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
import trustme
from fake_idp import DEVICE_GRANT, FakeIdP
from sqlalchemy.engine import Engine

from etl import cli, db
from etl.auth import build_auth
from etl.auth.commands import describe_status, login, logout
from etl.auth.provider import MsalTokenProvider
from etl.auth.retry import Retry
from etl.config import Secret, Settings
from etl.errors import AuthError, ConfigError, IdentityProviderUnavailableError
from etl.ids import TrackedId
from etl.report import SyncReport
from etl.sandbox import Sandbox, ServerThread
from etl.scheduler import run_schedule
from etl.stopping import StopRequest, StopRequested
from etl.sync import RunOptions, run_backfill

BASE_URL = "http://sandbox.local/v1.0"
NOISY = ("etl", "httpx", "httpcore", "msal", "apscheduler", "alembic", "uvicorn", "urllib3")


# -- fixtures ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("auth-db") / "template.db"
    engine = db.create_engine_for(f"sqlite:///{path}")
    db.upgrade(engine)
    engine.dispose()
    return path


@pytest.fixture
def db_url(template_db: Path, tmp_path: Path) -> str:
    path = tmp_path / "referrals.db"
    shutil.copy(template_db, path)
    return f"sqlite:///{path}"


@pytest.fixture
def engine(db_url: str) -> Iterator[Engine]:
    built = db.create_engine_for(db_url)
    yield built
    built.dispose()


@pytest.fixture
def idp(tmp_path: Path) -> Iterator[FakeIdP]:
    with FakeIdP(tmp_path) as fake:
        yield fake


@pytest.fixture
def sandbox(idp: FakeIdP) -> Sandbox:
    box = Sandbox(count=20, seed=3)
    box.faults.accepted_tokens = idp.valid_access_tokens  # the very set the IdP keeps current
    return box


@pytest.fixture(autouse=True)
def _restore_process_state() -> Iterator[None]:
    """The CLI installs signal handlers and logging handlers; put them back after each test."""
    handlers = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    root = logging.getLogger()
    root_handlers, root_level = list(root.handlers), root.level
    levels = {name: logging.getLogger(name).level for name in NOISY}
    yield
    for signum, previous in handlers.items():
        signal.signal(signum, previous)
    for handler in list(root.handlers):
        if handler not in root_handlers:
            root.removeHandler(handler)
    root.setLevel(root_level)
    for name, level in levels.items():
        logging.getLogger(name).setLevel(level)


def auth_settings(idp: FakeIdP, tmp_path: Path, db_url: str, **auth: Any) -> Settings:
    values: dict[str, Any] = {
        "mode": "refresh_token",
        "tenant_id": idp.tenant_id,
        "client_id": idp.client_id,
        "authority_host": idp.authority_host,
        "instance_discovery": False,
        "ca_bundle": str(idp.ca_bundle),
        "token_cache_path": str(tmp_path / "state" / "referrals-etl" / "token_cache.json"),
    }
    values.update(auth)
    return Settings().replace(
        database={"url": db_url},
        api={"base_url": BASE_URL, "concurrency": 4, "max_attempts": 3},
        sync={"discover": False},
        auth=values,
    )


def secret_settings(idp: FakeIdP, tmp_path: Path, db_url: str, **auth: Any) -> Settings:
    """Mode refresh_token with the right client secret and a fresh one-time-consent token."""
    auth.setdefault("client_secret", Secret(idp.client_secret))
    auth.setdefault("refresh_token", Secret(idp.mint_refresh_token()))
    return auth_settings(idp, tmp_path, db_url, **auth)


def run(
    settings: Settings,
    engine: Engine,
    box: Sandbox,
    transport: httpx.AsyncBaseTransport | None = None,
) -> SyncReport:
    """One backfill of every sandbox id, with a fresh ``build_auth`` (as a new process would)."""
    return run_backfill(
        settings,
        engine,
        (TrackedId(i, "file") for i in box.ids),
        RunOptions(
            transport=transport or httpx.ASGITransport(app=box.app),
            auth=build_auth(settings),
            use_lock=False,
        ),
    )


def cache_json(settings: Settings) -> dict[str, Any]:
    data: dict[str, Any] = json.loads(Path(settings.auth.token_cache_path).read_text("utf-8"))
    return data


def cached_refresh_tokens(settings: Settings) -> set[str]:
    return {e["secret"] for e in cache_json(settings).get("RefreshToken", {}).values()}


def mode_of(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


class ExpireAfter(httpx.AsyncBaseTransport):
    """Wraps the sandbox transport; after ``n`` API requests every issued access token expires."""

    def __init__(self, inner: httpx.AsyncBaseTransport, n: int, idp: FakeIdP) -> None:
        self.inner, self.n, self.idp, self.seen = inner, n, idp, 0

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.seen += 1
        if self.seen == self.n:
            self.idp.expire_access_tokens()
        return await self.inner.handle_async_request(request)


# -- mode refresh_token --------------------------------------------------------------------------


def test_refresh_token_mode_persists_the_rotated_token(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """The refresh token the server rotates is kept, and only in a 0600 cache file."""
    settings = secret_settings(idp, tmp_path, db_url)
    configured = settings.auth.refresh_token
    assert configured is not None

    report = run(settings, engine, sandbox)
    assert (report.counts.created, report.counts.failed) == (20, 0)
    [grant] = idp.token_requests()
    assert grant.grant_type == "refresh_token"
    assert grant.client_secret_sent
    assert grant.scope is not None
    assert grant.scope.split().count("https://api.partner.microsoft.com/.default") == 1
    assert sandbox.stats.by_status.get(401, 0) == 0

    # The rotated refresh token is the one in the cache; the configured one is spent.
    cache_path = Path(settings.auth.token_cache_path)
    assert cached_refresh_tokens(settings) == idp.live_refresh_tokens()
    assert configured.reveal() not in cache_path.read_text("utf-8")
    assert mode_of(cache_path) == 0o600
    assert mode_of(cache_path.parent) == 0o700
    assert not list(cache_path.parent.glob("*.tmp"))  # atomic write left no temp file

    # A second run (a new process: new provider, cache read from disk) asks the IdP nothing.
    report = run(settings, engine, sandbox)
    assert report.counts.failed == 0
    assert report.ids_total == 20
    assert len(idp.token_requests()) == 1


def test_short_lived_access_token_is_renewed_with_the_cached_rotated_refresh_token(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A later run renews its access token with the cached rotated refresh token."""
    idp.access_token_lifetime = 200  # under MSAL's 5-minute margin: stale on the next run
    settings = secret_settings(idp, tmp_path, db_url)
    assert run(settings, engine, sandbox).counts.created == 20
    rotated = cached_refresh_tokens(settings)

    report = run(settings, engine, sandbox)
    assert report.counts.failed == 0
    grants = idp.token_requests("refresh_token")
    assert len(grants) == 2
    assert all(g.status == 200 for g in grants)
    # The second grant redeemed the rotated token from the cache (the configured one would
    # have been refused with AADSTS70008), and the cache now holds the next rotation.
    new = cached_refresh_tokens(settings)
    assert new == idp.live_refresh_tokens()
    assert not new & rotated


def test_access_token_expiring_mid_run_costs_one_refresh(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """An access token rejected mid-run (401) is refreshed once and the run completes."""
    settings = secret_settings(idp, tmp_path, db_url)
    transport = ExpireAfter(httpx.ASGITransport(app=sandbox.app), 6, idp)
    report = run(settings, engine, sandbox, transport)
    assert (report.counts.created, report.counts.failed) == (20, 0)
    assert sandbox.stats.by_status.get(401, 0) >= 1
    assert len(idp.token_requests("refresh_token")) == 2  # the redemption + one forced refresh


def test_new_refresh_token_after_revocation_recovers_without_deleting_the_cache(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """The documented fix for AADSTS700082: redo the consent, update the secret, rerun."""
    settings = secret_settings(idp, tmp_path, db_url)
    assert run(settings, engine, sandbox).counts.failed == 0
    idp.revoke_refresh_tokens()
    idp.expire_access_tokens()
    with pytest.raises(AuthError, match="AADSTS700082"):
        run(settings, engine, sandbox)

    renewed = settings.replace(auth={"refresh_token": Secret(idp.mint_refresh_token())})
    assert run(renewed, engine, sandbox).counts.failed == 0
    cache = cache_json(renewed)
    assert len(cache["Account"]) == 1
    assert cached_refresh_tokens(renewed) == idp.live_refresh_tokens()


def test_two_processes_sharing_the_cache_redeem_the_refresh_token_once(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """Two runs (e.g. shards) start from an empty shared cache: the second one must pick up
    what the first wrote instead of redeeming the (now spent) configured refresh token."""
    settings = secret_settings(idp, tmp_path, db_url)
    first, second = MsalTokenProvider(settings), MsalTokenProvider(settings)
    token = first.get_token()
    assert second.get_token().value == token.value
    assert len(idp.token_requests()) == 1
    assert second.get_token(force_refresh=True).value != token.value  # rotates, persists
    assert first.get_token().value != token.value  # ...and the first process sees it
    assert len(idp.token_requests()) == 2


def test_login_in_refresh_token_mode_seeds_the_cache(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """`auth login` in refresh-token mode fills the cache the runs use; logout empties it."""
    settings = secret_settings(idp, tmp_path, db_url)
    printed: list[str] = []
    login(settings, printed.append)
    assert "signed in as integration@contoso.example" in "\n".join(printed)
    assert run(settings, engine, sandbox).counts.created == 20
    assert len(idp.token_requests()) == 1

    # Logout works even when the identity provider cannot be reached.
    idp.stop()
    assert "signed out integration@contoso.example" in logout(settings)
    assert not cache_json(settings).get("Account")
    assert not cached_refresh_tokens(settings)


def test_a_certificate_credential_signs_in_without_a_secret(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A certificate credential signs in with a client assertion, never a secret."""
    pem = idp.use_certificate(tmp_path)
    settings = auth_settings(
        idp,
        tmp_path,
        db_url,
        client_certificate_path=str(pem),
        refresh_token=Secret(idp.mint_refresh_token()),
    )
    assert run(settings, engine, sandbox).counts.created == 20
    [grant] = idp.token_requests()
    assert grant.client_assertion_sent
    assert not grant.client_secret_sent

    # A certificate the app registration does not know: refused, explained.
    idp.use_certificate(tmp_path / "..")  # registers another certificate
    idp.expire_access_tokens()
    with pytest.raises(AuthError, match=r"AADSTS700027 .*certificate"):
        run(settings, engine, sandbox)


def test_missing_settings_are_config_errors_naming_the_variable(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """Each missing auth setting is a configuration error naming its variable."""
    with pytest.raises(ConfigError, match="REFERRALS_ETL_AUTH_CLIENT_SECRET"):
        build_auth(auth_settings(idp, tmp_path, db_url, refresh_token=Secret("x")))
    with pytest.raises(ConfigError, match="REFERRALS_ETL_AUTH_REFRESH_TOKEN"):
        build_auth(auth_settings(idp, tmp_path, db_url, client_secret=Secret("x")))
    with pytest.raises(ConfigError, match="REFERRALS_ETL_AUTH_TENANT_ID"):
        build_auth(auth_settings(idp, tmp_path, db_url, tenant_id="", client_secret=Secret("x")))
    with pytest.raises(ConfigError, match="REFERRALS_ETL_AUTH_ACCESS_TOKEN"):
        build_auth(auth_settings(idp, tmp_path, db_url, mode="access_token"))
    with pytest.raises(ConfigError, match=r"auth\.scope"):
        build_auth(secret_settings(idp, tmp_path, db_url, scope="openid profile offline_access"))
    assert idp.requests == []  # all caught before any request


# -- mode device_code ----------------------------------------------------------------------------


def test_a_device_code_sign_in_serves_later_runs_silently(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """After a device-code sign-in, runs, status and logout need no further interaction."""
    settings = auth_settings(idp, tmp_path, db_url, mode="device_code")
    with pytest.raises(AuthError, match=r"referrals-etl auth login"):
        build_auth(settings)  # not signed in yet

    printed: list[str] = []
    login(settings, printed.append)
    text = "\n".join(printed)
    assert f"{idp.authority_host}/devicelogin" in text
    assert re.search(r"enter the code [A-Z0-9]{9}\b", text)
    assert "signed in as integration@contoso.example" in text
    polls = idp.token_requests(DEVICE_GRANT)
    assert [p.error for p in polls] == ["authorization_pending", None]
    assert not any(p.client_secret_sent for p in idp.requests)  # a public client

    report = run(settings, engine, sandbox)
    assert (report.counts.created, report.counts.failed) == (20, 0)
    assert len(idp.token_requests()) == 2  # nothing beyond the sign-in: cached access token

    # The API starts refusing the token: one silent refresh (public client, no secret).
    idp.expire_access_tokens()
    assert run(settings, engine, sandbox).counts.failed == 0
    [refresh] = idp.token_requests("refresh_token")
    assert refresh.status == 200
    assert not refresh.client_secret_sent

    status = describe_status(settings)
    assert "account: integration@contoso.example" in status
    assert f"tenant {idp.tenant_id}" in status
    assert re.search(r"access token: valid until \d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ", status)
    assert settings.auth.token_cache_path in status
    assert not any(token in status for token in idp.issued)

    assert "signed out integration@contoso.example" in logout(settings)
    assert "RefreshToken" not in cache_json(settings) or not cache_json(settings)["RefreshToken"]
    with pytest.raises(AuthError, match=r"referrals-etl auth login"):
        build_auth(settings)
    assert "none signed in" in describe_status(settings)


def test_device_code_revoked_sign_in_asks_for_login(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A revoked device-code sign-in is one line naming AADSTS700082 and `auth login`."""
    settings = auth_settings(idp, tmp_path, db_url, mode="device_code")
    login(settings, lambda _line: None)
    idp.revoke_refresh_tokens()
    idp.expire_access_tokens()
    with pytest.raises(AuthError) as caught:
        run(settings, engine, sandbox)
    message = str(caught.value)
    assert "AADSTS700082" in message
    assert "run `referrals-etl auth login`" in message
    assert "\n" not in message


def test_an_unfinished_device_code_sign_in_writes_no_cache(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """An expired, declined or cancelled device-code sign-in is an AuthError and leaves no cache."""
    settings = auth_settings(idp, tmp_path, db_url, mode="device_code")
    idp.pending_polls = 1000  # nobody ever signs in

    idp.device_code_lifetime = 1
    with pytest.raises(AuthError, match="code expired"):
        login(settings, lambda _line: None)

    idp.device_code_lifetime = 900

    def decline(line: str) -> None:
        if line.startswith("To sign in"):
            idp.decline_device_codes()

    with pytest.raises(AuthError, match="declined"):
        login(settings, decline)

    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    timer = threading.Timer(0.3, _thread.interrupt_main)
    try:
        timer.start()
        with pytest.raises(AuthError, match="sign-in cancelled"):
            login(settings, lambda _line: None)
    finally:
        timer.cancel()
        signal.signal(signal.SIGINT, previous)
    assert not Path(settings.auth.token_cache_path).exists()  # nothing half-written


# -- mode access_token ---------------------------------------------------------------------------


def test_access_token_mode_never_calls_the_identity_provider(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A given access token is used as is: no identity-provider request."""
    idp.valid_access_tokens.add("static-token-from-elsewhere")
    settings = auth_settings(
        idp,
        tmp_path,
        db_url,
        mode="access_token",
        access_token=Secret("static-token-from-elsewhere"),
    )
    assert run(settings, engine, sandbox).counts.created == 20
    assert idp.requests == []
    assert "access token: set" in describe_status(settings)


# -- the real CLI --------------------------------------------------------------------------------


class Cli:
    """Runs ``etl.cli.main`` with a TOML file and REFERRALS_ETL_* variables; tokens from the IdP."""

    def __init__(
        self,
        idp: FakeIdP,
        server: ServerThread,
        tmp_path: Path,
        db_url: str,
        monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str],
    ) -> None:
        self.idp, self.capsys, self.monkeypatch = idp, capsys, monkeypatch
        self.cache = tmp_path / "state" / "referrals-etl" / "token_cache.json"
        self.config = tmp_path / "config.toml"
        self.config.write_text(
            "[auth]\n"
            f'tenant_id = "{idp.tenant_id}"\n'
            f'client_id = "{idp.client_id}"\n'
            f'authority_host = "{idp.authority_host}"\n'
            "instance_discovery = false\n"
            f'ca_bundle = "{idp.ca_bundle}"\n'
            f'token_cache_path = "{self.cache}"\n'
            "[sync]\ndiscover = false\n"
            "[api]\nmax_attempts = 2\n",
            encoding="utf-8",
        )
        self.ids = tmp_path / "ids.txt"
        self.ids.write_text("\n".join(server.sandbox.ids) + "\n", encoding="utf-8")
        self.refresh_token = idp.mint_refresh_token()
        self.client_secret = idp.client_secret
        self.env = {
            "REFERRALS_ETL_DATABASE_URL": db_url,
            "REFERRALS_ETL_API_BASE_URL": server.base_url,
            "REFERRALS_ETL_AUTH_CLIENT_SECRET": self.client_secret,
            "REFERRALS_ETL_AUTH_REFRESH_TOKEN": self.refresh_token,
        }
        for name, value in self.env.items():
            monkeypatch.setenv(name, value)

    def __call__(self, *args: str) -> tuple[int, str, str]:
        self.capsys.readouterr()
        with pytest.raises(SystemExit) as exited:
            cli.main([*args, "--config", str(self.config)])
        out, err = self.capsys.readouterr()
        code = exited.value.code
        return (code if isinstance(code, int) else 1), out, err

    def backfill(self, *flags: str) -> tuple[int, str, str]:
        return self("backfill", str(self.ids), *flags)


@pytest.fixture
def server(sandbox: Sandbox) -> Iterator[ServerThread]:
    with ServerThread(sandbox) as running:
        yield running


@pytest.fixture
def run_cli(
    idp: FakeIdP,
    server: ServerThread,
    tmp_path: Path,
    db_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> Cli:
    import os

    for name in list(os.environ):
        if name.startswith("REFERRALS_ETL_"):
            monkeypatch.delenv(name)
    return Cli(idp, server, tmp_path, db_url, monkeypatch, capsys)


def one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ")
    return lines[0]


def test_cli_commands_share_one_token_cache(run_cli: Cli) -> None:
    """backfill, auth status and auth logout from the command line all use the one token cache."""
    code, out, _err = run_cli.backfill()
    assert code == 0
    assert "20 ids: 20 created" in out
    code, out, _err = run_cli("auth", "status")
    assert code == 0
    assert "mode: refresh_token" in out
    assert "account: integration@contoso.example" in out
    assert "token cache: " + str(run_cli.cache) + " (mode 0600)" in out
    code, out, _err = run_cli("auth", "logout")
    assert code == 0
    assert "signed out integration@contoso.example" in out


def test_cli_wrong_client_secret_exits_3(run_cli: Cli) -> None:
    """A wrong client secret exits 3 with one line naming the secret's variable."""
    run_cli.monkeypatch.setenv("REFERRALS_ETL_AUTH_CLIENT_SECRET", "not-the-secret")
    code, _out, err = run_cli.backfill()
    assert code == 3
    line = one_error_line(err)
    assert "AADSTS7000215" in line
    assert "client secret is wrong or expired" in line
    assert "REFERRALS_ETL_AUTH_CLIENT_SECRET" in line


def test_cli_revoked_refresh_token_exits_3(run_cli: Cli) -> None:
    """A revoked refresh token exits 3 with one line naming the refresh token's variable."""
    run_cli.idp.revoke_refresh_tokens()
    code, _out, err = run_cli.backfill()
    assert code == 3
    line = one_error_line(err)
    assert "AADSTS700082" in line
    assert "expired or was revoked" in line
    assert "REFERRALS_ETL_AUTH_REFRESH_TOKEN" in line


def test_cli_missing_role_exits_3(run_cli: Cli, sandbox: Sandbox) -> None:
    """A 403 for a missing Partner Center role exits 3 naming the roles needed."""
    sandbox.faults.forbidden = True
    code, _out, err = run_cli.backfill()
    assert code == 3
    line = one_error_line(err)
    assert "403" in line
    assert "Referrals Admin" in line
    assert "Referrals User" in line


def test_cli_missing_secret_exits_2(run_cli: Cli) -> None:
    """A missing client secret exits 2 (configuration) before any request."""
    run_cli.monkeypatch.delenv("REFERRALS_ETL_AUTH_CLIENT_SECRET")
    code, _out, err = run_cli.backfill()
    assert code == 2
    assert "REFERRALS_ETL_AUTH_CLIENT_SECRET" in one_error_line(err)
    assert run_cli.idp.requests == []


@pytest.mark.parametrize(
    ("error", "code", "expected"),
    [
        ("invalid_grant", 65001, "an administrator must grant admin consent"),
        ("invalid_grant", 70008, "refresh token has expired or was revoked"),
        ("invalid_grant", 50173, "refresh token has expired or was revoked"),
        ("invalid_grant", 50076, "multi-factor authentication or a conditional access"),
        ("invalid_grant", 53003, "multi-factor authentication or a conditional access"),
        ("invalid_client", 7000222, "client secret is wrong or expired"),
        ("unauthorized_client", 700016, "was not found in tenant"),
        ("invalid_request", 9999999, "AADSTS9999999 (invalid_request): Something went wrong."),
    ],
)
def test_cli_identity_provider_errors_in_one_line(
    run_cli: Cli, error: str, code: int, expected: str
) -> None:
    """Each AADSTS error is one explained line without the trace id or JSON."""
    run_cli.idp.next_token_error = (error, code)
    exit_code, _out, err = run_cli.backfill()
    assert exit_code == 3
    line = one_error_line(err)
    assert f"AADSTS{code}" in line
    assert expected in line
    assert "Trace ID" not in line
    assert "{" not in line


def test_cli_unknown_tenant_exits_3(run_cli: Cli) -> None:
    """An unknown tenant exits 3 with one line naming the tenant."""
    run_cli.monkeypatch.setenv("REFERRALS_ETL_AUTH_TENANT_ID", "nobody.onmicrosoft.com")
    code, _out, err = run_cli.backfill()
    assert code == 3
    line = one_error_line(err)
    assert "AADSTS90002" in line
    assert "tenant nobody.onmicrosoft.com was not found" in line


def test_cli_untrusted_identity_provider_certificate_exits_3_without_retrying(
    run_cli: Cli, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A certificate that auth.ca_bundle does not trust is a set-up problem, not an outage."""
    other_ca = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other_ca))
    run_cli.monkeypatch.setenv("REFERRALS_ETL_AUTH_CA_BUNDLE", str(other_ca))
    code, _out, err = run_cli.backfill()
    assert code == 3
    assert "could not verify the certificate of the identity provider" in one_error_line(err)
    assert not [r for r in caplog.records if "retrying in" in r.getMessage()]


def test_no_token_or_secret_is_ever_written_anywhere(
    run_cli: Cli,
    caplog: pytest.LogCaptureFixture,
    sandbox: Sandbox,
    engine: Engine,
) -> None:
    """No token or secret value appears in the logs (even at DEBUG), the output or the database."""
    caplog.set_level(logging.DEBUG)
    outputs: list[str] = []

    def step(*args: str, expect: int = 0) -> None:
        code, out, err = run_cli(*args, "-vv")
        outputs.extend([out, err])
        assert expect == code, err

    step("backfill", str(run_cli.ids))
    run_cli.idp.expire_access_tokens()  # the API refuses the cached token: a 401, one refresh
    step("backfill", str(run_cli.ids))
    step("auth", "status")
    run_cli.monkeypatch.setenv("REFERRALS_ETL_AUTH_CLIENT_SECRET", "wrong-secret-value-123")
    run_cli.idp.expire_access_tokens()
    step("backfill", str(run_cli.ids), expect=3)  # with a -vv traceback
    step("auth", "logout")
    run_cli.monkeypatch.setenv("REFERRALS_ETL_AUTH_MODE", "device_code")
    step("auth", "login")
    step("auth", "status")
    step("backfill", str(run_cli.ids))

    assert sandbox.stats.by_status.get(401, 0) >= 2
    assert len(run_cli.idp.token_requests("refresh_token")) >= 3
    assert any("enter the code" in text for text in outputs)
    assert any(r.name.startswith("msal") for r in caplog.records)  # DEBUG really was on

    secrets = [
        *run_cli.idp.issued,
        run_cli.client_secret,
        run_cli.refresh_token,
        "wrong-secret-value-123",
    ]
    assert len(secrets) >= 12
    logged = caplog.text + "\n".join(f"{r.getMessage()} {r.exc_text or ''}" for r in caplog.records)
    with engine.connect() as conn:
        dumped = "\n".join(
            repr(row)
            for table in sa.inspect(engine).get_table_names()
            for row in conn.execute(sa.text(f'SELECT * FROM "{table}"'))
        )
    assert "20 ids" in "\n".join(outputs)
    assert dumped
    for where, text in (("logs", logged), ("output", "\n".join(outputs)), ("database", dumped)):
        leaked = [s[:8] + "..." for s in secrets if s in text]
        assert not leaked, f"{len(leaked)} secret value(s) found in the {where}"


# -- identity provider outages: exit 4, retried; rejections stay exit 3 ---------------------------


def test_cli_identity_provider_down_exits_4_after_retries(run_cli: Cli) -> None:
    """Connections refused on every attempt: exit 4, one line naming the attempts."""
    run_cli.idp.go_down()
    code, _out, err = run_cli.backfill()
    assert code == 4
    line = one_error_line(err)
    assert "the identity provider could not be reached" in line
    assert "retried 1 time " in line  # api.max_attempts = 2 in the test config
    assert "sign in" not in line


def test_cli_identity_provider_5xx_exits_4_after_as_many_attempts_as_the_api(
    run_cli: Cli,
) -> None:
    """503 on every request: each attempt reaches the identity provider, then exit 4."""
    run_cli.idp.fail_next(1000, status=503)
    code, _out, err = run_cli.backfill()
    assert code == 4
    assert "the identity provider could not be reached" in one_error_line(err)
    assert [r.status for r in run_cli.idp.requests] == [503, 503]


@pytest.mark.parametrize("status", [502, 429])
def test_cli_identity_provider_failing_once_is_ridden_out(run_cli: Cli, status: int) -> None:
    """One 502 or 429 (at discovery), then a healthy identity provider: exit 0."""
    run_cli.idp.fail_next(1, status=status)
    code, out, err = run_cli.backfill()
    assert code == 0, err
    assert "20 ids: 20 created" in out
    assert run_cli.idp.requests[0].status == status
    assert len(run_cli.idp.token_requests("refresh_token")) == 1


def test_cli_login_during_an_outage_keeps_the_cache(run_cli: Cli) -> None:
    """`auth login` while the identity provider is down: exit 4, the old cache untouched."""
    code, _out, err = run_cli("auth", "login")
    assert code == 0, err
    before = run_cli.cache.read_bytes()
    run_cli.idp.go_down()
    code, _out, err = run_cli("auth", "login")
    assert code == 4
    assert "the identity provider could not be reached" in one_error_line(err)
    assert before == run_cli.cache.read_bytes()


def test_schedule_keeps_going_after_an_identity_provider_outage(
    idp: FakeIdP, sandbox: Sandbox, engine: Engine, db_url: str, tmp_path: Path
) -> None:
    """A run that cannot reach the identity provider fails (exit 4); the next one succeeds."""
    settings = secret_settings(idp, tmp_path, db_url).replace(
        api={"max_attempts": 2},
        sync={"discover": True},
        schedule={"interval": 0.2},
    )
    idp.go_down()
    stop = threading.Event()
    outcome: dict[str, Any] = {}

    def target() -> None:
        outcome["code"] = run_schedule(
            settings, transport=httpx.ASGITransport(app=sandbox.app), stop_event=stop
        )

    thread = threading.Thread(target=target, name="schedule-under-test", daemon=True)
    thread.start()
    try:
        wait_for("a run failed by the outage", lambda: bool(finished_runs(engine, "failed")))
        idp.come_back()
        wait_for("a run after the outage", lambda: bool(finished_runs(engine, "succeeded")))
        assert thread.is_alive(), "the scheduler stopped after an identity provider outage"
    finally:
        stop.set()
        thread.join(30)
    assert outcome == {"code": 0}
    [failed, *_] = finished_runs(engine, "failed")
    assert "the identity provider could not be reached" in failed["message"]


def wait_for(what: str, predicate: Callable[[], bool], timeout: float = 30.0) -> None:
    """Poll ``predicate`` (a deadline, not a duration under test)."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


def finished_runs(engine: Engine, status: str) -> list[dict[str, Any]]:
    with engine.connect() as conn:
        rows = conn.execute(
            sa.text("SELECT status, message FROM sync_runs WHERE finished_at IS NOT NULL")
        ).mappings()
        return [dict(r) for r in rows if r["status"] == status]


def test_an_outage_is_retried_after_the_backoff_pauses(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """Two 503s, each reaching the identity provider: the third attempt gets a token."""
    pauses: list[float] = []
    retry = Retry(3, idp.authority_host, sleep=pauses.append, pause=float)
    provider = MsalTokenProvider(secret_settings(idp, tmp_path, db_url), retry)
    idp.fail_next(2, status=503)
    assert provider.get_token().value in idp.valid_access_tokens
    assert pauses == [1.0, 2.0]
    assert [r.status for r in idp.requests] == [503, 503, 200, 200]  # discovery x3, token


def test_a_refresh_during_an_outage_is_retried(idp: FakeIdP, db_url: str, tmp_path: Path) -> None:
    """The token expires mid-run and the token endpoint answers 500 once: one retry, new token."""
    pauses: list[float] = []
    retry = Retry(3, idp.authority_host, sleep=pauses.append, pause=lambda n: 0.5)
    provider = MsalTokenProvider(secret_settings(idp, tmp_path, db_url), retry)
    first = provider.get_token()
    idp.fail_next(1, status=500)
    second = provider.get_token(force_refresh=True)
    assert second.value != first.value
    assert second.value in idp.valid_access_tokens
    assert pauses == [0.5]
    assert [r.status for r in idp.token_requests()] == [200, 500, 200]


def test_an_outage_that_outlasts_the_attempts_is_unavailable_not_rejected(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """When every attempt fails the error is exit 4 (unavailable), never an AuthError (rejected)."""
    retry = Retry(4, idp.authority_host, sleep=lambda _s: None)
    provider = MsalTokenProvider(secret_settings(idp, tmp_path, db_url), retry)
    idp.fail_next(1000, status=504)
    with pytest.raises(IdentityProviderUnavailableError, match=r"retried 3 times") as caught:
        provider.get_token()
    assert caught.value.exit_code == 4
    assert not isinstance(caught.value, AuthError)
    assert len(idp.requests) == 4


def test_a_stop_request_ends_the_wait_between_attempts(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """SIGTERM during an outage: no further attempt, the wait ends at once."""
    stop = StopRequest()
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        stop.request("SIGTERM")

    retry = Retry(5, idp.authority_host, stop=stop, sleep=sleep, pause=lambda n: 30.0)
    provider = MsalTokenProvider(secret_settings(idp, tmp_path, db_url), retry)
    idp.fail_next(1000, status=503)
    with pytest.raises(StopRequested):
        provider.get_token()
    assert len(idp.requests) == 1
    assert slept == [0.1]  # one slice of the 30 s pause, then the stop was seen


def test_a_rejection_is_not_retried(idp: FakeIdP, db_url: str, tmp_path: Path) -> None:
    """invalid_grant (AADSTS70008) is exit 3 after one token request."""
    retry = Retry(5, idp.authority_host, sleep=lambda _s: None)
    provider = MsalTokenProvider(secret_settings(idp, tmp_path, db_url), retry)
    idp.next_token_error = ("invalid_grant", 70008)
    with pytest.raises(AuthError, match="AADSTS70008"):
        provider.get_token()
    assert len(idp.token_requests()) == 1


def test_importing_etl_auth_does_not_import_msal() -> None:
    """`referrals-etl --help` stays fast: only building an MSAL provider imports MSAL."""
    code = (
        "import sys, etl.auth, etl.auth.build, etl.auth.retry; "
        "print(sorted(m for m in ('msal', 'requests', 'cryptography') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    assert out.strip() == "[]"


def test_a_name_that_does_not_resolve_is_an_outage(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """DNS failure: exit 4 after the attempts, never "sign in again"."""
    settings = secret_settings(
        idp, tmp_path, db_url, authority_host="https://login.referrals-etl-test.invalid"
    )
    provider = MsalTokenProvider(settings, Retry(2, "idp", sleep=lambda _s: None))
    with pytest.raises(IdentityProviderUnavailableError, match="could not be resolved"):
        provider.get_token()


def test_an_identity_provider_that_never_answers_is_an_outage(
    idp: FakeIdP, db_url: str, tmp_path: Path
) -> None:
    """A listener that accepts and then says nothing: each attempt times out, then exit 4."""
    with socket.create_server(("127.0.0.1", 0)) as silent:
        port = silent.getsockname()[1]
        settings = secret_settings(
            idp, tmp_path, db_url, authority_host=f"https://127.0.0.1:{port}"
        ).replace(api={"timeout_seconds": 0.2})
        provider = MsalTokenProvider(settings, Retry(2, "idp", sleep=lambda _s: None))
        with pytest.raises(IdentityProviderUnavailableError, match="timed out"):
            provider.get_token()
