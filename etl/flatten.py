"""Pure functions from one referral document to the rows of every table.

No I/O and no SQLAlchemy here: ``flatten_referral(document)`` returns plain dicts keyed by column
name. It never fails on an odd shape (see docs/referral-api.md): a missing part, ``null`` or
``""`` anywhere, a lone object where an array is expected, ``customerProfile.ids`` as an array or
an object, ``dealValue`` as a string, 0/6/7 fractional digits, requirement arrays beyond the
documented four, unknown fields. Values that cannot fit their column (an unparseable date, a
timestamp outside the years 1000-9999 once in UTC, a deal value out of range) become NULL there;
so does an empty string (``""`` and a missing value mean the same to an analyst, and one NULL is
easier to filter than two blanks). The whole document is kept in ``payload``, empty strings
included.

``decode_document`` turns the bytes of an answer into a document every database can store: any
Unicode encoding JSON allows (a byte-order mark too), lone surrogates made U+FFFD, ``NaN`` and
``Infinity`` kept as strings; it raises :class:`BadDocumentError` (one line) for anything else.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

import orjson

from etl.errors import BadDocumentError

Row = dict[str, Any]

# Column widths that are bounded in the schema (the rest are TEXT).
_ID_WIDTH = 64
_ITEM_ID_WIDTH = 255
_MONEY_LIMIT = Decimal(10) ** 15  # NUMERIC(19,4)
_QUANTUM = Decimal("0.0001")
# Instants every supported database holds (MariaDB's DATETIME: years 1000-9999).
_EARLIEST = datetime(1000, 1, 1, tzinfo=UTC)
_LATEST = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
# A referral is a few levels deep. Deeper nesting is refused before anything recurses into it;
# 31 is the deepest MariaDB's JSON CHECK accepts, so every database stores what is accepted.
MAX_DEPTH = 31
# A surrogate code point as a character, or as a JSON escape (a pair is decoded by the parser,
# so this only sends a document down the slower path that checks).
_SURROGATE = re.compile(r"[\ud800-\udfff]|\\u[dD][89a-fA-F]")
_REPLACEMENT = "\ufffd"


@dataclass(slots=True)
class FlatReferral:
    """The rows of one referral: the parent row, its child rows and its history values."""

    id: str
    etag: str | None
    content_hash: str  # identifies the version (see content_hash)
    referral: Row
    customer: Row
    customer_ids: list[Row] = field(default_factory=list)
    contacts: list[Row] = field(default_factory=list)
    requirements: list[Row] = field(default_factory=list)
    targets: list[Row] = field(default_factory=list)

    def children(self) -> dict[str, list[Row]]:
        """Child rows by table name."""
        return {
            "referral_customers": [self.customer],
            "referral_customer_ids": self.customer_ids,
            "referral_contacts": self.contacts,
            "referral_requirements": self.requirements,
            "referral_targets": self.targets,
        }


class RawJson(str):
    """JSON text exactly as the API sent it; stored as the payload without re-serialising.

    The engines' JSON serializer (``etl.db.json_serializer``) passes it through unchanged.
    """

    __slots__ = ()


def content_hash(document: dict[str, Any]) -> str:
    """What identifies a version: SHA-256 of the canonical JSON (sorted keys, no spaces) of the
    document without its transport fields, ``eTag`` and ``@odata.*``.

    A list page carries no eTag (and no ``@odata.context``) where a GET by id does: the same
    content gives the same hash whichever way it was read. (Migration 0004 holds a frozen copy.)
    Never raises for a decoded document: lone surrogates are hashed as they are, ``NaN`` as
    ``NaN``.
    """
    content = {k: v for k, v in document.items() if k != "eTag" and not k.startswith("@odata.")}
    canonical = json.dumps(
        content, sort_keys=True, separators=(",", ":"), ensure_ascii=False
    )  # pragma: no mutate: None is as false as False
    return hashlib.sha256(
        canonical.encode(
            "utf-8",  # pragma: no mutate: codec names ignore case
            "surrogatepass",
        )
    ).hexdigest()


def decode_document(body: bytes, max_depth: int = MAX_DEPTH) -> tuple[Any, str | None]:
    """The JSON value of an answer's bytes, and the text to store as its payload.

    The text is the body as received (decoded, without a byte-order mark), or None when the
    value had to be cleaned (lone surrogates made U+FFFD, ``NaN``/``Infinity`` made strings) and
    must be stored re-serialised. Raises :class:`BadDocumentError` with one line otherwise.
    """
    plain = _read_plain(body)
    if plain is not None:
        _check_depth(plain[0], plain[1], max_depth)
        return plain
    encoding = json.detect_encoding(body)
    try:
        text = body.decode(encoding, "surrogatepass")
    except UnicodeDecodeError as exc:
        raise BadDocumentError(
            f"the body is not valid {encoding.removesuffix('-sig').upper()} "
            f"(byte {exc.start} of {len(body)})"
        ) from None
    text = text.removeprefix("\ufeff")
    constants: list[str] = []

    def constant(name: str) -> str:
        constants.append(name)  # pragma: no mutate: only whether the list is empty is used
        return name

    try:
        value = json.loads(text, parse_constant=constant)
    except RecursionError:
        raise BadDocumentError(
            f"the body is nested too deeply to read ({len(body)} bytes)"
        ) from None
    except json.JSONDecodeError as exc:
        raise BadDocumentError(
            f"the body is not valid JSON ({exc.msg} at character {exc.pos} of {len(text)})"
        ) from None
    except ValueError as exc:  # e.g. an integer of more than 4,300 digits (Python's limit)
        raise BadDocumentError(f"the body holds a value Python cannot read ({exc})") from None
    _check_depth(value, text, max_depth)
    if _may_hold_surrogates(body, text, encoding) and _SURROGATE.search(text) is not None:
        cleaned, changed = _without_surrogates(value)
        if changed:
            return cleaned, None
    return value, (None if constants else text)


# orjson reads an integer beyond 64 bits as a float where json keeps it exact: a body with a run
# of 19 digits anywhere (in a string too) is left to json.
_LONG_DIGITS = re.compile(rb"[0-9]{19}")


def _read_plain(body: bytes) -> tuple[Any, str] | None:
    """The common body, read by orjson (~30 µs for a 3 KB referral where json takes ~60, plus a
    decoder made per call for its ``parse_constant`` hook): UTF-8 without a byte-order mark,
    no ``NaN``/``Infinity``, no lone surrogate, no integer beyond 64 bits. orjson refuses the
    first three (and anything that is not JSON) and would read the last as a float, so those
    bodies return None and are read by json, which decode_document cleans or refuses with its
    own message. Where orjson reads a body it gives the very same value as json (the tests
    compare the two on generated documents)."""
    if _LONG_DIGITS.search(body) is not None:
        return None
    try:
        value = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    # orjson accepted it: strict UTF-8
    return value, body.decode("utf-8")  # pragma: no mutate: codec names ignore case


def _check_depth(value: Any, text: str, max_depth: int) -> None:
    # Counting brackets is cheap and bounds the depth, so only a document with more than
    # max_depth of them is walked.
    if text.count("{") + text.count("[") > max_depth:  # noqa: SIM102  # pragma: no mutate: a bound
        if _depth(value, max_depth) > max_depth:
            raise BadDocumentError(f"the body is nested more than {max_depth} levels deep")


def too_deep(value: Any, max_depth: int = MAX_DEPTH) -> bool:
    """Whether containers nest more than ``max_depth`` levels in ``value`` (a listed document
    inside a page that was read whole is checked with this, as a body is in decode_document)."""
    return _depth(value, max_depth) > max_depth


def _depth(value: Any, limit: int) -> int:
    """How deeply containers nest in ``value`` (more than ``limit``: stops counting), level by
    level without recursion."""
    level = [value]
    depth = 0
    while True:
        level = [v for v in level if type(v) is dict or type(v) is list]
        if not level:
            return depth
        depth += 1
        if depth > limit:
            return depth
        level = [c for v in level for c in (v.values() if type(v) is dict else v)]


def _may_hold_surrogates(body: bytes, text: str, encoding: str) -> bool:
    """A quick look (substring searches) before the slower exact one: a surrogate is either an
    escape (``\\udXXX``) or, in UTF-8, encoded as a byte 0xED."""
    if "\\ud" in text or "\\uD" in text:
        return True
    return not encoding.startswith("utf-8") or b"\xed" in body


def _clean(text: str) -> str:
    if _SURROGATE.search(text) is None:
        return text
    # A valid pair cannot remain here (the parser joins escaped pairs); any surrogate is lone.
    return re.sub(r"[\ud800-\udfff]", _REPLACEMENT, text)  # pragma: no mutate: hex digits' case


def _without_surrogates(value: Any) -> tuple[Any, bool]:
    """``value`` with every lone surrogate (in strings and keys) made U+FFFD; and whether any
    was. Iterative: the depth was checked, but no recursion is needed either."""
    changed = False  # pragma: no mutate: None is as false as False

    def fix(item: Any) -> Any:
        nonlocal changed
        if isinstance(item, str):
            cleaned = _clean(item)
            changed = changed or cleaned is not item
            return cleaned
        return item

    root = fix(value)
    stack = [root] if isinstance(root, dict | list) else []
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            for i, child in enumerate(item):
                item[i] = fix(child)
                if isinstance(child, dict | list):
                    stack.append(child)
        else:
            for key in list(item):
                child = item.pop(key)
                fixed = fix(child)
                item[fix(key)] = fixed
                if isinstance(child, dict | list):
                    stack.append(child)
    return root, changed


def flatten_referral(
    document: dict[str, Any], etag_header: str | None = None, raw: str | None = None
) -> FlatReferral:
    """Every row that one referral document gives. ``document["id"]`` must be a string.

    ``raw`` is the document's JSON text as received, stored as the payload when given.
    """
    rid = document.get("id")
    if not isinstance(rid, str) or not rid:
        raise ValueError(f"the document's id is not a string but {type(rid).__name__}")
    details = _dict(document.get("details"))
    consent = _dict(document.get("consent"))
    invite = _dict(document.get("inviteContext"))
    invited_by = _dict(invite.get("invitedBy"))
    profile = _dict(document.get("customerProfile"))
    address = _dict(profile.get("address"))
    etag = _text(document.get("eTag")) or etag_header

    referral: Row = {
        "id": rid,
        "engagement_id": _bounded(document.get("engagementId"), _ID_WIDTH),
        "name": _text(document.get("name")),
        "organization_id": _text(document.get("organizationId")),
        "organization_name": _text(document.get("organizationName")),
        "external_reference_id": _text(document.get("externalReferenceId")),
        "status": _bounded(document.get("status"), _ID_WIDTH),
        "substatus": _text(document.get("substatus")),
        "status_reason": _text(document.get("statusReason")),
        "qualification": _text(document.get("qualification")),
        "type": _text(document.get("type")),
        "direction": _text(document.get("direction")),
        "created_at": parse_time(document.get("createdDateTime")),
        "updated_at": parse_time(document.get("updatedDateTime")),
        "expires_at": parse_time(document.get("expirationDateTime")),
        "accepted_at": parse_time(document.get("acceptedDateTime")),
        "deal_value": _money(details.get("dealValue")),
        "currency": _text(details.get("currency")),
        "closing_at": parse_time(details.get("closingDateTime")),
        "notes": _text(details.get("notes")),
        "consent_to_contact": _bool(consent.get("consentToContact")),
        "consent_to_share_info": _bool(consent.get("consentToToShareInfoWithOthers")),
        "invite_notes": _text(invite.get("notes")),
        "invited_by_organization_id": _text(invited_by.get("organizationId")),
        "invited_by_organization_name": _text(invited_by.get("organizationName")),
        "etag": etag,
        "payload": RawJson(raw) if raw is not None else document,
    }
    customer: Row = {
        "referral_id": rid,
        "name": _text(profile.get("name")),
        "size": _text(profile.get("size")),
        "address_line1": _text(address.get("addressLine1")),
        "address_line2": _text(address.get("addressLine2")),
        "city": _text(address.get("city")),
        "state": _text(address.get("state")),
        "region": _text(address.get("region")),
        "postal_code": _text(address.get("postalCode")),
        "country": _text(address.get("country")),
    }
    return FlatReferral(
        id=rid,
        etag=etag,
        content_hash=content_hash(document),
        referral=referral,
        customer=customer,
        customer_ids=_customer_ids(rid, profile.get("ids")),
        contacts=_contacts(rid, "customer", profile.get("team"))
        + _contacts(rid, "team", document.get("team")),
        requirements=_requirements(rid, details.get("requirements")),
        targets=[
            {
                "referral_id": rid,
                "position": i,
                "target_type": _text(t.get("type")),
                "target_id": _text(t.get("id")),
            }
            for i, t in enumerate(_objects(document.get("target")))
        ],
    )


def history_values(flat: FlatReferral) -> Row:
    """The columns of a ``referral_history`` version taken from the referral row."""
    r = flat.referral
    return {
        "referral_id": flat.id,
        "etag": r["etag"],
        "status": r["status"],
        "substatus": r["substatus"],
        "qualification": r["qualification"],
        "deal_value": r["deal_value"],
        "currency": r["currency"],
        "closing_at": r["closing_at"],
        "updated_at": r["updated_at"],
        "payload": r["payload"],
    }


def _customer_ids(rid: str, value: Any) -> list[Row]:
    if isinstance(value, dict):
        pairs: list[tuple[str | None, str | None]] = [
            (str(k) or None, _text(v)) for k, v in value.items()
        ]
    else:
        pairs = [(_text(o.get("profileType")), _text(o.get("id"))) for o in _objects(value)]
    return [
        {"referral_id": rid, "position": i, "profile_type": kind, "value": val}
        for i, (kind, val) in enumerate(pairs)
    ]


def _contacts(rid: str, side: str, value: Any) -> list[Row]:
    rows = []
    for i, member in enumerate(_objects(value)):
        preference = _dict(member.get("contactPreference"))
        rows.append(
            {
                "referral_id": rid,
                "side": side,
                "position": i,
                "first_name": _text(member.get("firstName")),
                "last_name": _text(member.get("lastName")),
                "email": _text(member.get("email")),
                "phone_number": _text(member.get("phoneNumber")),
                "title": _text(member.get("title")),
                "locale": _text(preference.get("locale")),
                "disable_notifications": _bool(preference.get("disableNotifications")),
            }
        )
    return rows


def _requirements(rid: str, value: Any) -> list[Row]:
    rows = []
    for kind, items in _dict(value).items():
        if not isinstance(items, list | dict) or len(kind) > _ID_WIDTH:
            continue  # e.g. a scalar flag: kept in payload only
        if isinstance(items, dict) and not _looks_like_item(items):
            continue  # an object of settings (additionalRequirements): payload only
        for i, item in enumerate(_objects(items)):
            rows.append(
                {
                    "referral_id": rid,
                    "kind": kind,
                    "position": i,
                    "item_id": _bounded(item.get("id"), _ITEM_ID_WIDTH),
                    "name": _text(item.get("name")),
                    "item_type": _text(item.get("type")),
                }
            )
    return rows


def _looks_like_item(value: dict[str, Any]) -> bool:
    return "id" in value or "name" in value


def _objects(value: Any) -> list[dict[str, Any]]:
    """An array of objects; a lone object is a one-element array; other items are skipped."""
    if isinstance(value, list):
        return [
            item if isinstance(item, dict) else {"id": item} for item in value if item is not None
        ]
    if isinstance(value, dict):
        return [value]
    return []


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _text(value: Any) -> str | None:
    """The text of a typed column; ``""`` becomes NULL like a missing value."""
    if value is None or isinstance(value, str):
        return value or None
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(
        value,
        separators=(",", ":"),
        ensure_ascii=False,  # pragma: no mutate: None is as false as False
    )


def _bounded(value: Any, width: int) -> str | None:
    text = _text(value)
    return None if text is None else text[:width]


def parse_time(value: Any) -> datetime | None:
    """A UTC datetime from an API timestamp (0, 6 or 7 fractional digits), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
        utc = parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # year 1 at +01:00 is before year 1 in UTC
        return None
    return utc if _EARLIEST <= utc <= _LATEST else None


def _money(value: Any) -> Decimal | None:
    # None, a bool, "" or any other text that is not a number: Decimal() refuses it.
    if isinstance(value, float):
        if not math.isfinite(value):
            return None
        value = repr(value)
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        return None
    if not amount.is_finite() or abs(amount) >= _MONEY_LIMIT:
        return None
    return amount.quantize(_QUANTUM)


def _bool(value: Any) -> bool | None:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in {"true", "false"}:
        return value.lower() == "true"
    return None
