"""`referrals-etl serve`: the receiver, its worker and the scheduled `sync`, in one process.

aiohttp's server (already the job's HTTP stack: its client carries the Referrals API traffic)
serves the callbacks, ``/healthz`` and ``/metrics`` on the main thread's event loop; the worker
is a task on the same loop (its database calls and runs go to threads); the scheduled `sync` is
:func:`etl.scheduler.run_schedule` in a thread of its own, exactly as `schedule` runs it.

SIGTERM/SIGINT (or ``stop``): the listener closes (in-flight callbacks are answered), the
worker finishes its round, the scheduled run in progress finishes its in-flight work; exit 0.
An error no retry can cure (authentication, schema, settings) in the worker or the scheduled
sync stops the process with that error's exit code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import threading
from collections.abc import Callable, Sequence
from functools import partial

import httpx
from aiohttp import web
from sqlalchemy.engine import Engine

from etl import db
from etl.config import Settings
from etl.stopping import StopRequest
from etl.webhooks.app import Receiver, build_app
from etl.webhooks.fetch import FetchSummary, fetch_ids
from etl.webhooks.metrics import ServeMetrics
from etl.webhooks.verify import CallbackVerifier
from etl.webhooks.worker import Worker

log = logging.getLogger(__name__)

SHUTDOWN_SECONDS = 30.0


def run_serve(
    settings: Settings,
    host: str,
    port: int,
    *,
    schedule: bool = True,
    transport: httpx.AsyncBaseTransport | None = None,
    auth: httpx.Auth | None = None,
    certificate_transport: httpx.AsyncBaseTransport | None = None,
    stop: StopRequest | None = None,
    on_ready: Callable[[int], None] | None = None,
) -> int:
    """Serve until a signal (or ``stop``); returns the exit code.

    ``transport``/``auth`` go to every fetch (tests pass the sandbox's); ``on_ready`` gets the
    port actually listened on (``port=0`` picks a free one).
    """
    if auth is None:
        from etl.auth import build_auth

        auth = build_auth(settings)
    engine = db.create_engine_for(settings.database.url)
    try:
        db.require_head(engine)
        return asyncio.run(
            _serve(
                settings,
                engine,
                host,
                port,
                schedule=schedule,
                transport=transport,
                auth=auth,
                certificate_transport=certificate_transport,
                stop=stop or StopRequest(),
                on_ready=on_ready,
            )
        )
    finally:
        engine.dispose()


async def _serve(
    settings: Settings,
    engine: Engine,
    host: str,
    port: int,
    *,
    schedule: bool,
    transport: httpx.AsyncBaseTransport | None,
    auth: httpx.Auth,
    certificate_transport: httpx.AsyncBaseTransport | None,
    stop: StopRequest,
    on_ready: Callable[[int], None] | None,
) -> int:
    hooks = settings.webhook
    metrics = ServeMetrics()
    verifier = CallbackVerifier(
        hooks, transport=certificate_transport, on_download=metrics.downloads.inc
    )

    def fetch(ids: Sequence[str]) -> FetchSummary:
        return fetch_ids(settings, engine, ids, transport=transport, auth=auth, stop=stop)

    worker = Worker(
        engine,
        fetch,
        stop,
        metrics,
        batch_size=hooks.batch_size,
        poll_interval=hooks.poll_interval,
    )
    receiver = Receiver(
        engine, verifier, metrics, max_body_bytes=hooks.max_body_bytes, on_event=worker.wake
    )
    runner = web.AppRunner(
        build_app(receiver, hooks.path), access_log=None, shutdown_timeout=SHUTDOWN_SECONDS
    )
    _install_signal_handlers(stop)
    scheduled = _ScheduledSync(settings, transport, auth, metrics, stop) if schedule else None
    worker_task: asyncio.Task[None] | None = None
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        await site.start()
        bound = _bound_port(runner, port)
        log.info(
            "serving webhooks at http://%s:%d%s (also /healthz, /metrics)", host, bound, hooks.path
        )
        worker_task = asyncio.create_task(worker.run())
        if scheduled is not None:
            scheduled.start()
        if on_ready is not None:
            on_ready(bound)
        await stop.wait()
        log.log(
            logging.WARNING if stop.signum is not None else logging.INFO,
            "stopping: %s",
            stop.reason or "stop requested",
        )
    finally:
        await runner.cleanup()  # no new callbacks; those in flight are answered
        if worker_task is not None:
            stop.request("shutting down")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(worker_task, SHUTDOWN_SECONDS * 4)
        if scheduled is not None:
            await asyncio.to_thread(scheduled.stop)
        await verifier.aclose()
    code = worker.fatal_code or (scheduled.fatal_code if scheduled is not None else None)
    log.info("serve stopped")
    return code or 0


def _bound_port(runner: web.AppRunner, asked: int) -> int:
    for address in runner.addresses:
        if isinstance(address, tuple) and len(address) >= 2:
            return int(address[1])
    return asked


def _install_signal_handlers(stop: StopRequest) -> None:
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(
            signum, partial(stop.request, f"received {signal.Signals(signum).name}", signum)
        )


class _ScheduledSync:
    """:func:`etl.scheduler.run_schedule` in a thread, stopped with the process."""

    def __init__(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None,
        auth: httpx.Auth,
        metrics: ServeMetrics,
        stop: StopRequest,
    ) -> None:
        self.fatal_code: int | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(
            target=self._run,
            args=(settings, transport, auth, metrics, stop),
            name="scheduled-sync",
            daemon=True,
        )

    def _run(
        self,
        settings: Settings,
        transport: httpx.AsyncBaseTransport | None,
        auth: httpx.Auth,
        metrics: ServeMetrics,
        stop: StopRequest,
    ) -> None:
        from etl.scheduler import run_schedule

        try:
            code = run_schedule(
                settings,
                transport=transport,
                auth=auth,
                stop_event=self._done,
                on_report=metrics.on_scheduled_report,
            )
        except Exception as exc:  # noqa: BLE001 - logged with its exit code, then the server stops
            log.error("the scheduled sync could not start: %s", exc)
            code = getattr(exc, "exit_code", 1)
        if code:
            self.fatal_code = code
            stop.request(f"the scheduled sync stopped (exit {code})")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._done.set()
        self._thread.join(SHUTDOWN_SECONDS * 4)
