"""Id sources: files, stdin, webhook events; bad lines reported with their number; shards."""

from __future__ import annotations

import io
import json
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
        (3, "the JSON array of webhook events is malformed here")
    ]
