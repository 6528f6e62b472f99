"""flatten: any document shaped like docs/referral-api.md flattens without error (Hypothesis)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import BadDocumentError
from etl.flatten import (
    RawJson,
    content_hash,
    decode_document,
    flatten_referral,
    history_values,
    parse_time,
    too_deep,
)

scalars = st.one_of(
    st.none(),
    st.just(""),
    st.text(max_size=20),
    st.integers(),
    st.floats(allow_nan=True),
    st.booleans(),
)
odd = st.one_of(
    scalars,
    st.lists(scalars, max_size=3),
    st.dictionaries(st.text(max_size=5), scalars, max_size=3),
)
times = st.one_of(
    odd,
    st.sampled_from(
        [
            "2020-10-30T21:03:00Z",
            "2018-10-30T21:03:42.4579542Z",
            "2020-10-30T21:03:00.123456Z",
            "not a date",
        ]
    ),
)
member = st.fixed_dictionaries(
    {},
    optional={
        "firstName": odd,
        "lastName": odd,
        "email": odd,
        "phoneNumber": odd,
        "title": odd,
        "contactPreference": st.one_of(
            odd, st.fixed_dictionaries({}, optional={"locale": odd, "disableNotifications": odd})
        ),
    },
)


def many(item: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """None, one ``item``, or a list of items mixed with nulls and scalars."""
    return st.one_of(st.none(), item, st.lists(st.one_of(item, st.none(), scalars), max_size=4))


item = st.fixed_dictionaries({}, optional={"id": odd, "name": odd, "type": odd})
requirements = st.one_of(
    odd,
    st.dictionaries(
        st.sampled_from(
            [
                "industries",
                "products",
                "services",
                "solutions",
                "offers",
                "salesPlays",
                "additionalRequirements",
            ]
        ),
        st.one_of(many(item), odd),
        max_size=7,
    ),
)
documents = st.fixed_dictionaries(
    {"id": st.sampled_from(["r-1", "c5fbb3b6-be74-4795-9fb5-4324c73fed37"])},
    optional={
        "engagementId": odd,
        "name": odd,
        "status": odd,
        "substatus": odd,
        "createdDateTime": times,
        "updatedDateTime": times,
        "acceptedDateTime": times,
        "eTag": odd,
        "team": many(member),
        "consent": st.one_of(
            odd,
            st.fixed_dictionaries(
                {}, optional={"consentToContact": odd, "consentToToShareInfoWithOthers": odd}
            ),
        ),
        "customerProfile": st.one_of(
            odd,
            st.fixed_dictionaries(
                {},
                optional={
                    "name": odd,
                    "address": st.one_of(
                        odd,
                        st.dictionaries(st.sampled_from(["addressLine1", "city", "country"]), odd),
                    ),
                    "team": many(member),
                    "ids": st.one_of(
                        odd,
                        many(st.fixed_dictionaries({}, optional={"profileType": odd, "id": odd})),
                    ),
                },
            ),
        ),
        "details": st.one_of(
            odd,
            st.fixed_dictionaries(
                {},
                optional={
                    "dealValue": st.one_of(
                        odd, st.sampled_from(["12345.67", "1e3", "1,5", "9" * 30])
                    ),
                    "currency": odd,
                    "closingDateTime": times,
                    "notes": odd,
                    "requirements": requirements,
                },
            ),
        ),
        "inviteContext": odd,
        "target": many(item),
        "futureField": odd,
    },
)


# Property tests over any documented shape: seconds each, so left out of `make mutation`, where
# they would run for every mutant.
any_document = given(documents)
property_settings = settings(max_examples=300, deadline=None)


@pytest.mark.slow
@property_settings
@any_document
def test_any_document_gives_a_referral_row_of_its_id_and_itself_as_payload(
    document: dict[str, Any],
) -> None:
    """The referral row is the document's own: its id, and the document itself as payload."""
    flat = flatten_referral(document)
    assert document["id"] == flat.referral["id"]
    assert flat.referral["payload"] is document


@pytest.mark.slow
@property_settings
@any_document
def test_the_child_rows_of_any_document_carry_the_parent_id(document: dict[str, Any]) -> None:
    flat = flatten_referral(document)
    for table, rows in flat.children().items():
        assert all(row["referral_id"] == document["id"] for row in rows), table


@pytest.mark.slow
@property_settings
@any_document
def test_the_child_rows_of_any_document_have_distinct_primary_keys(
    document: dict[str, Any],
) -> None:
    flat = flatten_referral(document)
    for table, rows in flat.children().items():
        if table != "referral_customers":
            keys = [
                tuple(v for k, v in row.items() if k in ("side", "kind", "position"))
                for row in rows
            ]
            assert len(set(keys)) == len(keys), f"duplicate primary keys in {table}"


@pytest.mark.slow
@property_settings
@any_document
def test_the_deal_value_of_any_document_is_null_or_a_decimal_below_10_to_the_15(
    document: dict[str, Any],
) -> None:
    deal = flatten_referral(document).referral["deal_value"]
    assert deal is None or (isinstance(deal, Decimal) and abs(deal) < Decimal(10) ** 15)


@pytest.mark.slow
@property_settings
@any_document
def test_the_timestamps_of_any_document_are_null_or_in_utc(document: dict[str, Any]) -> None:
    flat = flatten_referral(document)
    for column in ("created_at", "updated_at", "accepted_at", "closing_at"):
        value = flat.referral[column]
        assert value is None or value.utcoffset().total_seconds() == 0


@pytest.mark.slow
@property_settings
@any_document
def test_any_document_without_an_etag_gets_a_64_character_content_hash(
    document: dict[str, Any],
) -> None:
    flat = flatten_referral(document)
    if flat.etag is None:
        assert flat.content_hash is not None
        assert len(flat.content_hash) == 64


@pytest.mark.slow
@property_settings
@any_document
def test_no_typed_column_of_any_document_holds_an_empty_string(document: dict[str, Any]) -> None:
    """An empty string is NULL in every typed column; only the payload keeps it."""
    flat = flatten_referral(document)
    for table, rows in {"referrals": [flat.referral], **flat.children()}.items():
        for row in rows:
            assert "" not in [v for k, v in row.items() if k != "payload"], (table, row)


_EMPTY_STRINGS = {
    "id": "r-empty",
    "name": "",
    "status": "",
    "eTag": "",
    "details": {"currency": "", "notes": "", "requirements": {"products": [{"id": ""}]}},
    "customerProfile": {"name": "", "address": {"country": ""}, "ids": {"": "x"}},
    "team": [{"firstName": "", "email": ""}],
    "target": [{"type": "", "id": ""}],
}


def test_an_empty_string_is_null_in_the_typed_columns_of_every_table() -> None:
    flat = flatten_referral(_EMPTY_STRINGS, etag_header='"from-header"')
    assert {k: flat.referral[k] for k in ("name", "status", "currency", "notes")} == {
        "name": None,
        "status": None,
        "currency": None,
        "notes": None,
    }
    assert (flat.customer["name"], flat.customer["country"]) == (None, None)
    assert [(r["profile_type"], r["value"]) for r in flat.customer_ids] == [(None, "x")]
    assert (flat.contacts[0]["first_name"], flat.contacts[0]["email"]) == (None, None)
    assert flat.requirements[0]["item_id"] is None
    assert (flat.targets[0]["target_type"], flat.targets[0]["target_id"]) == (None, None)


def test_the_payload_keeps_an_empty_string_as_received() -> None:
    flat = flatten_referral(_EMPTY_STRINGS, etag_header='"from-header"')
    assert flat.referral["payload"]["details"]["currency"] == ""


def test_an_empty_etag_in_the_document_gives_way_to_the_etag_header() -> None:
    flat = flatten_referral(_EMPTY_STRINGS, etag_header='"from-header"')
    assert flat.referral["etag"] == '"from-header"'


# One document in the shapes the API documents otherwise: objects for arrays, text for numbers.
_ODD_SHAPES = {
    "id": "r-1",
    "customerProfile": {"ids": {"CrmId": "x", "Duns": 12}, "team": {"firstName": "Lone"}},
    "team": [{"firstName": "A"}, None, {"firstName": "B"}],
    "details": {
        "dealValue": "12345.678912",
        "requirements": {
            "offers": [{"id": "o1"}],
            "additionalRequirements": {"flag": True},
            "products": {"id": "Azure"},
        },
    },
    "consent": {"consentToContact": "true", "consentToToShareInfoWithOthers": False},
    "target": {"type": "SolutionProfile", "id": "t1"},
}


def test_customer_ids_given_as_an_object_are_one_row_per_key_with_the_value_as_text() -> None:
    assert [
        (r["profile_type"], r["value"]) for r in flatten_referral(_ODD_SHAPES).customer_ids
    ] == [("CrmId", "x"), ("Duns", "12")]


def test_a_customer_team_given_as_one_object_is_a_team_of_one() -> None:
    contacts = flatten_referral(_ODD_SHAPES).contacts
    assert [(r["position"], r["first_name"]) for r in contacts if r["side"] == "customer"] == [
        (0, "Lone")
    ]


def test_a_null_team_member_is_skipped_and_the_positions_stay_dense() -> None:
    """A null in the team array gives no contact; the members after it close the gap."""
    contacts = flatten_referral(_ODD_SHAPES).contacts
    assert [(r["position"], r["first_name"]) for r in contacts if r["side"] == "team"] == [
        (0, "A"),
        (1, "B"),
    ]


def test_the_customers_contacts_come_before_the_referral_teams() -> None:
    assert [r["side"] for r in flatten_referral(_ODD_SHAPES).contacts] == [
        "customer",
        "team",
        "team",
    ]


def test_a_deal_value_given_as_text_is_rounded_to_4_decimal_places() -> None:
    assert Decimal("12345.6789") == flatten_referral(_ODD_SHAPES).referral["deal_value"]


def test_consent_to_contact_given_as_the_text_true_is_true() -> None:
    assert flatten_referral(_ODD_SHAPES).referral["consent_to_contact"] is True


def test_consent_to_share_given_as_false_is_false() -> None:
    assert flatten_referral(_ODD_SHAPES).referral["consent_to_share_info"] is False


def test_a_requirement_kind_given_as_one_item_object_is_one_row() -> None:
    """Offers as an array and products as one object give one row each."""
    assert [(r["kind"], r["item_id"]) for r in flatten_referral(_ODD_SHAPES).requirements] == [
        ("offers", "o1"),
        ("products", "Azure"),
    ]


def test_a_requirement_object_of_settings_gives_no_row() -> None:
    """additionalRequirements (an object without id or name) stays in the payload only."""
    kinds = [r["kind"] for r in flatten_referral(_ODD_SHAPES).requirements]
    assert "additionalRequirements" not in kinds


def test_a_target_given_as_one_object_is_one_row() -> None:
    assert [(r["target_type"], r["target_id"]) for r in flatten_referral(_ODD_SHAPES).targets] == [
        ("SolutionProfile", "t1")
    ]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2018-10-30T21:03:42.4579542Z", datetime(2018, 10, 30, 21, 3, 42, 457954, tzinfo=UTC)),
        ("2020-10-30T21:03:00Z", datetime(2020, 10, 30, 21, 3, tzinfo=UTC)),
        ("2020-10-30T23:03:00.000000+02:00", datetime(2020, 10, 30, 21, 3, tzinfo=UTC)),
    ],
)
def test_timestamps_with_0_6_7_fractional_digits_are_read(text: str, expected: datetime) -> None:
    assert expected == parse_time(text)


@pytest.mark.parametrize("value", ["yesterday", 17, ""])
def test_a_timestamp_that_is_not_iso_text_is_null(value: Any) -> None:
    assert parse_time(value) is None


@pytest.mark.parametrize(
    "text",
    ["0001-01-01T00:00:00+01:00", "9999-12-31T23:30:00-01:00", "0999-12-31T23:59:59Z"],
)
def test_timestamps_no_database_can_hold_become_null(text: str) -> None:
    assert parse_time(text) is None
    document = {"id": "r1", "createdDateTime": text}
    flat = flatten_referral(document)
    assert flat.referral["created_at"] is None
    assert flat.referral["payload"]["createdDateTime"] == text


def test_decoding_makes_every_odd_body_storable() -> None:
    from etl.flatten import content_hash, decode_document

    assert decode_document(b'\xef\xbb\xbf{"a": 1}') == ({"a": 1}, '{"a": 1}')
    assert decode_document('{"a": "é"}'.encode("utf-16")) == ({"a": "é"}, '{"a": "é"}')
    assert decode_document('{"a": "é"}'.encode("utf-16-le")) == ({"a": "é"}, '{"a": "é"}')
    # Lone surrogates, UTF-8-encoded or escaped, in values and keys: U+FFFD, re-serialised.
    assert decode_document(b'{"a": "x\xed\xa0\x80y"}') == ({"a": "x\ufffdy"}, None)
    assert decode_document(b'{"a\\udfff": ["\\ud800"]}') == ({"a\ufffd": ["\ufffd"]}, None)
    # A valid escaped pair is one character, and the text is kept as received.
    assert decode_document(b'{"a": "\\ud83d\\ude00"}') == (
        {"a": "\U0001f600"},
        '{"a": "\\ud83d\\ude00"}',
    )
    assert decode_document(b'{"a": NaN, "b": [Infinity, -Infinity]}') == (
        {"a": "NaN", "b": ["Infinity", "-Infinity"]},
        None,
    )
    for bad, reason in [
        (b"\xff\xfe\x00", "not valid UTF-16"),
        (b'{"a": "\xff"}', "not valid UTF-8"),
        (b"[" * 100_000 + b"]" * 100_000, "nested too deeply"),
        (b'{"a":' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 31 levels"),
        # The same read by json, not orjson (a byte-order mark, NaN): the same bound.
        (b'\xef\xbb\xbf{"a":' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 31 levels"),
        (b'{"n": NaN, "a":' + b"[" * 40 + b"]" * 40 + b"}", "nested more than 31 levels"),
        (b'{"a": }', "not valid JSON"),
    ]:
        with pytest.raises(BadDocumentError, match=reason):
            decode_document(bad)
    # The content hash never raises, whatever a document holds.
    assert len(content_hash({"a": "\ud800", "b": float("nan")})) == 64


# --- One document with every documented field: each lands in its own column. ---------------

FULL = {
    "id": "r-1",
    "engagementId": "e-1",
    "name": "Contoso deal",
    "organizationId": "org-1",
    "organizationName": "Fabrikam",
    "externalReferenceId": "ext-1",
    "status": "Active",
    "substatus": "Accepted",
    "statusReason": "reason",
    "qualification": "SalesQualified",
    "type": "Shared",
    "direction": "Incoming",
    "createdDateTime": "2020-01-01T00:00:00Z",
    "updatedDateTime": "2020-01-02T00:00:00Z",
    "expirationDateTime": "2020-01-03T00:00:00Z",
    "acceptedDateTime": "2020-01-04T00:00:00Z",
    "eTag": "etag-1",
    "details": {
        "dealValue": 12.5,
        "currency": "EUR",
        "closingDateTime": "2020-01-05T00:00:00Z",
        "notes": "details notes",
        "requirements": {
            "products": [{"id": "p1", "name": "Azure", "type": "Product"}],
        },
    },
    "consent": {"consentToContact": True, "consentToToShareInfoWithOthers": False},
    "inviteContext": {
        "notes": "invite notes",
        "invitedBy": {"organizationId": "org-2", "organizationName": "Northwind"},
    },
    "customerProfile": {
        "name": "Customer Ltd",
        "size": "Size1to50",
        "address": {
            "addressLine1": "1 Main St",
            "addressLine2": "Floor 2",
            "city": "Springfield",
            "state": "IL",
            "region": "Midwest",
            "postalCode": "62701",
            "country": "US",
        },
        "ids": [{"profileType": "CrmId", "id": "crm-1"}],
        "team": [
            {
                "firstName": "Ada",
                "lastName": "Lovelace",
                "email": "ada@example.com",
                "phoneNumber": "+1 555",
                "title": "CTO",
                "contactPreference": {"locale": "en-US", "disableNotifications": True},
            }
        ],
    },
    "team": [{"firstName": "Bob"}],
    "target": [{"type": "SolutionProfile", "id": "t1"}],
}


def _utc(day: int) -> datetime:
    return datetime(2020, 1, day, tzinfo=UTC)


def test_every_referral_field_lands_in_its_column() -> None:
    referral = flatten_referral(FULL).referral
    assert {
        "id": "r-1",
        "engagement_id": "e-1",
        "name": "Contoso deal",
        "organization_id": "org-1",
        "organization_name": "Fabrikam",
        "external_reference_id": "ext-1",
        "status": "Active",
        "substatus": "Accepted",
        "status_reason": "reason",
        "qualification": "SalesQualified",
        "type": "Shared",
        "direction": "Incoming",
        "created_at": _utc(1),
        "updated_at": _utc(2),
        "expires_at": _utc(3),
        "accepted_at": _utc(4),
        "deal_value": Decimal("12.5000"),
        "currency": "EUR",
        "closing_at": _utc(5),
        "notes": "details notes",
        "consent_to_contact": True,
        "consent_to_share_info": False,
        "invite_notes": "invite notes",
        "invited_by_organization_id": "org-2",
        "invited_by_organization_name": "Northwind",
        "etag": "etag-1",
        "payload": FULL,
    } == referral


def test_every_customer_field_lands_in_its_column() -> None:
    assert flatten_referral(FULL).customer == {
        "referral_id": "r-1",
        "name": "Customer Ltd",
        "size": "Size1to50",
        "address_line1": "1 Main St",
        "address_line2": "Floor 2",
        "city": "Springfield",
        "state": "IL",
        "region": "Midwest",
        "postal_code": "62701",
        "country": "US",
    }


def test_every_contact_field_lands_in_its_column() -> None:
    assert flatten_referral(FULL).contacts == [
        {
            "referral_id": "r-1",
            "side": "customer",
            "position": 0,
            "first_name": "Ada",
            "last_name": "Lovelace",
            "email": "ada@example.com",
            "phone_number": "+1 555",
            "title": "CTO",
            "locale": "en-US",
            "disable_notifications": True,
        },
        {
            "referral_id": "r-1",
            "side": "team",
            "position": 0,
            "first_name": "Bob",
            "last_name": None,
            "email": None,
            "phone_number": None,
            "title": None,
            "locale": None,
            "disable_notifications": None,
        },
    ]


def test_every_customer_id_field_lands_in_its_column() -> None:
    assert flatten_referral(FULL).customer_ids == [
        {"referral_id": "r-1", "position": 0, "profile_type": "CrmId", "value": "crm-1"}
    ]


def test_every_requirement_field_lands_in_its_column() -> None:
    assert flatten_referral(FULL).requirements == [
        {
            "referral_id": "r-1",
            "kind": "products",
            "position": 0,
            "item_id": "p1",
            "name": "Azure",
            "item_type": "Product",
        }
    ]


def test_every_target_field_lands_in_its_column() -> None:
    assert flatten_referral(FULL).targets == [
        {"referral_id": "r-1", "position": 0, "target_type": "SolutionProfile", "target_id": "t1"}
    ]


def test_children_are_keyed_by_their_table() -> None:
    flat = flatten_referral(FULL)
    assert {
        "referral_customers": [flat.customer],
        "referral_customer_ids": flat.customer_ids,
        "referral_contacts": flat.contacts,
        "referral_requirements": flat.requirements,
        "referral_targets": flat.targets,
    } == flat.children()


def test_a_history_version_carries_the_tracked_columns() -> None:
    assert {
        "referral_id": "r-1",
        "etag": "etag-1",
        "status": "Active",
        "substatus": "Accepted",
        "qualification": "SalesQualified",
        "deal_value": Decimal("12.5000"),
        "currency": "EUR",
        "closing_at": _utc(5),
        "updated_at": _utc(2),
        "payload": FULL,
    } == history_values(flatten_referral(FULL))


# --- Ids, eTags, hashes, payloads. -----------------------------------------------------------


@pytest.mark.parametrize("rid", [None, 12, "", ["r-1"]])
def test_a_document_whose_id_is_not_a_non_empty_string_is_refused(rid: Any) -> None:
    with pytest.raises(
        ValueError, match=f"the document's id is not a string but {type(rid).__name__}"
    ):
        flatten_referral({"id": rid})


def test_the_documents_etag_wins_over_the_header() -> None:
    assert flatten_referral({"id": "r", "eTag": "in-body"}, "header").etag == "in-body"


def test_the_header_etag_is_used_when_the_document_has_none() -> None:
    assert flatten_referral({"id": "r"}, "header").etag == "header"


def test_the_content_hash_is_computed_when_an_etag_comes_too() -> None:
    """A version is its content: the hash is there whether or not an eTag came."""
    assert content_hash({"id": "r"}) == flatten_referral({"id": "r"}, "header").content_hash


def test_the_content_hash_is_that_of_the_document_without_an_etag() -> None:
    document = {"id": "r", "name": "x"}
    assert content_hash(document) == flatten_referral(document).content_hash


def test_the_content_hash_leaves_out_the_etag() -> None:
    """A GET by id carries an eTag where a list page does not: the same version either way."""
    assert content_hash({"id": "r", "name": "x"}) == content_hash(
        {"id": "r", "name": "x", "eTag": '"1"'}
    )


@pytest.mark.parametrize("key", ["@odata.context", "@odata.etag", "@odata.type"])
def test_the_content_hash_leaves_out_odata_fields(key: str) -> None:
    assert content_hash({"id": "r"}) == content_hash({"id": "r", key: "x"})


@pytest.mark.parametrize("key", ["etag", "ETAG", "odata.context", "@ODATA.context"])
def test_the_content_hash_keeps_fields_only_named_like_transport_fields(key: str) -> None:
    """Only ``eTag`` and ``@odata.*`` exactly are transport fields; keys are case-sensitive."""
    assert content_hash({"id": "r"}) != content_hash({"id": "r", key: "x"})


def test_the_content_hash_is_pinned_canonical_sorted_compact_utf8_json() -> None:
    """sha256 of '{"a":"é","b":[1,null]}': a stored hash must never change between releases."""
    expected = "3d92f6368f93f3cb36a4e7a721098054dfbfd705e31fa50409f2d99e0727a08c"
    assert expected == content_hash({"b": [1, None], "a": "é"})


def test_the_content_hash_does_not_depend_on_key_order() -> None:
    assert content_hash({"a": 1, "b": {"c": 2, "d": 3}}) == content_hash(
        {"b": {"d": 3, "c": 2}, "a": 1}
    )


def test_the_content_hash_of_a_lone_surrogate_never_raises() -> None:
    expected = hashlib.sha256('{"a":"\ud800"}'.encode("utf-8", "surrogatepass")).hexdigest()
    assert expected == content_hash({"a": "\ud800"})


def test_the_raw_text_is_the_payload_when_given() -> None:
    payload = flatten_referral({"id": "r"}, raw='{"id": "r"}').referral["payload"]
    assert isinstance(payload, RawJson)


def test_the_raw_payload_is_the_text_as_received() -> None:
    assert flatten_referral({"id": "r"}, raw='{"id": "r"}').referral["payload"] == '{"id": "r"}'


# --- Text columns: whatever JSON value a field holds. ------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, "true"),
        (False, "false"),
        (12, "12"),
        (1.5, "1.5"),
        ("", None),  # an empty string is NULL in typed columns
        ({"b": "é", "a": [1, None]}, '{"b":"é","a":[1,null]}'),
        (["x", 2], '["x",2]'),
        (None, None),
    ],
)
def test_a_bool_number_object_or_array_in_a_text_field_is_stored_as_its_json_text(
    value: Any, expected: str | None
) -> None:
    assert expected == flatten_referral({"id": "r", "name": value}).referral["name"]


@pytest.mark.parametrize(("length", "stored"), [(63, 63), (64, 64), (65, 64), (1000, 64)])
def test_an_engagement_id_longer_than_its_column_is_cut_to_64_characters(
    length: int, stored: int
) -> None:
    referral = flatten_referral({"id": "r", "engagementId": "e" * length}).referral
    assert "e" * stored == referral["engagement_id"]


def test_a_status_longer_than_its_column_is_cut_to_64_characters() -> None:
    referral = flatten_referral({"id": "r", "status": "s" * 65}).referral
    assert referral["status"] == "s" * 64


def test_a_number_in_a_bounded_column_is_its_text() -> None:
    assert flatten_referral({"id": "r", "engagementId": 12}).referral["engagement_id"] == "12"


@pytest.mark.parametrize(("length", "stored"), [(255, 255), (256, 255)])
def test_a_requirement_item_id_longer_than_its_column_is_cut_to_255_characters(
    length: int, stored: int
) -> None:
    document = {"id": "r", "details": {"requirements": {"products": [{"id": "i" * length}]}}}
    assert ["i" * stored] == [r["item_id"] for r in flatten_referral(document).requirements]


@pytest.mark.parametrize(("length", "rows"), [(64, 1), (65, 0)])
def test_a_requirement_kind_longer_than_its_column_is_left_in_the_payload(
    length: int, rows: int
) -> None:
    document = {"id": "r", "details": {"requirements": {"k" * length: [{"id": "i"}]}}}
    assert rows == len(flatten_referral(document).requirements)


# --- Arrays and objects where the API documents the other. ------------------------------------


def test_a_plain_value_in_an_array_of_objects_is_taken_as_its_id() -> None:
    document = {"id": "r", "target": ["t1", {"type": "T", "id": "t2"}]}
    assert [
        (t["position"], t["target_type"], t["target_id"])
        for t in flatten_referral(document).targets
    ] == [(0, None, "t1"), (1, "T", "t2")]


def test_a_null_in_an_array_is_skipped_and_positions_stay_dense() -> None:
    """A null element gives no row: the rows after it are numbered without a gap."""
    document = {"id": "r", "target": [None, {"id": "t1"}, None, {"id": "t2"}]}
    assert [(t["position"], t["target_id"]) for t in flatten_referral(document).targets] == [
        (0, "t1"),
        (1, "t2"),
    ]


def test_a_plain_value_in_the_customer_ids_array_is_a_value_without_a_type() -> None:
    document = {"id": "r", "customerProfile": {"ids": ["crm-1"]}}
    assert [(i["profile_type"], i["value"]) for i in flatten_referral(document).customer_ids] == [
        (None, "crm-1")
    ]


@pytest.mark.parametrize("value", ["text", 12, True])
def test_a_scalar_where_an_array_is_expected_gives_no_rows(value: Any) -> None:
    assert flatten_referral({"id": "r", "target": value}).targets == []


def test_a_scalar_requirement_is_left_in_the_payload() -> None:
    document = {"id": "r", "details": {"requirements": {"flag": True, "list": [{"id": "a"}]}}}
    assert [r["kind"] for r in flatten_referral(document).requirements] == ["list"]


def test_a_lone_requirement_object_with_only_a_name_is_an_item() -> None:
    document = {"id": "r", "details": {"requirements": {"products": {"name": "Azure"}}}}
    assert [
        (r["kind"], r["item_id"], r["name"]) for r in flatten_referral(document).requirements
    ] == [("products", None, "Azure")]


def test_requirement_items_are_numbered_within_their_kind() -> None:
    document = {
        "id": "r",
        "details": {"requirements": {"a": [{"id": "1"}, {"id": "2"}], "b": [{"id": "3"}]}},
    }
    assert [(r["kind"], r["position"]) for r in flatten_referral(document).requirements] == [
        ("a", 0),
        ("a", 1),
        ("b", 0),
    ]


def test_customer_ids_as_an_object_are_type_value_pairs_in_order() -> None:
    document = {"id": "r", "customerProfile": {"ids": {"CrmId": "x", "Duns": 12}}}
    assert [
        (i["position"], i["profile_type"], i["value"])
        for i in flatten_referral(document).customer_ids
    ] == [(0, "CrmId", "x"), (1, "Duns", "12")]


# --- Money: NUMERIC(19,4), so below 10^15 in magnitude, four decimals. ------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("999999999999999.9999", Decimal("999999999999999.9999")),
        ("-999999999999999.9999", Decimal("-999999999999999.9999")),
        ("1000000000000000", None),
        ("-1000000000000000", None),
        (10**15, None),
        (10**15 - 1, Decimal("999999999999999.0000")),
        ("1e15", None),
    ],
)
def test_money_at_the_10_to_the_15_limit(value: Any, expected: Decimal | None) -> None:
    document = {"id": "r", "details": {"dealValue": value}}
    assert expected == flatten_referral(document).referral["deal_value"]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (1.5, Decimal("1.5000")),
        (0.1, Decimal("0.1000")),
        ("12.34567", Decimal("12.3457")),
        (" 7 ", Decimal("7.0000")),
        (3, Decimal("3.0000")),
        ("1e3", Decimal("1000.0000")),
    ],
)
def test_money_is_kept_to_four_decimals(value: Any, expected: Decimal) -> None:
    document = {"id": "r", "details": {"dealValue": value}}
    assert expected == flatten_referral(document).referral["deal_value"]


@pytest.mark.parametrize(
    "value",
    [True, False, None, "", "abc", "1,5", "NaN", "Infinity", float("nan"), float("inf"), [1], {}],
)
def test_money_that_is_not_a_finite_number_is_null(value: Any) -> None:
    document = {"id": "r", "details": {"dealValue": value}}
    assert flatten_referral(document).referral["deal_value"] is None


# --- Booleans and timestamps. ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (True, True),
        (False, False),
        ("true", True),
        ("TRUE", True),
        ("False", False),
        ("yes", None),
        (1, None),
        (None, None),
    ],
)
def test_a_consent_flag_is_a_bool_or_its_text_or_null(value: Any, expected: bool | None) -> None:
    document = {"id": "r", "consent": {"consentToContact": value}}
    assert expected == flatten_referral(document).referral["consent_to_contact"]


def test_a_timestamp_without_an_offset_is_taken_as_utc() -> None:
    assert datetime(2020, 1, 1, 12, tzinfo=UTC) == parse_time("2020-01-01T12:00:00")


def test_a_timestamp_with_an_offset_is_converted_to_utc() -> None:
    assert datetime(2020, 1, 1, 10, tzinfo=UTC) == parse_time("2020-01-01T12:00:00+02:00")


def test_the_earliest_instant_every_database_holds_is_kept() -> None:
    assert datetime(1000, 1, 1, tzinfo=UTC) == parse_time("1000-01-01T00:00:00Z")


def test_the_latest_instant_every_database_holds_is_kept() -> None:
    expected = datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)
    assert expected == parse_time("9999-12-31T23:59:59.999999Z")


@pytest.fixture
def tokyo(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """The machine's local time zone is UTC+9 for the test."""
    monkeypatch.setenv("TZ", "Asia/Tokyo")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


@pytest.mark.usefixtures("tokyo")
def test_a_timestamp_without_an_offset_is_utc_whatever_the_machines_time_zone() -> None:
    assert datetime(2020, 1, 1, 12, tzinfo=UTC) == parse_time("2020-01-01T12:00:00")


def test_a_timestamp_with_an_offset_comes_back_in_utc() -> None:
    parsed = parse_time("2020-01-01T12:00:00+02:00")
    assert parsed is not None
    assert parsed.tzinfo is UTC


# --- Decoding an answer's bytes. ---------------------------------------------------------------


def test_invalid_utf8_after_a_byte_order_mark_is_named_utf8() -> None:
    with pytest.raises(BadDocumentError, match=r"^the body is not valid UTF-8 \(byte "):
        decode_document(b'\xef\xbb\xbf{"a": "\xff"}')


def test_a_second_byte_order_mark_is_ignored() -> None:
    assert decode_document(b'\xef\xbb\xbf\xef\xbb\xbf{"a": 1}') == ({"a": 1}, '{"a": 1}')


def test_a_lone_surrogate_as_the_whole_body_is_replaced() -> None:
    assert decode_document(b'"\\ud800"') == ("\ufffd", None)


def test_a_lone_surrogate_in_nested_arrays_and_objects_is_replaced() -> None:
    """A lone surrogate escape at any depth, in an array as in an object, becomes U+FFFD."""
    body = b'[["\\ud800"], {"a": [{"b": "\\udfff"}]}]'
    assert decode_document(body) == ([["\ufffd"], {"a": [{"b": "\ufffd"}]}], None)


def test_brackets_inside_strings_do_not_count_as_nesting() -> None:
    body = b'{"a": "' + b"[{" * 40 + b'"}'
    assert decode_document(body)[0] == {"a": "[{" * 40}


def _nested(levels: int) -> bytes:
    """``levels`` containers, objects and arrays in turn, around a 1."""
    opening = "".join('{"k":' if i % 2 == 0 else "[" for i in range(levels))
    closing = "".join("}" if i % 2 == 0 else "]" for i in reversed(range(levels)))
    return f"{opening}1{closing}".encode()


def test_objects_and_arrays_nested_31_deep_are_read() -> None:
    """A body nested 31 levels deep (objects and arrays in turn) is within the limit."""
    assert decode_document(_nested(31))[0] is not None


def test_objects_and_arrays_nested_32_deep_are_refused() -> None:
    """A body nested 32 levels deep (objects and arrays in turn) is a BadDocumentError."""
    with pytest.raises(BadDocumentError, match=r"^the body is nested more than 31 levels deep$"):
        decode_document(_nested(32))


def test_a_value_nested_31_deep_is_not_too_deep() -> None:
    assert too_deep(decode_document(_nested(31))[0]) is False


def test_a_value_nested_32_deep_is_too_deep() -> None:
    """As a listed document inside a page read whole is checked (etl.discovery)."""
    assert too_deep([decode_document(_nested(31))[0]]) is True


@pytest.mark.parametrize(("max_depth", "expected"), [(1, True), (2, False)])
def test_too_deep_counts_against_the_depth_it_is_given(max_depth: int, expected: bool) -> None:
    assert expected is too_deep([[1]], max_depth)


def test_31_levels_beside_more_brackets_are_read() -> None:
    body = b'{"a": ' + b"[" * 30 + b"]" * 30 + b', "b": [], "c": {}}'
    assert decode_document(body)[0]["b"] == []


def test_a_lone_surrogate_escape_in_upper_case_is_replaced() -> None:
    assert decode_document(b'{"a": "\\uDFFF"}') == ({"a": "\ufffd"}, None)


def test_a_lone_surrogate_in_a_utf16_body_is_replaced() -> None:
    body = '{"a": "x\ud800"}'.encode("utf-16-le", "surrogatepass")
    assert decode_document(body) == ({"a": "x\ufffd"}, None)


def test_a_utf8_body_with_a_lone_surrogate_after_a_byte_order_mark_is_replaced() -> None:
    assert decode_document(b'\xef\xbb\xbf{"a": "\xed\xa0\x80"}') == ({"a": "\ufffd"}, None)


def test_a_body_without_surrogates_is_kept_as_received() -> None:
    assert decode_document('{"a": "\ud7ff\ue000"}'.encode()) == (
        {"a": "\ud7ff\ue000"},
        '{"a": "\ud7ff\ue000"}',
    )


def test_an_integer_longer_than_python_reads_fails_that_document_alone() -> None:
    """A number of 5,000 digits (past Python's int-from-string limit) is one BadDocumentError."""
    body = b'{"id": "x", "dealValue": ' + b"9" * 5000 + b"}"
    with pytest.raises(BadDocumentError, match="cannot read"):
        decode_document(body)


json_values = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(min_value=-(2**80), max_value=2**80),  # beyond 64 bits too
        st.floats(allow_nan=False, allow_infinity=False),
        st.text(),  # astral characters (escaped as surrogate pairs) and control characters
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)


@pytest.mark.slow  # 300 generated documents: left out of the mutation runs, as the others
@settings(max_examples=300, deadline=None)
@given(json_values, st.booleans())
def test_decode_document_reads_every_json_text_as_json_does(value: Any, ascii_only: bool) -> None:
    """Bodies orjson reads and bodies left to json come out the same as json.loads reads them:
    the same types (an integer beyond 64 bits stays an exact int), values and key order."""
    import json

    text = json.dumps({"doc": value}, ensure_ascii=ascii_only)
    body = text.encode("utf-8", "surrogatepass")
    decoded, raw = decode_document(body, max_depth=64)
    assert repr(decoded) == repr(json.loads(text))
    assert raw == text


def test_an_integer_beyond_64_bits_is_read_exactly() -> None:
    """orjson would read 2**64 as a float; the body goes to json instead."""
    decoded, raw = decode_document(b'{"id": "x", "dealValue": 18446744073709551616}')
    assert decoded["dealValue"] == 2**64
    assert type(decoded["dealValue"]) is int
    assert raw == '{"id": "x", "dealValue": 18446744073709551616}'
