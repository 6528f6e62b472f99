"""The sandbox's state: referrals, their versions, webhook events, counters and fault switches.

Each referral is a small :class:`~etl.sandbox.generator.Record`; its document is assembled from
it on demand, and kept (as serialised bytes only) once it has been edited; ``json.loads`` of the
bytes gives a fresh deep copy. All mutation goes through one lock, so a sandbox served from a
thread can be driven from another. Nothing here knows about HTTP: the app
(:mod:`etl.sandbox.app`) reads and changes this state, never the other way.
"""

from __future__ import annotations

import json
import random
import threading
from bisect import bisect_left, bisect_right
from collections import deque
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, Literal

from etl.sandbox import edits
from etl.sandbox import generator as g
from etl.sandbox import values as v
from etl.sandbox.faults import Faults, Stats
from etl.sandbox.odata import OrderBy, Predicate

RequestLogEntry = tuple[str, str, str, dict[str, str]]

EVENT_URI = "https://api.partnercenter.microsoft.com/engagements/v1/referrals/"
AUDIT_URI = "https://api.partnercenter.microsoft.com/auditrecords/"


def dumps(doc: Any) -> bytes:
    """Serialise as the sandbox serves JSON: compact, UTF-8, non-ASCII kept as is."""
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


class SandboxState:
    """``count`` simulated referrals, deterministic in ``seed``, with no HTTP of their own.

    :class:`etl.sandbox.box.Sandbox` adds the ASGI app that serves them.

    ``clock`` (ticks of 100 ns since the epoch) stamps changes, additions and events; it
    defaults to the wall clock, so changed referrals look recent to a client.
    """

    def __init__(
        self,
        count: int = 500,
        seed: int = 1,
        *,
        clock: Callable[[], int] | None = None,
        request_log_size: int = 100_000,
    ) -> None:
        self.seed = seed
        self.faults = Faults()
        self.stats = Stats()
        self.requests: deque[RequestLogEntry] = deque(maxlen=request_log_size)
        self._clock = clock or v.now_ticks
        self.lock = threading.RLock()  # held while changing, listing, or reading one version
        self._rng = random.Random(seed)
        self._change_rng = random.Random(f"change:{seed}")
        self._event_rng = random.Random(f"events:{seed}")
        self.fault_rng = random.Random(f"faults:{seed}")
        self._etag_serial = self._rng.getrandbits(40)
        self._records: dict[str, g.Record] = {}
        self._order: list[str] = []
        self._events: list[tuple[str, str, int, str]] = []
        self._generation = 0
        self._sorted: dict[str, tuple[int, list[tuple[int, str]]]] = {}
        self._pages_served = 0
        self._during_listing: list[tuple[int, list[str]]] = []
        self._pools = g.fragment_pools(seed)
        self._add(count, fresh=False)

    # -- reading -------------------------------------------------------------------------------

    @property
    def ids(self) -> list[str]:
        """Live ids in creation order."""
        with self.lock:
            records = self._records
            return [i for i in self._order if not records[i].deleted]

    def record(self, referral_id: str) -> g.Record | None:
        """The live record of ``referral_id``, or None when unknown or deleted."""
        rec = self._records.get(referral_id)
        return None if rec is None or rec.deleted else rec

    def body(self, rec: g.Record) -> bytes:
        """The serialised current document of ``rec`` (kept once edited, else assembled)."""
        body = rec.body
        return g.build_body(rec, self._pools) if body is None else body

    def document(self, referral_id: str) -> dict[str, Any]:
        """The current document as served (a fresh copy); KeyError when unknown or deleted."""
        rec = self.record(referral_id)
        if rec is None:
            raise KeyError(referral_id)
        doc: dict[str, Any] = json.loads(self.body(rec))
        return doc

    def etag(self, referral_id: str) -> str:
        """The current eTag, with its own double quotes; KeyError when unknown."""
        return self._records[referral_id].etag

    # -- changing ------------------------------------------------------------------------------

    def _new_etag(self) -> str:
        self._etag_serial += 1
        return f'"{self._rng.getrandbits(32):08x}-0000-0000-0000-{self._etag_serial:012x}"'

    def _add(self, n: int, *, fresh: bool) -> list[str]:
        rng, added = self._rng, []
        now = self._clock() if fresh else None
        for _ in range(n):
            partner = None
            if self._order and rng.random() < 0.1:
                partner = self._records[rng.choice(self._order)]
                if not fresh:  # not served yet: the first copy becomes Shared too
                    partner.shared = True
            rec = g.new_record(
                rng, self._new_etag(), partner.engagement_id if partner else None, created=now
            )
            if fresh:
                rec.status, rec.substatus = "New", rng.choice(("Pending", "Received"))
            self._records[rec.id] = rec
            self._order.append(rec.id)
            added.append(rec.id)
        return added

    def add(self, n: int) -> list[str]:
        """Create ``n`` new referrals (status New, created now); returns their ids."""
        with self.lock:
            added = self._add(n, fresh=True)
            self._touch("referral-created", added)
            return added

    def change(
        self, fraction: float = 0.1, ids: Iterable[str] | None = None, seed: int | None = None
    ) -> list[str]:
        """Edit ``ids`` (or a random ``fraction`` of the live referrals); returns changed ids.

        Each gets a new eTag, a newer ``updatedDateTime`` and one or more realistic edits
        (see :mod:`etl.sandbox.edits`). Deleted ids are skipped; unknown ids raise KeyError.
        """
        with self.lock:
            rng = random.Random(seed) if seed is not None else self._change_rng
            if ids is None:
                live = self.ids
                k = min(len(live), max(1, round(fraction * len(live)))) if fraction > 0 else 0
                chosen = rng.sample(live, k)
            else:
                chosen = [i for i in ids if not self._records[i].deleted]
            now = self._clock()
            for referral_id in chosen:
                rec = self._records[referral_id]
                doc = json.loads(self.body(rec))
                unit = v.tick_unit(rec.digits)
                updated = max(v.truncate_ticks(now, rec.digits), rec.updated + unit)
                edits.apply_change(doc, rec, rng, v.format_ts(updated, rec.digits))
                rec.updated = updated
                rec.etag = self._new_etag()
                doc["updatedDateTime"] = v.format_ts(updated, rec.digits)
                doc["eTag"] = rec.etag
                rec.body = dumps(doc)
            self._touch("referral-updated", chosen)
            return chosen

    def change_while_listing(self, ids: Iterable[str], after_pages: int = 1) -> None:
        """Change ``ids`` (as :meth:`change` does) right after the ``after_pages``-th list page
        from now has been served: the way a referral moves between pages while a client reads
        them. Each referral changed this way becomes newer than every page read so far."""
        with self.lock:
            self._during_listing.append((self._pages_served + after_pages, list(ids)))

    def delete(self, ids: Iterable[str]) -> None:
        """Make ``ids`` invisible: GET answers 404 and the list omits them."""
        with self.lock:
            gone = [i for i in ids if not self._records[i].deleted]
            for referral_id in gone:
                self._records[referral_id].deleted = True
            self._touch("referral-updated", gone)

    def restore(self, ids: Iterable[str]) -> None:
        """Bring deleted ``ids`` back (same id and document, new eTag)."""
        with self.lock:
            back = [i for i in ids if self._records[i].deleted]
            for referral_id in back:
                rec = self._records[referral_id]
                rec.deleted = False
                rec.etag = self._new_etag()
                if rec.body is not None:
                    doc = json.loads(rec.body)
                    doc["eTag"] = rec.etag
                    rec.body = dumps(doc)
            self._touch("referral-updated", back)

    def _touch(self, event: str, ids: list[str]) -> None:
        if not ids:
            return
        self._generation += 1
        now = self._clock()
        for referral_id in ids:
            self._events.append((event, referral_id, now, v.guid(self._event_rng)))

    # -- events --------------------------------------------------------------------------------

    @property
    def event_seq(self) -> int:
        """The number of events so far; pass it to :meth:`events` later to get only newer ones."""
        return len(self._events)

    def events(self, since: int = 0) -> list[dict[str, Any]]:
        """Webhook events (as Partner Center shapes them) after sequence number ``since``."""
        with self.lock:
            tail = self._events[max(0, since) :]
        return [
            {
                "EventName": name,
                "ResourceUri": EVENT_URI + referral_id,
                "ResourceName": "referral",
                "AuditUri": AUDIT_URI + audit,
                "ResourceChangeUtcDate": v.format_ts(ticks, 7),
            }
            for name, referral_id, ticks, audit in tail
        ]

    def write_events(
        self, path: str | Path, since: int = 0, fmt: Literal["jsonl", "array"] = "jsonl"
    ) -> int:
        """Write :meth:`events` to ``path`` as JSON lines or one JSON array; returns the count."""
        events = self.events(since)
        if fmt == "jsonl":
            text = "".join(json.dumps(e) + "\n" for e in events)
        elif fmt == "array":
            text = json.dumps(events, indent=1) + "\n"
        else:
            raise ValueError(f"fmt must be 'jsonl' or 'array', got {fmt!r}")
        Path(path).write_text(text, encoding="utf-8")
        return len(events)

    def reset_stats(self) -> None:
        """Zero the request counters (in place; the request log is kept)."""
        self.stats.reset()

    # -- listing -------------------------------------------------------------------------------

    def _sorted_keys(self, field: str) -> list[tuple[int, str]]:
        cached = self._sorted.get(field)
        if cached is not None and cached[0] == self._generation:
            return cached[1]
        live = (r for r in self._records.values() if not r.deleted)
        if field == "updatedDateTime":
            keys = sorted((r.updated, r.id) for r in live)
        else:
            keys = sorted((r.created, r.id) for r in live)
        self._sorted[field] = (self._generation, keys)
        return keys

    def list_page(
        self,
        predicate: Predicate | None,
        order: OrderBy,
        top: int,
        after: tuple[int, str] | None,
    ) -> tuple[list[bytes], tuple[int, str] | None]:
        """One page of bodies after the item ``after`` (sort key, id); and the last item's
        key when more items follow (None on the last page)."""
        with self.lock:
            keys = self._sorted_keys(order.field)
            if order.descending:
                step, i = -1, (bisect_left(keys, after) if after else len(keys)) - 1
            else:
                step, i = 1, bisect_right(keys, after) if after else 0
            records, last = self._records, None
            page: list[bytes] = []
            more = False
            while 0 <= i < len(keys):
                rec = records[keys[i][1]]
                if predicate is None or predicate(rec):
                    if len(page) == top:
                        more = True
                        break
                    page.append(self.body(rec))
                    last = keys[i]
                i += step
            self._pages_served += 1
            self._after_page()
            return page, last if more else None

    def _after_page(self) -> None:
        due = [ids for at, ids in self._during_listing if at <= self._pages_served]
        if due:
            self._during_listing = [e for e in self._during_listing if e[0] > self._pages_served]
            for ids in due:
                self.change(ids=ids)
