"""`webhook register|status|test` against a fake of Partner Center's registration API."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from etl.config import Secret, Settings
from etl.errors import ApiUnavailableError, AuthError
from etl.webhooks.registration import DEFAULT_EVENTS, RegistrationClient, registration_client

BASE = "https://api.partnercenter.test/webhooks/v1"


class FakeRegistrationApi:
    """The registration API as documented, in memory; records every request."""

    def __init__(self) -> None:
        self.registration: dict[str, Any] | None = None
        self.requests: list[httpx.Request] = []
        self.polls = 0

    def handler(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if request.headers.get("authorization") != "Bearer registration-token":
            return httpx.Response(401, json={"error": "unauthorized"})
        path = request.url.path.removeprefix("/webhooks/v1/registration")
        if path == "" and request.method == "GET":
            if self.registration is None:
                return httpx.Response(404, json={"code": 404})
            return httpx.Response(200, json=self.registration)
        if path == "" and request.method in ("POST", "PUT"):
            body = json.loads(request.content)
            if (request.method == "POST") != (self.registration is None):
                return httpx.Response(409, json={"description": "wrong verb"})
            self.registration = {**body, "SubscriberId": "sub-1"}
            return httpx.Response(200, json=self.registration)
        if path == "/events":
            return httpx.Response(200, json=list(DEFAULT_EVENTS))
        if path == "/validationEvents" and request.method == "POST":
            return httpx.Response(200, json={"correlationId": "corr-1"})
        if path == "/validationEvents/corr-1":
            self.polls += 1
            if self.polls < 3:
                return httpx.Response(200, json={"correlationId": "corr-1", "items": []})
            attempt = {"responseCode": "OK", "responseMessage": "", "systemError": None}
            attempt["dateTimeUtc"] = "2026-12-02T01:00:00Z"
            return httpx.Response(200, json={"correlationId": "corr-1", "items": [attempt]})
        return httpx.Response(404)


def _client(fake: FakeRegistrationApi, token: str = "registration-token") -> RegistrationClient:
    class Auth(httpx.Auth):
        def auth_flow(self, request: httpx.Request) -> Any:
            request.headers["Authorization"] = f"Bearer {token}"
            yield request

    return RegistrationClient(BASE, Auth(), transport=httpx.MockTransport(fake.handler))


def test_register_upserts_the_registration() -> None:
    """register POSTs a first registration and PUTs over an existing one."""
    fake = FakeRegistrationApi()
    with _client(fake) as client:
        assert client.get() is None
        created = client.register("https://etl.example.com/webhooks/partner-center", DEFAULT_EVENTS)
        assert created["SubscriberId"] == "sub-1"
        changed = client.register("https://etl2.example.com/hook", ["referral-updated"])
        assert client.get() == changed
        assert client.event_names() == list(DEFAULT_EVENTS)
    verbs = [(r.method, r.url.path) for r in fake.requests if r.method != "GET"]
    assert verbs == [
        ("POST", "/webhooks/v1/registration"),
        ("PUT", "/webhooks/v1/registration"),
    ]
    assert fake.registration == {
        "WebhookUrl": "https://etl2.example.com/hook",
        "WebhookEvents": ["referral-updated"],
        "SubscriberId": "sub-1",
    }


def test_test_event_reports_partner_centers_delivery() -> None:
    """A test event's delivery attempts are polled every 5 s (on a fake clock) until reported."""
    fake = FakeRegistrationApi()
    slept: list[float] = []
    now = [0.0]

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    with _client(fake) as client:
        correlation = client.send_test()
        attempts = client.wait_for_test(correlation, 60, sleep=sleep, clock=lambda: now[0])
    assert correlation == "corr-1"
    assert [a["responseCode"] for a in attempts] == ["OK"]
    assert slept == [5.0, 5.0]


def test_wait_for_test_ends_at_its_deadline() -> None:
    """Polling for a test event that never reports ends exactly at its deadline (fake clock)."""
    fake = FakeRegistrationApi()
    fake.polls = -1000  # never reports
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with _client(fake) as client:
        assert client.wait_for_test("corr-1", 12, sleep=sleep, clock=lambda: now[0]) == []
    assert now[0] == 12


def test_a_rejected_token_is_an_auth_error_that_names_the_resource() -> None:
    """A 401 is an AuthError naming the resource, never the token."""
    client = _client(FakeRegistrationApi(), token="referrals-api-token")
    with pytest.raises(AuthError, match=r"api\.partnercenter\.microsoft\.com") as raised:
        client.get()
    assert "referrals-api-token" not in str(raised.value)


def test_an_unreachable_api_is_exit_4() -> None:
    """A refused connection is ApiUnavailableError, exit 4."""

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = RegistrationClient(BASE, None, transport=httpx.MockTransport(down))
    with pytest.raises(ApiUnavailableError) as raised:
        client.get()
    assert raised.value.exit_code == 4


def test_the_client_of_the_settings_calls_the_configured_registration_api() -> None:
    """The client built from settings calls the configured registration URL with its own token."""
    seen: list[str] = []
    settings = Settings().replace(
        auth={"mode": "access_token", "access_token": Secret("registration-token")},
        webhook={"registration_base_url": BASE},
    )
    fake = FakeRegistrationApi()

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        return fake.handler(request)

    with registration_client(settings, transport=httpx.MockTransport(handler)) as client:
        assert client.get() is None
    assert seen == [BASE + "/registration"]


# The commands, against the fake served over HTTP ----------------------------------------


@pytest.fixture
def served_fake(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeRegistrationApi]:
    """The fake on a local port; the commands configured for it (mode access_token)."""
    fake = FakeRegistrationApi()
    transport = httpx.MockTransport(fake.handler)

    class Handler(BaseHTTPRequestHandler):
        def _answer(self) -> None:
            length = int(self.headers.get("content-length") or 0)
            request = httpx.Request(
                self.command,
                "http://fake" + self.path,
                headers=dict(self.headers.items()),
                content=self.rfile.read(length) if length else b"",
            )
            response = transport.handle_request(request)
            body = response.read()
            self.send_response(response.status_code)
            self.send_header("content-type", "application/json")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        do_GET = do_POST = do_PUT = _answer  # noqa: N815 - http.server's names

        def log_message(self, *_args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    monkeypatch.setenv("REFERRALS_ETL_AUTH_MODE", "access_token")
    monkeypatch.setenv("REFERRALS_ETL_AUTH_ACCESS_TOKEN", "registration-token")
    monkeypatch.setenv(
        "REFERRALS_ETL_WEBHOOK_REGISTRATION_BASE_URL",
        f"http://127.0.0.1:{server.server_port}/webhooks/v1",
    )
    yield fake
    server.shutdown()
    server.server_close()
    thread.join(10)


def _run(args: list[str]) -> int:
    from etl.cli import main

    with pytest.raises(SystemExit) as caught:
        main(args)
    return int(caught.value.code or 0)


def test_the_webhook_commands_drive_the_registration_api(
    served_fake: FakeRegistrationApi, capsys: pytest.CaptureFixture[str]
) -> None:
    """`webhook status`, `register` and `test` drive the registration API as an operator would."""
    assert _run(["webhook", "status"]) == 1
    assert "no webhook is registered" in capsys.readouterr().out
    assert _run(["webhook", "register", "http://insecure.example.com/hook"]) == 2
    capsys.readouterr()
    url = "https://etl.example.com/webhooks/partner-center"
    assert _run(["webhook", "register", url]) == 0
    assert f"registered {url} for referral-created" in capsys.readouterr().out
    assert served_fake.registration is not None
    assert served_fake.registration["WebhookEvents"] == list(DEFAULT_EVENTS)
    assert _run(["webhook", "status"]) == 0
    out = capsys.readouterr().out
    assert f"url: {url}" in out
    assert "subscriber id: sub-1" in out
    served_fake.polls = 2  # the next poll reports the delivery
    assert _run(["webhook", "test", "--wait", "30"]) == 0
    out = capsys.readouterr().out
    assert "correlation id corr-1" in out
    assert "response OK" in out
    assert "registration-token" not in out
