"""partner-referrals-etl: Partner Center referrals into your own SQL database.

The public names, by stage (see README "How it works"):

- configuration: ``etl.config.load_settings``, ``etl.config.Settings``
- schema: ``etl.models`` (tables), ``etl.db.upgrade`` / ``etl.db.require_head``
- ids: ``etl.ids.read_ids``, ``etl.ids.canonical_id``, ``etl.ids.in_shard``
- fetch: ``etl.client.ReferralsClient``, ``etl.auth.build_auth``; its answer for one id is
  ``etl.results.FetchResult`` (with ``etl.results.Outcome``), handed as it is to the store
- flatten: ``etl.flatten.decode_document`` (an answer's bytes to a storable document),
  ``etl.flatten.flatten_referral``
- masking: ``etl.redact.mask`` (tokens, ``Authorization`` values, bearer/JWT shapes)
- store: ``etl.store.write_batch``
- runs: ``etl.sync.run_backfill``, ``etl.sync.run_sync``, ``etl.report.SyncReport``,
  ``etl.scheduler.run_schedule``
- errors: ``etl.errors`` (each with its exit code)
- the simulated API: ``etl.sandbox.Sandbox``

Modules are imported where they are used, so ``import etl`` stays cheap for the CLI.
"""

__version__ = "0.1.0"

__all__ = [
    "auth",
    "client",
    "config",
    "db",
    "errors",
    "flatten",
    "ids",
    "models",
    "redact",
    "results",
    "sandbox",
    "scheduler",
    "store",
    "sync",
]
