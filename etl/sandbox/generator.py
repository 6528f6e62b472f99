"""Deterministic, cheap generation of referral documents.

A referral is kept as a small :class:`Record`: the fields the list endpoint filters and sorts
on, its eTag, and a per-referral seed. Its document is assembled on demand by
:func:`build_body` from the record plus pre-serialised fragments (``customerProfile``,
``details``, ``team`` ...) that the record's seed picks from per-seed pools
(:func:`fragment_pools`, built once from :mod:`etl.sandbox.values`). Assembly is a string join,
a few microseconds, so 100,000 referrals cost little time and memory until they are edited.
"""

from __future__ import annotations

import hashlib
import json
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Final

from etl.sandbox import values as v

POOL_SIZE: Final = 512
_DRAWS: Final = struct.Struct("<32H")  # 32 draws of 16 bits from one blake2b digest
_CONTEXT: Final = f'"@odata.context":"{v.ENTITY_CONTEXT}"'

# The fields the list endpoint filters and sorts on, present in every document.
ALWAYS_PRESENT: Final = (
    "id",
    "engagementId",
    "createdDateTime",
    "updatedDateTime",
    "status",
    "substatus",
    "direction",
    "eTag",
)

_SLOTS: Final[tuple[Callable[[random.Random], dict[str, Any]], ...]] = (
    v.slot_org,
    v.slot_quals,
    v.slot_customer,
    v.slot_consent,
    v.slot_details,
    v.slot_team,
    v.slot_invite,
    v.slot_target,
    v.slot_newer,
    v.slot_unknown,
)
_ORG, _QUALS, _CUSTOMER, _CONSENT, _DETAILS, _TEAM, _INVITE, _TARGET, _NEWER, _UNKNOWN = range(10)


@dataclass(slots=True)
class Record:
    """The small, always-resident part of a referral; the document is built from it."""

    id: str
    seed: int
    engagement_id: str
    shared: bool
    direction: str
    status: str
    substatus: str
    created: int  # ticks
    updated: int  # ticks
    digits: int  # fractional digits of this referral's timestamps: 0, 6 or 7
    etag: str
    deleted: bool = False
    body: bytes | None = None  # the serialised document, once edited (else assembled anew)


def new_record(
    rng: random.Random, etag: str, engagement_id: str | None = None, created: int | None = None
) -> Record:
    """Draw a new referral's record; ``engagement_id`` given makes it a Shared co-sell copy."""
    digits = rng.choice((0, 6, 7, 7))
    if created is None:
        created = rng.randrange(v.GEN_START, v.GEN_END)
    created = v.truncate_ticks(created, digits)
    updated = created
    if rng.random() >= 0.2 and created < v.GEN_END:
        updated = v.truncate_ticks(rng.randrange(created, v.GEN_END), digits)
    r = rng.random()
    if r < 0.45:
        status, substatus = "New", rng.choice(("Pending", "Received", "None"))
    elif r < 0.75:
        status, substatus = "Active", "Accepted"
    else:
        status, substatus = "Closed", rng.choice(("Won", "Lost", "Declined", "Expired"))
    return Record(
        id=v.guid(rng),
        seed=rng.getrandbits(63),
        engagement_id=engagement_id or v.guid(rng),
        shared=engagement_id is not None,
        direction="Incoming" if rng.random() < 0.7 else "Outgoing",
        status=status,
        substatus=substatus,
        created=created,
        updated=updated,
        digits=digits,
        etag=etag,
    )


def _fragment(fields: dict[str, Any]) -> str:
    """``"key":value,...`` for the fields of one slot ('' when it has none)."""
    return ",".join(
        json.dumps(k) + ":" + json.dumps(x, ensure_ascii=False, separators=(",", ":"))
        for k, x in fields.items()
    )


@lru_cache(maxsize=8)
def fragment_pools(seed: int) -> tuple[tuple[str, ...], ...]:
    """For each slot, ``POOL_SIZE`` serialised variants, deterministic in ``seed``."""
    rng = random.Random(f"fragments:{seed}")
    return tuple(tuple(_fragment(slot(rng)) for _ in range(POOL_SIZE)) for slot in _SLOTS)


def build_body(rec: Record, pools: tuple[tuple[str, ...], ...]) -> bytes:
    """The serialised document of ``rec`` as first generated (deterministic in ``rec.seed``)."""
    draws = _DRAWS.unpack(hashlib.blake2b(rec.seed.to_bytes(8, "little")).digest())
    pick = [pool[d % POOL_SIZE] for pool, d in zip(pools, draws, strict=False)]
    ts, rid = rec.digits, rec.id
    created, updated = rec.created, rec.updated
    parts: list[str] = []
    r = draws[10] % 100
    if r >= 10:
        parts.append(_CONTEXT)
    elif r < 4:
        parts.append('"@odata.context":null')
    parts += [f'"id":"{rid}"', f'"engagementId":"{rec.engagement_id}"', pick[_ORG]]
    parts.append(f'"createdDateTime":"{v.format_ts(created, ts)}"')
    parts.append(f'"updatedDateTime":"{v.format_ts(updated, ts)}"')
    r = draws[11]
    expires = v.truncate_ticks(created + (30 + r % 61) * v.DAY, ts)
    parts.append(_odd_time("expirationDateTime", v.format_ts(expires, ts), r >> 8))
    r = draws[12]
    if rec.status == "Active" or rec.substatus in ("Won", "Lost"):  # accepted at some point
        accepted = v.truncate_ticks(created + (updated - created) * (r % 97) // 97, ts)
        parts.append(_odd_time("acceptedDateTime", v.format_ts(accepted, ts), r >> 7, 30))
    elif r % 100 < 10:
        parts.append('"acceptedDateTime":null' if r % 2 else '"acceptedDateTime":""')
    r = draws[13]
    if rec.status == "Closed":
        parts.append(_odd_time("closedDateTime", v.format_ts(updated, ts), r, 30))
    elif r % 100 < 10:
        parts.append('"closedDateTime":null' if r % 2 else '"closedDateTime":""')
    parts += [f'"status":"{rec.status}"', f'"substatus":"{rec.substatus}"', pick[_QUALS]]
    r = draws[14] % 100
    if rec.shared or r >= 10:
        parts.append(f'"type":"{"Shared" if rec.shared else "Independent"}"')
    elif r >= 4:
        parts.append('"type":null' if r < 7 else '"type":""')
    parts.append(f'"direction":"{rec.direction}"')
    parts += pick[_CUSTOMER : _TARGET + 1]
    parts.append(_links(rec, draws[15]))
    parts += [pick[_NEWER], pick[_UNKNOWN], '"eTag":"' + rec.etag.replace('"', '\\"') + '"']
    return ("{" + ",".join(filter(None, parts)) + "}").encode()


def _odd_time(name: str, value: str, r: int, odd_percent: int = 14) -> str:
    """``"name":"value"`` mostly; else nothing, null or ``""``."""
    r %= 100
    if r >= odd_percent:
        return f'"{name}":"{value}"'
    if r < odd_percent // 3:
        return ""
    return f'"{name}":null' if r % 2 else f'"{name}":""'


def _links(rec: Record, r: int) -> str:
    """``links`` with the ``engagments`` typo and malformed URIs, sometimes null or missing."""
    if r % 100 < 10:
        return '"links":null' if r % 100 < 4 else ""
    r //= 100
    seg = ("engagements", "engagments")[r % 2]
    self_uri = (
        f"{v.API}/{seg}/referrals/{rec.id}",
        f"{v.API}/engagements/referrals{rec.id}",  # malformed: no slash
        f"/v1.0/{seg}/referrals/{rec.id}",
        "not a uri at all",
    )[(r >> 1) % 4]
    links = f'"links":{{"self":{{"uri":"{self_uri}","method":"GET"}}'
    if (r >> 3) % 5:
        related = f"{v.API}/{seg}/referrals$filter=engagementId eq '{rec.engagement_id}'"
        links += f',"relatedReferrals":{{"uri":"{related}","method":"GET"}}'
    return links + "}"


def build_document(rec: Record, pools: tuple[tuple[str, ...], ...]) -> dict[str, Any]:
    """:func:`build_body` parsed: a fresh dict the caller may edit."""
    doc: dict[str, Any] = json.loads(build_body(rec, pools))
    return doc
