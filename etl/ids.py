"""Where the ids to refresh come from: id files, stdin, webhook event files; and sharding.

Everything here is an iterator, so a file of millions of ids is never held in memory. A line
that is not a valid id is reported (with its line number) through ``on_error`` and skipped.
A valid id is ASCII letters, digits, ``-`` and ``_``, 1 to 64 characters, starting with a letter
or digit: no slash, dot, control character or unicode look-alike can ever reach a request path.
GUIDs are lower-cased so that one referral has one id.
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from etl.errors import ConfigError, InvalidIdError

_VALID_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,63}")
_GUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
_QUOTES = "\"'"
_BLANK = " \t\r\n\ufeff"  # white space, and a byte-order mark (editors on Windows add one)
_CHUNK = 1 << 16
MAX_LINE_CHARS = 4096  # an id line longer than this is rejected without being read whole
MAX_EVENT_CHARS = 1_000_000  # a webhook event longer than this (as kept) is rejected
_MAX_STRING_CHARS = 8192  # characters kept of one string of an event (ids and URIs are short)


@dataclass(frozen=True, slots=True)
class BadLine:
    """A line of an id source that was skipped, and why."""

    source: str
    line: int
    reason: str

    def __str__(self) -> str:
        return f"{self.source}:{self.line}: {self.reason}"


@dataclass(frozen=True, slots=True)
class TrackedId:
    """An id read from a source, with the kind of source (``file`` or ``webhook``)."""

    id: str
    source: str


OnError = Callable[[BadLine], None]


def canonical_id(text: str) -> str:
    """The id as stored and requested, or :class:`InvalidIdError` saying why it is not one."""
    if _VALID_ID.fullmatch(text) is None:
        shown = text if len(text) <= 80 else text[:77] + "..."
        raise InvalidIdError(
            f"not a referral id: {shown!r} (expected a GUID or 1-64 letters, digits, - or _)"
        )
    return text.lower() if _GUID.fullmatch(text) else text


def shard_of(referral_id: str, shards: int) -> int:
    """The stable shard (0..shards-1) of an id: the same on every machine and every run."""
    digest = hashlib.blake2b(
        referral_id.encode("ascii"),  # pragma: no mutate: codec names ignore case
        digest_size=8,
    ).digest()
    return int.from_bytes(digest) % shards  # big-endian, the default


def parse_shard(text: str) -> tuple[int, int]:
    """``"I/N"`` with 0 <= I < N, as given to ``--shard``."""
    match = re.fullmatch(r"\s*(\d+)\s*/\s*(\d+)\s*", text)
    if match is None or not 0 <= int(match.group(1)) < int(match.group(2)):
        raise ConfigError(f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")
    return int(match.group(1)), int(match.group(2))


def in_shard(ids: Iterable[TrackedId], shard: tuple[int, int] | None) -> Iterator[TrackedId]:
    if shard is None:
        yield from ids
        return
    index, count = shard
    for tracked in ids:
        if shard_of(tracked.id, count) == index:
            yield tracked


class IdSource(Iterator[TrackedId]):
    """The ids :func:`read_ids` reads; :meth:`close` closes its file, whether read or not."""

    def __init__(self, ids: Iterator[TrackedId], handle: IO[str] | None = None) -> None:
        self._ids = ids
        self._handle = handle

    def __next__(self) -> TrackedId:
        return next(self._ids)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def read_ids(path: str, on_error: OnError, stdin: IO[str] | None = None) -> IdSource:
    """Ids from a file (``-`` = stdin): plain id lines, or webhook events (JSON lines or array).

    The file is opened at once (a missing file or a closed stdin raises :class:`ConfigError`
    here, before any run starts) and read lazily; it closes when its last id is read, or on
    ``close()`` (a run that ends before reading it all). A UTF-8 byte-order mark is accepted;
    bytes that are not UTF-8 make their line invalid.
    """
    if path == "-":
        return IdSource(
            read_ids_from(stdin if stdin is not None else _stdin(), "<stdin>", on_error)
        )
    try:
        handle = Path(path).open(  # noqa: SIM115
            encoding="utf-8",  # pragma: no mutate: codec names ignore case
            errors="replace",
        )
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read id file ({exc.strerror})") from None
    return IdSource(_closing(handle, read_ids_from(handle, path, on_error)), handle)


def _closing(handle: IO[str], ids: Iterator[TrackedId]) -> Iterator[TrackedId]:
    with handle:
        yield from ids


def _stdin() -> IO[str]:
    """Standard input as UTF-8 text (invalid bytes replaced), or a one-line error when closed."""
    stream = sys.stdin
    if stream is None or stream.closed:
        raise ConfigError("backfill -: standard input is closed; give a file or pipe ids in")
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        return stream
    return io.TextIOWrapper(
        buffer,
        encoding="utf-8",  # pragma: no mutate: codec names ignore case
        errors="replace",
    )


def read_ids_from(stream: IO[str], name: str, on_error: OnError) -> Iterator[TrackedId]:
    reader = _Reader(stream, name)
    first = reader.first_significant()
    if not first:
        return
    if first == "[":
        yield from _events_array(reader, name, on_error)
    elif first == "{":
        yield from _events_lines(reader, name, on_error)
    else:
        yield from _id_lines(reader, name, on_error)


class _Reader:
    """A text stream read in bounded pieces, with what was looked at put back."""

    def __init__(self, stream: IO[str], name: str) -> None:
        self._stream = stream
        self._name = name
        self._pending = ""
        self.lines_skipped = 0  # blank lines before the first significant character

    def read(self, size: int) -> str:
        if self._pending:
            text, self._pending = self._pending[:size], self._pending[size:]
            return text
        try:
            return self._stream.read(size)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self._name}: cannot read ({_why(exc)})") from None

    def readline(self, limit: int) -> str:
        """One line (with its newline), at most ``limit`` characters of it."""
        if self._pending:
            cut = self._pending.find("\n", 0, limit)  # pragma: no mutate: None is 0 as a start
            end = cut + 1 if cut >= 0 else min(limit, len(self._pending))
            text, self._pending = self._pending[:end], self._pending[end:]
            if text.endswith("\n") or len(text) >= limit:
                return text
            return text + self.readline(limit - len(text))
        try:
            return self._stream.readline(limit)
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{self._name}: cannot read ({_why(exc)})") from None

    def first_significant(self) -> str:
        """The first character that is not white space or a byte-order mark; put back."""
        while True:
            chunk = self.read(_CHUNK)
            if not chunk:
                return ""  # pragma: no mutate: any text but "[" or "{" reads id lines, here none
            stripped = chunk.lstrip(_BLANK)
            skipped = chunk[: len(chunk) - len(stripped)]
            self.lines_skipped += skipped.count("\n")  # line numbers stay those of the file
            if stripped:
                self._pending = stripped + self._pending
                return stripped[0]

    def lines(self, limit: int) -> Iterator[tuple[int, str | None]]:
        """(line number, text) for every line; text is None for a line longer than ``limit``."""
        number = self.lines_skipped
        while True:
            line = self.readline(limit + 1)
            if not line:
                return
            number += 1
            if len(line) > limit and not line.endswith("\n"):
                while line and not line.endswith("\n"):  # skip the rest, a piece at a time
                    line = self.readline(_CHUNK)
                yield number, None
                continue
            yield number, line


def _why(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc) or exc.__class__.__name__


def _id_lines(reader: _Reader, name: str, on_error: OnError) -> Iterator[TrackedId]:
    for number, raw in reader.lines(MAX_LINE_CHARS):
        if raw is None:
            on_error(BadLine(name, number, f"line longer than {MAX_LINE_CHARS} characters"))
            continue
        text = raw.partition(" #")[0].strip() if not raw.lstrip().startswith("#") else ""
        text = text.strip(_QUOTES).strip()
        if not text:
            continue
        try:
            yield TrackedId(canonical_id(text), "file")
        except InvalidIdError as exc:
            on_error(BadLine(name, number, str(exc)))


def _events_lines(reader: _Reader, name: str, on_error: OnError) -> Iterator[TrackedId]:
    for number, raw in reader.lines(MAX_EVENT_CHARS):
        if raw is None:
            on_error(
                BadLine(name, number, f"webhook event longer than {MAX_EVENT_CHARS} characters")
            )
            continue
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            event = json.loads(text)
        except (ValueError, RecursionError):
            on_error(BadLine(name, number, "not a JSON webhook event"))
            continue
        tracked = _event_id(event, name, number, on_error)
        if tracked is not None:
            yield tracked


# Inside an element only quotes, brackets and newlines matter; between elements commas too.
_IN_ELEMENT = re.compile(r'[^"{}\[\]\n]+')
_BETWEEN = re.compile(r'[^"{}\[\]\n,]+')
_IN_STRING = re.compile(r'[^"\\\n]+')
_CUT = "\u2026"  # marks a string that was cut short; never part of a valid id


class _ArrayScanner:
    """Splits a JSON array of events into elements in one pass over the text.

    Each element's text is kept only up to :data:`MAX_EVENT_CHARS`, and each string in it only
    up to :data:`_MAX_STRING_CHARS` (a webhook event's fields are short), so memory is bounded
    by that, whatever the size of one element; the time is linear in the file's size. An
    element that is not valid JSON is reported with its line and the next ones are still read.
    """

    def __init__(self, name: str, on_error: OnError, line: int) -> None:
        self.name = name
        self.on_error = on_error
        self.line = line
        self.depth = 0
        self.done: list[TrackedId] = []
        # Equivalent mutants: flags only tested for truth (None is as false as False), and what
        # _start() or an opening quote sets again before any use.
        # pragma: no mutate start
        self.array_open = False
        self.in_element = False
        self.in_string = False
        self.kept: list[str] = []
        self.kept_chars = 0
        self.too_large = False
        self.string_chars = 0
        self.string_cut = False
        self.start_line = line
        # pragma: no mutate end

    def _add(self, text: str) -> None:
        if self.too_large:
            return
        self.kept_chars += len(text)
        if self.kept_chars > MAX_EVENT_CHARS:
            self.too_large = True
            self.kept = []  # pragma: no mutate: only frees the memory; never read when too large
            return
        self.kept.append(text)

    def _add_to_string(self, text: str) -> None:
        if self.string_cut:
            return
        room = _MAX_STRING_CHARS - self.string_chars
        if len(text) > room:
            self.string_cut = True
            text = text[:room] if not text.startswith("\\") else ""
        self.string_chars += len(text)
        self._add(text)

    def _start(self) -> None:
        self.in_element = True
        self.start_line = self.line
        self.kept = []
        self.kept_chars = 0
        self.too_large = False  # pragma: no mutate: None is as false as False

    def _finish(self) -> None:
        self.in_element = False  # pragma: no mutate: None is as false as False
        line, kept, self.kept = self.start_line, self.kept, []
        if self.too_large:
            self.on_error(
                BadLine(self.name, line, f"webhook event longer than {MAX_EVENT_CHARS} characters")
            )
            return
        text = "".join(kept)
        try:
            event = json.loads(text)
        except json.JSONDecodeError as exc:
            where = line + exc.lineno - 1
            self.on_error(BadLine(self.name, where, f"malformed webhook event ({exc.msg})"))
            return
        except (ValueError, RecursionError):
            self.on_error(BadLine(self.name, line, "malformed webhook event"))
            return
        tracked = _event_id(event, self.name, line, self.on_error)
        if tracked is not None:
            self.done.append(tracked)

    def feed(self, buf: str, final: bool) -> str:
        """Scan ``buf``; returns the few characters to scan again with the next piece."""
        i, n = 0, len(buf)
        while i < n:
            if self.in_string:
                match = _IN_STRING.match(buf, i)
                if match is not None:
                    self._add_to_string(match.group())
                    i = match.end()
                    continue
                char = buf[i]
                if char == '"':
                    if self.string_cut:
                        self._add(_CUT)
                    self._add('"')
                    self.in_string = False  # pragma: no mutate: None is as false as False
                    i += 1
                elif char == "\n":
                    self.line += 1
                    self._add_to_string(char)
                    i += 1
                else:  # a backslash: keep the whole escape together
                    size = 6 if buf[i + 1 : i + 2] == "u" else 2
                    if i + size > n and not final:
                        return buf[i:]
                    self._add_to_string(buf[i : i + size])
                    i += size
                continue
            match = (_IN_ELEMENT if self.depth else _BETWEEN).match(buf, i)
            if match is not None:
                run = match.group()
                if not self.in_element and run.strip(_BLANK):
                    self._start()
                if self.in_element:
                    self._add(run)
                i = match.end()
                continue
            char = buf[i]
            i += 1
            if char == "\n":
                self.line += 1
                if self.in_element:
                    self._add(char)
            elif char == '"':
                if not self.in_element:
                    self._start()
                self.in_string, self.string_chars = True, 0
                self.string_cut = False  # pragma: no mutate: None is as false as False
                self._add(char)
            elif char in "[{":
                if not self.array_open and not self.in_element and char == "[":
                    self.array_open = True
                    continue
                if not self.in_element:
                    self._start()
                self.depth += 1
                self._add(char)
            elif char in "]}":
                if self.depth:
                    self.depth -= 1
                    self._add(char)
                    if not self.depth:
                        self._finish()
                    continue
                if self.in_element:
                    self._finish()
                if char == "]":
                    self.array_open = False  # pragma: no mutate: None is as false as False
                else:
                    self.on_error(BadLine(self.name, self.line, "a stray } between events"))
            elif self.in_element:  # a comma between elements (inside one, runs take commas)
                self._finish()
        return ""

    def close(self) -> None:
        if self.in_element:
            self._finish()
        elif self.array_open:
            self.on_error(
                BadLine(self.name, self.line, "the JSON array of webhook events ends without ]")
            )


def _events_array(reader: _Reader, name: str, on_error: OnError) -> Iterator[TrackedId]:
    """A JSON array of events, one element at a time (see :class:`_ArrayScanner`)."""
    scanner = _ArrayScanner(name, on_error, reader.lines_skipped + 1)
    carry = ""
    while True:
        chunk = reader.read(_CHUNK)
        carry = scanner.feed(carry + chunk, final=not chunk)
        yield from scanner.done
        scanner.done.clear()
        if not chunk:
            break
    scanner.close()
    yield from scanner.done


def _event_id(event: Any, name: str, line: int, on_error: OnError) -> TrackedId | None:
    uri = event.get("ResourceUri") if isinstance(event, dict) else None
    if not isinstance(uri, str) or not uri.strip():
        on_error(BadLine(name, line, "webhook event without a ResourceUri"))
        return None
    last = uri.strip().partition("?")[0].rstrip("/").rpartition("/")[2]
    try:
        return TrackedId(canonical_id(last), "webhook")
    except InvalidIdError as exc:
        on_error(BadLine(name, line, f"webhook event: {exc}"))
        return None
