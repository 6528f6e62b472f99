"""Prometheus metrics of one run: a textfile for node-exporter, or a push to a Pushgateway.

Every metric describes the LAST run (they are gauges: a run writes or pushes them whole), with
stable names under the ``referrals_etl_`` prefix:

====================================================  ==============================================
``referrals_etl_run_referrals{outcome}``              ids by outcome: created, updated, unchanged,
                                                      not_found, failed
``referrals_etl_run_requests{status_code}``           HTTP requests by answer status ("0" = no
                                                      answer)
``referrals_etl_run_throttled_requests``              requests answered 429
``referrals_etl_run_requests_by_endpoint{endpoint}``  requests to ``list`` (pages) and ``get`` (by
                                                      id)
``referrals_etl_run_requests_per_stored_referral``    requests per referral created or updated (left
                                                      out when none was)
``referrals_etl_run_ids``                             distinct ids the run handled (listed or by id)
``referrals_etl_run_duration_seconds``                how long the run took
``referrals_etl_last_run_status{status}``             1 for the run's status, 0 for the others
``referrals_etl_last_run_timestamp_seconds``          when the run ended (Unix time)
``referrals_etl_last_success_timestamp_seconds``      when a run last ended succeeded or partial
====================================================  ==============================================

Alert on ``time() - referrals_etl_last_success_timestamp_seconds`` growing, and on
``referrals_etl_last_run_status{status="failed"} == 1``.

A run that is not a success keeps the previous last-success time: :func:`write_metrics` reads it
from the file it replaces; :func:`push_metrics` leaves the metric out and pushes with POST
(``pushadd``), which replaces only the metrics pushed, so the Pushgateway keeps the old value.

Pushes go to one Pushgateway group per command and shard (:func:`grouping_key`: ``command`` =
sync, backfill or schedule; ``shard`` = ``I-of-N`` or ``all``), so that backfill shards and the
scheduled sync never overwrite each other. The long-running ``schedule`` can also serve the
last run's metrics itself (:class:`LastRunMetrics`, :func:`serve_metrics`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Gauge, pushadd_to_gateway, write_to_textfile
from prometheus_client.exposition import start_http_server
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from etl.config import redact_url

if TYPE_CHECKING:
    from etl.report import SyncReport

log = logging.getLogger(__name__)

PREFIX = "referrals_etl_"
JOB = "referrals_etl"
OUTCOMES = ("created", "updated", "unchanged", "not_found", "failed")
STATUSES = ("succeeded", "partial", "failed", "interrupted", "skipped")
SUCCESS_STATUSES = frozenset({"succeeded", "partial"})
LAST_SUCCESS = PREFIX + "last_success_timestamp_seconds"
PUSH_TIMEOUT_SECONDS = 10.0
ALL_INTERFACES = "0.0.0.0"  # noqa: S104 (a pod's /metrics is scraped from outside it)


def build_registry(
    report: SyncReport, last_success: float | None = None, now: float | None = None
) -> CollectorRegistry:
    """A fresh registry holding the metrics of ``report``.

    ``last_success`` is the previous last-success time, used when this run is not a success;
    ``None`` leaves the metric out. ``now`` (Unix time) defaults to the current time.
    """
    ended = time.time() if now is None else now
    registry = CollectorRegistry(auto_describe=True)

    referrals = Gauge(
        PREFIX + "run_referrals",
        "Ids of the last run by outcome.",
        ["outcome"],
        registry=registry,
    )
    for outcome in OUTCOMES:
        referrals.labels(outcome=outcome).set(getattr(report.counts, outcome))

    requests = Gauge(
        PREFIX + "run_requests",
        "HTTP requests of the last run by answer status code (0 = no answer).",
        ["status_code"],
        registry=registry,
    )
    for code, count in sorted(report.by_status.items()):
        requests.labels(status_code=str(code)).set(count)

    Gauge(
        PREFIX + "run_throttled_requests",
        "Requests of the last run answered 429 Too Many Requests.",
        registry=registry,
    ).set(report.throttled)
    by_endpoint = Gauge(
        PREFIX + "run_requests_by_endpoint",
        "Requests of the last run to the list endpoint (pages) and for one referral by id.",
        ["endpoint"],
        registry=registry,
    )
    by_endpoint.labels(endpoint="list").set(report.list_requests)
    by_endpoint.labels(endpoint="get").set(report.get_requests)
    if report.requests_per_stored is not None:
        Gauge(
            PREFIX + "run_requests_per_stored_referral",
            "Requests of the last run per referral it created or updated.",
            registry=registry,
        ).set(report.requests_per_stored)
    Gauge(
        PREFIX + "run_ids",
        "Distinct ids the last run handled (read from a list page or by id).",
        registry=registry,
    ).set(report.ids_total)
    Gauge(
        PREFIX + "run_duration_seconds", "Duration of the last run in seconds.", registry=registry
    ).set(report.seconds)

    status = Gauge(
        PREFIX + "last_run_status",
        "1 for the status of the last run, 0 for the other statuses.",
        ["status"],
        registry=registry,
    )
    for name in dict.fromkeys((*STATUSES, report.status)):
        status.labels(status=name).set(1 if name == report.status else 0)

    Gauge(
        PREFIX + "last_run_timestamp_seconds",
        "When the last run ended, in Unix time.",
        registry=registry,
    ).set(ended)

    success = ended if report.status in SUCCESS_STATUSES else last_success
    if success is not None:
        Gauge(
            LAST_SUCCESS,
            "When a run last ended succeeded or partial, in Unix time.",
            registry=registry,
        ).set(success)
    return registry


def previous_last_success(path: str | Path) -> float | None:
    """The last-success time recorded in an existing metrics file, if any."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == LAST_SUCCESS:
                    return float(sample.value)
    except ValueError:
        log.warning("metrics file %s could not be parsed; last success time starts anew", path)
    return None


def write_metrics(report: SyncReport, path: str | Path, now: float | None = None) -> bool:
    """Write the run's metrics to ``path`` atomically (node-exporter textfile collector).

    Never fails the run: a file that cannot be written is logged as an error; returns whether
    the file was written. ``now`` (Unix time) defaults to the current time.
    """
    registry = build_registry(report, previous_last_success(path), now)
    try:
        write_to_textfile(str(path), registry)
    except OSError as exc:
        log.error(
            "could not write the metrics file %s (%s); check the path and its permissions",
            path,
            exc.strerror or exc.__class__.__name__,
        )
        return False
    log.info("wrote metrics to %s", path, extra={"run_id": report.run_id})
    return True


def grouping_key(command: str, shard: tuple[int, int] | None = None) -> dict[str, str]:
    """The Pushgateway group of a run: ``{"command": "backfill", "shard": "0-of-4"}``."""
    return {"command": command, "shard": f"{shard[0]}-of-{shard[1]}" if shard else "all"}


def push_metrics(report: SyncReport, url: str, group: dict[str, str] | None = None) -> bool:
    """Push the run's metrics to the Pushgateway at ``url`` (job ``referrals_etl``), into the
    group ``group`` (see :func:`grouping_key`; ``None``: the job's group alone).

    A failed push is logged as a warning and never fails the run; returns whether it was pushed.
    """
    registry = build_registry(report)
    try:
        pushadd_to_gateway(
            url,
            job=JOB,
            registry=registry,
            grouping_key=group or {},
            timeout=PUSH_TIMEOUT_SECONDS,
        )
    except Exception as exc:  # noqa: BLE001 - a push is best effort: URLError, OSError, HTTP, bad URL
        log.warning(
            "could not push metrics to %s (%s); the run itself is not affected",
            redact_url(url),
            _reason(exc),
        )
        return False
    log.info("pushed metrics to %s", redact_url(url), extra={"run_id": report.run_id})
    return True


class LastRunMetrics:
    """A Prometheus collector that always holds the metrics of the last finished run.

    ``schedule`` updates it after every run; :func:`serve_metrics` serves it. The last-success
    time of an earlier run is kept while later runs fail (as the file and the push do).
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._registry: CollectorRegistry | None = None
        self._last_success: float | None = None

    def update(self, report: SyncReport, now: float | None = None) -> None:
        registry = build_registry(report, self._last_success, now)
        with self._lock:
            self._registry = registry
            self._last_success = registry.get_sample_value(LAST_SUCCESS)

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            registry = self._registry
        if registry is not None:
            yield from registry.collect()


class MetricsServer:
    """An HTTP server answering ``GET /metrics`` (any path) from a thread; ``close()`` stops it."""

    def __init__(self, collector: LastRunMetrics, port: int, host: str = ALL_INTERFACES) -> None:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(collector)
        self._server, self._thread = start_http_server(port, addr=host, registry=registry)
        self.port: int = self._server.server_address[1]

    def close(self, timeout: float = 5.0) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout)


def serve_metrics(
    collector: LastRunMetrics, port: int, host: str = ALL_INTERFACES
) -> MetricsServer:
    """Serve ``collector`` on ``host:port`` (0 = a free port); raises ``OSError`` if it cannot."""
    server = MetricsServer(collector, port, host)
    log.info("serving metrics at http://%s:%d/metrics", host, server.port)
    return server


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "reason", None) or exc).strip().splitlines()
    return redact_url(text[0][:200]) if text else exc.__class__.__name__
