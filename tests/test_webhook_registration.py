"""`webhook register|status|test` against a fake of Partner Center's registration API."""

from __future__ import annotations

import json
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


def test_register_creates_then_changes_the_registration() -> None:
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
    fake = FakeRegistrationApi()
    fake.polls = -1000  # never reports
    now = [0.0]

    def sleep(seconds: float) -> None:
        now[0] += seconds

    with _client(fake) as client:
        assert client.wait_for_test("corr-1", 12, sleep=sleep, clock=lambda: now[0]) == []
    assert now[0] == 12


def test_a_rejected_token_is_an_auth_error_that_names_the_resource() -> None:
    client = _client(FakeRegistrationApi(), token="referrals-api-token")
    with pytest.raises(AuthError, match=r"api\.partnercenter\.microsoft\.com") as raised:
        client.get()
    assert "referrals-api-token" not in str(raised.value)


def test_an_unreachable_api_is_exit_4() -> None:
    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("refused", request=request)

    client = RegistrationClient(BASE, None, transport=httpx.MockTransport(down))
    with pytest.raises(ApiUnavailableError) as raised:
        client.get()
    assert raised.value.exit_code == 4


def test_the_client_of_the_settings_calls_the_configured_registration_api() -> None:
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
