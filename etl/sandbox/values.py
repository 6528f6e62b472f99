"""Values for referral documents: text pools (Swedish, CJK, emoji, RTL, quotes), timestamps,
GUIDs, and generators of each part of a document in the odd shapes docs/referral-api.md lists.

The ``slot_*`` functions each return the top-level fields of one part of a document (a field
left out is simply absent); :mod:`etl.sandbox.generator` serialises a pool of each once and
assembles documents from them.
"""

from __future__ import annotations

import random
import time
from typing import Any, Final

TICKS_PER_SECOND: Final = 10_000_000  # timestamps are kept as 100 ns ticks since the epoch
DAY: Final = 86_400 * TICKS_PER_SECOND
GEN_START: Final = 1_546_300_800 * TICKS_PER_SECOND  # 2019-01-01
GEN_END: Final = 1_782_777_600 * TICKS_PER_SECOND  # 2026-06-30

API: Final = "https://api.partner.microsoft.com/v1.0"
ENTITY_CONTEXT: Final = API + "/engagments/referrals/$metadata#Referrals/$entity"

_GUID_CLEAR: Final = ~((0xF << 76) | (0x3 << 62))
_GUID_SET: Final = (0x4 << 76) | (0x2 << 62)

MISSING: Final = object()  # sentinel: leave the field out of the document

NEW_SUBSTATUS: Final = ("Pending", "Received", "None")
CLOSED_SUBSTATUS: Final = ("Won", "Lost", "Declined", "Expired")

_COMPANIES: Final = (
    "Contoso Ltd",
    "Fabrikam Customer Inc",
    "Åkesson & Söner AB",
    "Ärlig Öl Bryggeri Handelsbolag",
    "Björkö Skärgårdsfiske",
    "株式会社サンプル商事",
    "北京示例科技有限公司",
    "O'Brien's \"Green\" Pub",
    "شركة المثال للتقنية",
    "חברת דוגמה בע״מ",
    "Müller & Töchter GmbH",
    "Café Ñandú S.A.",
    "🚀 Rocket Startup 🚀",
    "Zoë's Ëmporium",
    "Tailspin Toys",
    "Northwind Traders",
    "Wide World Importers",
    "Adventure Works Cycles",
    "Litware, Inc.",
    "Trey Research; Ltd. <Research>",
    "Woodgrove Bank",
    "Margie's Travel",
    "서울 샘플 주식회사",
    "Nguyễn Văn Co.",
)
_FIRST: Final = (
    "Anna", "Åsa", "Örjan", "Björn", "Zoë", "Seán", "D'Arcy", "李", "さくら", "محمد",
    "José", "Nguyễn", "Ünal", "Émilie", "Lars-Åke", "Ингрид", "Noa", "Chloé", "Karl", "Jürgen",
)  # fmt: skip
_LAST: Final = (
    "Andersson", "Öberg", "Ström", "O'Connor", "van der Berg", "王", "田中", "العلي",
    "Cohen", "García-Márquez", "Smith", "Jönsson", "Dvořák", "Łukasiewicz", "\"Doc\" Holliday",
)  # fmt: skip
_TITLES: Final = (
    "CIO", "IT-chef", "Head of Procurement", "Solution Architect", "営業部長", "مدير",
    "VP, Sales & Marketing", "Account Executive", "",
)  # fmt: skip
_LOCALES: Final = ("sv-SE", "en-US", "ja-JP", "ar-SA", "he-IL", "zh-CN", "de-DE", "fi-FI")
_ADDRESSES: Final = (
    ("Drottninggatan 1", "Stockholm", "Stockholms län", "Europe", "111 51", "SE"),
    ("Kungsportsavenyen 22", "Göteborg", "Västra Götaland", "Europe", "411 36", "SE"),
    ("One Microsoft Way", "Redmond", "WA", "North America", "98052", "US"),
    ("1-2-3 Marunouchi", "東京", "東京都", "Asia", "100-0005", "JP"),
    ("朝阳区建国路 88 号", "北京", "北京市", "Asia", "100022", "CN"),
    ("Rothschild Blvd 10", "תל אביב", "", "Middle East", "6688101", "IL"),
    ("Sheikh Zayed Rd", "دبي", "دبي", "Middle East", "", "AE"),
    ("Av. Paulista, 1000", "São Paulo", "SP", "South America", "01310-100", "BR"),
    ("Marienplatz 8", "München", "Bayern", "Europe", "80331", "DE"),
    ("221B Baker St", "London", "", "Europe", "NW1 6XE", "GB"),
)
_SIZES: Final = (
    "1to9employees", "10to50employees", "51to250employees", "251to1000employees",
    "1001to5000employees", "5001to10000employees", "10001orMoreEmployees", "Unknown",
)  # fmt: skip
CURRENCIES: Final = ("USD", "EUR", "SEK", "JPY", "GBP", "CNY", "ILS", "AED", "BRL", "CHF", "KWD")
_NOTES: Final = (
    (
        "We are interested in deploying Microsoft 365 and are looking for support in training our "
        "employees. Can you help?"
    ),
    "Vi är intresserade av att införa Azure och behöver hjälp med migrering av våra servrar.",
    "Kunden vill ha en offert före årsskiftet; kontakta Åsa på växeln.",
    "我们希望在明年第一季度部署 Dynamics 365。",
    "Teams の導入を検討しています。",
    "نحن مهتمون بالانتقال إلى الحوسبة السحابية",
    "אנחנו מעוניינים במעבר לענן",
    "Great fit 👍🏽🚀 — budget approved!",
    'Customer said: "we\'ll decide next week" (maybe).',
    "Line one\nLine two\twith a tab\r\nand a CRLF",
    "Backslash \\ and slash / and <b>html</b> & ampersand",
    "",
)
INDUSTRIES: Final = (
    "Education", "Healthcare", "Retail", "Manufacturing", "FinancialServices", "Government",
    "Media", "Nonprofit",
)  # fmt: skip
PRODUCTS: Final = (
    "Microsoft365", "Azure", "Dynamics365", "PowerPlatform", "Teams", "Windows", "Surface",
    "GitHub",
)  # fmt: skip
SERVICES: Final = (
    "LearningAndCertification", "Deployment", "Consulting", "ManagedServices", "Migration",
    "Support",
)  # fmt: skip
_SOLUTION_TYPES: Final = ("None", "Category", "Name")
_TARGET_TYPES: Final = ("None", "BusinessProfileLocation", "SolutionProfile")
_STATUS_REASONS: Final = ("None", "CustomerNotInterested", "WonByOtherPartner", "Budget", "Other")
_QUALIFICATIONS: Final = ("None", "Direct", "MarketingQualified", "SalesQualified")
_REFERRAL_SOURCES: Final = ("Partner", "Microsoft", "Marketplace", "Customer")
_CALLS_TO_ACTION: Final = ("ContactMe", "FreeTrial", "Purchase", "TestDrive")
SALES_STAGES: Final = ("Qualify", "Develop", "Propose", "Negotiate", "Close")
TAGS: Final = ("priority", "q3", "renewal", "åtgärd", "🔥", "co-sell", "green field")


def guid(rng: random.Random) -> str:
    """A lowercase GUID string drawn from ``rng``."""
    bits = rng.getrandbits(128) & _GUID_CLEAR | _GUID_SET  # version 4, RFC 4122 variant
    h = f"{bits:032x}"
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def tick_unit(digits: int) -> int:
    """The smallest step, in ticks, that ``digits`` fractional digits can show."""
    unit: int = 10 ** (7 - digits)
    return unit


def truncate_ticks(ticks: int, digits: int) -> int:
    """Round ``ticks`` down to what ``digits`` fractional digits can show."""
    return ticks - ticks % tick_unit(digits)


def format_ts(ticks: int, digits: int) -> str:
    """ISO 8601 UTC with ``Z`` and 0, 6 or 7 fractional digits (truncating)."""
    seconds, frac = divmod(ticks, TICKS_PER_SECOND)
    text = "{:04d}-{:02d}-{:02d}T{:02d}:{:02d}:{:02d}".format(*time.gmtime(seconds)[:6])
    if digits == 0:
        return text + "Z"
    return f"{text}.{f'{frac:07d}'[:digits]}Z"


def now_ticks() -> int:
    """The wall clock in ticks."""
    return time.time_ns() // 100


def odd(rng: random.Random, value: Any, *, empty: Any = MISSING, p: float = 0.14) -> Any:
    """``value`` mostly; else missing, ``null`` or ``empty`` (``""`` for strings)."""
    r = rng.random()
    if r >= p:
        return value
    if r < p * 0.4:
        return MISSING
    if r < p * 0.7 or empty is MISSING:
        return None
    return empty


def put(doc: dict[str, Any], key: str, value: Any) -> None:
    if value is not MISSING:
        doc[key] = value


def member(rng: random.Random) -> dict[str, Any]:
    """A Member: a contact person, with some optional and odd parts."""
    first, last = rng.choice(_FIRST), rng.choice(_LAST)
    m: dict[str, Any] = {}
    put(m, "firstName", odd(rng, first, empty="", p=0.08))
    put(m, "lastName", odd(rng, last, empty="", p=0.08))
    local = rng.choice(("anna.o", "asa.oberg", "åsa.öberg", "d'arcy", "contact", "x"))
    email = f"{local}{rng.randrange(1000)}@{rng.choice(('contoso.com', 'exempel.se', 'ex.jp'))}"
    put(m, "email", odd(rng, email, empty="", p=0.1))
    phone = rng.choice(("+46 8 123 45 67", "(425) 555-0100", "+81-3-1234-5678", "0701234567"))
    put(m, "phoneNumber", odd(rng, phone, empty="", p=0.2))
    if rng.random() < 0.4:
        m["title"] = rng.choice(_TITLES)
    if rng.random() < 0.3:
        pref: dict[str, Any] = {"locale": rng.choice(_LOCALES)}
        pref["disableNotifications"] = rng.random() < 0.3
        m["contactPreference"] = pref
    return m


def team(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.06:
        return MISSING
    if r < 0.09:
        return None
    if r < 0.15:
        return member(rng)  # a lone object where an array is expected
    if r < 0.2:
        return []
    return [member(rng) for _ in range(rng.randint(1, 4))]


def profile_ids(rng: random.Random) -> Any:
    r = rng.random()
    if r < 0.55:
        return [
            {"profileType": rng.choice(("Duns", "External")), "id": str(rng.randrange(10**9))}
            for _ in range(rng.randint(1, 3))
        ]
    if r < 0.65:
        return {}
    if r < 0.8:
        ids = {"CrmId": f"CRM-{rng.randrange(10**6)}"}
        if rng.random() < 0.5:
            ids["DunsNumber"] = f"{rng.randrange(10**9):09d}"
        return ids
    if r < 0.93:
        return MISSING
    return None


def customer_profile(rng: random.Random) -> dict[str, Any]:
    line1, city, state, region, postal, country = rng.choice(_ADDRESSES)
    address: dict[str, Any] = {}
    put(address, "addressLine1", odd(rng, line1, empty=""))
    put(address, "addressLine2", rng.choice(("", "", "Box 12", "Våning 3", MISSING)))
    put(address, "city", odd(rng, city, empty=""))
    put(address, "state", odd(rng, state, empty=""))
    put(address, "region", odd(rng, region, empty="", p=0.3))
    put(address, "postalCode", odd(rng, postal, empty=""))
    put(address, "country", odd(rng, country, empty="", p=0.08))
    cp: dict[str, Any] = {}
    put(cp, "name", odd(rng, rng.choice(_COMPANIES), empty=""))
    put(cp, "size", odd(rng, rng.choice(_SIZES), empty=""))
    put(cp, "address", odd(rng, address, p=0.08))
    put(cp, "team", team(rng))
    put(cp, "ids", profile_ids(rng))
    return cp


def notes(rng: random.Random) -> str:
    """Notes text: usually a sentence or two, sometimes a few KB."""
    if rng.random() < 0.04:
        parts: list[str] = []
        size, target = 0, rng.randint(2000, 6000)
        while size < target:
            parts.append(rng.choice(_NOTES))
            size += len(parts[-1]) + 1
        return " ".join(parts)
    return " ".join(rng.choice(_NOTES) for _ in range(rng.randint(1, 2)))


def deal_value(rng: random.Random) -> Any:
    """A dealValue as the wire sends it: int, float, string, null or missing."""
    r = rng.random()
    if r < 0.3:
        return rng.randrange(0, 2_000_000, 500)
    if r < 0.55:
        return round(rng.uniform(100, 500_000), 2)
    if r < 0.72:
        return f"{rng.uniform(100, 500_000):.2f}"
    if r < 0.78:
        return str(rng.randrange(1000, 100_000))
    if r < 0.89:
        return None
    return MISSING


def id_items(rng: random.Random, pool: tuple[str, ...], most: int = 3) -> Any:
    r = rng.random()
    if r < 0.08:
        return MISSING
    if r < 0.14:
        return []
    if r < 0.17:
        return None
    return [{"id": x} for x in rng.sample(pool, rng.randint(1, most))]


def solution(rng: random.Random) -> dict[str, Any]:
    """A requirements.solutions item: id, name and usually a type."""
    product = rng.choice(PRODUCTS)
    item: dict[str, Any] = {"id": f"SOL-{product}-{rng.randrange(1000)}", "name": product}
    if rng.random() < 0.8:
        item["type"] = rng.choice(_SOLUTION_TYPES)
    return item


def requirements(rng: random.Random) -> dict[str, Any]:
    """details.requirements, with any array missing or empty, plus newer parts."""
    req: dict[str, Any] = {}
    put(req, "industries", id_items(rng, INDUSTRIES, 2))
    put(req, "products", id_items(rng, PRODUCTS))
    put(req, "services", id_items(rng, SERVICES))
    r = rng.random()
    if r < 0.85:
        req["solutions"] = [solution(rng) for _ in range(rng.randint(0, 3))]
    elif r < 0.93:
        req["solutions"] = None
    if rng.random() < 0.3:
        req["offers"] = [
            {"id": f"OFFER-{rng.randrange(10**5)}", "name": rng.choice(PRODUCTS)}
            for _ in range(rng.randint(0, 2))
        ]
    if rng.random() < 0.3:
        req["salesPlays"] = [
            {"id": f"SP-{rng.randrange(100)}", "name": rng.choice(("Modern Work", "Security"))}
            for _ in range(rng.randint(0, 2))
        ]
    if rng.random() < 0.2:
        req["additionalRequirements"] = {
            "budgetApproved": rng.random() < 0.5,
            "timeline": rng.choice(("Q1", "Q3", "nästa år", None)),
            "seats": rng.randrange(1, 5000),
        }
    return req


def slot_org(rng: random.Random) -> dict[str, Any]:
    """name, organizationId, organizationName, externalReferenceId."""
    d: dict[str, Any] = {}
    put(d, "name", odd(rng, f"{rng.choice(_COMPANIES)} – {rng.choice(PRODUCTS)}", empty=""))
    put(d, "organizationId", odd(rng, guid(rng), empty=""))
    put(d, "organizationName", odd(rng, rng.choice(_COMPANIES), empty=""))
    put(d, "externalReferenceId", odd(rng, f"CRM-{rng.randrange(10**6)}", empty="", p=0.4))
    return d


def slot_quals(rng: random.Random) -> dict[str, Any]:
    """statusReason, qualification."""
    d: dict[str, Any] = {}
    put(d, "statusReason", odd(rng, rng.choice(_STATUS_REASONS), empty="", p=0.3))
    put(d, "qualification", odd(rng, rng.choice(_QUALIFICATIONS), empty=""))
    return d


def slot_customer(rng: random.Random) -> dict[str, Any]:
    """customerProfile."""
    d: dict[str, Any] = {}
    put(d, "customerProfile", odd(rng, customer_profile(rng), p=0.08))
    return d


def slot_consent(rng: random.Random) -> dict[str, Any]:
    """consent, with the real wire name consentToToShareInfoWithOthers."""
    consent: dict[str, Any] = {
        "consentToContact": rng.random() < 0.9,
        "consentToToShareInfoWithOthers": rng.random() < 0.6,
    }
    if rng.random() < 0.25:
        consent["consentToShareReferralWithMicrosoftSellers"] = rng.random() < 0.5
    d: dict[str, Any] = {}
    put(d, "consent", odd(rng, consent, p=0.14))
    return d


def slot_details(rng: random.Random) -> dict[str, Any]:
    """details: notes, dealValue, currency, closingDateTime, requirements."""
    details: dict[str, Any] = {}
    put(details, "notes", odd(rng, notes(rng), empty=""))
    put(details, "dealValue", deal_value(rng))
    put(details, "currency", odd(rng, rng.choice(CURRENCIES), empty="", p=0.15))
    closing = truncate_ticks(rng.randrange(GEN_START, GEN_END + 365 * DAY), 0)
    put(details, "closingDateTime", odd(rng, format_ts(closing, rng.choice((0, 7))), empty=""))
    put(details, "requirements", odd(rng, requirements(rng), empty={}, p=0.1))
    d: dict[str, Any] = {}
    put(d, "details", odd(rng, details, p=0.08))
    return d


def slot_team(rng: random.Random) -> dict[str, Any]:
    """team: the people on the partner's / Microsoft's side."""
    d: dict[str, Any] = {}
    put(d, "team", team(rng))
    return d


def slot_invite(rng: random.Random) -> dict[str, Any]:
    """inviteContext, invited by Microsoft ("msft") or a partner."""
    d: dict[str, Any] = {}
    if rng.random() < 0.6:
        msft = rng.random() < 0.6
        invited_by = {
            "organizationId": "msft" if msft else guid(rng),
            "organizationName": "Microsoft" if msft else rng.choice(_COMPANIES),
        }
        d["inviteContext"] = {"notes": notes(rng), "invitedBy": invited_by}
    else:
        put(d, "inviteContext", rng.choice((MISSING, None, {})))
    return d


def slot_target(rng: random.Random) -> dict[str, Any]:
    """target: an array of {type, id}."""
    d: dict[str, Any] = {}
    if rng.random() < 0.7:
        d["target"] = [
            {"type": rng.choice(_TARGET_TYPES), "id": guid(rng)} for _ in range(rng.randint(0, 2))
        ]
    else:
        put(d, "target", rng.choice((MISSING, None)))
    return d


def slot_newer(rng: random.Random) -> dict[str, Any]:
    """Fields of newer payloads: referralSource ... registrations."""
    d: dict[str, Any] = {}
    put(d, "referralSource", odd(rng, rng.choice(_REFERRAL_SOURCES), empty="", p=0.5))
    put(d, "callToAction", odd(rng, rng.choice(_CALLS_TO_ACTION), empty="", p=0.5))
    put(d, "salesStage", odd(rng, rng.choice(SALES_STAGES), empty="", p=0.5))
    put(d, "dealSensitivity", odd(rng, rng.choice(("None", "Sensitive")), empty="", p=0.5))
    put(d, "tags", odd(rng, rng.sample(TAGS, rng.randint(0, 3)), empty=[], p=0.5))
    if rng.random() < 0.5:
        d["trackingInfo"] = {
            "campaignId": f"CMP-{rng.randrange(10**4)}",
            "source": rng.choice(("web", "event", "e-post")),
            "utm": {"medium": "cpc", "term": rng.choice(("azure", "m365 ö"))},
        }
    else:
        put(d, "trackingInfo", rng.choice((MISSING, MISSING, None, {})))
    if rng.random() < 0.35:
        digits = rng.choice((0, 6, 7))
        when = truncate_ticks(rng.randrange(GEN_START, GEN_END), digits)
        d["registrations"] = [
            {
                "id": guid(rng),
                "status": rng.choice(("Approved", "Pending", "Rejected")),
                "programName": rng.choice(("Azure IP co-sell", "MACC")),
                "registrationDateTime": format_ts(when, digits),
            }
            for _ in range(rng.randint(0, 2))
        ]
    else:
        put(d, "registrations", rng.choice((MISSING, MISSING, None, [])))
    return d


def slot_unknown(rng: random.Random) -> dict[str, Any]:
    """Fields this project has never heard of (the docs say samples are not exhaustive)."""
    d: dict[str, Any] = {}
    if rng.random() < 0.12:
        d["futureField"] = {"nested": {"level": rng.randint(1, 9), "ok": True}, "list": ["a"]}
    if rng.random() < 0.1:
        d["x-experimental"] = [1, 2]
    if rng.random() < 0.05:
        d["someNewFlag"] = rng.random() < 0.5
    return d
