"""The sandbox as a plain ASGI 3 application (no framework, so a request costs little).

API (under ``/v1.0``, with auth, latency, throttling and faults):
``GET /v1.0/engagements/referrals/{id}`` and ``GET /v1.0/engagements/referrals`` (OData).
Control (no auth, no faults): ``GET /_sandbox/ids``, ``POST /_sandbox/change|delete|restore|add``,
``GET /_sandbox/events?since=N``, ``GET /_sandbox/stats``, ``POST /_sandbox/stats/reset``,
``GET|PATCH /_sandbox/faults``; ``GET /_sandbox/`` lists them (:data:`CONTROL_ENDPOINTS`).
"""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import parse_qsl, quote

from etl.sandbox import odata
from etl.sandbox.faults import TokenBucket

if TYPE_CHECKING:
    from etl.sandbox.state import SandboxState

# What ``GET /_sandbox/`` answers: every control endpoint, with what it does.
CONTROL_ENDPOINTS: Final = (
    ("GET", "/_sandbox/ids", "every referral id, one a line (a ready-made backfill file)"),
    ("POST", "/_sandbox/change", 'change referrals: {"fraction": 0.1} or {"ids": [...]}'),
    ("POST", "/_sandbox/delete", 'delete referrals (then 404): {"ids": [...]}'),
    ("POST", "/_sandbox/restore", 'restore deleted referrals: {"ids": [...]}'),
    ("POST", "/_sandbox/add", 'add new referrals: {"count": 5}'),
    ("GET", "/_sandbox/events?since=N", "webhook events after sequence number N"),
    ("GET", "/_sandbox/stats", "requests served, by kind and status"),
    ("POST", "/_sandbox/stats/reset", "reset the request statistics"),
    ("GET", "/_sandbox/faults", "the fault switches (latency, throttling, bad bodies, ...)"),
    ("PATCH", "/_sandbox/faults", 'set fault switches: {"throttle_rps": 5}'),
)

Message = MutableMapping[str, Any]
Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
Headers = list[tuple[bytes, bytes]]

_JSON: Final = (b"content-type", b"application/json; charset=utf-8")
_TEXT: Final = (b"content-type", b"text/plain; charset=utf-8")
_HTML: Final = (b"content-type", b"text/html; charset=utf-8")
_ITEM_PREFIX: Final = "/v1.0/engagements/referrals/"
_LIST_PATH: Final = "/v1.0/engagements/referrals"
_LIST_CONTEXT: Final = (
    b'{"@odata.context":"https://api.partner.microsoft.com/v1.0/engagments/referrals/'
    b'$metadata#Referrals","@odata.count":'
)


def _dumps(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False).encode()


def _error(code: str, message: str, target: str | None = None) -> bytes:
    """The first error shape: ``{"error": {"code", "message", "target", "innerError"}}``."""
    return _dumps({"error": {"code": code, "message": message, "target": target, "innerError": {}}})


def _not_found(referral_id: str) -> bytes:
    """The second error shape: ``{"code", "description", "data", "source"}``."""
    return _dumps(
        {
            "code": "ReferralNotFound",
            "description": f"Referral {referral_id} was not found.",
            "data": [],
            "source": "PartnerEngagements",
        }
    )


class _AnswerNowError(Exception):
    """Raised inside a handler to answer at once with ``status`` and ``body``."""

    def __init__(self, status: int, body: bytes, headers: Headers | None = None) -> None:
        super().__init__(status)
        self.status, self.body, self.headers = status, body, headers or [_JSON]


_random_bits = random.Random().getrandbits  # request ids need no cryptographic randomness


class SandboxApp:
    """ASGI callable serving one :class:`~etl.sandbox.state.SandboxState`."""

    def __init__(self, sandbox: SandboxState) -> None:
        self.sandbox = sandbox
        self._bucket = TokenBucket()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            return
        sb = self.sandbox
        path: str = scope["path"]
        query: str = scope.get("query_string", b"").decode("latin-1")
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        method: str = scope["method"]
        sb.requests.append((method, path, query, headers))
        if path.startswith("/v1.0/"):
            kind = "list" if path.rstrip("/") == _LIST_PATH else "get"
            if sb.faults.latency_seconds > 0:
                await asyncio.sleep(sb.faults.latency_seconds)
            try:
                status, out, body = self._api(method, path, query, headers, scope)
            except _AnswerNowError as answer:
                status, out, body = answer.status, answer.headers, answer.body
        else:
            kind = "control"
            try:
                status, out, body = await self._control(method, path, query, receive)
            except _AnswerNowError as answer:
                status, out, body = answer.status, answer.headers, answer.body
        sb.stats.count(kind, status)
        out.append((b"request-id", str(uuid.UUID(int=_random_bits(128), version=4)).encode()))
        correlation = headers.get("ms-correlationid")
        if correlation is not None:
            out.append((b"ms-correlationid", correlation.encode("latin-1")))
        if status != 304:
            out.append((b"content-length", str(len(body)).encode()))
        await send({"type": "http.response.start", "status": status, "headers": out})
        await send({"type": "http.response.body", "body": body})

    # -- the API -------------------------------------------------------------------------------

    def _gate(self, headers: dict[str, str]) -> None:
        """Faults that apply to every API request, then auth, then throttling."""
        faults = self.sandbox.faults
        if faults.down:
            raise _AnswerNowError(503, _error("ServiceUnavailable", "The service is unavailable."))
        if faults.fail_next > 0:
            faults.fail_next -= 1
            raise _AnswerNowError(
                503,
                _error("ServiceUnavailable", "The service is temporarily unavailable."),
                [_JSON, (b"retry-after", b"1")],
            )
        if faults.error_rate_503 > 0 and self.sandbox.fault_rng.random() < faults.error_rate_503:
            raise _AnswerNowError(
                503,
                _error("ServiceUnavailable", "The service is temporarily unavailable."),
                [_JSON, (b"retry-after", b"1")],
            )
        scheme, _, token = headers.get("authorization", "").partition(" ")
        token = token.strip()
        tokens = faults.accepted_tokens
        if scheme.lower() != "bearer" or not token or (tokens is not None and token not in tokens):
            raise _AnswerNowError(
                401,
                _error("InvalidAuthenticationToken", "Access token is missing or invalid."),
                [_JSON, (b"www-authenticate", b'Bearer realm="api.partner.microsoft.com"')],
            )
        if faults.forbidden:
            raise _AnswerNowError(
                403,
                _error("Forbidden", "The user does not hold a Referrals Admin or User role."),
            )
        if faults.throttle_rps > 0:
            wait = self._bucket.take(faults.throttle_rps)
            if wait:
                message = f"Rate limit is exceeded. Try again in {wait} seconds."
                raise _AnswerNowError(
                    429,
                    _dumps({"statusCode": 429, "message": message}),
                    [_JSON, (b"retry-after", str(wait).encode())],
                )

    def _api(
        self, method: str, path: str, query: str, headers: dict[str, str], scope: Scope
    ) -> tuple[int, Headers, bytes]:
        self._gate(headers)
        if method != "GET":
            raise _AnswerNowError(
                405, _error("MethodNotAllowed", f"{method} is not supported here.")
            )
        if path.startswith(_ITEM_PREFIX) and "/" not in path[len(_ITEM_PREFIX) :].rstrip("/"):
            return self._get(path[len(_ITEM_PREFIX) :].rstrip("/").lower(), headers)
        if path.rstrip("/") == _LIST_PATH:
            return self._list(query, headers, scope)
        raise _AnswerNowError(404, _error("NotFound", f"No resource at {path}."))

    def _get(self, referral_id: str, headers: dict[str, str]) -> tuple[int, Headers, bytes]:
        sb, faults = self.sandbox, self.sandbox.faults
        with sb.lock:  # the eTag and the body of one and the same version
            rec = sb.record(referral_id)
            if rec is None:
                return 404, [_JSON], _not_found(referral_id)
            etag = rec.etag
            faulty = faults.has_id_fault(referral_id)
            fresh = not faulty and faults.send_304 and headers.get("if-none-match") == etag
            body = b"" if fresh else sb.body(rec)
        out: Headers = [_JSON]
        if faults.send_etag_header:
            out.append((b"etag", etag.encode()))
        if referral_id in faults.echo_auth_ids:  # a careless server that echoes credentials
            echoed = f"bad request: Authorization: {headers.get('authorization', '')}"
            return 400, [_JSON], _error("BadRequest", echoed)
        if faulty:
            return self._faulty(referral_id, body, out)
        if fresh:
            return 304, out[1:], b""
        return 200, out, body

    def _faulty(self, referral_id: str, body: bytes, out: Headers) -> tuple[int, Headers, bytes]:
        faults = self.sandbox.faults
        if referral_id in faults.wrong_content_type_ids:
            html = b"<html><head><title>Service</title></head><body><h1>Sign in</h1></body></html>"
            return 200, [_HTML, *out[1:]], html
        if referral_id in faults.invalid_json_ids:
            return 200, out, body[:-1] + b',"broken": }'
        if referral_id in faults.truncated_ids:
            return 200, out, body[: len(body) // 2]
        if referral_id in faults.non_object_ids:
            if int(referral_id[0], 16) % 2:
                return 200, out, b"[" + body + b"]"
            return 200, out, _dumps(f"Referral {referral_id}")
        doc = json.loads(body)
        if referral_id in faults.oversized_ids:
            details = doc.get("details")
            if not isinstance(details, dict):
                details = doc["details"] = {}
            details["notes"] = ("Mycket långa anteckningar, åäö. " * 160_000)[:5_000_000]
        if referral_id in faults.mismatched_id_ids:
            ids = self.sandbox.ids
            other = ids[(ids.index(referral_id) + 1) % len(ids)]
            doc["id"] = other if other != referral_id else "00000000-0000-0000-0000-000000000000"
        return 200, out, _dumps(doc)

    def _list(
        self, query: str, headers: dict[str, str], scope: Scope
    ) -> tuple[int, Headers, bytes]:
        params = dict(parse_qsl(query, keep_blank_values=True))
        try:
            top = odata.parse_top(params.get("$top"))
            order = odata.parse_orderby(params.get("$orderby"))
            text = params.get("$filter")
            predicate = odata.parse_filter(text, times=self.sandbox.faults.time_filter)
            after = None
            token = params.get("$skiptoken")
            if token:
                order, key, last_id = odata.decode_skiptoken(token)
                after = (key, last_id)
        except odata.ODataError as exc:
            raise _AnswerNowError(400, _error("BadRequest", str(exc), "query")) from exc
        page, last = self.sandbox.list_page(predicate, order, top, after)
        faults = self.sandbox.faults
        if not faults.list_etag or faults.partial_listed_ids:
            page = [_as_listed(body, faults.list_etag, faults.partial_listed_ids) for body in page]
        parts = [_LIST_CONTEXT, str(len(page)).encode(), b',"value":[', b",".join(page), b"]"]
        if last is not None:
            host = headers.get("host") or "{}:{}".format(*scope.get("server") or ("localhost", 80))
            link = f"http://{host}/v1.0/referrals?$top={top}&$orderby={quote(order.text)}"
            if text:
                link += f"&$filter={quote(text, safe='')}"
            link += f"&$skiptoken={odata.encode_skiptoken(order, *last)}"
            parts += [b',"@odata.nextLink":', _dumps(link)]
        parts.append(b"}")
        return 200, [_JSON], b"".join(parts)

    # -- control -------------------------------------------------------------------------------

    async def _control(
        self, method: str, path: str, query: str, receive: Receive
    ) -> tuple[int, Headers, bytes]:
        sb = self.sandbox
        route = (method, path.rstrip("/"))
        if route == ("GET", "/_sandbox"):
            listing = [{"method": m, "path": p, "what": w} for m, p, w in CONTROL_ENDPOINTS]
            return (
                200,
                [_JSON],
                _dumps({"endpoints": listing, "api": "/v1.0/engagements/referrals"}),
            )
        if route == ("GET", "/_sandbox/ids"):
            return 200, [_TEXT], "".join(i + "\n" for i in sb.ids).encode()
        if route == ("GET", "/_sandbox/events"):
            since = dict(parse_qsl(query)).get("since", "0")
            if not since.isdigit():
                raise _AnswerNowError(400, _error("BadRequest", "since must be an integer"))
            return 200, [_JSON], _dumps(sb.events(int(since)))
        if route == ("GET", "/_sandbox/stats"):
            return 200, [_JSON], _dumps(sb.stats.to_dict())
        if route == ("POST", "/_sandbox/stats/reset"):
            sb.reset_stats()
            return 200, [_JSON], _dumps(sb.stats.to_dict())
        if route == ("GET", "/_sandbox/faults"):
            return 200, [_JSON], _dumps(sb.faults.to_dict())
        handlers = ("/_sandbox/change", "/_sandbox/delete", "/_sandbox/restore", "/_sandbox/add")
        if route[0] not in ("POST", "PATCH") or route[1] not in (*handlers, "/_sandbox/faults"):
            raise _AnswerNowError(404, _error("NotFound", f"No control endpoint {method} {path}."))
        args = await _read_json(receive)
        try:
            return 200, [_JSON], _dumps(self._mutate(route[1], args))
        except KeyError as exc:
            raise _AnswerNowError(404, _error("NotFound", f"unknown id or field: {exc}")) from exc
        except (TypeError, ValueError) as exc:
            raise _AnswerNowError(400, _error("BadRequest", str(exc))) from exc

    def _mutate(self, path: str, args: dict[str, Any]) -> Any:
        sb = self.sandbox
        if path == "/_sandbox/change":
            return sb.change(float(args.get("fraction", 0.1)), args.get("ids"), args.get("seed"))
        if path == "/_sandbox/add":
            return sb.add(int(args.get("count", 1)))
        if path == "/_sandbox/faults":
            sb.faults.update(args)
            return sb.faults.to_dict()
        ids = list(args.get("ids") or ())
        if path == "/_sandbox/delete":
            sb.delete(ids)
        else:
            sb.restore(ids)
        return ids


def _as_listed(body: bytes, etag: bool, partial: set[str]) -> bytes:
    """A listed document: without eTag and @odata.context as Microsoft's list sample shows it
    (``etag`` False); without its status when its id is in ``partial``."""
    doc = json.loads(body)
    if not etag:
        doc.pop("eTag", None)
        doc.pop("@odata.context", None)
    if doc.get("id") in partial:
        doc.pop("status", None)
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":")).encode()


async def _read_json(receive: Receive) -> dict[str, Any]:
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    raw = b"".join(chunks)
    try:
        value = json.loads(raw) if raw.strip() else {}
    except ValueError as exc:
        raise _AnswerNowError(400, _error("BadRequest", f"body is not JSON: {exc}")) from exc
    if not isinstance(value, dict):
        raise _AnswerNowError(400, _error("BadRequest", "body must be a JSON object"))
    return value


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return
