"""A simulated Partner Center Referrals API, written only from the API's
documentation (``docs/referral-api.md``).

``Sandbox`` holds deterministic, varied referrals and serves them as a plain ASGI app
(``sandbox.app``) with OData listing, ETags, webhook events and fault switches (``Faults``);
``serve`` and ``ServerThread`` put it on TCP. It shares no code with the client or flattener.
"""

from etl.sandbox.box import Sandbox
from etl.sandbox.faults import Faults, Stats
from etl.sandbox.server import ServerThread, serve

__all__ = ["Faults", "Sandbox", "ServerThread", "Stats", "serve"]
