"""The helpers several modules share: one error line, one SIGTERM/SIGINT installer."""

from __future__ import annotations

import signal
import threading

from etl.errors import first_line
from etl.stopping import on_stop_signals


def test_first_line_is_the_first_line_after_leading_blank_lines() -> None:
    """An error of many lines (SQL, a body, a traceback) logs as its first one."""
    assert first_line(ValueError("\n\ncannot connect\nSQL: SELECT 1\n")) == "cannot connect"


def test_first_line_of_an_error_without_a_message_is_empty() -> None:
    """No message gives "" (the copies it replaces raised IndexError there)."""
    assert first_line(ValueError()) == ""


def test_first_line_is_cut_at_its_limit() -> None:
    """At most ``limit`` characters: 300 unless the caller asks for another."""
    assert len(first_line(ValueError("x" * 1000))) == 300


def test_a_second_stop_signal_gets_the_again_handler() -> None:
    """SIGTERM then SIGINT: ``first`` for the first, ``again`` for the second."""
    calls: list[tuple[str, int]] = []
    restore = on_stop_signals(
        lambda s: calls.append(("first", s)), lambda s: calls.append(("again", s))
    )
    try:
        signal.raise_signal(signal.SIGTERM)
        signal.raise_signal(signal.SIGINT)
    finally:
        restore()
    assert calls == [("first", signal.SIGTERM), ("again", signal.SIGINT)]


def test_restore_puts_the_previous_handlers_back() -> None:
    """After ``restore()`` SIGTERM is handled as it was before."""
    before = signal.getsignal(signal.SIGTERM)
    on_stop_signals(lambda _s: None, lambda _s: None)()
    assert signal.getsignal(signal.SIGTERM) is before


def test_outside_the_main_thread_no_handler_is_installed() -> None:
    """Only the main thread gets signals: elsewhere the handlers stay as they were."""
    before = signal.getsignal(signal.SIGTERM)
    seen: list[object] = []

    def install() -> None:
        on_stop_signals(lambda _s: None, lambda _s: None)
        seen.append(signal.getsignal(signal.SIGTERM))

    thread = threading.Thread(target=install)
    thread.start()
    thread.join(timeout=10)
    assert seen == [before]
