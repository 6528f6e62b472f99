"""Partner Center's webhook registration API (`referrals-etl webhook register|status|test`).

``{webhook.registration_base_url}/registration``: GET (the registration, 404 when none), POST
(create) and PUT (change) with ``{"WebhookUrl", "WebhookEvents"}``; ``/registration/events``
lists the event names; ``POST /registration/validationEvents`` sends a test event (answer
``{"correlationId"}``) and ``GET /registration/validationEvents/{id}`` reports its delivery
attempts. The token is for ``https://api.partnercenter.microsoft.com`` (``webhook
.registration_scope``), not the Referrals API. Blocking (one-shot commands).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import quote

import httpx

from etl.config import Settings
from etl.errors import ApiUnavailableError, AuthError
from etl.webhooks.events import EVENT_NAMES

TIMEOUT_SECONDS = 30.0
DEFAULT_EVENTS = EVENT_NAMES  # what `webhook register` subscribes to unless told


class RegistrationClient:
    def __init__(
        self,
        base_url: str,
        auth: httpx.Auth | None,
        *,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self._base = base_url.rstrip("/")
        self._client = httpx.Client(
            auth=auth, transport=transport, timeout=TIMEOUT_SECONDS, follow_redirects=False
        )

    def close(self) -> None:
        self._client.close()

    def __enter__(self) -> RegistrationClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: Any = None) -> httpx.Response:
        url = f"{self._base}/registration{path}"
        try:
            response = self._client.request(method, url, json=body)
        except httpx.HTTPError as exc:
            raise ApiUnavailableError(
                f"webhook registration API {self._base}: {exc.__class__.__name__}; "
                "check webhook.registration_base_url and the network"
            ) from None
        if response.status_code in (401, 403):
            raise AuthError(
                f"the webhook registration API answered {response.status_code}: the token must "
                "be for https://api.partnercenter.microsoft.com (webhook.registration_scope) "
                "and the account must be allowed to manage webhooks"
            )
        return response

    @staticmethod
    def _json(response: httpx.Response, what: str) -> Any:
        if not response.is_success:
            raise ApiUnavailableError(
                f"{what}: the registration API answered {response.status_code} "
                f"{_short(response.text)}"
            )
        try:
            return response.json()
        except ValueError:
            raise ApiUnavailableError(f"{what}: the answer is not JSON") from None

    def get(self) -> dict[str, Any] | None:
        """The current registration, or None when there is none."""
        response = self._call("GET", "")
        if response.status_code == 404:
            return None
        found = self._json(response, "reading the registration")
        return found if isinstance(found, dict) else None

    def event_names(self) -> list[str]:
        names = self._json(self._call("GET", "/events"), "listing the event names")
        return [str(n) for n in names] if isinstance(names, list) else []

    def register(self, url: str, events: Sequence[str]) -> dict[str, Any]:
        """Create the registration, or change the existing one (PUT), for ``events`` at ``url``."""
        body = {"WebhookUrl": url, "WebhookEvents": list(events)}
        method = "PUT" if self.get() is not None else "POST"
        found = self._json(self._call(method, "", body), "registering the webhook")
        return found if isinstance(found, dict) else {}

    def send_test(self) -> str:
        """Ask Partner Center to send its validation event; returns the correlation id."""
        answer = self._json(self._call("POST", "/validationEvents"), "sending the test event")
        correlation = answer.get("correlationId") if isinstance(answer, dict) else None
        if not isinstance(correlation, str) or not correlation:
            raise ApiUnavailableError("sending the test event: no correlationId in the answer")
        return correlation

    def test_result(self, correlation_id: str) -> list[dict[str, Any]]:
        """The delivery attempts of a test event so far (``responseCode``, ...)."""
        path = f"/validationEvents/{quote(correlation_id, safe='')}"
        answer = self._json(self._call("GET", path), "reading the test event's delivery")
        if isinstance(answer, dict):
            answer = answer.get("items", answer.get("value", [answer]))
        return [a for a in answer if isinstance(a, dict)] if isinstance(answer, list) else []

    def wait_for_test(
        self,
        correlation_id: str,
        timeout: float,
        *,
        interval: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> list[dict[str, Any]]:
        """Poll :meth:`test_result` until an attempt is reported or ``timeout`` passes."""
        deadline = clock() + timeout
        while True:
            attempts = [a for a in self.test_result(correlation_id) if _attempted(a)]
            if attempts or clock() >= deadline:
                return attempts
            sleep(min(interval, max(0.0, deadline - clock())))


def delivered(attempt: dict[str, Any]) -> bool:
    """Did Partner Center report this attempt as delivered (a 2xx, by number or by name)?"""
    code = str(attempt.get("responseCode") or "").strip()
    return code.startswith("2") or code.lower() in {"ok", "created", "accepted", "nocontent"}


def _attempted(attempt: dict[str, Any]) -> bool:
    return any(attempt.get(k) not in (None, "") for k in ("responseCode", "systemError"))


def _short(text: str) -> str:
    line = " ".join(text.split())
    return line[:200] + ("..." if len(line) > 200 else "")


def registration_client(
    settings: Settings, transport: httpx.BaseTransport | None = None
) -> RegistrationClient:
    """A client whose token is for the registration API (``webhook.registration_scope``)."""
    from etl.auth import build_auth

    scoped = settings.replace(auth={"scope": settings.webhook.registration_scope})
    return RegistrationClient(
        settings.webhook.registration_base_url, build_auth(scoped), transport=transport
    )
