"""Where the ids to refresh come from: id files, stdin, webhook event files; and sharding.

Everything here is an iterator, so a file of millions of ids is never held in memory. A line
that is not a valid id is reported (with its line number) through ``on_error`` and skipped.
A valid id is ASCII letters, digits, ``-`` and ``_``, 1 to 64 characters, starting with a letter
or digit: no slash, dot, control character or unicode look-alike can ever reach a request path.
GUIDs are lower-cased so that one referral has one id.
"""

from __future__ import annotations

import hashlib
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
_CHUNK = 1 << 16


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
    digest = hashlib.blake2b(referral_id.encode("ascii"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % shards


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


def read_ids(path: str, on_error: OnError, stdin: IO[str] | None = None) -> Iterator[TrackedId]:
    """Ids from a file (``-`` = stdin): plain id lines, or webhook events (JSON lines or array)."""
    if path == "-":
        yield from read_ids_from(stdin or sys.stdin, "<stdin>", on_error)
        return
    try:
        handle = Path(path).open(encoding="utf-8", errors="replace")  # noqa: SIM115 - closed below
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read id file ({exc.strerror})") from None
    with handle:
        yield from read_ids_from(handle, path, on_error)


def read_ids_from(stream: IO[str], name: str, on_error: OnError) -> Iterator[TrackedId]:
    first = stream.read(1)
    while first and first.isspace():
        first = stream.read(1)
    if not first:
        return
    rest = _prepend(first, stream)
    if first == "[":
        yield from _events_array(rest, name, on_error)
    elif first == "{":
        yield from _events_lines(rest, name, on_error)
    else:
        yield from _id_lines(rest, name, on_error)


def _prepend(first: str, stream: IO[str]) -> Iterator[str]:
    """The stream's lines, with the already-read first character put back."""
    lines = iter(stream)
    head = next(lines, "")
    yield first + head
    yield from lines


def _id_lines(lines: Iterable[str], name: str, on_error: OnError) -> Iterator[TrackedId]:
    for number, raw in enumerate(lines, start=1):
        text = raw.split(" #", 1)[0].strip() if not raw.lstrip().startswith("#") else ""
        text = text.strip(_QUOTES).strip()
        if not text:
            continue
        try:
            yield TrackedId(canonical_id(text), "file")
        except InvalidIdError as exc:
            on_error(BadLine(name, number, str(exc)))


def _events_lines(lines: Iterable[str], name: str, on_error: OnError) -> Iterator[TrackedId]:
    for number, raw in enumerate(lines, start=1):
        text = raw.strip()
        if not text or text.startswith("#"):
            continue
        try:
            event = json.loads(text)
        except ValueError:
            on_error(BadLine(name, number, "not a JSON webhook event"))
            continue
        tracked = _event_id(event, name, number, on_error)
        if tracked is not None:
            yield tracked


def _events_array(chunks: Iterable[str], name: str, on_error: OnError) -> Iterator[TrackedId]:
    """A JSON array of events, decoded one element at a time (never the whole file at once)."""
    decoder = json.JSONDecoder()
    source = iter(chunks)
    buffer = ""
    position = 0
    line = 1
    while True:
        # Skip the brackets, commas and white space before the next event.
        while position < len(buffer) and buffer[position] in " \t\r\n,[]":
            line += buffer[position] == "\n"
            position += 1
        if position >= len(buffer):
            buffer, position = _read_more(source), 0
            if not buffer:
                return
            continue
        try:
            event, end = decoder.raw_decode(buffer, position)
        except ValueError:
            more = _read_more(source)
            if not more:
                on_error(BadLine(name, line, "the JSON array of webhook events is malformed here"))
                return
            buffer, position = buffer[position:] + more, 0
            continue
        tracked = _event_id(event, name, line, on_error)
        if tracked is not None:
            yield tracked
        line += buffer.count("\n", position, end)
        position = end


def _read_more(source: Iterator[str]) -> str:
    parts = []
    size = 0
    for part in source:
        parts.append(part)
        size += len(part)
        if size >= _CHUNK:
            break
    return "".join(parts)


def _event_id(event: Any, name: str, line: int, on_error: OnError) -> TrackedId | None:
    uri = event.get("ResourceUri") if isinstance(event, dict) else None
    if not isinstance(uri, str) or not uri.strip():
        on_error(BadLine(name, line, "webhook event without a ResourceUri"))
        return None
    last = uri.strip().split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]
    try:
        return TrackedId(canonical_id(last), "webhook")
    except InvalidIdError as exc:
        on_error(BadLine(name, line, f"webhook event: {exc}"))
        return None
