"""The commands as operators run them: output, exit codes, one clear line per failure."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from open_files import open_files

from etl.cli import main
from etl.sandbox import Sandbox, ServerThread

TOKEN = "cli-token"


def run_cli(args: list[str]) -> int:
    with pytest.raises(SystemExit) as caught:
        main(args)
    return int(caught.value.code or 0)


@pytest.fixture
def sandbox() -> Iterator[tuple[Sandbox, str]]:
    box = Sandbox(count=40, seed=9)
    box.faults.accepted_tokens = {TOKEN}
    with ServerThread(box) as server:
        yield box, server.base_url


@pytest.fixture
def env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, sandbox: tuple[Sandbox, str]) -> str:
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("REFERRALS_ETL_DATABASE_URL", url)
    monkeypatch.setenv("REFERRALS_ETL_API_BASE_URL", sandbox[1])
    monkeypatch.setenv("REFERRALS_ETL_AUTH_MODE", "access_token")
    monkeypatch.setenv("REFERRALS_ETL_AUTH_ACCESS_TOKEN", TOKEN)
    monkeypatch.setenv("REFERRALS_ETL_SYNC_DISCOVER", "false")
    monkeypatch.setenv("REFERRALS_ETL_API_MAX_ATTEMPTS", "2")
    return url


def test_backfill_refuses_a_schema_not_at_head(
    env: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A database not at the head revision exits 5 telling the operator to run db upgrade."""
    ids = tmp_path / "ids.txt"
    ids.write_text("abc\n")
    assert run_cli(["backfill", str(ids)]) == 5
    err = capsys.readouterr().err
    assert "run `referrals-etl db upgrade`" in err
    assert "Traceback" not in err
    assert run_cli(["db", "current"]) == 5
    assert run_cli(["db", "upgrade"]) == 0
    assert run_cli(["db", "current"]) == 0
    assert "(at head)" in capsys.readouterr().out


def test_a_backfill_that_ends_before_reading_its_id_file_closes_it(
    env: str, tmp_path: Path
) -> None:
    """The run refused (schema not at head) never reads the file; the CLI still closes it."""
    ids = tmp_path / "ids.txt"
    ids.write_text("abc\n")
    assert run_cli(["backfill", str(ids)]) == 5
    assert ids not in open_files()


def test_a_refused_backfill_leaves_no_database_file_open(env: str, tmp_path: Path) -> None:
    """The run refused (schema not at head) disposes of its engine: no -wal/-shm left open."""
    ids = tmp_path / "ids.txt"
    ids.write_text("abc\n")
    assert run_cli(["backfill", str(ids)]) == 5
    assert sorted(p.name for p in open_files() if p.parent == tmp_path) == []


@pytest.mark.parametrize(
    ("command", "code"),
    [(["db", "upgrade"], 0), (["db", "current"], 5), (["status"], 5)],
    ids=["db-upgrade", "db-current", "status"],
)
def test_a_database_command_leaves_no_database_file_open(
    env: str, tmp_path: Path, command: list[str], code: int
) -> None:
    """db upgrade, db current and status dispose of their engine, whatever they answer."""
    assert run_cli(command) == code
    assert sorted(p.name for p in open_files() if p.parent == tmp_path) == []


def test_a_backfill_with_bad_inputs_exits_1(
    env: str, tmp_path: Path, sandbox: tuple[Sandbox, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """A bad id line or bad document fails alone: exit 1, and status names the failure."""
    box, _ = sandbox
    box.faults.invalid_json_ids = {box.ids[3]}
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids) + "\nnot/an/id\n")
    assert run_cli(["db", "upgrade"]) == 0
    assert run_cli(["backfill", str(ids)]) == 1
    out, err = capsys.readouterr()
    assert "40 ids: 39 created, 0 updated, 0 unchanged, 0 not found, 1 failed" in out
    assert f"ids.txt:{len(box.ids) + 1}: not a referral id: 'not/an/id'" in err
    engine = sa.create_engine(env)
    with engine.connect() as conn:
        error: str = conn.execute(
            sa.text("SELECT last_error FROM sync_state WHERE referral_id = :i"), {"i": box.ids[3]}
        ).scalar_one()
    assert "not valid JSON" in error
    assert run_cli(["status"]) == 0
    status = capsys.readouterr().out
    assert "failing: 1" in status
    assert box.ids[3] in status
    assert "backfill" in status


def test_sync_fetches_due_ids(
    env: str, tmp_path: Path, sandbox: tuple[Sandbox, str], capsys: pytest.CaptureFixture[str]
) -> None:
    """sync fetches only the ids that are due."""
    box, _ = sandbox
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids[:10]) + "\n")
    assert run_cli(["db", "upgrade"]) == 0
    assert run_cli(["backfill", str(ids)]) == 0
    assert run_cli(["sync"]) == 0  # nothing due: refreshed within the hour
    assert "0 ids:" in capsys.readouterr().out
    config = str(_config(tmp_path, 'refresh_open_after = "0s"\nrefresh_closed_after = "0s"'))
    assert run_cli(["backfill", str(ids), "--config", config]) == 0  # due again at once
    assert run_cli(["--config", config, "sync"]) == 0
    assert "10 ids: 0 created, 0 updated, 10 unchanged" in capsys.readouterr().out.splitlines()[-1]


def _config(tmp_path: Path, sync: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"[sync]\n{sync}\n")
    return path


def test_configuration_errors_exit_2(
    env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Bad configuration, a bad shard and an unknown command each exit 2."""
    monkeypatch.setenv("REFERRALS_ETL_API_CONCURRENCY", "0")
    assert run_cli(["sync"]) == 2
    assert (
        "[api] concurrency must be a whole number from 1 to 256, got '0'" in capsys.readouterr().err
    )
    monkeypatch.delenv("REFERRALS_ETL_API_CONCURRENCY")
    assert run_cli(["sync", "--shard", "5/4"]) == 2
    assert run_cli(["no-such-command"]) == 2


def test_unreachable_database_exits_5(
    env: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An unreachable database exits 5 with one line and no password."""
    monkeypatch.setenv(
        "REFERRALS_ETL_DATABASE_URL", "postgresql+psycopg://etl:hunter2@127.0.0.1:1/none"
    )
    assert run_cli(["sync"]) == 5
    err = capsys.readouterr().err
    assert "error: database" in err
    assert "hunter2" not in err
    assert "Traceback" not in err


def test_demo_shows_each_kind_of_change(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The demo's passes report created, then unchanged, updated and deleted referrals."""
    monkeypatch.chdir(tmp_path)
    assert run_cli(["demo"]) == 0
    out = capsys.readouterr().out
    assert "first pass : 200 ids: 200 created, 0 updated, 0 unchanged, 0 not found, 0 failed" in out
    assert (
        "second pass: 200 ids: 0 created, 20 updated, 175 unchanged, 5 not found, 0 failed" in out
    )
    # It ends with a change made in the sandbox reaching SQL through a signed webhook.
    last = out.strip().splitlines()[-2]
    assert re.search(r"the sandbox changed referral \S+; .* in SQL \d+\.\d\d s later$", last)
    assert (tmp_path / "referrals-demo.db").exists()


def test_progress_bar_only_on_a_terminal(
    env: str, tmp_path: Path, sandbox: tuple[Sandbox, str]
) -> None:
    """A terminal gets a progress bar with rate and ETA; a pipe (cron, Kubernetes) gets none."""
    import fcntl
    import os
    import pty
    import struct
    import subprocess
    import sys
    import termios

    box, _ = sandbox
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids) + "\n")
    assert run_cli(["db", "upgrade"]) == 0
    piped = subprocess.run(
        [sys.executable, "-m", "etl", "backfill", str(ids)],
        capture_output=True,
        text=True,
        env=os.environ.copy(),
        timeout=60,
    )
    assert piped.returncode == 0
    assert "referrals/s" not in piped.stderr
    assert "%|" not in piped.stderr

    controller, terminal = pty.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))  # 120 columns
    with subprocess.Popen(  # closes its stdout pipe
        [sys.executable, "-m", "etl", "backfill", str(ids)],
        stdout=subprocess.PIPE,
        stderr=terminal,
        env=os.environ.copy(),
    ) as process:
        os.close(terminal)
        process.wait(timeout=60)
    assert process.returncode == 0
    shown = b""
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:
            break
        if not chunk:
            break
        shown += chunk
    os.close(controller)
    text = shown.decode("utf-8", "replace")
    assert "referrals/s" in text
    assert "40 referrals" in text


def _cli_process(
    args: list[str], tmp_path: Path, **kwargs: object
) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("REFERRALS_ETL_")}
    done: subprocess.CompletedProcess[str] = subprocess.run(
        [sys.executable, "-m", "etl", *args],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
        timeout=120,
        **kwargs,  # type: ignore[call-overload]
    )
    return done


def test_files_as_people_make_them_are_one_line_exit_2(tmp_path: Path) -> None:
    """A closed stdin, a binary file or a bad value in the config file is one line and exit 2."""
    closed = _cli_process(
        ["backfill", "-"], tmp_path, stdin=None, pass_fds=(), preexec_fn=lambda: os.close(0)
    )
    assert closed.returncode == 2, closed.stderr
    assert closed.stderr.strip() == (
        "error: backfill -: standard input is closed; give a file or pipe ids in"
    )
    binary = tmp_path / "config.toml"
    binary.write_bytes(b"\x00\xff\xfe binary")
    done = _cli_process(["--config", str(binary), "status"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "not a TOML text file" in done.stderr
    binary.write_text("[api]\nmax_body_bytes = 1e400\n")
    done = _cli_process(["--config", str(binary), "status"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    binary.write_text('[database]\nurl = "postgresql://u:secret@h:notaport/db"\n')
    done = _cli_process(["--config", str(binary), "status"], tmp_path)
    assert done.returncode == 2, done.stderr
    assert len(done.stderr.splitlines()) == 1, done.stderr
    assert "secret" not in done.stderr
    assert "url must be a database URL" in done.stderr


def test_a_run_tunes_the_collector_for_its_run_only(
    env: str, tmp_path: Path, sandbox: tuple[Sandbox, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """During a run the objects the imports built are frozen and young collections are rarer
    (a first load spent ~10% of its CPU in the collector); afterwards a caller that ran the
    command in its own process (a test, a wrapper script) gets its thresholds back and nothing
    left frozen, so its own garbage is still collected and finalised."""
    import gc

    import etl.sync

    during: list[tuple[tuple[int, int, int], int]] = []
    real_run = etl.sync.run_backfill

    def observed(*args: Any, **kwargs: Any) -> Any:
        during.append((gc.get_threshold(), gc.get_freeze_count()))
        return real_run(*args, **kwargs)

    monkeypatch.setattr(etl.sync, "run_backfill", observed)
    box, _ = sandbox
    ids = tmp_path / "ids.txt"
    ids.write_text("\n".join(box.ids[:5]) + "\n")
    assert run_cli(["db", "upgrade"]) == 0
    before = (gc.get_threshold(), gc.get_freeze_count())
    assert run_cli(["backfill", str(ids)]) == 0
    [(thresholds, frozen)] = during
    assert thresholds == (10_000, 10, 10)
    assert frozen > 20_000  # the job's modules and their libraries, not a handful
    assert (gc.get_threshold(), gc.get_freeze_count()) == before
