"""Id sources: files, stdin, webhook events; bad lines reported with their number; shards."""

from __future__ import annotations

import io
import json
import subprocess
import sys
from pathlib import Path

import pytest

from etl.errors import ConfigError, InvalidIdError
from etl.ids import BadLine, TrackedId, canonical_id, in_shard, parse_shard, read_ids, read_ids_from

GUID = "c5fbb3b6-be74-4795-9fb5-4324c73fed37"


def _read(text: str) -> tuple[list[str], list[BadLine]]:
    bad: list[BadLine] = []
    ids = [t.id for t in read_ids_from(io.StringIO(text), "ids.txt", bad.append)]
    return ids, bad


def test_id_lines_with_comments_quotes_and_bad_lines() -> None:
    ids, bad = _read(f"# header\n\n  \"{GUID.upper()}\"  \n'abc-1'\nabc/../x\nok_2  # why\n..\n")
    assert ids == [GUID, "abc-1", "ok_2"]
    assert [(b.line, b.source) for b in bad] == [(5, "ids.txt"), (7, "ids.txt")]
    assert "not a referral id: 'abc/../x'" in str(bad[0])


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


def test_webhook_events_as_json_lines_and_array(tmp_path: Path) -> None:
    events = [
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
    lines = tmp_path / "events.jsonl"
    lines.write_text("\n".join(json.dumps(e) for e in events) + "\n")
    array = tmp_path / "events.json"
    array.write_text(json.dumps(events, indent=2))
    for path in (lines, array):
        bad: list[BadLine] = []
        got = list(read_ids(str(path), bad.append))
        assert [(t.id, t.source) for t in got] == [(GUID, "webhook"), ("other-1", "webhook")]
        assert len(bad) == 1 and "without a ResourceUri" in bad[0].reason


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


def test_stdin_and_missing_file() -> None:
    got = [t.id for t in read_ids("-", lambda b: None, stdin=io.StringIO("a1\nb2\n"))]
    assert got == ["a1", "b2"]
    with pytest.raises(ConfigError, match="cannot read id file"):
        list(read_ids("/nonexistent/ids.txt", lambda b: None))


def test_shards_are_disjoint_and_complete() -> None:
    ids = [TrackedId(f"id-{i}", "file") for i in range(10_000)]
    shards = [{t.id for t in in_shard(ids, (i, 4))} for i in range(4)]
    assert sum(len(s) for s in shards) == 10_000
    assert set().union(*shards) == {t.id for t in ids}
    assert all(1_500 < len(s) < 3_500 for s in shards)
    assert parse_shard("2/4") == (2, 4)
    for text in ("4/4", "x/2", "1"):
        with pytest.raises(ConfigError):
            parse_shard(text)


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


def test_a_malformed_event_in_an_array_fails_alone_and_the_next_are_read() -> None:
    bad: list[BadLine] = []
    text = (
        f'[\n  {_event("a1")},\n  {{"ResourceUri": nope}},\n  {{"x": [1, 2}}]}},\n'
        f'  {_event("b2")}, 42, "text",\n  {{"ResourceUri": "https://h/referrals/c3"}}\n]\n'
    )
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    assert got == ["a1", "b2", "c3"]
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


def test_an_over_long_id_line_is_rejected_and_the_next_lines_read() -> None:
    from etl.ids import MAX_LINE_CHARS

    ids, bad = _read(f"a1\n{'x' * (MAX_LINE_CHARS * 40)}\nb2\n{'y' * MAX_LINE_CHARS}\nc3")
    assert ids == ["a1", "b2", "c3"]
    assert [(b.line, b.reason) for b in bad] == [
        (2, f"line longer than {MAX_LINE_CHARS} characters"),
        (
            4,
            "not a referral id: " + repr("y" * 77 + "...") + " (expected a GUID or 1-64 "
            "letters, digits, - or _)",
        ),
    ]


def test_an_event_with_a_huge_field_keeps_its_id_and_a_cut_uri_never_becomes_an_id() -> None:
    bad: list[BadLine] = []
    huge = {"ResourceUri": "https://h/referrals/big-1", "padding": "p" * 3_000_000}
    cut = {"ResourceUri": "https://h/referrals/" + "z" * 20_000}
    text = f"[{json.dumps(huge)}, {json.dumps(cut)}, {_event('after')}]"
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    assert got == ["big-1", "after"]
    assert len(bad) == 1 and "not a referral id" in bad[0].reason


def test_deeply_nested_and_over_large_events_fail_alone() -> None:
    bad: list[BadLine] = []
    deep = "[" * 100_000 + "]" * 100_000
    many = "[" + ",".join(["1"] * 600_000) + "]"
    text = f"[{deep},\n{_event('a1')},\n{many},\n{_event('b2')}]"
    got = [t.id for t in read_ids_from(io.StringIO(text), "events.json", bad.append)]
    assert got == ["a1", "b2"]
    assert [b.line for b in bad] == [1, 3]
    assert "longer than" in bad[1].reason
    lines = f'{{"x": {deep}}}\n{_event("c3")}\n'
    bad = []
    got = [t.id for t in read_ids_from(io.StringIO(lines), "events.jsonl", bad.append)]
    assert got == ["c3"]
    assert [(b.line, b.reason) for b in bad] == [(1, "not a JSON webhook event")]


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
    assert ids == ["a1"] and [b.line for b in bad] == [70_002]
