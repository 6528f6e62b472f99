"""`referrals-etl status`: recent runs, outcomes, failing ids and how many are due now."""

from __future__ import annotations

import sqlalchemy as sa
from sqlalchemy.engine import Engine

from etl import store
from etl.due import count_due
from etl.redact import mask


def render_status(engine: Engine, runs: int = 10, failing: int = 10) -> str:
    now = store.utcnow()
    state = store.sync_state
    lines: list[str] = []
    with engine.connect() as conn:
        recent = conn.execute(
            sa.select(store.sync_runs).order_by(store.sync_runs.c.id.desc()).limit(runs)
        ).all()
        tracked = conn.execute(sa.select(sa.func.count()).select_from(state)).scalar_one()
        stored = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.referrals)
            .where(store.referrals.c.deleted_at.is_(None))
        ).scalar_one()
        deleted = conn.execute(
            sa.select(sa.func.count())
            .select_from(store.referrals)
            .where(store.referrals.c.deleted_at.is_not(None))
        ).scalar_one()
        failing_count = conn.execute(
            sa.select(sa.func.count()).where(state.c.consecutive_failures > 0)
        ).scalar_one()
        worst = conn.execute(
            sa.select(
                state.c.referral_id,
                state.c.consecutive_failures,
                state.c.last_error,
                state.c.next_attempt_at,
            )
            .where(state.c.consecutive_failures > 0)
            .order_by(state.c.consecutive_failures.desc(), state.c.referral_id)
            .limit(failing)
        ).all()
    due = count_due(engine, now)

    lines.append(f"tracked ids: {tracked}  stored referrals: {stored}  deleted upstream: {deleted}")
    lines.append(f"due now: {due}  failing: {failing_count}")
    lines.append("")
    lines.append("recent runs:")
    if not recent:
        lines.append("  (none yet)")
    for r in recent:
        took = f"{(r.finished_at - r.started_at).total_seconds():.1f}s" if r.finished_at else "-"
        lines.append(
            f"  #{r.id:<5} {r.started_at:%Y-%m-%d %H:%M:%S}Z {r.trigger:<8} {r.status:<11} "
            f"{took:>8}  ids {r.ids_total}: created {r.created}, updated {r.updated}, "
            f"unchanged {r.unchanged}, not found {r.not_found}, failed {r.failed}; "
            f"requests {r.requests} (list {r.list_requests}, by id {r.get_requests}, "
            f"throttled {r.throttled}; {_per_stored(r.requests, r.created + r.updated)} per "
            "referral stored)"
        )
    if worst:
        lines.append("")
        lines.append("ids that keep failing:")
        for w in worst:
            retry = f"{w.next_attempt_at:%Y-%m-%d %H:%M}Z" if w.next_attempt_at else "-"
            error = mask(w.last_error or "")[:160]
            lines.append(f"  {w.referral_id}  x{w.consecutive_failures}  next {retry}  {error}")
    return "\n".join(lines)


def _per_stored(requests: int, stored: int) -> str:
    return f"{round(requests / stored, 3):g}" if stored else "-"
