"""An in-process httpx transport straight into the sandbox's ASGI app.

``httpx.ASGITransport`` works too, but costs more per request than the sandbox itself (it
looks for trio on every call); this one builds the ASGI scope and collects the answer directly,
so benchmarks of the in-process path measure the client, not the adapter.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from typing import Any

import httpx

from etl.sandbox.app import SandboxApp


class SandboxTransport(httpx.AsyncBaseTransport):
    """``httpx.AsyncClient(transport=SandboxTransport(box.app))``: no sockets."""

    def __init__(self, app: SandboxApp) -> None:
        self._app = app

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        body = await request.aread()
        url = request.url
        scope: dict[str, Any] = {
            "type": "http",
            "asgi": {"version": "3.0", "spec_version": "2.3"},
            "http_version": "1.1",
            "method": request.method,
            "scheme": url.scheme,
            "path": url.path,
            "raw_path": url.raw_path.split(b"?", 1)[0],
            "query_string": url.query,
            "root_path": "",
            "headers": [(k.lower(), v) for k, v in request.headers.raw],
            "server": (url.host, url.port or (443 if url.scheme == "https" else 80)),
            "client": ("127.0.0.1", 0),
        }
        status = 500
        headers: list[tuple[bytes, bytes]] = []
        chunks: list[bytes] = []
        sent = False

        async def receive() -> dict[str, Any]:
            nonlocal sent
            if sent:
                return {"type": "http.disconnect"}
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: MutableMapping[str, Any]) -> None:
            nonlocal status, headers
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", []))
            elif message["type"] == "http.response.body":
                chunks.append(message.get("body", b""))

        await self._app(scope, receive, send)
        return httpx.Response(status, headers=headers, content=b"".join(chunks), request=request)
