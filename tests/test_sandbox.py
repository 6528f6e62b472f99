"""The sandbox (simulated Referrals API) behaves as docs/referral-api.md describes the real one.

Requests go through httpx: in process with ``httpx.ASGITransport`` (inside ``asyncio.run``),
and once over TCP with ``ServerThread``.
"""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from etl.sandbox import Faults, Sandbox, ServerThread

BASE = "https://api.partner.microsoft.com/v1.0"
ITEM = "/engagements/referrals/{}"
LIST = "/engagements/referrals"
AUTH = {"Authorization": "Bearer test-token"}
STATUS_SUBSTATUS = {
    "New": {"None", "Pending", "Received"},
    "Active": {"Accepted"},
    "Closed": {"Won", "Lost", "Declined", "Expired"},
}
RANK = {"New": 0, "Active": 1, "Closed": 2}
TS = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?Z$")


def run(sb: Sandbox, body: Callable[[httpx.AsyncClient], Awaitable[Any]]) -> Any:
    """Run ``body(client)`` against ``sb.app`` in process."""

    async def main() -> Any:
        transport = httpx.ASGITransport(app=sb.app)
        async with httpx.AsyncClient(transport=transport, base_url=BASE, headers=AUTH) as c:
            return await body(c)

    return asyncio.run(main())


def get(sb: Sandbox, path: str, **kwargs: Any) -> httpx.Response:
    async def body(c: httpx.AsyncClient) -> httpx.Response:
        return await c.get(path, **kwargs)

    result: httpx.Response = run(sb, body)
    return result


def list_all(sb: Sandbox, params: dict[str, Any]) -> tuple[list[dict[str, Any]], list[str]]:
    """Every item of a listing, following nextLink by re-basing its query; and the links."""

    async def body(c: httpx.AsyncClient) -> tuple[list[dict[str, Any]], list[str]]:
        items: list[dict[str, Any]] = []
        links: list[str] = []
        r = await c.get(LIST, params=params)
        while True:
            assert r.status_code == 200, r.text
            page = r.json()
            assert page["@odata.count"] == len(page["value"])
            items += page["value"]
            link = page.get("@odata.nextLink")
            if link is None:
                return items, links
            links.append(link)
            r = await c.get(LIST + "?" + urlsplit(link).query)

    result: tuple[list[dict[str, Any]], list[str]] = run(sb, body)
    return result


def ticks(ts: str) -> tuple[str, str]:
    """A sortable form of an ISO timestamp with 0-7 fractional digits."""
    whole, _, frac = ts.rstrip("Z").partition(".")
    return whole, frac.ljust(7, "0")


# -- GET by id ---------------------------------------------------------------------------------


def test_get_answers_the_document_with_the_headers_of_the_real_api() -> None:
    """A GET by id answers the document with its ETag, a request id and the correlation id echoed."""
    sb = Sandbox(count=20, seed=1)
    rid = sb.ids[5]
    r = get(sb, ITEM.format(rid), headers={"MS-CorrelationId": "corr-123"})
    assert r.status_code == 200
    assert r.headers["content-type"] == "application/json; charset=utf-8"
    assert r.json() == sb.document(rid)
    assert r.json()["eTag"] == r.headers["etag"] == sb.etag(rid)
    assert sb.etag(rid).startswith('"')
    assert sb.etag(rid).endswith('"')
    assert uuid.UUID(r.headers["request-id"])
    assert r.headers["ms-correlationid"] == "corr-123"
    assert r.headers["content-length"] == str(len(r.content))


def test_request_ids_are_fresh_per_response() -> None:
    """Two answers to the same GET carry different request ids."""
    sb = Sandbox(count=3, seed=1)
    first = get(sb, ITEM.format(sb.ids[0])).headers["request-id"]
    second = get(sb, ITEM.format(sb.ids[0])).headers["request-id"]
    assert first != second


def test_if_none_match_with_the_current_etag_gives_304() -> None:
    """A matching If-None-Match is 304 with no body; another ETag or send_304 off is a 200."""
    sb = Sandbox(count=10, seed=1)
    rid = sb.ids[0]
    r = get(sb, ITEM.format(rid), headers={"If-None-Match": sb.etag(rid)})
    assert (r.status_code, r.content, r.headers["etag"]) == (304, b"", sb.etag(rid))
    assert get(sb, ITEM.format(rid), headers={"If-None-Match": '"other"'}).status_code == 200
    sb.faults.send_304 = False
    r = get(sb, ITEM.format(rid), headers={"If-None-Match": sb.etag(rid)})
    assert r.status_code == 200
    assert r.json()["id"] == rid
    assert sb.stats.not_modified == 1
    assert sb.stats["by_status"] == {304: 1, 200: 2}


def test_request_log_keeps_headers_sent_on_the_wire() -> None:
    """The request log holds method, path, query and the headers as sent."""
    sb = Sandbox(count=3, seed=1)
    rid = sb.ids[1]
    get(sb, ITEM.format(rid), headers={"If-None-Match": '"x"', "MS-CorrelationId": "c-1"})
    method, path, query, headers = sb.requests[-1]
    assert (method, path, query) == ("GET", "/v1.0" + ITEM.format(rid), "")
    assert headers["if-none-match"] == '"x"'
    assert headers["ms-correlationid"] == "c-1"
    assert headers["authorization"] == "Bearer test-token"


def test_unknown_id_is_404_with_the_second_error_shape() -> None:
    """An unknown id is 404 with the code/description/data/source error body."""
    sb = Sandbox(count=3, seed=1)
    r = get(sb, ITEM.format(str(uuid.uuid4())))
    assert r.status_code == 404
    assert set(r.json()) == {"code", "description", "data", "source"}
    assert r.json()["data"] == []


def test_a_restored_referral_comes_back_with_a_new_etag() -> None:
    """A deleted referral is 404 and unlisted; restored, it is back in its place with a new ETag."""
    sb = Sandbox(count=10, seed=1)
    rid, old_etag = sb.ids[2], sb.etag(sb.ids[2])
    sb.delete([rid])
    assert get(sb, ITEM.format(rid)).status_code == 404
    assert rid not in sb.ids
    assert rid not in {d["id"] for d in list_all(sb, {})[0]}
    sb.restore([rid])
    r = get(sb, ITEM.format(rid))
    assert r.status_code == 200
    assert r.json()["id"] == rid
    assert r.headers["etag"] == r.json()["eTag"] == sb.etag(rid) != old_etag
    assert sb.ids.index(rid) == 2


# -- change ------------------------------------------------------------------------------------


def test_a_change_makes_a_new_version_of_the_document() -> None:
    """A changed referral has a new ETag and a later updatedDateTime, and the old ETag gets a 200."""
    sb = Sandbox(count=50, seed=3)
    rid = sb.ids[7]
    before, etag = sb.document(rid), sb.etag(rid)
    assert sb.change(ids=[rid]) == [rid]
    after = sb.document(rid)
    assert after["eTag"] == sb.etag(rid) != etag
    assert ticks(after["updatedDateTime"]) > ticks(before["updatedDateTime"])
    assert TS.match(after["updatedDateTime"])
    r = get(sb, ITEM.format(rid), headers={"If-None-Match": etag})
    assert r.status_code == 200
    assert r.json() == after


def test_change_by_fraction_changes_exactly_that_share_of_the_ids() -> None:
    """change(fraction=0.1) changes 20 distinct ids of 200, and no other id's ETag moves."""
    sb = Sandbox(count=200, seed=4)
    etags = {i: sb.etag(i) for i in sb.ids}
    changed = sb.change(fraction=0.1)
    assert len(changed) == 20 == len(set(changed))
    assert {i for i in sb.ids if sb.etag(i) != etags[i]} == set(changed)


def test_changes_move_status_forward_only() -> None:
    """Status only moves New, Active, Closed, stamping accepted/closed times at the move."""
    sb = Sandbox(count=150, seed=5)
    seen_transition = Counter[tuple[str, str]]()
    for round_ in range(6):
        before = {i: sb.document(i) for i in sb.ids}
        sb.change(fraction=1.0, seed=round_)
        for i, old in before.items():
            new = sb.document(i)
            assert new["substatus"] in STATUS_SUBSTATUS[new["status"]]
            assert RANK[new["status"]] >= RANK[old["status"]]
            if old["status"] == "Closed":
                assert new["substatus"] == old["substatus"]
            if new["status"] != old["status"]:
                seen_transition[old["status"], new["status"]] += 1
                key = "acceptedDateTime" if new["status"] == "Active" else "closedDateTime"
                assert new[key] == new["updatedDateTime"]
            assert new != old
    assert {("New", "Active"), ("Active", "Closed"), ("New", "Closed")} <= set(seen_transition)


def test_changes_edit_the_details_of_a_referral() -> None:
    """Changes edit details, customer profile and team, not only the status."""
    sb = Sandbox(count=100, seed=6)
    before = {i: sb.document(i) for i in sb.ids}
    sb.change(fraction=1.0, seed=1)
    sb.change(fraction=1.0, seed=2)
    edited: Counter[str] = Counter()
    for i, old in before.items():
        new = sb.document(i)
        for key in ("details", "customerProfile", "team", "tags", "salesStage"):
            if new.get(key) != old.get(key):
                edited[key] += 1
    assert all(edited[k] > 5 for k in ("details", "customerProfile", "team")), edited


def test_add_creates_new_referrals_that_can_be_fetched() -> None:
    """Added referrals are New, appended to the ids, and served by id."""
    sb = Sandbox(count=5, seed=1)
    added = sb.add(3)
    assert sb.ids[-3:] == added
    assert len(sb.ids) == 8
    for rid in added:
        doc = get(sb, ITEM.format(rid)).json()
        assert (doc["id"], doc["status"]) == (rid, "New")


# -- listing -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "orderby",
    ["updatedDateTime desc", "updatedDateTime asc", "createdDateTime desc", "createdDateTime asc"],
)
def test_list_pages_cover_every_id_once_in_order_with_the_nextlink_quirk(orderby: str) -> None:
    """Pages cover every id once in the requested order; nextLinks have the real API's odd path."""
    sb = Sandbox(count=250, seed=2)
    items, links = list_all(sb, {"$top": 100, "$orderby": orderby})
    ids = [d["id"] for d in items]
    assert sorted(ids) == sorted(sb.ids)
    assert len(links) == 2
    for link in links:
        assert link.startswith("http://api.partner.microsoft.com/v1.0/referrals?$top=100&")
        assert "/engagements" not in link
        assert "$skiptoken=" in link
    field, direction = orderby.split()
    keys = [ticks(d[field]) for d in items]
    assert keys == sorted(keys, reverse=direction == "desc")


def test_list_page_size_is_at_most_100() -> None:
    """A page holds 100 items without $top and at most 100 with a larger one; a bad $top is 400."""
    sb = Sandbox(count=150, seed=2)
    assert len(get(sb, LIST).json()["value"]) == 100
    assert len(get(sb, LIST, params={"$top": 500}).json()["value"]) == 100
    page = get(sb, LIST, params={"$top": 7}).json()
    assert (page["@odata.count"], len(page["value"])) == (7, 7)
    assert "engagments/referrals/$metadata#Referrals" in page["@odata.context"]
    assert get(sb, LIST, params={"$top": "x"}).status_code == 400


def test_following_the_raw_nextlink_path_is_not_found() -> None:
    """The nextLink's path as given (without /engagements) is 404, as in the real API."""
    sb = Sandbox(count=30, seed=2)
    link = get(sb, LIST, params={"$top": 10}).json()["@odata.nextLink"]
    assert get(sb, urlsplit(link).path + "?" + urlsplit(link).query).status_code == 404


def test_paging_never_repeats_an_id_while_the_set_changes() -> None:
    """Deletions and additions during paging repeat no id and lose no surviving one."""
    sb = Sandbox(count=120, seed=8)

    async def body(c: httpx.AsyncClient) -> list[str]:
        r = await c.get(LIST, params={"$top": 30, "$orderby": "createdDateTime asc"})
        first = [d["id"] for d in r.json()["value"]]
        sb.delete(first[:10] + sb.ids[-5:])
        sb.add(3)  # created now: at the end of an ascending listing
        ids = first
        link = r.json().get("@odata.nextLink")
        while link:
            r = await c.get(LIST + "?" + urlsplit(link).query)
            ids += [d["id"] for d in r.json()["value"]]
            link = r.json().get("@odata.nextLink")
        return ids

    ids = run(sb, body)
    assert len(ids) == len(set(ids))
    assert set(sb.ids) <= set(ids)


def test_filters_select_exactly_the_matching_referrals() -> None:
    """Each supported $filter lists exactly the referrals it matches, across pages."""
    sb = Sandbox(count=300, seed=9)
    docs = [sb.document(i) for i in sb.ids]

    def expect(pred: Callable[[dict[str, Any]], bool]) -> list[str]:
        return sorted(d["id"] for d in docs if pred(d))

    def listed(text: str) -> list[str]:
        return sorted(d["id"] for d in list_all(sb, {"$filter": text, "$top": 20})[0])

    shared = Counter(d["engagementId"] for d in docs).most_common(1)[0][0]
    cutoff = sorted(ticks(d["updatedDateTime"]) for d in docs)[150]
    literal = f"{cutoff[0]}.{cutoff[1]}Z"
    cases: list[tuple[str, Callable[[dict[str, Any]], bool]]] = [
        ("status eq 'New'", lambda d: d["status"] == "New"),
        ("substatus eq 'Won'", lambda d: d["substatus"] == "Won"),
        ("direction eq 'Outgoing'", lambda d: d["direction"] == "Outgoing"),
        (f"engagementId eq '{shared}'", lambda d: d["engagementId"] == shared),
        (
            "(direction eq 'Incoming' and substatus eq 'Pending')",
            lambda d: d["direction"] == "Incoming" and d["substatus"] == "Pending",
        ),
        (f"updatedDateTime gt {literal}", lambda d: ticks(d["updatedDateTime"]) > cutoff),
        (
            f"status eq 'Active' and updatedDateTime ge {literal}",
            lambda d: d["status"] == "Active" and ticks(d["updatedDateTime"]) >= cutoff,
        ),
    ]
    for text, pred in cases:
        expected = expect(pred)
        assert expected, text
        assert expected == listed(text), text


@pytest.mark.parametrize(
    "text",
    ["status eq 'New' or status eq 'Active'", "name eq 'x'", "status gt 'New'", "(status eq 'N'"],
)
def test_filters_it_does_not_understand_are_400_with_an_error_body(text: str) -> None:
    """An unsupported $filter is 400 with a BadRequest error body."""
    r = get(Sandbox(count=5, seed=1), LIST, params={"$filter": text})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadRequest"


# -- throttling, faults, auth ------------------------------------------------------------------


def test_throttling_answers_429_as_partner_center_does() -> None:
    """Past throttle_rps, API calls are 429 with Retry-After and the real message; control is not."""
    sb = Sandbox(count=5, seed=1)
    sb.faults.throttle_rps = 2.0

    async def body(c: httpx.AsyncClient) -> list[httpx.Response]:
        return [await c.get(ITEM.format(sb.ids[0])) for _ in range(8)]

    answers = run(sb, body)
    codes = [r.status_code for r in answers]
    assert codes[:2] == [200, 200]
    assert codes.count(429) >= 5
    throttled = next(r for r in answers if r.status_code == 429)
    wait = int(throttled.headers["retry-after"])
    assert wait >= 1
    assert throttled.json() == {
        "statusCode": 429,
        "message": f"Rate limit is exceeded. Try again in {wait} seconds.",
    }
    assert sb.stats.throttled == codes.count(429)
    assert get(sb, "http://sandbox/_sandbox/ids").status_code == 200  # control: not throttled


def test_latency_delays_api_answers() -> None:
    """With latency set, an API answer does not come before its delay is over."""
    sb = Sandbox(count=3, seed=1)
    sb.faults.latency_seconds = 3600.0  # far beyond the deadline below, however slow the machine

    async def body(c: httpx.AsyncClient) -> int:
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(c.get(ITEM.format(sb.ids[0])), timeout=0.2)
        sb.faults.latency_seconds = 0.0
        return (await c.get(ITEM.format(sb.ids[0]))).status_code

    assert run(sb, body) == 200


def test_etag_header_can_be_switched_off() -> None:
    """With send_etag_header off the header is gone and the body keeps its eTag."""
    sb = Sandbox(count=3, seed=1)
    sb.faults.send_etag_header = False
    r = get(sb, ITEM.format(sb.ids[0]))
    assert "etag" not in r.headers
    assert r.json()["eTag"] == sb.etag(sb.ids[0])


def test_every_503_fault_answers_503() -> None:
    """fail_next, down and error_rate_503 each answer 503 with Retry-After as configured."""
    sb = Sandbox(count=3, seed=1)
    rid = sb.ids[0]
    sb.faults.fail_next = 2
    codes = [get(sb, ITEM.format(rid)) for _ in range(3)]
    assert [r.status_code for r in codes] == [503, 503, 200]
    assert codes[0].headers["retry-after"] == "1"
    assert sb.faults.fail_next == 0
    sb.faults.down = True
    assert get(sb, LIST).status_code == 503
    sb.faults.down = False
    sb.faults.error_rate_503 = 1.0
    r = get(sb, ITEM.format(rid))
    assert (r.status_code, r.headers["retry-after"]) == (503, "1")
    sb.faults.error_rate_503 = 0.5

    async def body(c: httpx.AsyncClient) -> list[int]:
        return [(await c.get(ITEM.format(rid))).status_code for _ in range(100)]

    assert 20 < run(sb, body).count(503) < 80


def test_a_request_without_an_accepted_token_is_refused() -> None:
    """A missing, empty, non-bearer or unknown token is 401; forbidden makes a good one 403."""
    sb = Sandbox(count=3, seed=1)
    path = BASE + ITEM.format(sb.ids[0])

    async def body(c: httpx.AsyncClient) -> list[httpx.Response]:
        c.headers.pop("Authorization")
        return [
            await c.get(path),
            await c.get(path, headers={"Authorization": "Bearer "}),
            await c.get(path, headers={"Authorization": "Basic abc"}),
        ]

    for r in run(sb, body):
        assert r.status_code == 401
        assert r.json()["error"]["code"] == "InvalidAuthenticationToken"
    sb.faults.accepted_tokens = {"good"}
    assert get(sb, path, headers={"Authorization": "Bearer bad"}).status_code == 401
    assert get(sb, path, headers={"Authorization": "Bearer good"}).status_code == 200
    sb.faults.forbidden = True
    r = get(sb, path, headers={"Authorization": "Bearer good"})
    assert r.status_code == 403
    assert r.json()["error"]["code"] == "Forbidden"


def test_per_id_body_faults_break_only_their_own_id() -> None:
    """Invalid, truncated, non-object, HTML, oversized and mismatched bodies hit their ids only."""
    sb = Sandbox(count=10, seed=1)
    ids = sb.ids
    f = sb.faults
    f.invalid_json_ids, f.truncated_ids, f.non_object_ids = {ids[0]}, {ids[1]}, {ids[2], ids[3]}
    f.wrong_content_type_ids, f.oversized_ids, f.mismatched_id_ids = {ids[4]}, {ids[5]}, {ids[6]}
    r = {i: get(sb, ITEM.format(i)) for i in ids[:8]}
    assert all(x.status_code == 200 for x in r.values())
    with pytest.raises(json.JSONDecodeError):
        json.loads(r[ids[0]].text)
    full = len(json.dumps(sb.document(ids[1]), ensure_ascii=False).encode())
    assert int(r[ids[1]].headers["content-length"]) == len(r[ids[1]].content) < full * 0.6
    with pytest.raises(json.JSONDecodeError):
        json.loads(r[ids[1]].text)
    assert not isinstance(r[ids[2]].json(), dict)
    assert not isinstance(r[ids[3]].json(), dict)
    assert r[ids[4]].headers["content-type"].startswith("text/html")
    assert r[ids[4]].text.startswith("<html>")
    big = r[ids[5]]
    assert len(big.content) > 5_000_000
    assert len(big.json()["details"]["notes"]) >= 4_000_000
    assert r[ids[6]].json()["id"] in ids
    assert r[ids[6]].json()["id"] != ids[6]
    assert r[ids[7]].json() == sb.document(ids[7])


def test_faults_patch_over_control_endpoint_turns_lists_into_sets() -> None:
    """PATCH /_sandbox/faults sets switches, JSON lists becoming sets."""
    sb = Sandbox(count=3, seed=1)

    async def body(c: httpx.AsyncClient) -> httpx.Response:
        return await c.patch(
            "http://sandbox/_sandbox/faults",
            json={"truncated_ids": [sb.ids[0]], "accepted_tokens": ["t"], "fail_next": 1},
        )

    r = run(sb, body)
    assert r.status_code == 200
    assert r.json()["truncated_ids"] == [sb.ids[0]]
    assert sb.faults.truncated_ids == {sb.ids[0]}
    assert sb.faults.accepted_tokens == {"t"}
    assert sb.faults.fail_next == 1
    assert Faults().accepted_tokens is None


# -- determinism and variety -------------------------------------------------------------------


def test_the_seed_alone_decides_what_is_generated() -> None:
    """The same seed gives the same ids and documents; another seed gives other ids."""
    a, b, c = Sandbox(count=100, seed=7), Sandbox(count=100, seed=7), Sandbox(count=100, seed=8)
    assert a.ids == b.ids
    assert len(set(a.ids)) == 100
    assert all(a.document(i) == b.document(i) for i in a.ids)
    assert not set(a.ids) & set(c.ids)
    for i in a.ids:
        assert i == i.lower()
        assert str(uuid.UUID(i)) == i
    assert a.change(fraction=0.2, seed=1) == b.change(fraction=0.2, seed=1)


OPTIONAL_TOP_LEVEL = [
    "@odata.context",
    "name",
    "organizationId",
    "organizationName",
    "externalReferenceId",
    "expirationDateTime",
    "acceptedDateTime",
    "closedDateTime",
    "statusReason",
    "qualification",
    "type",
    "customerProfile",
    "consent",
    "details",
    "team",
    "inviteContext",
    "target",
    "links",
    "referralSource",
    "callToAction",
    "salesStage",
    "dealSensitivity",
    "tags",
    "trackingInfo",
    "registrations",
]
NOTHING = object()


def _members(team: Any) -> list[dict[str, Any]]:
    return team if isinstance(team, list) else [team] if isinstance(team, dict) else []


def _variety(docs: list[dict[str, Any]]) -> dict[str, bool]:
    """Each odd shape of docs/referral-api.md, and whether some document shows it."""

    def some(pred: Callable[[dict[str, Any]], bool]) -> bool:
        return any(pred(d) for d in docs)

    def sub(d: dict[str, Any], *keys: str) -> Any:
        for k in keys:
            d = d.get(k) if isinstance(d, dict) else None  # type: ignore[assignment]
        return d

    details = [d["details"] for d in docs if isinstance(d.get("details"), dict)]
    reqs = [x["requirements"] for x in details if isinstance(x.get("requirements"), dict)]
    profiles = [d["customerProfile"] for d in docs if isinstance(d.get("customerProfile"), dict)]
    members = [m for d in docs for m in _members(d.get("team"))]
    members += [m for p in profiles for m in _members(p.get("team"))]
    texts = [json.dumps(d, ensure_ascii=False) for d in docs]
    engagements = Counter(d["engagementId"] for d in docs)
    checks: dict[str, bool] = {}
    for f in OPTIONAL_TOP_LEVEL:
        shapes = [d.get(f, NOTHING) for d in docs]
        checks[f + " present"] = any(x not in (None, "", [], {}, NOTHING) for x in shapes)
        checks[f + " missing"] = NOTHING in shapes
        checks[f + " null or empty"] = any(x in (None, "", [], {}) for x in shapes)
    ids_shapes = [p.get("ids") for p in profiles]
    id_arrays = [x for ids in ids_shapes if isinstance(ids, list) for x in ids]
    deal_values = [x.get("dealValue", NOTHING) for x in details]
    solutions = [s for r in reqs for s in r.get("solutions") or ()]
    self_uris = [sub(d, "links", "self", "uri") for d in docs]
    names = [
        str(x.get(k)) for x in (*members, *profiles) for k in ("name", "lastName", "firstName")
    ]
    checks |= {
        "ids as array": bool(id_arrays),
        "ids items": all(set(x) == {"profileType", "id"} for x in id_arrays),
        "ids as {}": {} in ids_shapes,
        "ids as object": any(isinstance(x, dict) and "CrmId" in x for x in ids_shapes),
        "customer team array": any(isinstance(p.get("team"), list) for p in profiles),
        "customer team lone object": any(isinstance(p.get("team"), dict) for p in profiles),
        "team array": some(lambda d: isinstance(d.get("team"), list) and bool(d["team"])),
        "team lone object": some(lambda d: isinstance(d.get("team"), dict)),
        "member title": any("title" in m for m in members),
        "member contactPreference": any(
            set(m.get("contactPreference") or ()) == {"locale", "disableNotifications"}
            for m in members
        ),
        "consent wire name": some(
            lambda d: "consentToToShareInfoWithOthers" in (d.get("consent") or {})
        ),
        "consent extra flags": some(lambda d: len(d.get("consent") or {}) > 2),
        "dealValue int": any(type(x) is int for x in deal_values),
        "dealValue float": any(isinstance(x, float) and x % 1 for x in deal_values),
        "dealValue string": any(isinstance(x, str) and "." in x for x in deal_values),
        "dealValue null": None in deal_values,
        "dealValue missing": NOTHING in deal_values,
        "currency ISO": any(re.fullmatch("[A-Z]{3}", x.get("currency") or "") for x in details),
        "timestamps 0 digits": some(lambda d: bool(re.search(r":\d\dZ$", d["updatedDateTime"]))),
        "timestamps 6 digits": some(lambda d: bool(re.search(r"\.\d{6}Z$", d["updatedDateTime"]))),
        "timestamps 7 digits": some(lambda d: bool(re.search(r"\.\d{7}Z$", d["updatedDateTime"]))),
        "solutions id name type": any({"id", "name", "type"} <= set(s) for s in solutions),
        "offers": any("offers" in r for r in reqs),
        "salesPlays": any("salesPlays" in r for r in reqs),
        "additionalRequirements": any(
            isinstance(r.get("additionalRequirements"), dict) for r in reqs
        ),
        "inviteContext msft": some(
            lambda d: sub(d, "inviteContext", "invitedBy", "organizationId") == "msft"
        ),
        "target items": some(
            lambda d: any(set(t) == {"type", "id"} for t in d.get("target") or ())
        ),
        "links typo": some(lambda d: "engagments" in json.dumps(d.get("links"))),
        "links malformed": any(
            isinstance(u, str) and not u.endswith("/" + d["id"])
            for u, d in zip(self_uris, docs, strict=True)
        ),
        "context typo": some(lambda d: "engagments" in (d.get("@odata.context") or "")),
        "futureField": some(lambda d: "futureField" in d),
        "x-experimental": some(lambda d: "x-experimental" in d),
        "swedish": any(re.search("[åäöÅÄÖ]", t) for t in texts),
        "cjk": any(re.search("[\u4e00-\u9fff\u3040-\u30ff]", t) for t in texts),
        "emoji": any(re.search("[\U0001f300-\U0001faff]", t) for t in texts),
        "rtl": any(re.search("[\u0590-\u06ff]", t) for t in texts),
        "long notes": any(len(x.get("notes") or "") > 2000 for x in details),
        "name with apostrophe": any("'" in name for name in names),
        "name with double quote": any('"' in name for name in names),
        "shared engagement": some(
            lambda d: engagements[d["engagementId"]] > 1 and d["type"] == "Shared"
        ),
    }
    return checks


def test_documents_show_every_odd_shape_of_the_real_api() -> None:
    """300 documents show every odd shape the real API sends, all internally consistent."""
    sb = Sandbox(count=300, seed=11)
    docs = [sb.document(i) for i in sb.ids]
    missing = [name for name, ok in _variety(docs).items() if not ok]
    assert missing == []
    for d in docs:
        assert d["substatus"] in STATUS_SUBSTATUS[d["status"]]
        assert d["eTag"] == sb.etag(d["id"])
        assert d["eTag"].startswith('"')
        assert TS.match(d["createdDateTime"])
        assert ticks(d["createdDateTime"]) <= ticks(d["updatedDateTime"])
        if d["status"] == "New":
            assert d.get("closedDateTime") in (None, "")


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_variety_holds_for_other_seeds(seed: int) -> None:
    """Other seeds show every odd shape too."""
    sb = Sandbox(count=300, seed=seed)
    checks = _variety([sb.document(i) for i in sb.ids])
    assert [name for name, ok in checks.items() if not ok] == []


def test_a_sandbox_of_20000_referrals_serves_each_document() -> None:
    """20,000 referrals are made and any of them is served as its own document."""
    sb = Sandbox(count=20_000, seed=1)
    assert len(set(sb.ids)) == 20_000
    for rid in sb.ids[::20]:
        assert sb.document(rid)["id"] == rid


# -- events ------------------------------------------------------------------------------------


def test_events_report_every_change_to_the_set(tmp_path: Path) -> None:
    """Changes, additions, deletions and restores each become one event, written as lines or array."""
    sb = Sandbox(count=20, seed=1)
    assert sb.event_seq == 0
    assert sb.events() == []
    changed = sb.change(ids=sb.ids[:2])
    mark = sb.event_seq
    added = sb.add(1)
    victim = sb.ids[3]
    sb.delete([victim])
    sb.restore([victim])
    events = sb.events()
    assert [(e["EventName"], e["ResourceUri"].rsplit("/", 1)[1]) for e in events] == [
        ("referral-updated", changed[0]),
        ("referral-updated", changed[1]),
        ("referral-created", added[0]),
        ("referral-updated", victim),
        ("referral-updated", victim),
    ]
    assert sb.events(mark) == events[mark:]
    for e in events:
        assert e["ResourceUri"].startswith(
            "https://api.partnercenter.microsoft.com/engagements/v1/referrals/"
        )
        assert e["ResourceName"] == "referral"
        assert e["AuditUri"].startswith("https://api.partnercenter.microsoft.com/auditrecords/")
        assert TS.match(e["ResourceChangeUtcDate"])
    assert sb.write_events(tmp_path / "e.jsonl", since=mark) == 3
    lines = (tmp_path / "e.jsonl").read_text().splitlines()
    assert [json.loads(x) for x in lines] == events[mark:]
    assert sb.write_events(tmp_path / "e.json", fmt="array") == 5
    assert json.loads((tmp_path / "e.json").read_text()) == events


# -- over TCP ----------------------------------------------------------------------------------


def test_server_thread_serves_the_sandbox_over_tcp() -> None:
    """The API and control endpoints answer over TCP until the thread stops."""
    sb = Sandbox(count=40, seed=12)
    with ServerThread(sb) as server:
        assert server.url == f"http://127.0.0.1:{server.port}"
        assert server.base_url == server.url + "/v1.0"
        with httpx.Client(headers=AUTH) as c:
            ids = c.get(server.url + "/_sandbox/ids").text.split()
            assert ids == sb.ids
            r = c.get(server.base_url + ITEM.format(ids[0]), headers={"MS-CorrelationId": "tcp"})
            assert r.status_code == 200
            assert r.json() == sb.document(ids[0])
            assert r.headers["ms-correlationid"] == "tcp"
            etag = r.headers["etag"]
            assert c.get(
                server.base_url + ITEM.format(ids[0]), headers={"If-None-Match": etag}
            ).status_code == 304  # fmt: skip
            mark = sb.event_seq
            changed = c.post(server.url + "/_sandbox/change", json={"ids": [ids[0]]}).json()
            assert changed == [ids[0]]
            assert sb.etag(ids[0]) != etag
            assert (
                c.post(server.url + "/_sandbox/delete", json={"ids": [ids[1]]}).status_code == 200
            )
            assert c.get(server.base_url + ITEM.format(ids[1])).status_code == 404
            added = c.post(server.url + "/_sandbox/add", json={"count": 2}).json()
            assert len(added) == 2
            assert sb.ids[-2:] == added
            events = c.get(server.url + "/_sandbox/events", params={"since": mark}).json()
            assert [e["EventName"] for e in events] == ["referral-updated"] * 2 + [
                "referral-created"
            ] * 2
            page = c.get(server.base_url + LIST, params={"$top": 10}).json()
            link = page["@odata.nextLink"]
            assert link.startswith(f"http://127.0.0.1:{server.port}/v1.0/referrals?")
            stats = c.get(server.url + "/_sandbox/stats").json()
            assert stats["by_kind"]["get"] == 3
            assert stats["by_status"]["304"] == 1
    with pytest.raises(httpx.TransportError):
        httpx.get(server.url + "/_sandbox/ids", timeout=1)


def test_reset_stats_zeroes_the_counters() -> None:
    """reset_stats zeroes the counters of the same stats object."""
    sb = Sandbox(count=3, seed=1)
    get(sb, ITEM.format(sb.ids[0]))
    get(sb, LIST)
    assert (sb.stats.total, sb.stats.by_kind) == (2, {"get": 1, "list": 1})
    stats = sb.stats
    sb.reset_stats()
    assert stats.total == 0
    assert stats.by_status == {}
    assert sb.stats is stats


# -- listing as a source of documents (list-first sync) ----------------------------------------


def test_listed_documents_can_leave_out_their_odata_fields() -> None:
    """With list_etag off, listed items lack eTag and @odata.context, as the official sample does."""
    sb = Sandbox(count=120, seed=12)
    with_etag = list_all(sb, {"$orderby": "updatedDateTime desc"})[0]
    assert all(d["eTag"] == sb.etag(d["id"]) for d in with_etag)
    sb.faults.update({"list_etag": False})
    without = list_all(sb, {"$orderby": "updatedDateTime desc"})[0]
    assert [d["id"] for d in without] == [d["id"] for d in with_etag]
    assert not any("eTag" in d or "@odata.context" in d for d in without)
    for listed, full in zip(without, with_etag, strict=True):
        assert listed == {k: x for k, x in full.items() if k not in ("eTag", "@odata.context")}
    # A GET by id still carries the eTag, in the body and the header.
    r = get(sb, ITEM.format(sb.ids[0]))
    assert r.json()["eTag"] == r.headers["etag"] == sb.etag(sb.ids[0])


def test_a_time_filter_can_be_refused_with_400() -> None:
    """With time_filter off, an updatedDateTime filter is 400 and a status filter still works."""
    sb = Sandbox(count=30, seed=12)
    text = "updatedDateTime gt 2020-01-01T00:00:00Z"
    assert get(sb, LIST, params={"$filter": text}).status_code == 200
    sb.faults.time_filter = False
    r = get(sb, LIST, params={"$filter": text})
    assert r.status_code == 400
    assert r.json()["error"]["code"] == "BadRequest"
    assert get(sb, LIST, params={"$filter": "status eq 'New'"}).status_code == 200


def test_a_change_stamps_updated_datetime_with_the_time_of_the_change() -> None:
    """A change's updatedDateTime is the injected clock's time at the change."""
    now = [1_900_000_000 * 10_000_000 + 1234567]  # 2030-03-17, in ticks
    sb = Sandbox(count=40, seed=13, clock=lambda: now[0])
    rid = sb.ids[5]
    sb.change(ids=[rid])
    stamped = sb.document(rid)["updatedDateTime"]
    assert stamped.startswith("2030-03-17T17:46:40")
    newest = list_all(sb, {"$orderby": "updatedDateTime desc", "$top": 1})[0][0]
    assert newest["id"] == rid
    now[0] += 10_000_000
    sb.change(ids=[sb.ids[6]])
    assert sb.document(sb.ids[6])["updatedDateTime"].startswith("2030-03-17T17:46:41")


def test_a_referral_changed_while_the_pages_are_read_moves_to_the_front() -> None:
    """A referral changed mid-listing is missed by that listing and first in the next one."""
    sb = Sandbox(count=300, seed=14)
    order = [d["id"] for d in list_all(sb, {"$orderby": "updatedDateTime desc"})[0]]
    mover = order[250]  # on the third page
    sb.change_while_listing([mover], after_pages=1)
    seen = [d["id"] for d in list_all(sb, {"$orderby": "updatedDateTime desc"})[0]]
    # Keyset paging: the moved referral is now newer than the pages already read, so this
    # listing never shows it; the next one shows it first.
    assert mover not in seen
    assert len(seen) == 299
    assert list_all(sb, {"$orderby": "updatedDateTime desc", "$top": 1})[0][0]["id"] == mover
