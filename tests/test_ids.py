"""Id sources: files, stdin, webhook events; bad lines reported with their number; shards."""

from __future__ import annotations

import io
import json
import locale
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from open_files import open_files

from etl.errors import ConfigError, InvalidIdError
from etl.ids import (
    BadLine,
    TrackedId,
    canonical_id,
    in_shard,
    parse_shard,
    read_ids,
    read_ids_from,
    shard_of,
)

GUID = "c5fbb3b6-be74-4795-9fb5-4324c73fed37"


def _read(text: str) -> tuple[list[str], list[BadLine]]:
    bad: list[BadLine] = []
    ids = [t.id for t in read_ids_from(io.StringIO(text), "ids.txt", bad.append)]
    return ids, bad


# Comments, a blank line, quotes and bad lines around the ids of one file.
_MIXED = f"# header\n\n  \"{GUID.upper()}\"  \n'abc-1'\nabc/../x\nok_2  # why\n..\n"


def test_the_ids_of_a_file_mixing_comments_quotes_and_bad_lines_are_read_in_order() -> None:
    """Comments, blank lines, quotes and bad lines around the ids leave the good ids in order."""
    assert _read(_MIXED)[0] == [GUID, "abc-1", "ok_2"]


def test_the_bad_lines_of_a_mixed_file_are_reported_at_their_source_line() -> None:
    assert [(b.line, b.source) for b in _read(_MIXED)[1]] == [(5, "ids.txt"), (7, "ids.txt")]


def test_a_bad_line_of_a_mixed_file_is_reported_as_not_a_referral_id() -> None:
    assert "not a referral id: 'abc/../x'" in str(_read(_MIXED)[1][0])


@pytest.mark.parametrize(
    "bad",
    [
        "a/b",
        "..",
        ".hidden",
        "a b",
        "a\x00b",
        "a\tb",
        "ａｂｃ",
        "аbc",
        "a?b=1",
        "%2e%2e",
        "x" * 65,
        "-start",
    ],
)
def test_invalid_ids_are_rejected(bad: str) -> None:
    with pytest.raises(InvalidIdError):
        canonical_id(bad)


_WEBHOOK_EVENTS = [
    {
        "EventName": "referral-updated",
        "ResourceUri": f"https://api.partnercenter.microsoft.com/engagements/v1/referrals/{GUID}",
        "ResourceName": "referral",
    },
    {
        "EventName": "referral-created",
        "ResourceUri": "https://api.partnercenter.microsoft.com/engagements/v1/referrals/other-1/",
    },
    {"EventName": "referral-created"},
]


def _webhook_file(tmp_path: Path, kind: str) -> Path:
    """_WEBHOOK_EVENTS written as JSON lines (``jsonl``) or as one JSON array (``json``)."""
    path = tmp_path / f"events.{kind}"
    if kind == "jsonl":
        path.write_text("\n".join(json.dumps(e) for e in _WEBHOOK_EVENTS) + "\n")
    else:
        path.write_text(json.dumps(_WEBHOOK_EVENTS, indent=2))
    return path


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_a_webhook_event_file_gives_the_ids_of_its_resource_uris(tmp_path: Path, kind: str) -> None:
    """As JSON lines or as a JSON array: each id is the last segment of its event's URI."""
    got = list(read_ids(str(_webhook_file(tmp_path, kind)), lambda b: None))
    assert [(t.id, t.source) for t in got] == [(GUID, "webhook"), ("other-1", "webhook")]


@pytest.mark.parametrize("kind", ["jsonl", "json"])
def test_an_event_without_a_resource_uri_in_a_webhook_event_file_is_reported(
    tmp_path: Path, kind: str
) -> None:
    bad: list[BadLine] = []
    list(read_ids(str(_webhook_file(tmp_path, kind)), bad.append))
    assert len(bad) == 1
    assert "without a ResourceUri" in bad[0].reason


def test_large_event_array_is_streamed(tmp_path: Path) -> None:
    path = tmp_path / "many.json"
    with path.open("w") as fh:
        fh.write("[")
        for i in range(20_000):
            fh.write(
                ("," if i else "") + json.dumps({"ResourceUri": f"https://h/referrals/id-{i}"})
            )
        fh.write("]")
    got = [t.id for t in read_ids(str(path), lambda b: None)]
    assert got == [f"id-{i}" for i in range(20_000)]


def test_closed_stdin_is_one_line_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", None)  # what Python sets when file descriptor 0 is closed
    with pytest.raises(ConfigError, match="standard input is closed"):
        read_ids("-", lambda b: None)
    closed = io.StringIO("a1")
    closed.close()
    monkeypatch.setattr("sys.stdin", closed)
    with pytest.raises(ConfigError, match="standard input is closed"):
        read_ids("-", lambda b: None)


def test_the_ids_of_stdin_are_read_for_the_path_dash() -> None:
    got = [t.id for t in read_ids("-", lambda b: None, stdin=io.StringIO("a1\nb2\n"))]
    assert got == ["a1", "b2"]


def test_a_missing_id_file_is_a_config_error_before_any_id_is_read() -> None:
    with pytest.raises(ConfigError, match="cannot read id file"):
        list(read_ids("/nonexistent/ids.txt", lambda b: None))


def test_closing_the_ids_of_a_file_never_read_closes_the_file(tmp_path: Path) -> None:
    """A run that ends before reading its id file still lets it go (IdSource.close)."""
    path = tmp_path / "ids.txt"
    path.write_text("a1\n")
    source = read_ids(str(path), lambda b: None)
    assert path in open_files()  # opened at once, before any id is read
    source.close()
    assert path not in open_files()


def test_closing_the_ids_of_stdin_leaves_stdin_open(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO(b"a1\nb2\n"), encoding="utf-8")
    monkeypatch.setattr("sys.stdin", stdin)
    source = read_ids("-", lambda b: None)
    assert TrackedId("a1", "file") == next(source)
    source.close()
    assert stdin.closed is False


_TEN_THOUSAND = [TrackedId(f"id-{i}", "file") for i in range(10_000)]


def _four_shards() -> list[set[str]]:
    return [{t.id for t in in_shard(_TEN_THOUSAND, (i, 4))} for i in range(4)]


def test_every_id_is_in_exactly_one_shard() -> None:
    """The shards hold every id between them, and their sizes add up to the ids: none twice."""
    shards = _four_shards()
    assert sum(len(s) for s in shards) == 10_000
    assert {t.id for t in _TEN_THOUSAND} == set().union(*shards)


def test_four_shards_of_10_000_ids_hold_1_500_to_3_500_each() -> None:
    assert all(1_500 < len(s) < 3_500 for s in _four_shards())


def test_a_malformed_event_array_keeps_what_came_before() -> None:
    bad: list[BadLine] = []
    text = '[\n  {"ResourceUri": "https://h/referrals/a1"},\n  {"ResourceUri": broken\n]'
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    assert got == ["a1"]
    assert [(b.line, b.reason) for b in bad] == [
        (3, "malformed webhook event (Expecting value)"),
        (4, "the JSON array of webhook events ends without ]"),
    ]


def _event(rid: str) -> str:
    return json.dumps({"ResourceUri": f"https://h/referrals/{rid}"})


def _malformed_among_good() -> tuple[list[str], list[BadLine]]:
    """An array of good events around malformed ones, a stray brace and scalars, read."""
    bad: list[BadLine] = []
    text = (
        f'[\n  {_event("a1")},\n  {{"ResourceUri": nope}},\n  {{"x": [1, 2}}]}},\n'
        f'  {_event("b2")}, 42, "text",\n  {{"ResourceUri": "https://h/referrals/c3"}}\n]\n'
    )
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    return got, bad


def test_a_malformed_event_in_an_array_fails_alone_and_the_next_are_read() -> None:
    """Malformed elements of an event array fail alone: the good events after them are read."""
    assert _malformed_among_good()[0] == ["a1", "b2", "c3"]


def test_the_malformed_elements_of_an_event_array_are_reported_each_on_its_line() -> None:
    bad = _malformed_among_good()[1]
    assert [b.line for b in bad] == [3, 4, 4, 5, 5]
    assert bad[0].reason.startswith("malformed webhook event")
    assert bad[1].reason.startswith("malformed webhook event")
    assert bad[2].reason == "a stray } between events"
    assert all("ResourceUri" in b.reason for b in bad[3:])


def test_a_byte_order_mark_is_accepted_in_every_kind_of_id_file(tmp_path: Path) -> None:
    kinds = {
        "ids.txt": f"{GUID}\nabc-1\n",
        "events.jsonl": f"{_event(GUID)}\n{_event('abc-1')}\n",
        "events.json": f"[{_event(GUID)},\n{_event('abc-1')}]",
    }
    for name, text in kinds.items():
        path = tmp_path / name
        path.write_bytes(b"\xef\xbb\xbf" + text.encode())
        bad: list[BadLine] = []
        got = [t.id for t in read_ids(str(path), bad.append)]
        assert (name, got, bad) == (name, [GUID, "abc-1"], [])
    bad = []
    got = [t.id for t in read_ids("-", bad.append, stdin=io.StringIO("\ufeffa1\nb2\n"))]
    assert (got, bad) == (["a1", "b2"], [])


def _long_lines() -> tuple[list[str], list[BadLine]]:
    """Ids around a line 40 times over the limit and a line of exactly the limit."""
    from etl.ids import MAX_LINE_CHARS

    return _read(f"a1\n{'x' * (MAX_LINE_CHARS * 40)}\nb2\n{'y' * MAX_LINE_CHARS}\nc3")


def test_an_over_long_id_line_is_rejected_and_the_next_lines_read() -> None:
    """Long lines fail alone: the ids on the lines after them are read."""
    assert _long_lines()[0] == ["a1", "b2", "c3"]


def test_only_a_line_over_the_limit_is_too_long_one_at_it_is_checked_as_an_id() -> None:
    from etl.ids import MAX_LINE_CHARS

    assert [
        (2, f"line longer than {MAX_LINE_CHARS} characters"),
        (
            4,
            "not a referral id: " + repr("y" * 77 + "...") + " (expected a GUID or 1-64 "
            "letters, digits, - or _)",
        ),
    ] == [(b.line, b.reason) for b in _long_lines()[1]]


def _huge_field_and_long_uri() -> tuple[list[str], list[BadLine]]:
    """An array: an event with a 3 MB field, one with a 20,000-character URI, a plain one."""
    bad: list[BadLine] = []
    huge = {"ResourceUri": "https://h/referrals/big-1", "padding": "p" * 3_000_000}
    cut = {"ResourceUri": "https://h/referrals/" + "z" * 20_000}
    text = f"[{json.dumps(huge)}, {json.dumps(cut)}, {_event('after')}]"
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    return got, bad


def test_an_event_with_a_huge_field_keeps_its_id_and_a_cut_uri_never_becomes_an_id() -> None:
    """Only real ids come out: the 3 MB event gives its id, the cut URI none."""
    assert _huge_field_and_long_uri()[0] == ["big-1", "after"]


def test_an_event_whose_uri_is_cut_is_reported_as_not_a_referral_id() -> None:
    bad = _huge_field_and_long_uri()[1]
    assert len(bad) == 1
    assert "not a referral id" in bad[0].reason


_DEEP = "[" * 100_000 + "]" * 100_000


def _deep_and_large_in_an_array() -> tuple[list[str], list[BadLine]]:
    """An array: an element nested 100,000 deep, an event, 600,000 numbers, an event."""
    bad: list[BadLine] = []
    many = "[" + ",".join(["1"] * 600_000) + "]"
    text = f"[{_DEEP},\n{_event('a1')},\n{many},\n{_event('b2')}]"
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    return got, bad


def _deep_event_line() -> tuple[list[str], list[BadLine]]:
    """JSON lines: an event nested 100,000 deep, then a plain one."""
    bad: list[BadLine] = []
    lines = f'{{"x": {_DEEP}}}\n{_event("c3")}\n'
    got = [t.id for t in read_ids_from(io.StringIO(lines), "events.jsonl", bad.append)]
    return got, bad


def test_deeply_nested_and_over_large_events_fail_alone() -> None:
    """In an array, elements nested 100,000 deep or 600,000 long fail alone: the events are read."""
    assert _deep_and_large_in_an_array()[0] == ["a1", "b2"]


def test_a_deep_and_an_over_large_array_element_are_reported_on_their_lines() -> None:
    """The element nested 100,000 deep and the one too long to read are each reported."""
    bad = _deep_and_large_in_an_array()[1]
    assert [b.line for b in bad] == [1, 3]
    assert "longer than" in bad[1].reason


def test_an_event_line_nested_100_000_deep_fails_alone() -> None:
    assert _deep_event_line()[0] == ["c3"]


def test_an_event_line_nested_100_000_deep_is_not_a_json_webhook_event() -> None:
    assert [(b.line, b.reason) for b in _deep_event_line()[1]] == [(1, "not a JSON webhook event")]


# The peak of this process image: VmHWM. (ru_maxrss would also count the memory of the
# process that forked it, a big pytest worker, which Linux carries across exec.)
_PEAK = """
import re, sys
from pathlib import Path
from etl.ids import read_ids
bad = []
ids = [t.id for t in read_ids(sys.argv[1], bad.append)]
status = Path("/proc/self/status").read_text()
peak_mb = int(re.search(r"VmHWM:\\s+(\\d+) kB", status).group(1)) / 1024
print(",".join(ids), len(bad), round(peak_mb))
"""


def _peak_of_reading(path: Path) -> tuple[list[str], int, float]:
    done = subprocess.run(
        [sys.executable, "-c", _PEAK, str(path)], capture_output=True, text=True, check=True
    )
    ids, bad, peak = done.stdout.split()
    return ids.split(","), int(bad), float(peak)


def _write_big(path: Path, head: str, fill: str, size: int, tail: str) -> None:
    with path.open("w") as fh:
        fh.write(head)
        piece = fill * (1 << 20)
        for _ in range(size >> 20):
            fh.write(piece)
        fh.write(tail)


@pytest.mark.slow  # writes and reads 200 MB in a subprocess: left out of `make mutation`
def test_a_100_mb_id_line_and_a_100_mb_event_stay_under_150_mb(tmp_path: Path) -> None:
    """Memory, not time: the line and the element are never held whole."""
    lines = tmp_path / "ids.txt"
    _write_big(lines, "a1\n", "x", 100 << 20, "\nb2\n")
    ids, bad, peak = _peak_of_reading(lines)
    assert (ids, bad) == (["a1", "b2"], 1)
    assert peak < 150, f"peak RSS {peak} MB"

    events = tmp_path / "events.json"
    head = '[{"ResourceUri": "https://h/referrals/a1"},\n{"ResourceUri": "https://h/referrals/big", "pad": "'
    _write_big(events, head, "p", 100 << 20, '"},\n{"ResourceUri": "https://h/referrals/b2"}]')
    ids, bad, peak = _peak_of_reading(events)
    assert (ids, bad) == (["a1", "big", "b2"], 0)
    assert peak < 150, f"peak RSS {peak} MB"


def test_line_numbers_count_the_blank_lines_before_the_first_id() -> None:
    ids, bad = _read("\n" * 70_000 + "a1\nnot/an/id\n")
    assert ids == ["a1"]
    assert [b.line for b in bad] == [70_002]


# --- Id validation. ----------------------------------------------------------------------------


def test_a_guid_in_upper_case_is_lower_cased() -> None:
    assert canonical_id(GUID.upper()) == GUID


def test_a_non_guid_id_in_upper_case_is_kept_as_written() -> None:
    assert canonical_id("ABC-DEF_1") == "ABC-DEF_1"


@pytest.mark.parametrize(
    "almost",
    [
        GUID.upper()[:-1],  # one hex digit short
        GUID.upper() + "A",  # one too many
        GUID.upper().replace("-", "_"),
        "G" + GUID.upper()[1:],  # not hex
    ],
)
def test_an_upper_case_id_shaped_almost_like_a_guid_is_kept_as_written(almost: str) -> None:
    assert canonical_id(almost) == almost


@pytest.mark.parametrize("valid", ["a", "7", "a_", "A-", "x" * 64, "_".join(["a"] * 32)])
def test_one_to_64_letters_digits_dashes_and_underscores_starting_alphanumeric_is_an_id(
    valid: str,
) -> None:
    """An id of 1-64 letters, digits, - and _ that starts with a letter or digit is kept as written."""
    assert valid == canonical_id(valid)


@pytest.mark.parametrize("bad", ["", "_a", "a\n", "\na"])
def test_an_empty_id_one_starting_with_underscore_or_with_a_newline_is_rejected(bad: str) -> None:
    with pytest.raises(InvalidIdError):
        canonical_id(bad)


def test_a_rejected_id_of_80_characters_is_shown_whole() -> None:
    text = "/" * 80
    with pytest.raises(InvalidIdError) as caught:
        canonical_id(text)
    assert str(caught.value) == (
        f"not a referral id: {text!r} (expected a GUID or 1-64 letters, digits, - or _)"
    )


def test_a_rejected_id_over_80_characters_is_shown_cut_to_77_and_an_ellipsis() -> None:
    """A rejected id over 80 characters is shown as its first 77 and '...'."""
    with pytest.raises(InvalidIdError) as caught:
        canonical_id("/" * 81)
    assert (
        f"not a referral id: {'/' * 77 + '...'!r} (expected a GUID or 1-64 letters, digits, - or _)"
        == str(caught.value)
    )


# --- Shards. -----------------------------------------------------------------------------------


def test_the_shard_of_an_id_is_pinned_across_releases() -> None:
    """blake2b, 8 bytes, big-endian, modulo N: changing it would move ids between running shards."""
    assert [shard_of(GUID, 1000), shard_of("abc-1", 1000), shard_of("abc-1", 7)] == [276, 664, 4]


def test_without_a_shard_every_id_is_kept() -> None:
    ids = [TrackedId(f"id-{i}", "file") for i in range(5)]
    assert list(in_shard(ids, None)) == ids


@pytest.mark.parametrize(
    ("text", "expected"),
    [("0/1", (0, 1)), ("2/4", (2, 4)), (" 3 / 4 ", (3, 4)), ("10/12", (10, 12))],
)
def test_a_shard_is_i_of_n_with_i_below_n(text: str, expected: tuple[int, int]) -> None:
    assert parse_shard(text) == expected


@pytest.mark.parametrize(
    "text", ["1/1", "4/4", "-1/2", "1/0", "0/", "/2", "1/2/3", "a1/2", "x/2", "1"]
)
def test_a_shard_outside_0_to_n_minus_1_or_not_i_of_n_is_a_config_error(text: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_shard(text)
    assert str(caught.value) == (f"--shard must be I/N with 0 <= I < N (e.g. 0/4), got {text!r}")


# --- Id files: lines, comments, quotes, encodings, errors. ------------------------------------


def test_a_file_starting_with_a_blank_line_is_read_as_id_lines() -> None:
    assert _read("\nabc-1\nabc-2\n") == (["abc-1", "abc-2"], [])


def test_a_bad_line_after_leading_blank_lines_has_its_line_number_in_the_file() -> None:
    _, bad = _read("\n \n\t\nabc-1\nnot/an/id\n")
    assert [b.line for b in bad] == [5]


def test_a_file_of_only_blank_lines_has_no_ids() -> None:
    assert _read("\n  \n\t\r\n") == ([], [])


def test_an_empty_file_has_no_ids() -> None:
    assert _read("") == ([], [])


def test_a_comment_line_is_skipped() -> None:
    assert _read("# a1\n  # b2\nc3\n") == (["c3"], [])


def test_a_comment_after_an_id_and_a_space_is_skipped() -> None:
    """A ``#`` after an id and white space starts a comment, left out of the id."""
    assert _read("a1 # the first\na2  # the second\n") == (["a1", "a2"], [])


def test_a_hash_without_a_space_before_it_is_part_of_the_line() -> None:
    assert [b.line for b in _read("a1#b\n")[1]] == [1]


def test_an_id_in_quotes_with_spaces_inside_them_is_read() -> None:
    assert _read("\" a1 \"\n' b2'\n") == (["a1", "b2"], [])


def test_only_a_pair_of_quotes_is_a_blank_line() -> None:
    assert _read("\"\"\n''\na1\n") == (["a1"], [])


def test_ids_are_tracked_as_coming_from_a_file() -> None:
    got = list(read_ids_from(io.StringIO("a1\n"), "ids.txt", lambda b: None))
    assert got == [TrackedId("a1", "file")]


def test_a_bad_line_is_shown_as_source_line_and_reason() -> None:
    """A bad line prints as ``source:line: reason``."""
    assert str(BadLine("ids.txt", 3, "why")) == "ids.txt:3: why"


def test_an_id_line_of_exactly_the_limit_is_read() -> None:
    from etl.ids import MAX_LINE_CHARS

    line = "a" * 60 + " " * (MAX_LINE_CHARS - 60)
    assert _read(f"{line}\nb2\n") == (["a" * 60, "b2"], [])


def test_an_id_line_one_over_the_limit_is_rejected() -> None:
    from etl.ids import MAX_LINE_CHARS

    line = "a" * 60 + " " * (MAX_LINE_CHARS + 1 - 60)
    _, bad = _read(f"{line}\nb2\n")
    assert [(b.line, b.reason) for b in bad] == [
        (1, f"line longer than {MAX_LINE_CHARS} characters")
    ]


def test_ids_across_the_first_read_are_all_read_with_their_line_numbers() -> None:
    """The first 64 KiB are read ahead to tell the kind of file; lines across it stay whole."""
    lines = [f"id-{i:05}" for i in range(20_000)]  # 9 characters and a newline each
    lines[6_553] = "bad/line"  # bytes 65,530 to 65,539: across the first read
    ids, bad = _read("\n".join(lines) + "\n")
    assert ids == lines[:6_553] + lines[6_554:]
    assert [b.line for b in bad] == [6_554]


def test_a_file_with_invalid_utf8_has_that_line_rejected(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes(b"a1\nb\xff2\nc3\n")
    bad: list[BadLine] = []
    got = [t.id for t in read_ids(str(path), bad.append)]
    assert (got, [b.line for b in bad]) == (["a1", "c3"], [2])


def test_a_missing_id_file_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        read_ids("/nonexistent/ids.txt", lambda b: None)
    assert (
        str(caught.value) == "/nonexistent/ids.txt: cannot read id file (No such file or directory)"
    )


def test_stdin_bytes_are_read_as_utf8_with_invalid_bytes_rejecting_their_line(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    stdin = io.TextIOWrapper(
        io.BytesIO("a1\nb\xff2\nc\u00e9\n".encode("latin-1")), encoding="ascii"
    )
    monkeypatch.setattr("sys.stdin", stdin)
    bad: list[BadLine] = []
    got = [t.id for t in read_ids("-", bad.append)]
    assert (got, [(b.source, b.line) for b in bad]) == (["a1"], [("<stdin>", 2), ("<stdin>", 3)])


def test_stdin_without_a_byte_buffer_is_read_as_text(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO("a1\nb2\n"))
    assert [t.id for t in read_ids("-", lambda b: None)] == ["a1", "b2"]


class _Failing(io.StringIO):
    """A stream that fails like a disk or a pipe can: after ``good`` characters."""

    def __init__(self, text: str, error: Exception) -> None:
        super().__init__(text)
        self.error = error

    def read(self, size: int | None = -1) -> str:
        if self.tell() >= len(self.getvalue()):
            raise self.error
        return super().read(size)

    def readline(self, size: int = -1) -> str:  # type: ignore[override]  # text stream
        if self.tell() >= len(self.getvalue()):
            raise self.error
        return super().readline(size)


@pytest.mark.parametrize(
    ("error", "why"),
    [
        (OSError(5, "Input/output error"), "Input/output error"),
        (ValueError("I/O operation on closed file"), "I/O operation on closed file"),
        (OSError(), "OSError"),
    ],
)
def test_a_stream_that_fails_while_reading_is_a_one_line_config_error(
    error: Exception, why: str
) -> None:
    stream = _Failing("a1\n" * 30_000, error)  # more than the first read
    with pytest.raises(ConfigError) as caught:
        list(read_ids_from(stream, "ids.txt", lambda b: None))
    assert str(caught.value) == f"ids.txt: cannot read ({why})"


def test_a_stream_that_fails_at_once_is_a_one_line_config_error() -> None:
    with pytest.raises(ConfigError) as caught:
        list(read_ids_from(_Failing("", OSError(5, "Input/output error")), "x", lambda b: None))
    assert str(caught.value) == "x: cannot read (Input/output error)"


# --- Webhook events as JSON lines. -------------------------------------------------------------


def test_webhook_event_lines_with_blank_and_broken_lines_give_the_good_ids() -> None:
    """Blank, comment and broken lines among webhook event lines are skipped: the good ids are read."""
    text = f"{_event('a1')}\n\n   \n{{broken\n# a comment\n{_event('b2')}\n"
    assert _read(text)[0] == ["a1", "b2"]


def test_a_broken_webhook_event_line_is_reported_with_its_line_number() -> None:
    text = f"{_event('a1')}\n\n   \n{{broken\n# a comment\n{_event('b2')}\n"
    assert [(b.line, b.reason) for b in _read(text)[1]] == [(4, "not a JSON webhook event")]


def test_webhook_event_lines_after_leading_blank_lines_keep_their_line_numbers() -> None:
    _, bad = _read(f"\n\n{_event('a1')}\n{{}}\n")
    assert [(b.line, b.reason) for b in bad] == [(4, "webhook event without a ResourceUri")]


def test_ids_from_webhook_events_are_tracked_as_coming_from_a_webhook() -> None:
    got = list(read_ids_from(io.StringIO(_event("a1")), "e.jsonl", lambda b: None))
    assert got == [TrackedId("a1", "webhook")]


def test_a_webhook_event_line_over_the_limit_is_rejected_and_the_next_read() -> None:
    """A webhook event line over MAX_EVENT_CHARS fails alone, reported as too long."""
    from etl.ids import MAX_EVENT_CHARS

    huge = '{"ResourceUri": "https://h/referrals/big", "pad": "' + "p" * MAX_EVENT_CHARS + '"}'
    ids, bad = _read(f"{_event('a1')}\n{huge}\n{_event('b2')}\n")
    assert (
        ["a1", "b2"],
        [(2, f"webhook event longer than {MAX_EVENT_CHARS} characters")],
    ) == (ids, [(b.line, b.reason) for b in bad])


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("https://h/referrals/a1", "a1"),
        ("https://h/referrals/a1/", "a1"),
        ("  https://h/referrals/a1  ", "a1"),
        ("https://h/referrals/a1?expand=x/y", "a1"),
        (f"https://h/referrals/{GUID.upper()}", GUID),
        ("a1", "a1"),
    ],
)
def test_the_id_of_a_webhook_event_is_the_last_segment_of_its_resource_uri(
    uri: str, expected: str
) -> None:
    assert _read(json.dumps({"ResourceUri": uri}))[0] == [expected]


@pytest.mark.parametrize("uri", [None, 42, "", "   ", ["https://h/referrals/a1"]])
def test_a_webhook_event_without_a_resource_uri_string_is_reported(uri: object) -> None:
    _, bad = _read(f"{_event('a1')}\n{json.dumps({'ResourceUri': uri})}\n")
    assert [(b.line, b.reason) for b in bad] == [(2, "webhook event without a ResourceUri")]


def test_a_webhook_event_line_that_is_not_an_object_is_reported() -> None:
    _, bad = _read(f"{_event('a1')}\n[1]\n")
    assert [(b.line, b.reason) for b in bad] == [(2, "webhook event without a ResourceUri")]


def test_a_webhook_event_whose_uri_ends_in_no_valid_id_is_reported_with_the_reason() -> None:
    _, bad = _read(json.dumps({"ResourceUri": "https://h/referrals/a.b"}))
    assert [b.reason for b in bad] == [
        "webhook event: not a referral id: 'a.b' (expected a GUID or 1-64 letters, digits, - or _)"
    ]


# --- Webhook events as a JSON array, read in pieces (the streaming path). ---------------------


def _read_array(text: str) -> tuple[list[str], list[tuple[int, str]]]:
    ids, bad = _read(text)
    return ids, [(b.line, b.reason) for b in bad]


def test_an_event_array_spread_over_many_lines_and_reads_gives_every_id() -> None:
    """Pretty-printed, 300 KB: elements cross the 64 KiB reads."""
    events = [
        {"ResourceUri": f"https://h/referrals/id-{i}", "n": [i, {"x": "]}"}]} for i in range(3_000)
    ]
    assert _read_array(json.dumps(events, indent=4)) == ([f"id-{i}" for i in range(3_000)], [])


def test_a_broken_event_far_down_a_many_line_array_has_its_line_number() -> None:
    events = [json.dumps({"ResourceUri": f"https://h/referrals/id-{i}"}) for i in range(10_000)]
    events[9_000] = '{"ResourceUri":\n nope}'
    _, bad = _read_array("[\n" + ",\n".join(events) + "\n]")
    assert bad == [(9_003, "malformed webhook event (Expecting value)")]


@pytest.mark.parametrize("escape", ["\\u0061", '\\"', "\\\\"])
@pytest.mark.parametrize("offset", range(-6, 1))
def test_an_escape_across_two_64_kib_reads_is_kept_whole(escape: str, offset: int) -> None:
    head = '[{"ResourceUri": "https://h/referrals/a1", "pad": "'
    pad = "p" * (65_536 + offset - len(head))  # the escape starts -offset before the cut
    assert _read_array(f'{head}{pad}{escape}"}}, {_event("b2")}]') == (["a1", "b2"], [])


def test_an_escaped_quote_in_a_string_does_not_end_it() -> None:
    text = '[{"note": "say \\"]}\\" twice", "ResourceUri": "https://h/referrals/a1"}]'
    assert _read_array(text) == (["a1"], [])


def test_brackets_and_commas_inside_strings_are_text() -> None:
    """Brackets and commas inside JSON strings neither nest nor split the events of an array."""
    text = '[{"note": "[,{]}", "ResourceUri": "https://h/referrals/a1"}, ' + _event("b2") + "]"
    assert _read_array(text) == (["a1", "b2"], [])


def test_nested_objects_and_arrays_in_an_event_are_kept() -> None:
    """Objects and arrays nested in an array event stay inside it: its id is read."""
    text = '[{"a": [{"b": [1, [2]]}, {}], "ResourceUri": "https://h/referrals/a1"}]'
    assert _read_array(text) == (["a1"], [])


@pytest.mark.parametrize("text", ["[]", "[ ]", "[\n\n]", " \n[\n]\n"])
def test_an_empty_event_array_has_no_ids_and_no_errors(text: str) -> None:
    """An empty event array, however spaced over lines, is read as nothing."""
    assert _read_array(text) == ([], [])


def test_an_event_array_after_leading_blank_lines_keeps_its_line_numbers() -> None:
    assert _read_array(f"\n\n[\n{_event('a1')},\n{{}}\n]")[1] == [
        (5, "webhook event without a ResourceUri")
    ]


def test_a_raw_newline_inside_a_string_breaks_only_its_event() -> None:
    text = f'[\n{{"ResourceUri": "https://h/\nreferrals/a1"}},\n{_event("b2")}\n]'
    assert _read_array(text) == (
        ["b2"],
        [(2, "malformed webhook event (Invalid control character at)")],
    )


def test_the_line_of_an_event_after_a_string_with_a_raw_newline_is_right() -> None:
    text = '[\n{"x": "a\nb"},\n{}\n]'
    assert [line for line, _ in _read_array(text)[1]] == [2, 4]


def test_a_scalar_in_an_event_array_is_reported_on_its_line() -> None:
    assert _read_array(f"[\n{_event('a1')},\n42,\n{_event('b2')}\n]") == (
        ["a1", "b2"],
        [(3, "webhook event without a ResourceUri")],
    )


def test_a_string_in_an_event_array_is_reported_on_its_line() -> None:
    assert _read_array(f'[\n"text",\n{_event("b2")}\n]') == (
        ["b2"],
        [(2, "webhook event without a ResourceUri")],
    )


def test_a_scalar_last_in_an_event_array_is_reported() -> None:
    assert _read_array(f"[{_event('a1')}, 42]")[1] == [(1, "webhook event without a ResourceUri")]


def test_a_scalar_element_that_is_not_json_is_reported_as_malformed() -> None:
    assert _read_array(f"[{_event('a1')}, nope, {_event('b2')}]") == (
        ["a1", "b2"],
        [(1, "malformed webhook event (Expecting value)")],
    )


def test_an_event_array_cut_short_inside_an_event_keeps_the_events_before() -> None:
    assert _read_array(f'[{_event("a1")}, {{"ResourceUri": "https://h/refer') == (
        ["a1"],
        [(1, "malformed webhook event (Unterminated string starting at)")],
    )


def test_an_event_array_cut_short_after_a_scalar_reports_the_scalar() -> None:
    assert _read_array(f"[{_event('a1')}, 42") == (
        ["a1"],
        [(1, "webhook event without a ResourceUri")],
    )


def test_an_event_array_cut_short_between_events_says_so() -> None:
    assert _read_array(f"[{_event('a1')},\n") == (
        ["a1"],
        [(2, "the JSON array of webhook events ends without ]")],
    )


def test_a_uri_of_8192_characters_is_kept_whole() -> None:
    uri = "https://h/" + "x" * (8_192 - 13) + "/a1"
    assert _read_array(json.dumps([{"ResourceUri": uri}])) == (["a1"], [])


def test_a_uri_over_8192_characters_is_cut_and_never_becomes_an_id() -> None:
    """A URI over 8,192 characters is cut; what is left is reported, never read as an id."""
    uri = "https://h/" + "x" * (8_192 - 12) + "/a1"
    ids, bad = _read_array(json.dumps([{"ResourceUri": uri}]))
    assert (ids, [reason[:35] for _, reason in bad]) == (
        [],
        ["webhook event: not a referral id: '"],
    )


def test_an_escape_that_would_cross_the_string_limit_is_dropped_whole() -> None:
    pad = "p" * (8_192 - 2) + "\\u0041"
    text = f'[{{"pad": "{pad}", "ResourceUri": "https://h/referrals/a1"}}]'
    assert _read_array(text) == (["a1"], [])


def _padded_event(size: int) -> str:
    """An event of exactly ``size`` characters: spaces between its fields."""
    head, tail = '{"ResourceUri": "https://h/referrals/a1",', '"x": 1}'
    return head + " " * (size - len(head) - len(tail)) + tail


def test_an_array_event_of_exactly_the_limit_is_read() -> None:
    from etl.ids import MAX_EVENT_CHARS

    assert _read_array(f"[{_padded_event(MAX_EVENT_CHARS)}, {_event('b2')}]") == (["a1", "b2"], [])


def test_an_array_event_one_over_the_limit_is_rejected_and_the_next_read() -> None:
    """An array event one character over MAX_EVENT_CHARS fails alone, reported as too long."""
    from etl.ids import MAX_EVENT_CHARS

    assert (
        ["b2"],
        [(1, f"webhook event longer than {MAX_EVENT_CHARS} characters")],
    ) == _read_array(f"[{_padded_event(MAX_EVENT_CHARS + 1)}, {_event('b2')}]")


def test_an_event_after_an_over_long_one_is_measured_afresh() -> None:
    from etl.ids import MAX_EVENT_CHARS

    big, fits = _padded_event(MAX_EVENT_CHARS + 1), _padded_event(MAX_EVENT_CHARS)
    assert _read_array(f"[{big},\n{fits}]")[0] == ["a1"]


def test_a_stray_closing_brace_between_events_is_reported_on_its_line() -> None:
    assert _read_array(f"[{_event('a1')},\n}}\n{_event('b2')}]") == (
        ["a1", "b2"],
        [(2, "a stray } between events")],
    )


def test_two_event_arrays_one_after_the_other_are_both_read() -> None:
    assert _read_array(f"[{_event('a1')}]\n[{_event('b2')}]") == (["a1", "b2"], [])


def test_a_closed_stdin_says_what_to_do_instead(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", None)
    with pytest.raises(ConfigError) as caught:
        read_ids("-", lambda b: None)
    assert str(caught.value) == ("backfill -: standard input is closed; give a file or pipe ids in")


@pytest.fixture
def ascii_locale() -> Iterator[None]:
    """The process's character set is ASCII (LC_CTYPE=C) for the test."""
    before = locale.setlocale(locale.LC_CTYPE)
    locale.setlocale(locale.LC_CTYPE, "C")
    yield
    locale.setlocale(locale.LC_CTYPE, before)


@pytest.mark.usefixtures("ascii_locale")
def test_stdin_bytes_are_read_as_utf8_whatever_the_locale(monkeypatch: pytest.MonkeyPatch) -> None:
    stdin = io.TextIOWrapper(io.BytesIO("\ufeffa1\nb\u00e9\n".encode()), encoding="ascii")
    monkeypatch.setattr("sys.stdin", stdin)
    bad: list[BadLine] = []
    got = [t.id for t in read_ids("-", bad.append)]
    assert (got, [b.reason[:23] for b in bad]) == (["a1"], ["not a referral id: 'b\u00e9'"])


def test_a_bad_event_in_an_array_is_reported_with_the_files_name() -> None:
    bad: list[BadLine] = []
    list(read_ids_from(io.StringIO(f"[{_event('a1')}, 42, }}, nope"), "events.json", bad.append))
    assert [b.source for b in bad] == ["events.json"] * 3


def test_an_over_long_id_line_across_the_first_read_is_rejected_as_too_long() -> None:
    from etl.ids import MAX_LINE_CHARS

    head = "a1\n" + "x" * (65_536 - 1_000 - 3)  # the long line starts 1,000 before the cut
    ids, bad = _read(f"{head}{'x' * 5_000}\nb2\n")
    assert (ids, [(b.line, b.reason) for b in bad]) == (
        ["a1", "b2"],
        [(2, f"line longer than {MAX_LINE_CHARS} characters")],
    )


def test_a_last_id_line_of_exactly_the_limit_without_a_newline_is_read() -> None:
    from etl.ids import MAX_LINE_CHARS

    assert _read("b2\n" + "a" * 60 + " " * (MAX_LINE_CHARS - 60)) == (["b2", "a" * 60], [])


def test_a_comment_after_an_id_may_hold_another_hash() -> None:
    assert _read("a1 # see # 2\n") == (["a1"], [])


@pytest.mark.usefixtures("ascii_locale")
def test_an_id_file_is_read_as_utf8_whatever_the_locale(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_bytes("\ufeffa1\nb\u00e9\n".encode())
    bad: list[BadLine] = []
    got = [t.id for t in read_ids(str(path), bad.append)]
    assert (got, [b.reason[:23] for b in bad]) == (["a1"], ["not a referral id: 'b\u00e9'"])


def test_a_byte_order_mark_between_array_events_is_white_space() -> None:
    assert _read_array(f"[{_event('a1')},\ufeff {_event('b2')}]") == (["a1", "b2"], [])


def test_a_bad_line_of_an_id_file_is_reported_with_the_files_path(tmp_path: Path) -> None:
    path = tmp_path / "ids.txt"
    path.write_text("a1\nnot/an/id\n")
    bad: list[BadLine] = []
    list(read_ids(str(path), bad.append))
    assert [b.source for b in bad] == [str(path)]


def test_bad_webhook_event_lines_are_reported_with_the_files_name() -> None:
    from etl.ids import MAX_EVENT_CHARS

    text = f"{_event('a1')}\n{{broken\n{{}}\n{'{' + ' ' * MAX_EVENT_CHARS}\n"
    bad: list[BadLine] = []
    list(read_ids_from(io.StringIO(text), "events.jsonl", bad.append))
    assert [(b.source, b.line) for b in bad] == [
        ("events.jsonl", 2),
        ("events.jsonl", 3),
        ("events.jsonl", 4),
    ]


def test_an_over_long_id_line_is_reported_with_the_files_name() -> None:
    from etl.ids import MAX_LINE_CHARS

    bad: list[BadLine] = []
    list(read_ids_from(io.StringIO("x" * (MAX_LINE_CHARS + 1)), "ids.txt", bad.append))
    assert [b.source for b in bad] == ["ids.txt"]


def test_a_comment_indented_with_a_tab_is_skipped() -> None:
    assert _read("a1\n\t# a comment\n") == (["a1"], [])


_EXPECTED = "(expected a GUID or 1-64 letters, digits, - or _)"


def test_a_uri_with_escapes_is_cut_at_8192_characters_counted_across_its_pieces() -> None:
    """Escapes split a string into pieces; the limit counts them all."""
    uri = "https://h/" + "x" * 4_000 + "\\/" + "y" * 4_000 + "\\/" + "z" * 300 + "/a1"
    assert [b.reason[:46] for b in _read(f'[{{"ResourceUri": "{uri}"}}]')[1]] == [
        "webhook event: not a referral id: '" + "z" * 11
    ]


def test_a_uri_cut_short_shows_its_last_segment_and_the_cut_mark() -> None:
    """A cut URI is reported by its last segment, shown cut to 77 characters and '...'."""
    uri = "https://h/" + "x" * 8_200
    assert [f"webhook event: not a referral id: {'x' * 77 + '...'!r} {_EXPECTED}"] == [
        b.reason for b in _read(f'[{{"ResourceUri": "{uri}"}}]')[1]
    ]


def test_a_uri_whose_escape_would_cross_the_limit_ends_before_the_escape() -> None:
    uri = "https://h/" + "p" * (8_192 - 10 - 4) + "/abc" + "\\u0041"
    assert [b.reason for b in _read(f'[{{"ResourceUri": "{uri}"}}]')[1]] == [
        f"webhook event: not a referral id: 'abc\u2026' {_EXPECTED}"
    ]


def test_an_over_large_array_event_is_reported_with_the_files_name() -> None:
    from etl.ids import MAX_EVENT_CHARS

    bad: list[BadLine] = []
    text = f"[{_padded_event(MAX_EVENT_CHARS + 1)}]"
    list(read_ids_from(io.StringIO(text), "events.json", bad.append))
    assert [b.source for b in bad] == ["events.json"]


def test_an_array_event_nested_too_deeply_to_parse_is_malformed() -> None:
    bad: list[BadLine] = []
    text = f"[\n{_event('a1')},\n{'[' * 100_000 + ']' * 100_000}]"
    list(read_ids_from(io.StringIO(text), "events.json", bad.append))
    assert [(b.source, b.line, b.reason) for b in bad] == [
        ("events.json", 3, "malformed webhook event")
    ]


def test_an_id_ending_in_x_before_a_trailing_slash_keeps_its_x() -> None:
    assert _read(json.dumps({"ResourceUri": "https://h/referrals/ABX/"})) == (["ABX"], [])


def test_a_webhook_event_with_an_invalid_id_is_reported_with_the_files_name_and_line() -> None:
    """A webhook event line whose id is invalid is reported at its file's name and line."""
    bad: list[BadLine] = []
    text = f"{_event('a1')}\n{_event('a.b')}\n"
    list(read_ids_from(io.StringIO(text), "events.jsonl", bad.append))
    assert [(b.source, b.line) for b in bad] == [("events.jsonl", 2)]


def test_each_bad_line_is_reported_once() -> None:
    reported: list[BadLine] = []

    def on_error(bad: BadLine) -> None:
        if reported:
            raise AssertionError(f"reported again: {bad}")
        reported.append(bad)

    list(read_ids_from(io.StringIO("a1\nnot/an/id\n"), "ids.txt", on_error))
    assert [b.line for b in reported] == [2]


class _EndsOnce(io.StringIO):
    """A stream that fails the test when read on and on after its end."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.reads_at_end = 0

    def readline(self, size: int = -1) -> str:  # type: ignore[override]  # text stream
        line = super().readline(size)
        self.reads_at_end += not line
        if self.reads_at_end > 3:
            raise AssertionError("read again and again after the end")
        return line


class _Recording(io.StringIO):
    """A stream that records the size of every read asked of it."""

    def __init__(self, text: str) -> None:
        super().__init__(text)
        self.sizes: list[int | None] = []

    def read(self, size: int | None = -1) -> str:
        self.sizes.append(size)
        return super().read(size)


def test_a_stream_is_read_in_pieces_of_64_kib_never_whole() -> None:
    """Memory stays bounded whatever the file's size (the `slow` 200 MB test measures it)."""
    stream = _Recording("[" + ",".join([_event("a1")] * 5_000) + "]")  # about 250 KB
    list(read_ids_from(stream, "events.json", lambda b: None))
    assert {65_536} == set(stream.sizes)


def test_reading_stops_at_the_end_after_an_over_long_last_line() -> None:
    from etl.ids import MAX_LINE_CHARS

    bad: list[BadLine] = []
    list(read_ids_from(_EndsOnce("a1\n" + "x" * (MAX_LINE_CHARS * 20)), "ids.txt", bad.append))
    assert [b.line for b in bad] == [2]


def test_a_raw_newline_just_before_a_closing_quote_still_ends_the_string() -> None:
    assert [line for line, _ in _read_array('[\n{"x": "a\n"},\n{}\n]')[1]] == [2, 4]


def test_an_event_array_cut_short_inside_an_escape_is_malformed_there() -> None:
    assert _read_array('[{"ResourceUri": "a\\u00') == (
        [],
        [(1, "malformed webhook event (Invalid \\uXXXX escape)")],
    )


def test_an_unterminated_event_array_is_reported_with_the_files_name() -> None:
    bad: list[BadLine] = []
    list(read_ids_from(io.StringIO(f"[{_event('a1')},"), "events.json", bad.append))
    assert [b.source for b in bad] == ["events.json"]
