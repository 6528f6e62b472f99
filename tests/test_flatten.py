"""flatten: any document shaped like docs/referral-api.md flattens without error (Hypothesis)."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from etl.errors import BadDocumentError
from etl.flatten import flatten_referral, parse_time

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
many = lambda item: st.one_of(
    st.none(), item, st.lists(st.one_of(item, st.none(), scalars), max_size=4)
)
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


@settings(max_examples=300, deadline=None)
@given(documents)
def test_any_document_flattens_and_children_carry_the_parent_id(document: dict[str, Any]) -> None:
    flat = flatten_referral(document)
    assert flat.referral["id"] == document["id"] and flat.referral["payload"] is document
    for table, rows in flat.children().items():
        assert all(row["referral_id"] == document["id"] for row in rows), table
        if table != "referral_customers":
            keys = [
                tuple(v for k, v in row.items() if k in ("side", "kind", "position"))
                for row in rows
            ]
            assert len(keys) == len(set(keys)), f"duplicate primary keys in {table}"
    deal = flat.referral["deal_value"]
    assert deal is None or (isinstance(deal, Decimal) and abs(deal) < Decimal(10) ** 15)
    for column in ("created_at", "updated_at", "accepted_at", "closing_at"):
        value = flat.referral[column]
        assert value is None or value.utcoffset().total_seconds() == 0
    if flat.etag is None:
        assert flat.content_hash is not None and len(flat.content_hash) == 64
    # An empty string is NULL in every typed column; only the payload keeps it.
    for table, rows in {"referrals": [flat.referral], **flat.children()}.items():
        for row in rows:
            assert "" not in [v for k, v in row.items() if k != "payload"], (table, row)


def test_empty_strings_become_null_and_the_payload_keeps_them() -> None:
    document = {
        "id": "r-empty",
        "name": "",
        "status": "",
        "eTag": "",
        "details": {"currency": "", "notes": "", "requirements": {"products": [{"id": ""}]}},
        "customerProfile": {"name": "", "address": {"country": ""}, "ids": {"": "x"}},
        "team": [{"firstName": "", "email": ""}],
        "target": [{"type": "", "id": ""}],
    }
    flat = flatten_referral(document, etag_header='"from-header"')
    assert flat.referral["payload"]["details"]["currency"] == ""
    assert {k: flat.referral[k] for k in ("name", "status", "currency", "notes", "etag")} == {
        "name": None,
        "status": None,
        "currency": None,
        "notes": None,
        "etag": '"from-header"',
    }
    assert (flat.customer["name"], flat.customer["country"]) == (None, None)
    assert [(r["profile_type"], r["value"]) for r in flat.customer_ids] == [(None, "x")]
    assert (flat.contacts[0]["first_name"], flat.contacts[0]["email"]) == (None, None)
    assert flat.requirements[0]["item_id"] is None
    assert (flat.targets[0]["target_type"], flat.targets[0]["target_id"]) == (None, None)


def test_odd_shapes() -> None:
    flat = flatten_referral(
        {
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
    )
    assert [(r["profile_type"], r["value"]) for r in flat.customer_ids] == [
        ("CrmId", "x"),
        ("Duns", "12"),
    ]
    assert [(r["side"], r["position"], r["first_name"]) for r in flat.contacts] == [
        ("customer", 0, "Lone"),
        ("team", 0, "A"),
        ("team", 1, "B"),
    ]
    assert flat.referral["deal_value"] == Decimal("12345.6789")
    assert (flat.referral["consent_to_contact"], flat.referral["consent_to_share_info"]) == (
        True,
        False,
    )
    assert [(r["kind"], r["item_id"]) for r in flat.requirements] == [
        ("offers", "o1"),
        ("products", "Azure"),
    ]
    assert [(r["target_type"], r["target_id"]) for r in flat.targets] == [("SolutionProfile", "t1")]


def test_timestamps_with_0_6_7_fractional_digits() -> None:
    assert parse_time("2018-10-30T21:03:42.4579542Z").microsecond == 457954
    assert parse_time("2020-10-30T21:03:00Z").isoformat() == "2020-10-30T21:03:00+00:00"
    assert parse_time("2020-10-30T23:03:00.000000+02:00").isoformat() == "2020-10-30T21:03:00+00:00"
    assert parse_time("yesterday") is None and parse_time(17) is None and parse_time("") is None


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
        (b'{"a": }', "not valid JSON"),
    ]:
        with pytest.raises(BadDocumentError, match=reason):
            decode_document(bad)
    # The content hash never raises, whatever a document holds.
    assert len(content_hash({"a": "\ud800", "b": float("nan")})) == 64
