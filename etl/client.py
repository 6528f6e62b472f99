"""The Referrals API client: get one referral by id, page through the list, politely.

One :class:`ReferralsClient` serves a whole run. All its requests share one
:class:`~etl.throttle.Throttle` (:mod:`etl.throttle`): an optional fixed cap, a global pause when
the API answers 429, and an additive-increase / multiplicative-decrease limit on the concurrency
and the request rate, so a throttled run settles just under the server's limit.

5xx answers, timeouts and connection errors are retried with exponential backoff and jitter up to
``api.max_attempts``; then that id fails for this run. When every request keeps failing
(``api.breaker_failures`` in a row), the circuit breaker raises :class:`ApiUnavailableError`.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import re
import uuid
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import httpx

from etl.backoff import full_jitter
from etl.config import ApiSettings
from etl.errors import ApiUnavailableError, AuthError, BadDocumentError
from etl.flatten import decode_document
from etl.ids import canonical_id
from etl.redact import mask
from etl.results import FetchResult, Outcome
from etl.stopping import StopRequest, StopRequested
from etl.throttle import ClientStats, Throttle
from etl.transport import Sender, connections

__all__ = ["FetchResult", "Outcome", "ReferralsClient"]

log = logging.getLogger(__name__)

_RETRYABLE = frozenset({500, 502, 503, 504})
_MAX_THROTTLED = 30  # 429 answers one request may get before its id fails
_HEADER_VALUE = re.compile(r"[\x21-\x7e][\x20-\x7e]{0,1023}")  # visible ASCII, no CR/LF
_LISTING_DEPTH = 500  # a page may hold deep entries: discovery never recurses into them
ROLES_HINT = (
    "the signed-in user needs the Referrals Admin or Referrals User role in Partner Center "
    "(Account settings > User management)"
)


def _retry_after(response: httpx.Response, cap: float) -> float | None:
    """The seconds a ``Retry-After`` header asks for, at most ``cap`` (None: not a number)."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None
    return max(0.0, min(seconds, cap)) if math.isfinite(seconds) else cap


def _request_id(response: httpx.Response) -> str | None:
    headers = response.headers
    found: str | None = (
        headers.get("request-id") or headers.get("ms-requestid") or headers.get("x-ms-request-id")
    )
    return found


def error_message(response: httpx.Response, body: bytes) -> str:
    """A short description of an error answer, from any of the API's error body shapes."""
    detail = ""
    try:
        parsed = decode_document(body)[0] if body else None
    except BadDocumentError:
        parsed = None
    if isinstance(parsed, dict):
        inner = parsed.get("error")
        if isinstance(inner, dict):
            detail = f"{inner.get('code', '')}: {inner.get('message', '')}"
        elif "description" in parsed or "code" in parsed:
            detail = f"{parsed.get('code', '')}: {parsed.get('description', '')}"
        elif "message" in parsed:
            detail = str(parsed["message"])
    text = f"HTTP {response.status_code}"
    detail = " ".join(mask(detail).split()).strip(": ")  # one line, no secret the server echoed
    if detail:
        text += f" ({detail[:200]})"
    request_id = _request_id(response)
    return text + (f" request-id {mask(request_id)[:100]}" if request_id else "")


class ListQueryRefusedError(ApiUnavailableError):
    """The list endpoint answered 400 to the query (e.g. a ``$filter`` it does not accept)."""


class _RetryableError(Exception):
    def __init__(self, reason: str, wait: float | None = None) -> None:
        super().__init__(reason)
        self.wait = wait


class ReferralsClient:
    """Async client of the Referrals API; use as ``async with ReferralsClient(...) as client``."""

    def __init__(
        self,
        settings: ApiSettings,
        auth: httpx.Auth | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
        throttle: Throttle | None = None,
        stop: StopRequest | None = None,
    ) -> None:
        self.settings = settings
        self.base_url = settings.base_url.rstrip("/")
        self.stats = ClientStats()
        # Every pause (backoff, Retry-After, pacing) ends early on a stop request, raising
        # StopRequested out of the request that was waiting.
        self._stop = stop
        self.throttle = throttle or Throttle(
            settings.concurrency, settings.max_requests_per_second, sleep=self._sleep
        )
        self._consecutive_failures = 0
        # httpx's Auth and transports, without httpx's client (etl/transport.py says why).
        self._sender = Sender(
            transport or connections(self.base_url, settings.concurrency),
            auth,
            settings.timeout_seconds,
        )

    async def __aenter__(self) -> ReferralsClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._sender.aclose()

    async def fetch_referral(
        self, referral_id: str, etag: str | None = None, *, source: str = "manual"
    ) -> FetchResult:
        """GET one referral, with ``If-None-Match`` when an eTag is stored.

        Whatever the server answers ends as a result for this id; only a stop, the API being
        unusable (:class:`ApiUnavailableError`) or refusing us (:class:`AuthError`) raise.
        """
        referral_id = canonical_id(referral_id)
        # A stored eTag came from a document; one that cannot be a header value is not sent.
        usable = etag is not None and _HEADER_VALUE.fullmatch(etag) is not None
        headers = {"If-None-Match": etag} if usable and etag else {}
        url = f"{self.base_url}/engagements/referrals/{referral_id}"
        try:
            response, body = await self._send(url, headers)
        except (_RetryableError, BadDocumentError) as exc:
            return FetchResult(referral_id, Outcome.FAILED, source, error=mask(str(exc)))
        except (AuthError, ApiUnavailableError, StopRequested):
            raise
        except Exception as exc:  # noqa: BLE001 - anything else an answer causes fails only this id
            log.warning("referral %s: unexpected %s", referral_id, exc.__class__.__name__)
            reason = " ".join(mask(str(exc)).split())[:200]
            error = f"the request failed ({exc.__class__.__name__}: {reason})"
            return FetchResult(referral_id, Outcome.FAILED, source, error=error)
        status = response.status_code
        result = FetchResult(
            referral_id,
            Outcome.FAILED,
            source,
            etag=response.headers.get("etag"),
            http_status=status,
        )
        if status == 200:
            try:
                result.document, result.raw = self._document(referral_id, response, body)
                result.outcome = Outcome.FETCHED
            except BadDocumentError as exc:
                result.document = None
                result.error = str(exc)
        elif status == 304:
            result.outcome = Outcome.NOT_MODIFIED
        elif status in {404, 410}:
            result.outcome = Outcome.NOT_FOUND
        else:
            result.error = error_message(response, body)
        if result.error is not None:  # whatever the server said, masked before anything keeps it
            result.error = mask(result.error)
        return result

    async def list_referrals(
        self, orderby: str = "updatedDateTime desc", odata_filter: str = ""
    ) -> AsyncIterator[list[dict[str, Any]]]:
        """Pages of the list endpoint; a next link is followed on our own base URL.

        Raises :class:`ApiUnavailableError` when the listing cannot be had, and
        :class:`BadDocumentError` for a page whose content is not a listing."""
        params: list[tuple[str, str]] = [("$top", "100"), ("$orderby", orderby)]
        if odata_filter:
            params.append(("$filter", odata_filter))
        url = f"{self.base_url}/engagements/referrals"
        while True:
            try:
                response, body = await self._send(url, {}, params, listing=True)
            except _RetryableError as exc:
                raise ApiUnavailableError(f"listing referrals failed: {exc}") from None
            if response.status_code == 400:
                raise ListQueryRefusedError(
                    f"listing referrals: the query was refused: {error_message(response, body)}"
                )
            if response.status_code != 200:
                raise ApiUnavailableError(f"listing referrals: {error_message(response, body)}")
            try:
                # Deep entries are the fetch's to refuse; discovery reads three fields of each.
                page, _text = decode_document(body, _LISTING_DEPTH)
            except BadDocumentError as exc:
                raise BadDocumentError(f"listing referrals: {exc}") from None
            values = page.get("value") if isinstance(page, dict) else None
            if not isinstance(values, list):
                raise BadDocumentError("listing referrals: the answer has no value array")
            yield [v for v in values if isinstance(v, dict)]
            next_link = page.get("@odata.nextLink")
            if not isinstance(next_link, str) or not next_link:
                return
            params = parse_qsl(urlsplit(next_link).query, keep_blank_values=True)

    def _document(
        self, referral_id: str, response: httpx.Response, body: bytes
    ) -> tuple[dict[str, Any], str | None]:
        """The document and the text to store as its payload (None: store it re-serialised)."""
        content_type = response.headers.get("content-type", "")
        where = f"referral {referral_id}"
        if content_type and "json" not in content_type.lower():
            raise BadDocumentError(
                f"{where}: the API answered {content_type.split(';')[0][:80]!r}, not JSON"
            )
        try:
            document, text = decode_document(body)
        except BadDocumentError as exc:
            raise BadDocumentError(f"{where}: {exc}; request-id {_request_id(response)}") from None
        if not isinstance(document, dict):
            raise BadDocumentError(
                f"{where}: the body is a JSON {type(document).__name__}, not an object"
            )
        got = document.get("id")
        if not isinstance(got, str) or got.lower() != referral_id.lower():
            raise BadDocumentError(
                f"{where}: the API returned a document for id {str(got)[:80]!r} instead"
            )
        document["id"] = referral_id
        return document, text

    async def _send(
        self,
        url: str,
        headers: dict[str, str],
        params: list[tuple[str, Any]] | None = None,
        listing: bool = False,
    ) -> tuple[httpx.Response, bytes]:
        """One logical request with retries; raises ``_RetryableError`` when attempts run out."""
        correlation = _guid()
        attempt = 0
        throttled = 0
        while True:
            attempt += 1
            request_headers = {
                **headers,
                "MS-CorrelationId": correlation,
                "client-request-id": correlation,
                "MS-RequestId": _guid(),
            }
            await self.throttle.acquire()
            try:
                response, body = await self._attempt(url, request_headers, params, listing)
            except _RetryableError as exc:
                self._failed_attempt()
                if attempt >= self.settings.max_attempts:
                    raise _RetryableError(f"{exc} (gave up after {attempt} attempts)") from None
                self.stats.retries += 1
                await self._sleep(full_jitter(attempt) if exc.wait is None else exc.wait)
                continue
            finally:
                await self.throttle.release()
            status = response.status_code
            if status == 429:
                throttled += 1
                pause = self.throttle.throttled(
                    _retry_after(response, self.settings.max_retry_after_seconds), throttled
                )
                log.debug("throttled (429), every worker pauses %.1fs", pause)
                if throttled > _MAX_THROTTLED:
                    raise _RetryableError(f"still throttled (429) after {throttled} answers")
                await self._sleep(pause)
                attempt -= 1  # a 429 is the server pacing us, not a failed attempt
                continue
            if status in _RETRYABLE:
                self._failed_attempt()
                if attempt >= self.settings.max_attempts:
                    message = error_message(response, body)
                    raise _RetryableError(f"{message} (gave up after {attempt} attempts)")
                self.stats.retries += 1
                wait = _retry_after(response, self.settings.max_retry_after_seconds)
                await self._sleep(full_jitter(attempt) if wait is None else wait)
                continue
            if status == 403:
                raise AuthError(f"the API refused access (403): {ROLES_HINT}")
            self._consecutive_failures = 0
            self.throttle.succeeded()
            return response, body

    async def _attempt(
        self,
        url: str,
        headers: dict[str, str],
        params: list[tuple[str, Any]] | None,
        listing: bool = False,
    ) -> tuple[httpx.Response, bytes]:
        cap = self.settings.max_body_bytes
        try:
            # One deadline for the whole answer: connecting, the headers and every byte of the
            # body (the transport has none of its own; a per-read timeout would restart on each
            # byte, and a server trickling one byte a second would hold the request for ever).
            async with asyncio.timeout(self.settings.timeout_seconds):
                response, body, oversized = await self._exchange(url, headers, params, cap)
        except TimeoutError:
            raise _RetryableError(f"timed out after {self.settings.timeout_seconds:g}s") from None
        except (httpx.TransportError, OSError) as exc:
            raise _RetryableError(_transport_failure(exc, self.settings.timeout_seconds)) from None
        self.stats.count(response.status_code, listing)
        if oversized:
            raise BadDocumentError(
                f"the answer is larger than api.max_body_bytes ({cap} bytes); refused"
            )
        return response, body

    async def _exchange(
        self, url: str, headers: dict[str, str], params: list[tuple[str, Any]] | None, cap: int
    ) -> tuple[httpx.Response, bytes, bool]:
        """Send one request and read its body (at most ``cap`` bytes of it)."""
        response = await self._sender.get(url, headers, params)
        try:
            length = response.headers.get("content-length")
            if length is not None and length.isdigit() and int(length) > cap:
                return response, b"", True
            chunks = []
            size = 0
            async for chunk in response.aiter_bytes():
                size += len(chunk)
                if size > cap:
                    return response, b"", True
                chunks.append(chunk)
        finally:
            await response.aclose()
        return response, b"".join(chunks), False

    async def _sleep(self, seconds: float) -> None:
        if self._stop is None:
            await asyncio.sleep(seconds)
        else:
            await self._stop.sleep(seconds)  # raises StopRequested when a stop comes first

    def _failed_attempt(self) -> None:
        self._consecutive_failures += 1
        limit = self.settings.breaker_failures
        if limit and self._consecutive_failures >= limit:
            raise ApiUnavailableError(
                f"the API at {self.base_url} failed {self._consecutive_failures} requests in a "
                "row; stopping this run (check the API's health and network, then rerun)"
            )


_random_bits = random.Random().getrandbits


def _guid() -> str:
    """A random (version 4) GUID for correlation headers; no cryptographic randomness needed."""
    return str(uuid.UUID(int=_random_bits(128), version=4))


def _transport_failure(exc: BaseException, timeout: float) -> str:
    """What went wrong below HTTP, named after the original error (the aiohttp transport, used
    through a proxy, maps a dropped connection to an httpx timeout class)."""
    origin = exc.__cause__ or exc
    name = origin.__class__.__name__
    if "timeout" in name.lower():
        return f"timed out after {timeout:g}s"
    detail = " ".join(mask(str(origin)).split())
    return f"connection failed ({name}{': ' + detail[:200] if detail else ''})"
