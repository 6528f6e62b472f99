"""Real time: Partner Center's signed change notifications, received by `referrals-etl serve`.

- :mod:`etl.webhooks.events`: a callback body -> one event (name, referral id, change date).
- :mod:`etl.webhooks.verify`: headers, certificate allowlist, download, chain, organization,
  RSA-SHA256 signature, before anything else is looked at.
- :mod:`etl.webhooks.ledger`: ``webhook_events`` in the database: record an event (once) and
  make its id due, read the due ids, mark them processed.
- :mod:`etl.webhooks.fetch`: the ONE call into the run core.
- :mod:`etl.webhooks.worker`: drains due ids from the database and fetches them.
- :mod:`etl.webhooks.app`: the aiohttp application (callbacks, ``/healthz``, ``/metrics``).
- :mod:`etl.webhooks.serve`: the `serve` process: server, worker and the scheduled `sync`.
- :mod:`etl.webhooks.registration`: Partner Center's registration API (`webhook ...`).

Nothing here prints or exits; ``etl.cli`` does.
"""
