"""The receiver as an aiohttp app: ``POST <webhook.path>``, ``GET /healthz``, ``GET /metrics``.

A callback is answered 200 only after its event is committed (``webhook_events`` and the id
due in ``sync_state``): an acknowledged event survives a crash. Before that, in order: the
size (``webhook.max_body_bytes``, 413, read no further), the signature and its certificate
(:mod:`etl.webhooks.verify`), the body (:mod:`etl.webhooks.events`). A refused callback is
answered 4xx with a short JSON reason, logged in one line WITHOUT its body, counted in
``referrals_etl_webhook_rejected_total{reason}``, and changes nothing.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import sqlalchemy as sa
from aiohttp import web
from sqlalchemy.engine import Engine

from etl.store import utcnow
from etl.webhooks import ledger
from etl.webhooks.events import RejectedCallback, parse_event
from etl.webhooks.metrics import ServeMetrics
from etl.webhooks.verify import CallbackVerifier

log = logging.getLogger(__name__)

HEALTH_TIMEOUT_SECONDS = 5.0
METRICS_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Receiver:
    """The request handlers and what they share."""

    def __init__(
        self,
        engine: Engine,
        verifier: CallbackVerifier,
        metrics: ServeMetrics,
        *,
        max_body_bytes: int,
        on_event: Callable[[], None] = lambda: None,
    ) -> None:
        self.engine = engine
        self.verifier = verifier
        self.metrics = metrics
        self.max_body_bytes = max_body_bytes
        self.on_event = on_event

    async def callback(self, request: web.Request) -> web.Response:
        try:
            body = await self._body(request)
            await self.verifier.verify(request.headers, body)
            event = parse_event(body)
        except RejectedCallback as rejected:
            return self._refuse(request, rejected)
        try:
            new = await asyncio.to_thread(ledger.record_event, self.engine, event, utcnow())
        except sa.exc.SQLAlchemyError as exc:
            self.metrics.callbacks.labels("error").inc()
            log.error(
                "webhook %s %s: could not be recorded (%s); answered 503 so it is delivered again",
                event.name,
                event.referral_id,
                exc.__class__.__name__,
            )
            return web.json_response({"error": "unavailable"}, status=503)
        self.metrics.callbacks.labels("accepted" if new else "duplicate").inc()
        log.debug("webhook %s %s accepted (new: %s)", event.name, event.referral_id, new)
        if new:
            self.on_event()
        return web.json_response({"accepted": True, "duplicate": not new})

    async def _body(self, request: web.Request) -> bytes:
        length = request.content_length
        if length is not None and length > self.max_body_bytes:
            raise RejectedCallback(413, "too_large", f"a body of {length} bytes is too large")
        try:
            return await request.read()
        except web.HTTPRequestEntityTooLarge:
            raise RejectedCallback(413, "too_large", "the body is too large") from None

    def _refuse(self, request: web.Request, rejected: RejectedCallback) -> web.Response:
        self.metrics.callbacks.labels("rejected").inc()
        self.metrics.rejected.labels(rejected.reason).inc()
        log.warning(
            "webhook refused (%d %s) from %s: %s",
            rejected.status,
            rejected.reason,
            request.remote,
            rejected,
            extra={"event": "webhook_refused", "outcome": rejected.reason},
        )
        return web.json_response({"error": rejected.reason}, status=rejected.status)

    async def healthz(self, _request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(
                asyncio.to_thread(ledger.ping, self.engine), HEALTH_TIMEOUT_SECONDS
            )
        except (TimeoutError, sa.exc.SQLAlchemyError) as exc:
            log.warning("healthz: the database cannot be reached (%s)", exc.__class__.__name__)
            return web.Response(status=503, text="database unreachable\n")
        return web.Response(text="ok\n")

    async def metrics_page(self, _request: web.Request) -> web.Response:
        return web.Response(
            body=self.metrics.render(), headers={"Content-Type": METRICS_CONTENT_TYPE}
        )


def build_app(receiver: Receiver, path: str) -> web.Application:
    """The application; the body limit is enforced by aiohttp itself too."""
    app = web.Application(client_max_size=receiver.max_body_bytes)
    app.router.add_post(path, receiver.callback)
    app.router.add_get("/healthz", receiver.healthz)
    app.router.add_get("/metrics", receiver.metrics_page)
    return app
