"""``Sandbox``: the simulated API's state served by its ASGI app, in process or on TCP.

The sandbox's modules import one way: this module puts together the state
(:mod:`etl.sandbox.state`: referrals, events, faults; no HTTP), the ASGI app over it
(:mod:`etl.sandbox.app`) and the in-process httpx transport into the app
(:mod:`etl.sandbox.transport`); the app reads the state, the transport calls the app, and
neither knows this module.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from etl.sandbox.app import SandboxApp
from etl.sandbox.state import SandboxState


class Sandbox(SandboxState):
    """A simulated Partner Center Referrals API with ``count`` referrals, deterministic in ``seed``.

    ``clock`` (ticks of 100 ns since the epoch) stamps changes, additions and events; it
    defaults to the wall clock, so changed referrals look recent to a client. ``app`` is the
    ASGI app serving it.
    """

    def __init__(
        self,
        count: int = 500,
        seed: int = 1,
        *,
        clock: Callable[[], int] | None = None,
        request_log_size: int = 100_000,
    ) -> None:
        super().__init__(count, seed, clock=clock, request_log_size=request_log_size)
        self.app = SandboxApp(self)

    def transport(self) -> Any:
        """An httpx transport into this sandbox, in process (no sockets)."""
        from etl.sandbox.transport import SandboxTransport  # httpx only when asked for

        return SandboxTransport(self.app)
