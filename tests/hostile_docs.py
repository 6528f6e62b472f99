"""Hostile answers for the tests: documents a real API or a broken proxy can send."""

from __future__ import annotations

import json
from typing import Any

from etl.sandbox import Sandbox

TOKEN_ECHO = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJlY2hvIn0.c2lnbmF0dXJl"


def _doc(box: Sandbox, referral_id: str) -> dict[str, Any]:
    return box.document(referral_id)


def _details(doc: dict[str, Any]) -> dict[str, Any]:
    if not isinstance(doc.get("details"), dict):
        doc["details"] = {}
    details: dict[str, Any] = doc["details"]
    return details


def hostile_bodies(box: Sandbox, ids: list[str]) -> dict[str, tuple[bytes, str]]:
    """A hostile body for each of ``ids`` (at least 12), with what should become of it."""
    out: dict[str, tuple[bytes, str]] = {}
    kinds = iter(ids)

    rid = next(kinds)
    doc = _doc(box, rid)
    doc["createdDateTime"] = "0001-01-01T00:00:00+01:00"
    doc["updatedDateTime"] = "9999-12-31T23:30:00-01:00"
    out[rid] = (json.dumps(doc).encode(), "stored:years")

    rid = next(kinds)
    doc = _doc(box, rid)
    doc["name"] = "half an emoji \ud83d here"
    out[rid] = (json.dumps(doc, ensure_ascii=False).encode("utf-8", "surrogatepass"), "stored:fffd")

    rid = next(kinds)
    doc = _doc(box, rid)
    doc["name"] = "half an emoji \ud83d here"
    out[rid] = (json.dumps(doc).encode(), "stored:fffd")  # the \ud83d escape

    rid = next(kinds)
    out[rid] = (json.dumps(_doc(box, rid), ensure_ascii=False).encode("utf-16"), "stored")

    rid = next(kinds)
    out[rid] = (b"\xef\xbb\xbf" + json.dumps(_doc(box, rid)).encode(), "stored")

    rid = next(kinds)
    doc = _doc(box, rid)
    _details(doc)["dealValue"] = float("nan")
    doc["score"] = float("-inf")
    out[rid] = (json.dumps(doc).encode(), "stored:nan")

    rid = next(kinds)
    doc = _doc(box, rid)
    deep = "[" * 100_000 + "]" * 100_000
    text = json.dumps(doc)
    out[rid] = ((text[:-1] + ', "deep": ' + deep + "}").encode(), "failed:nested")

    rid = next(kinds)
    out[rid] = (b"[" * 100_000 + b"]" * 100_000, "failed:nested")

    rid = next(kinds)
    doc = _doc(box, rid)
    _details(doc)["notes"] = {"k" + "\ud800": "\udfff", "ok": "\U0001f600"}
    out[rid] = (json.dumps(doc).encode(), "stored:fffd-key")

    rid = next(kinds)
    doc = _doc(box, rid)
    doc["nest"] = json.loads("[" * 150 + "]" * 150)
    out[rid] = (json.dumps(doc).encode(), "failed:nested")

    rid = next(kinds)
    doc = _doc(box, rid)
    doc["nest"] = json.loads("[" * 30 + "]" * 30)
    out[rid] = (json.dumps(doc).encode(), "stored")

    rid = next(kinds)
    doc = _doc(box, rid)
    doc["eTag"] = 'W/"\u00e9t\u00e9"\r\nX-Injected: 1'  # no header can carry it back
    out[rid] = (json.dumps(doc).encode(), "stored:etag")
    return out


def install(box: Sandbox, bodies: dict[str, tuple[bytes, str]]) -> None:
    """Make the sandbox serve these bodies (for a GET and in the listing)."""
    for rid, (body, _) in bodies.items():
        rec = box.record(rid)
        assert rec is not None
        rec.body = body
