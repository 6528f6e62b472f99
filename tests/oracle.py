"""What the database must hold for a document, derived from the data dictionary's contract by the tests alone.

This is written independently of ``etl.flatten`` (path tables instead of code), so a bug in the
flattener cannot hide by being on both sides of a comparison.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

MISSING = object()

REFERRAL_PATHS = {
    "id": "id",
    "engagement_id": "engagementId",
    "name": "name",
    "organization_id": "organizationId",
    "organization_name": "organizationName",
    "external_reference_id": "externalReferenceId",
    "status": "status",
    "substatus": "substatus",
    "status_reason": "statusReason",
    "qualification": "qualification",
    "type": "type",
    "direction": "direction",
    "created_at": "createdDateTime",
    "updated_at": "updatedDateTime",
    "expires_at": "expirationDateTime",
    "accepted_at": "acceptedDateTime",
    "deal_value": "details.dealValue",
    "currency": "details.currency",
    "closing_at": "details.closingDateTime",
    "notes": "details.notes",
    "consent_to_contact": "consent.consentToContact",
    "consent_to_share_info": "consent.consentToToShareInfoWithOthers",
    "invite_notes": "inviteContext.notes",
    "invited_by_organization_id": "inviteContext.invitedBy.organizationId",
    "invited_by_organization_name": "inviteContext.invitedBy.organizationName",
    "etag": "eTag",
}
CUSTOMER_PATHS = {
    "name": "customerProfile.name",
    "size": "customerProfile.size",
    "address_line1": "customerProfile.address.addressLine1",
    "address_line2": "customerProfile.address.addressLine2",
    "city": "customerProfile.address.city",
    "state": "customerProfile.address.state",
    "region": "customerProfile.address.region",
    "postal_code": "customerProfile.address.postalCode",
    "country": "customerProfile.address.country",
}
MEMBER_PATHS = {
    "first_name": "firstName",
    "last_name": "lastName",
    "email": "email",
    "phone_number": "phoneNumber",
    "title": "title",
    "locale": "contactPreference.locale",
    "disable_notifications": "contactPreference.disableNotifications",
}


def dig(doc: Any, path: str) -> Any:
    for part in path.split("."):
        if not isinstance(doc, dict) or part not in doc:
            return None
        doc = doc[part]
    return doc


def as_list(value: Any) -> list[dict[str, Any]]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list):
        return [v if isinstance(v, dict) else {"id": v} for v in value if v is not None]
    return []


def expected_value(column: str, value: Any) -> Any:
    if value is None:
        return None
    if column.endswith("_at"):
        if not isinstance(value, str) or not value:
            return None
        try:
            parsed = datetime.fromisoformat(value)
        except ValueError:
            return None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    if column == "deal_value":
        if isinstance(value, bool):
            return None
        # InvalidOperation: not a number, or too many digits for the scale; ValueError: an int
        # past Python's digit limit for str().
        try:
            return Decimal(str(value)).quantize(Decimal("0.0001"))
        except (InvalidOperation, ValueError):
            return None
    if column.startswith(("consent_", "disable_")):
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return value.lower() == "true"
        return None
    if isinstance(value, str):
        return value or None  # an empty string is stored as NULL in typed columns
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def expected_rows(doc: dict[str, Any]) -> dict[str, list[dict[str, Any]]]:
    rid = doc["id"]
    referral = {c: expected_value(c, dig(doc, p)) for c, p in REFERRAL_PATHS.items()}
    customer = {"referral_id": rid} | {
        c: expected_value(c, dig(doc, p)) for c, p in CUSTOMER_PATHS.items()
    }
    ids_value = dig(doc, "customerProfile.ids")
    if isinstance(ids_value, dict):
        pairs = [(k, v) for k, v in ids_value.items()]
    else:
        pairs = [(o.get("profileType"), o.get("id")) for o in as_list(ids_value)]
    customer_ids = [
        {
            "referral_id": rid,
            "position": i,
            "profile_type": expected_value("t", k),
            "value": expected_value("v", v),
        }
        for i, (k, v) in enumerate(pairs)
    ]
    contacts = []
    for side, path in (("customer", "customerProfile.team"), ("team", "team")):
        for i, member in enumerate(as_list(dig(doc, path))):
            contacts.append(
                {"referral_id": rid, "side": side, "position": i}
                | {c: expected_value(c, dig(member, p)) for c, p in MEMBER_PATHS.items()}
            )
    requirements = []
    reqs = dig(doc, "details.requirements")
    for kind, items in reqs.items() if isinstance(reqs, dict) else []:
        if isinstance(items, dict) and "id" not in items and "name" not in items:
            continue
        for i, item in enumerate(as_list(items)):
            requirements.append(
                {
                    "referral_id": rid,
                    "kind": kind,
                    "position": i,
                    "item_id": expected_value("i", item.get("id")),
                    "name": expected_value("n", item.get("name")),
                    "item_type": expected_value("t", item.get("type")),
                }
            )
    targets = [
        {
            "referral_id": rid,
            "position": i,
            "target_type": expected_value("t", t.get("type")),
            "target_id": expected_value("i", t.get("id")),
        }
        for i, t in enumerate(as_list(doc.get("target")))
    ]
    return {
        "referrals": [referral],
        "referral_customers": [customer],
        "referral_customer_ids": customer_ids,
        "referral_contacts": sorted(contacts, key=lambda r: (r["side"], r["position"])),
        "referral_requirements": sorted(requirements, key=lambda r: (r["kind"], r["position"])),
        "referral_targets": targets,
    }


def normalise(row: dict[str, Any]) -> dict[str, Any]:
    """Database values in comparable form (Decimal scale, UTC datetimes, bools)."""
    return {key: _comparable(key, value) for key, value in row.items()}


def _comparable(key: str, value: Any) -> Any:
    """One database value in the form :func:`normalise` compares."""
    if isinstance(value, Decimal):
        return value.quantize(Decimal("0.0001"))
    if isinstance(value, float) and key == "deal_value":
        return Decimal(repr(value)).quantize(Decimal("0.0001"))
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    return value
