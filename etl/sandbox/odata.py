"""The small OData subset the list endpoint understands: ``$filter``, ``$orderby``, ``$top``,
and an opaque ``$skiptoken`` that encodes the sort key and id of the last item served.

``$filter`` accepts comparisons joined by ``and``, with parentheses anywhere:
``status``, ``substatus``, ``direction``, ``engagementId``, ``id`` with ``eq``/``ne`` and a quoted
string; ``updatedDateTime``, ``createdDateTime`` with ``eq ne gt ge lt le`` and a datetime literal
(bare or quoted). Anything else raises :class:`ODataError` (the app answers 400).
"""

from __future__ import annotations

import base64
import binascii
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

from etl.sandbox.generator import Record
from etl.sandbox.values import TICKS_PER_SECOND

MAX_TOP: Final = 100
DEFAULT_ORDERBY: Final = "createdDateTime desc"

Predicate = Callable[[Record], bool]

_TOKEN = re.compile(r"\s*(\(|\)|'(?:[^']|'')*'|[^\s()']+)")
_DATETIME = re.compile(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)(?:\.(\d{1,7}))?(Z|[+-]00:?00)?")
_OPS: Final[dict[str, Callable[[Any, Any], bool]]] = {
    "eq": operator.eq,
    "ne": operator.ne,
    "gt": operator.gt,
    "ge": operator.ge,
    "lt": operator.lt,
    "le": operator.le,
}
_TEXT_FIELDS: Final[dict[str, Callable[[Record], str]]] = {
    "status": lambda r: r.status.lower(),
    "substatus": lambda r: r.substatus.lower(),
    "direction": lambda r: r.direction.lower(),
    "engagementId": lambda r: r.engagement_id,
    "id": lambda r: r.id,
}
_TIME_FIELDS: Final[dict[str, Callable[[Record], int]]] = {
    "updatedDateTime": lambda r: r.updated,
    "createdDateTime": lambda r: r.created,
}


class ODataError(ValueError):
    """A query option the sandbox does not understand (answered with 400)."""


def parse_datetime(text: str) -> int:
    """An ISO 8601 UTC literal as ticks; raises ODataError when it is not one."""
    m = _DATETIME.fullmatch(text)
    if not m:
        raise ODataError(f"not a datetime literal: {text!r}")
    year, month, day, hour, minute, second = (int(x) for x in m.groups()[:6])
    try:
        moment = datetime(year, month, day, hour, minute, second, tzinfo=UTC)
    except ValueError as exc:
        raise ODataError(f"not a datetime literal: {text!r}") from exc
    frac = int((m.group(7) or "").ljust(7, "0"))
    return int(moment.timestamp()) * TICKS_PER_SECOND + frac


def _tokens(text: str) -> list[str]:
    tokens: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if not m:
            raise ODataError(f"cannot read $filter at {text[pos:]!r}")
        tokens.append(m.group(1))
        pos = m.end()
    return tokens


class _Parser:
    def __init__(self, text: str, times: bool = True) -> None:
        self.tokens = _tokens(text)
        self.pos = 0
        self.times = times

    def _next(self) -> str:
        if self.pos >= len(self.tokens):
            raise ODataError("$filter ends too early")
        self.pos += 1
        return self.tokens[self.pos - 1]

    def expression(self) -> list[Predicate]:
        terms = self._term()
        while self.pos < len(self.tokens) and self.tokens[self.pos] != ")":
            word = self._next()
            if word.lower() != "and":
                raise ODataError(f"only 'and' joins $filter terms, got {word!r}")
            terms += self._term()
        return terms

    def _term(self) -> list[Predicate]:
        if self.pos < len(self.tokens) and self.tokens[self.pos] == "(":
            self.pos += 1
            inner = self.expression()
            if self._next() != ")":
                raise ODataError("unbalanced parentheses in $filter")
            return inner
        field, op, literal = self._next(), self._next().lower(), self._next()
        compare = _OPS.get(op)
        if compare is None:
            raise ODataError(f"unknown operator {op!r} in $filter")
        if field in _TEXT_FIELDS:
            if op not in ("eq", "ne") or not (literal.startswith("'") and literal.endswith("'")):
                raise ODataError(f"{field} takes eq/ne and a quoted string")
            text_of = _TEXT_FIELDS[field]
            value = literal[1:-1].replace("''", "'").lower()
            return [lambda r: compare(text_of(r), value)]
        if field in _TIME_FIELDS and self.times:
            time_of = _TIME_FIELDS[field]
            ticks = parse_datetime(literal.strip("'"))
            return [lambda r: compare(time_of(r), ticks)]
        raise ODataError(f"cannot filter on {field!r}")


def parse_filter(text: str | None, times: bool = True) -> Predicate | None:
    """A predicate over records for ``$filter``, or None when there is no filter.

    ``times=False`` refuses comparisons of the timestamps, as an API that does not accept them.
    """
    if text is None or not text.strip():
        return None
    parser = _Parser(text, times)
    terms = parser.expression()
    if parser.pos != len(parser.tokens):
        raise ODataError("unbalanced parentheses in $filter")
    if len(terms) == 1:
        return terms[0]
    return lambda r: all(term(r) for term in terms)


@dataclass(frozen=True, slots=True)
class OrderBy:
    """A parsed ``$orderby``: ``field`` is updatedDateTime or createdDateTime."""

    field: str
    descending: bool

    @property
    def text(self) -> str:
        return f"{self.field} {'desc' if self.descending else 'asc'}"


def parse_orderby(text: str | None) -> OrderBy:
    """Parse ``$orderby``; only one of the two timestamps, asc or desc."""
    parts = (text or DEFAULT_ORDERBY).split()
    if not parts or len(parts) > 2 or parts[0] not in _TIME_FIELDS:
        raise ODataError(f"cannot order by {text!r}; use updatedDateTime or createdDateTime")
    direction = parts[1].lower() if len(parts) == 2 else "asc"
    if direction not in ("asc", "desc"):
        raise ODataError(f"$orderby direction must be asc or desc, got {parts[1]!r}")
    return OrderBy(parts[0], direction == "desc")


def parse_top(text: str | None) -> int:
    """``$top`` as an int in 1..100 (larger values are cut to 100)."""
    if text is None or text == "":
        return MAX_TOP
    try:
        top = int(text)
    except ValueError as exc:
        raise ODataError(f"$top must be an integer, got {text!r}") from exc
    if top < 1:
        raise ODataError(f"$top must be at least 1, got {top}")
    return min(top, MAX_TOP)


def encode_skiptoken(order: OrderBy, key: int, referral_id: str) -> str:
    """An opaque continuation token: the order, and sort key and id of the last item served."""
    raw = f"{order.text}|{key}|{referral_id}".encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def decode_skiptoken(token: str) -> tuple[OrderBy, int, str]:
    """Undo :func:`encode_skiptoken`; raises ODataError for a token it did not make."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        order_text, key, referral_id = raw.split("|")
        return parse_orderby(order_text), int(key), referral_id
    except (ValueError, binascii.Error, UnicodeDecodeError) as exc:
        raise ODataError(f"invalid $skiptoken {token!r}") from exc
