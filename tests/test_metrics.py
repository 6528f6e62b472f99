"""Prometheus metrics of a run: textfile (node-exporter) and Pushgateway, from real runs."""

from __future__ import annotations

import logging
import os
import signal
import socket
import threading
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest
from conftest import TOKEN, backfill
from prometheus_client import write_to_textfile
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy.engine import Engine

from etl import cli
from etl.metrics import LAST_SUCCESS, build_registry, push_metrics, write_metrics
from etl.report import SyncReport
from etl.sandbox import Sandbox, ServerThread

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]
OUTCOMES = ("created", "updated", "unchanged", "not_found", "failed")


def samples_of(text: str) -> Samples:
    """Every sample of a Prometheus text exposition, keyed by (name, sorted labels)."""
    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return out


def by_label(samples: Samples, name: str, label: str) -> dict[str, float]:
    return {dict(labels)[label]: v for (n, labels), v in samples.items() if n == name}


def one(samples: Samples, name: str) -> float:
    return samples[(name, ())]


def test_metrics_file_after_a_backfill_holds_what_the_run_did(
    sqlite_engine: Engine, tmp_path: Path
) -> None:
    """The metrics file tells what the run did, and a second run over it tells its own story.

    Counts by outcome, requests by status code, ids, duration, last status and last success
    time; then the second run's 304s.
    """
    box = Sandbox(count=12, seed=11)
    broken = box.ids[0]
    box.faults.invalid_json_ids = {broken}
    missing = str(uuid.UUID(int=12345))
    path = tmp_path / "referrals_etl.prom"

    report = backfill(sqlite_engine, box, [*box.ids, missing])
    write_metrics(report, path, now=1_767_225_600.5)

    first = samples_of(path.read_text("utf-8"))
    assert by_label(first, "referrals_etl_run_referrals", "outcome") == {
        "created": 11,
        "updated": 0,
        "unchanged": 0,
        "not_found": 1,
        "failed": 1,
    }
    requests = by_label(first, "referrals_etl_run_requests", "status_code")
    assert requests == {str(k): v for k, v in box.stats.by_status.items()}
    assert requests["404"] == 1
    assert sum(requests.values()) == report.requests
    assert one(first, "referrals_etl_run_throttled_requests") == 0
    assert one(first, "referrals_etl_run_ids") == 13
    # The run times itself (etl/sync.py's own clock): the file carries exactly what it measured.
    assert one(first, "referrals_etl_run_duration_seconds") == pytest.approx(report.seconds)
    statuses = by_label(first, "referrals_etl_last_run_status", "status")
    assert {s for s, v in statuses.items() if v == 1} == {"partial"}
    assert set(statuses) == {"succeeded", "partial", "failed", "interrupted", "skipped"}
    assert one(first, "referrals_etl_last_success_timestamp_seconds") == 1_767_225_600.5
    assert one(first, "referrals_etl_last_run_timestamp_seconds") == 1_767_225_600.5

    box.faults.invalid_json_ids = set()
    box.stats.reset()
    again = backfill(sqlite_engine, box, box.ids[1:])
    write_metrics(again, path, now=1_767_229_200.0)
    second = samples_of(path.read_text("utf-8"))
    assert by_label(second, "referrals_etl_run_referrals", "outcome") == dict.fromkeys(
        OUTCOMES, 0
    ) | {"unchanged": 11}
    assert by_label(second, "referrals_etl_run_requests", "status_code") == {"304": 11}
    assert by_label(second, "referrals_etl_last_run_status", "status")["succeeded"] == 1
    assert one(second, "referrals_etl_last_success_timestamp_seconds") == 1_767_229_200.0


def _report(status: str, **fields: Any) -> SyncReport:
    report = SyncReport(status=status, **fields)
    report.counts.created = 2
    return report


def test_a_failed_run_without_an_earlier_success_has_no_last_success_sample(
    tmp_path: Path,
) -> None:
    """A failed run written to a new file leaves the last-success time out altogether."""
    path = tmp_path / "m.prom"
    write_metrics(_report("failed"), path)
    assert not any(
        name == "referrals_etl_last_success_timestamp_seconds"
        for name, _ in samples_of(path.read_text("utf-8"))
    )


def test_a_failed_run_keeps_the_previous_last_success_time(tmp_path: Path) -> None:
    """Over the file of a success (made on a fixed clock), an interrupted run keeps its time."""
    path = tmp_path / "m.prom"
    success = 1_700_000_000.0
    write_to_textfile(str(path), build_registry(_report("succeeded", seconds=1.5), now=success))
    write_metrics(_report("interrupted"), path)
    after = samples_of(path.read_text("utf-8"))
    assert one(after, "referrals_etl_last_success_timestamp_seconds") == success
    assert one(after, "referrals_etl_last_run_timestamp_seconds") > success
    assert by_label(after, "referrals_etl_last_run_status", "status")["interrupted"] == 1
    assert by_label(after, "referrals_etl_last_run_status", "status")["succeeded"] == 0
    assert [p.name for p in tmp_path.iterdir()] == ["m.prom"]  # no temporary file left


def test_an_unwritable_metrics_file_is_logged_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """A file in a directory that does not exist: one error naming it, and False returned."""
    path = tmp_path / "no-such-dir" / "m.prom"
    assert write_metrics(_report("succeeded"), path) is False
    [record] = [r for r in caplog.records if r.name == "etl.metrics"]
    assert record.levelno == logging.ERROR
    assert str(path) in record.getMessage()


class _Gateway(BaseHTTPRequestHandler):
    received: ClassVar[list[tuple[str, str, str]]] = []

    def _store(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0))).decode("utf-8")
        self.received.append((self.command, self.path, body))
        self.send_response(200)
        self.end_headers()

    do_POST = do_PUT = _store  # noqa: N815

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def gateway() -> Iterator[tuple[str, list[tuple[str, str, str]]]]:
    """A stand-in Pushgateway on a free port; yields its URL and the pushes it received."""
    received: list[tuple[str, str, str]] = []
    handler = type("Gateway", (_Gateway,), {"received": received})
    server = HTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}", received
    server.shutdown()
    server.server_close()


def test_push_sends_the_metrics_to_the_gateway_job(
    gateway: tuple[str, list[tuple[str, str, str]]],
) -> None:
    """POST (replace only the metrics pushed) to /metrics/job/referrals_etl, same content."""
    url, received = gateway
    report = _report("succeeded", by_status={200: 2, 429: 1}, throttled=1, requests=3)
    assert push_metrics(report, url) is True
    [(method, path, body)] = received
    assert (method, path) == ("POST", "/metrics/job/referrals_etl")
    pushed = samples_of(body)
    assert by_label(pushed, "referrals_etl_run_requests", "status_code") == {"200": 2, "429": 1}
    assert one(pushed, "referrals_etl_run_throttled_requests") == 1
    assert by_label(pushed, "referrals_etl_run_referrals", "outcome")["created"] == 2


def test_push_of_a_failed_run_leaves_last_success_to_the_gateway(
    gateway: tuple[str, list[tuple[str, str, str]]],
) -> None:
    """A failed run's push carries its status but no last-success time."""
    url, received = gateway
    assert push_metrics(_report("failed"), url) is True
    names = {name for name, _ in samples_of(received[0][2])}
    assert "referrals_etl_last_run_status" in names
    assert "referrals_etl_last_success_timestamp_seconds" not in names


def test_a_failed_push_is_a_warning(caplog: pytest.LogCaptureFixture) -> None:
    """Nothing listens there: push_metrics returns False and logs one warning, raising nothing."""
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        assert push_metrics(_report("succeeded"), f"http://127.0.0.1:{port}") is False
    [refused] = [r for r in caplog.records if r.name == "etl.metrics"]
    assert refused.levelno == logging.WARNING
    assert refused.getMessage().startswith(f"could not push metrics to http://127.0.0.1:{port} (")
    assert "refused" in refused.getMessage().lower()


def test_a_failed_push_never_shows_the_password_of_its_url(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A Pushgateway URL with credentials that cannot be reached is logged without its password."""
    with socket.socket() as bound:  # bound, never listening: connections are refused
        bound.bind(("127.0.0.1", 0))
        port = bound.getsockname()[1]
        with_password = f"http://metrics:hunter2-pw@127.0.0.1:{port}"
        assert push_metrics(_report("succeeded"), with_password) is False
    [redacted] = [r for r in caplog.records if r.name == "etl.metrics"]
    assert redacted.levelno == logging.WARNING
    assert f"http://metrics:***@127.0.0.1:{port}" in redacted.getMessage()
    assert "hunter2-pw" not in caplog.text


@pytest.fixture
def restore_signals() -> Iterator[None]:
    """`cli` installs SIGTERM/SIGINT handlers for the run; give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    yield
    for signum, handler in saved.items():
        signal.signal(signum, handler)


def _cli_backfill(
    monkeypatch: pytest.MonkeyPatch, engine: Engine, server: ServerThread, *args: str
) -> int | str | None:
    """`referrals-etl backfill ...` in process (env vars as in production); its exit code."""
    for name in [k for k in os.environ if k.startswith("REFERRALS_ETL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("REFERRALS_ETL_API_BASE_URL", server.base_url)
    monkeypatch.setenv("REFERRALS_ETL_AUTH_MODE", "access_token")
    monkeypatch.setenv("REFERRALS_ETL_AUTH_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv(
        "REFERRALS_ETL_DATABASE_URL", engine.url.render_as_string(hide_password=False)
    )
    monkeypatch.setenv("REFERRALS_ETL_SYNC_DISCOVER", "false")
    with pytest.raises(SystemExit) as exited:
        cli.main(["backfill", *args])
    return exited.value.code


def test_backfill_command_writes_the_metrics_file(
    sqlite_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    restore_signals: None,
) -> None:
    """`backfill FILE --metrics-file PATH` over TCP writes the story the summary line tells.

    One id fails: exit 1, and the file holds the same counts as the summary line.
    """
    box = Sandbox(count=8, seed=12)
    box.faults.accepted_tokens = {TOKEN}
    box.faults.invalid_json_ids = {box.ids[3]}
    ids = tmp_path / "ids.txt"
    ids.write_text("# ids\n" + "\n".join(box.ids) + "\n", encoding="utf-8")
    metrics = tmp_path / "referrals_etl.prom"
    monkeypatch.chdir(tmp_path)
    with ServerThread(box) as server:
        code = _cli_backfill(
            monkeypatch, sqlite_engine, server, str(ids), "--metrics-file", str(metrics)
        )
    assert code == 1
    out = capsys.readouterr().out
    assert "8 ids: 7 created, 0 updated, 0 unchanged, 0 not found, 1 failed" in out
    written = samples_of(metrics.read_text("utf-8"))
    assert by_label(written, "referrals_etl_run_referrals", "outcome") == dict.fromkeys(
        OUTCOMES, 0
    ) | {"created": 7, "failed": 1}
    assert by_label(written, "referrals_etl_run_requests", "status_code") == {
        str(k): v for k, v in box.stats.by_status.items()
    }
    assert one(written, "referrals_etl_run_ids") == 8
    assert by_label(written, "referrals_etl_last_run_status", "status")["partial"] == 1
    # A partial run is a success: its last-success time is its own end.
    assert one(written, "referrals_etl_last_success_timestamp_seconds") == one(
        written, "referrals_etl_last_run_timestamp_seconds"
    )


def test_a_run_that_fails_still_writes_its_metrics(
    sqlite_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    restore_signals: None,
) -> None:
    """A run whose token is refused (exit 3) writes `failed` to the metrics file.

    The run that most needs an alert; the file keeps the last success time of the run before.
    """
    box = Sandbox(count=3, seed=13)
    box.faults.accepted_tokens = {TOKEN}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids) + "\n", encoding="utf-8")
    metrics = tmp_path / "referrals_etl.prom"
    monkeypatch.chdir(tmp_path)
    with ServerThread(box) as server:
        assert (
            _cli_backfill(
                monkeypatch, sqlite_engine, server, str(ids), "--metrics-file", str(metrics)
            )
            == 0
        )
        success = one(samples_of(metrics.read_text("utf-8")), LAST_SUCCESS)
        box.faults.accepted_tokens = {"a-token-nobody-has"}
        assert (
            _cli_backfill(
                monkeypatch, sqlite_engine, server, str(ids), "--metrics-file", str(metrics)
            )
            == 3
        )
    written = samples_of(metrics.read_text("utf-8"))
    statuses = by_label(written, "referrals_etl_last_run_status", "status")
    assert {s for s, v in statuses.items() if v == 1} == {"failed"}
    assert one(written, LAST_SUCCESS) == success
    assert one(written, "referrals_etl_last_run_timestamp_seconds") > success


def _cli(monkeypatch: pytest.MonkeyPatch, engine: Engine, server: ServerThread, *argv: str) -> Any:
    """`referrals-etl ARGV` in process against the sandbox; its exit code."""
    for name in [k for k in os.environ if k.startswith("REFERRALS_ETL_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("REFERRALS_ETL_API_BASE_URL", server.base_url)
    monkeypatch.setenv("REFERRALS_ETL_AUTH_MODE", "access_token")
    monkeypatch.setenv("REFERRALS_ETL_AUTH_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv(
        "REFERRALS_ETL_DATABASE_URL", engine.url.render_as_string(hide_password=False)
    )
    with pytest.raises(SystemExit) as exited:
        cli.main(list(argv))
    return exited.value.code


def test_every_shard_pushes_to_a_pushgateway_group_of_its_own(
    sqlite_engine: Engine,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    gateway: tuple[str, list[tuple[str, str, str]]],
    restore_signals: None,
) -> None:
    """Backfill shards 0/2 and 1/2 and a sync land in three Pushgateway groups.

    Command and shard are in the grouping key, so none overwrites another; each group holds
    its own run.
    """
    url, received = gateway
    box = Sandbox(count=10, seed=33)
    box.faults.accepted_tokens = {TOKEN}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids) + "\n", encoding="utf-8")
    with ServerThread(box) as server:
        for shard in ("0/2", "1/2"):
            code = _cli(
                monkeypatch, sqlite_engine, server, "backfill", str(ids), "--shard", shard,
                "--pushgateway", url,
            )  # fmt: skip
            assert code == 0
        box.faults.down = True  # the sync fails: its group must say so, whatever the shards say
        code = _cli(monkeypatch, sqlite_engine, server, "sync", "--pushgateway", url)
    assert code != 0
    groups = {path: samples_of(body) for method, path, body in received if method == "POST"}
    assert set(groups) == {
        "/metrics/job/referrals_etl/command/backfill/shard/0-of-2",
        "/metrics/job/referrals_etl/command/backfill/shard/1-of-2",
        "/metrics/job/referrals_etl/command/sync/shard/all",
    }, received
    shard_ids = [
        one(
            groups[f"/metrics/job/referrals_etl/command/backfill/shard/{s}"],
            "referrals_etl_run_ids",
        )
        for s in ("0-of-2", "1-of-2")
    ]
    assert sum(shard_ids) == 10
    assert all(shard_ids)
    sync = groups["/metrics/job/referrals_etl/command/sync/shard/all"]
    assert by_label(sync, "referrals_etl_last_run_status", "status")["failed"] == 1
