"""The analyst views: their SQL for each database and a description of every column.

The SQL and the column descriptions live side by side so that they stay in sync: migration
``0002`` created :data:`REFERRAL_OVERVIEW` and :data:`REFERRAL_STATUS_CHANGES`, migration
``0006`` replaced them by :data:`REFERRAL_OVERVIEW_V2` and :data:`REFERRAL_STATUS_CHANGES_V2` and
added :data:`REFERRAL_MILESTONES` and :data:`REFERRAL_PIPELINE` (with ``COMMENT ON`` from the
descriptions where the database has view comments: PostgreSQL), and ``etl.dictionary`` documents
:data:`VIEWS` from the same objects. Migration 0006 holds the SQL rendered here as literal text
(it imports nothing from ``etl``); a test checks the two are the same. The tests also check that
each view's columns are exactly the described ones, in order, and that the answers agree on all
databases.

Views are part of the contract with analysts (docs/data-dictionary.md). Each migration carries
its own copy of the SQL it ran, as literal text, so a revision never changes when this package
does. One module per view (:mod:`etl.views.overview`, :mod:`etl.views.status_changes`,
:mod:`etl.views.milestones`, :mod:`etl.views.pipeline`) over the shared SQL fragments
(:mod:`etl.views.sql`). A definition is what a migration created: to change a view, add a new
:class:`View` in its module (e.g. ``REFERRAL_OVERVIEW_V3``) and a migration that drops the old
view and creates the new one with its SQL written out, keep the old object (the tests check each
migration's text against it), and point :data:`VIEWS` at the new one.

Portability notes, shared by both views:

* Date arithmetic differs on every database, so it happens here and the views expose plain
  numbers. A span is first computed as exact integer microseconds (``EXTRACT(EPOCH ...)`` on
  PostgreSQL, ``TIMESTAMPDIFF(MICROSECOND ...)`` on MariaDB, the ISO text split into whole
  seconds and microseconds on SQLite, where ``julianday`` would round to milliseconds), then
  shown as seconds with 6 decimals (exact) and as days truncated to 6 decimals, so all three
  databases give the same numbers. ``NUMERIC``/``DECIMAL`` on PostgreSQL and MariaDB, ``REAL`` on
  SQLite.
* "Now" is UTC on every database (``UTC_TIMESTAMP`` on MariaDB, whose ``CURRENT_TIMESTAMP`` is in
  the session's time zone while the stored ``DATETIME(6)`` values are UTC).
* Ordered lists use ``string_agg(... ORDER BY ...)`` on PostgreSQL, ``GROUP_CONCAT(... ORDER BY
  ... SEPARATOR ...)`` on MariaDB, and ``group_concat`` as a window function ordered by position
  on SQLite (whose plain aggregate has no ORDER BY before 3.44).
* Status comparisons are exact (byte for byte) on every database, although MariaDB's default
  collation would call ``won`` and ``Won`` equal.
"""

from __future__ import annotations

from typing import Final

from etl.views.milestones import OUTCOMES, REFERRAL_MILESTONES
from etl.views.overview import LIST_KINDS, REFERRAL_OVERVIEW, REFERRAL_OVERVIEW_V2
from etl.views.pipeline import REFERRAL_PIPELINE
from etl.views.sql import (
    DIALECTS,
    MARIADB,
    POSTGRESQL,
    SEPARATOR,
    SQLITE,
    TYPES,
    View,
    ViewColumn,
    normalise_dialect,
)
from etl.views.status_changes import (
    REFERRAL_STATUS_CHANGES,
    REFERRAL_STATUS_CHANGES_V2,
    TIME_SOURCES,
)

VIEWS_0002: Final = (REFERRAL_OVERVIEW, REFERRAL_STATUS_CHANGES)
"""The views as migration 0002 created them."""

VIEWS: Final = (
    REFERRAL_OVERVIEW_V2,
    REFERRAL_STATUS_CHANGES_V2,
    REFERRAL_MILESTONES,
    REFERRAL_PIPELINE,
)
"""The current analyst views (migration 0006), in creation order."""

__all__ = [
    "DIALECTS",
    "LIST_KINDS",
    "MARIADB",
    "OUTCOMES",
    "POSTGRESQL",
    "REFERRAL_MILESTONES",
    "REFERRAL_OVERVIEW",
    "REFERRAL_OVERVIEW_V2",
    "REFERRAL_PIPELINE",
    "REFERRAL_STATUS_CHANGES",
    "REFERRAL_STATUS_CHANGES_V2",
    "SEPARATOR",
    "SQLITE",
    "TIME_SOURCES",
    "TYPES",
    "VIEWS",
    "VIEWS_0002",
    "View",
    "ViewColumn",
    "normalise_dialect",
]
