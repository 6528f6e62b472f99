"""What a run did (:class:`SyncReport`): counts, requests, status; the CLI's summary and exit code.

Returned by :func:`etl.sync.run_backfill` and :func:`etl.sync.run_sync`, carried as
``error.report`` by an error that ends a run, and read by the metrics and the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from etl import store
from etl.throttle import ClientStats


@dataclass
class SyncReport:
    """What a run did; the CLI turns it into a summary line and an exit code."""

    run_id: int | None = None
    trigger: str = "cli"
    status: str = "running"
    ids_total: int = 0  # distinct ids: an id given twice is fetched and counted once
    counts: store.BatchCounts = field(default_factory=store.BatchCounts)
    requests: int = 0
    throttled: int = 0
    by_status: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0
    message: str | None = None
    bad_lines: int = 0
    duplicates: int = 0  # ids given again after their first time (skipped)
    listed: int = 0  # referrals stored from list pages (changed or not)
    list_requests: int = 0
    get_requests: int = 0

    @property
    def stored(self) -> int:
        """Referrals whose new content was stored (created or updated)."""
        return self.counts.created + self.counts.updated

    @property
    def requests_per_stored(self) -> float | None:
        """API requests per referral stored: the run's cost; None when nothing was stored."""
        return round(self.requests / self.stored, 3) if self.stored else None

    @property
    def exit_code(self) -> int:
        return 1 if self.counts.failed else 0

    def totals(self) -> dict[str, int]:
        c = self.counts
        return {
            "ids_total": self.ids_total,
            "fetched": c.fetched,
            "unchanged": c.unchanged,
            "created": c.created,
            "updated": c.updated,
            "not_found": c.not_found,
            "failed": c.failed,
            "requests": self.requests,
            "throttled": self.throttled,
            "list_requests": self.list_requests,
            "get_requests": self.get_requests,
        }

    def summary(self) -> str:
        c = self.counts
        return (
            f"{self.ids_total} ids: {c.created} created, {c.updated} updated, "
            f"{c.unchanged} unchanged, {c.not_found} not found, {c.failed} failed; "
            f"{self.requests} requests ({self.list_requests} list pages, {self.get_requests} "
            f"by id; {self.throttled} throttled; {_per(self.requests_per_stored)} per referral "
            f"stored) in {self.seconds:.1f}s"
        )


def _per(value: float | None) -> str:
    return "-" if value is None else f"{value:g}"


def collect_stats(report: SyncReport, stats: ClientStats) -> None:
    """Copy the client's request counters into the report."""
    report.requests = stats.requests
    report.throttled = stats.throttled
    report.list_requests = stats.list_requests
    report.get_requests = stats.get_requests
    report.by_status = dict(stats.by_status)
