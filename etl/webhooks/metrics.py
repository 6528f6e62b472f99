"""`serve`'s Prometheus metrics (``GET /metrics``), under the ``referrals_etl_`` prefix.

==============================================================  ===================================
``referrals_etl_webhook_callbacks_total{outcome}``              accepted, duplicate, rejected,
                                                                error (could not be recorded)
``referrals_etl_webhook_rejected_total{reason}``                refused callbacks by reason
                                                                (bad_signature, wrong_organization,
                                                                certificate_host_not_allowed, ...)
``referrals_etl_webhook_pending_events``                        accepted events not processed yet
``referrals_etl_webhook_event_lag_seconds``                     histogram: accepted -> stored
``referrals_etl_webhook_worker_runs_total{outcome}``            worker runs: succeeded, partial,
                                                                failed, lock_held
``referrals_etl_webhook_worker_referrals_total{outcome}``       stored, failed
``referrals_etl_webhook_certificate_downloads_total``           signing certificate downloads
==============================================================  ===================================

Beside them, the scheduled `sync`'s last-run metrics (``referrals_etl_last_run_status`` ...,
see :mod:`etl.metrics`) once a scheduled run has finished.
"""

from __future__ import annotations

import threading
import time
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest

if TYPE_CHECKING:
    from etl.report import SyncReport

PREFIX = "referrals_etl_webhook_"


class ServeMetrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.callbacks = Counter(
            PREFIX + "callbacks", "Callbacks received, by outcome", ["outcome"], registry=r
        )
        self.rejected = Counter(
            PREFIX + "rejected", "Callbacks refused, by reason", ["reason"], registry=r
        )
        self.pending = Gauge(PREFIX + "pending_events", "Events not processed yet", registry=r)
        self.lag = Histogram(
            PREFIX + "event_lag_seconds",
            "Seconds from accepting an event to storing its referral",
            buckets=(0.25, 0.5, 1, 2, 3, 5, 10, 30, 60, 300, 1800),
            registry=r,
        )
        self.runs = Counter(
            PREFIX + "worker_runs", "Worker runs, by outcome", ["outcome"], registry=r
        )
        self.referrals = Counter(
            PREFIX + "worker_referrals",
            "Referrals the worker fetched, by outcome",
            ["outcome"],
            registry=r,
        )
        self.downloads = Counter(
            PREFIX + "certificate_downloads", "Signing certificate downloads", registry=r
        )
        for outcome in ("accepted", "duplicate", "rejected", "error"):
            self.callbacks.labels(outcome)
        self._lock = threading.Lock()
        self._last_report: SyncReport | None = None
        self._last_success: float | None = None

    def on_scheduled_report(self, report: SyncReport) -> None:
        """The scheduled `sync` finished a run (called from the scheduler's thread)."""
        with self._lock:
            self._last_report = report
            if report.status in ("succeeded", "partial"):
                self._last_success = time.time()

    def render(self) -> bytes:
        text = generate_latest(self.registry)
        with self._lock:
            report, last_success = self._last_report, self._last_success
        if report is not None:
            from etl.metrics import build_registry

            text += generate_latest(build_registry(report, last_success))
        return bytes(text)
