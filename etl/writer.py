"""The writer's database work (flatten and SQL) in a process of its own, on a second core.

A run's event loop fetches; :func:`etl.store.write_batch` (parsing the documents into rows and
writing them) costs about as much CPU again. In a thread of the same process the two take turns
on one interpreter lock, and the loop waits for the lock after each of its system calls; in a
child process both run at once. :class:`ProcessWriter` is one worker process
(``concurrent.futures.ProcessPoolExecutor``, started with ``spawn``): batches of fetch results
go in, :class:`~etl.store.BatchCounts` come out, and the child's own engine (made from the same
URL) writes them. SQLAlchemy's errors come back as they were raised, so the run's one database
policy (``etl.db_policy.Database``) judges them exactly as it judges the thread's; a child that dies
ends the run with :class:`~etl.errors.DatabaseError` (exit 5), never a hang.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import signal
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from typing import Any

from sqlalchemy.engine import Engine

from etl import store
from etl.config import SyncSettings
from etl.errors import DatabaseError
from etl.results import FetchResult

_CLOSE_WAIT = 10.0  # seconds a closing writer gets to finish its batch before it is killed

_engine: Engine | None = None  # the child's own engine (one per writer process)


def usable(engine: Engine) -> bool:
    """A second process can open this database: a server, or a SQLite file (not memory)."""
    url = engine.url
    if url.get_backend_name() != "sqlite":
        return True
    return bool(url.database) and url.database != ":memory:" and "mode=memory" not in str(url)


def _start(url: str) -> None:
    """In the child: signals are the parent's to handle (it stops the run and then closes us,
    after our batch is committed); make the engine."""
    global _engine  # noqa: PLW0603 - the child process's one engine, made once at its start
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    from etl import db

    _engine = db.create_engine_for(url)


def _write(
    results: list[FetchResult],
    settings: SyncSettings,
    run_id: int | None,
    run_totals: dict[str, int] | None,
    dry_run: bool,
) -> store.BatchCounts:
    """In the child: one batch, one transaction (SQLAlchemy's errors raised as they are)."""
    assert _engine is not None, "the writer process was not started"
    return store.write_batch(
        _engine, results, settings, run_id=run_id, run_totals=run_totals, dry_run=dry_run
    )


class ProcessWriter:
    """One child process that writes batches; ``await write(...)``, then ``close()``."""

    def __init__(self, engine: Engine) -> None:
        url = engine.url.render_as_string(hide_password=False)
        self._pool = ProcessPoolExecutor(
            max_workers=1,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start,
            initargs=(url,),
        )
        # Start the child now: its interpreter and imports load on the other core while the
        # run's first requests are sent.
        self._pool.submit(int).add_done_callback(lambda _f: None)

    async def write(
        self,
        results: Sequence[FetchResult],
        settings: SyncSettings,
        *,
        run_id: int | None = None,
        run_totals: dict[str, int] | None = None,
        dry_run: bool = False,
    ) -> store.BatchCounts:
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(
                self._pool, _write, list(results), settings, run_id, run_totals, dry_run
            )
        except BrokenProcessPool as exc:
            raise DatabaseError(
                "the writer process died; every committed batch is whole: rerun to finish"
            ) from exc

    def close(self) -> None:
        """Let the child finish what it is writing (at most ``_CLOSE_WAIT`` seconds), then end
        it; never waits longer."""
        processes: dict[Any, Any] = dict(getattr(self._pool, "_processes", None) or {})
        self._pool.shutdown(wait=False, cancel_futures=True)
        for process in processes.values():
            process.join(_CLOSE_WAIT)
            if process.is_alive():
                process.kill()
                process.join(1.0)
