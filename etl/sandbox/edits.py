"""Realistic edits of a referral document, as ``Sandbox.change`` applies them.

Status moves forward only (New -> Active -> Closed, or New -> Closed as Declined/Expired) and
sets ``acceptedDateTime`` / ``closedDateTime``; a Closed referral stays Closed but its other
fields still change: deal value, notes, contacts added or removed, requirement arrays grown or
shrunk, tags and sales stage. The caller sets the new eTag and ``updatedDateTime``.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import Any

from etl.sandbox import values as v
from etl.sandbox.generator import Record

_REQUIREMENT_POOLS: dict[str, tuple[str, ...]] = {
    "industries": v.INDUSTRIES,
    "products": v.PRODUCTS,
    "services": v.SERVICES,
}


def _obj(doc: dict[str, Any], key: str) -> dict[str, Any]:
    """``doc[key]`` as a dict, replacing a missing, null or odd value by a new one."""
    value = doc.get(key)
    if not isinstance(value, dict):
        value = {}
        doc[key] = value
    return value


def _progress_status(doc: dict[str, Any], rec: Record, rng: random.Random, now: str) -> bool:
    if rec.status == "Closed":
        return False
    if rec.status == "New":
        r = rng.random()
        if r < 0.2 and rec.substatus != "Received":
            rec.substatus = "Received"
        elif r < 0.75:
            rec.status, rec.substatus = "Active", "Accepted"
            doc["acceptedDateTime"] = now
        else:
            rec.status, rec.substatus = "Closed", rng.choice(("Declined", "Expired"))
            doc["closedDateTime"] = now
            doc["statusReason"] = rng.choice(("CustomerNotInterested", "Other", "None"))
    else:
        rec.status, rec.substatus = "Closed", rng.choice(("Won", "Won", "Lost"))
        doc["closedDateTime"] = now
        doc["statusReason"] = "None" if rec.substatus == "Won" else "WonByOtherPartner"
    doc["status"], doc["substatus"] = rec.status, rec.substatus
    return True


def _edit_deal_value(doc: dict[str, Any], rng: random.Random) -> None:
    value = v.deal_value(rng)
    details = _obj(doc, "details")
    if value is v.MISSING:
        details.pop("dealValue", None)
    else:
        details["dealValue"] = value
    if rng.random() < 0.3:
        details["currency"] = rng.choice(v.CURRENCIES)


def _edit_notes(doc: dict[str, Any], rng: random.Random) -> None:
    details = _obj(doc, "details")
    old = details.get("notes")
    extra = v.notes(rng) or "Uppdaterad."
    details["notes"] = (
        f"{old}\n{extra}" if isinstance(old, str) and old and len(old) < 8000 else extra
    )


def _edit_team(doc: dict[str, Any], rng: random.Random, customer: bool) -> None:
    holder = _obj(doc, "customerProfile") if customer else doc
    team = holder.get("team")
    members: list[Any] = (
        team if isinstance(team, list) else [team] if isinstance(team, dict) else []
    )
    if members and rng.random() < 0.4:
        members.pop(rng.randrange(len(members)))
    else:
        members.append(v.member(rng))
    holder["team"] = members


def _edit_requirements(doc: dict[str, Any], rng: random.Random) -> None:
    req = _obj(_obj(doc, "details"), "requirements")
    key = rng.choice(("industries", "products", "services", "solutions"))
    items = req.get(key)
    if not isinstance(items, list):
        items = []
    if items and rng.random() < 0.4:
        items.pop(rng.randrange(len(items)))
    elif key == "solutions":
        items.append(v.solution(rng))
    else:
        have = {item.get("id") for item in items if isinstance(item, dict)}
        fresh = [x for x in _REQUIREMENT_POOLS[key] if x not in have]
        items.append({"id": rng.choice(fresh) if fresh else f"X-{rng.randrange(1000)}"})
    req[key] = items


def _edit_misc(doc: dict[str, Any], rng: random.Random) -> None:
    if rng.random() < 0.5:
        doc["salesStage"] = rng.choice(v.SALES_STAGES)
    else:
        doc["tags"] = rng.sample(v.TAGS, rng.randint(0, 3))


_EDITS: tuple[Callable[[dict[str, Any], random.Random], None], ...] = (
    _edit_deal_value,
    _edit_notes,
    lambda doc, rng: _edit_team(doc, rng, customer=True),
    lambda doc, rng: _edit_team(doc, rng, customer=False),
    _edit_requirements,
    _edit_misc,
)


def apply_change(doc: dict[str, Any], rec: Record, rng: random.Random, now: str) -> None:
    """Edit ``doc`` (and the status fields of ``rec``) in place; ``now`` is the new timestamp."""
    progressed = rng.random() < 0.5 and _progress_status(doc, rec, rng, now)
    for _ in range(rng.randint(0 if progressed else 1, 2)):
        rng.choice(_EDITS)(doc, rng)
