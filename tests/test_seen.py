"""etl/seen.py: the feeder's exact set of id hashes."""

from __future__ import annotations

import random

from etl.seen import SeenHashes


def test_a_new_value_is_added_and_reported_new() -> None:
    """add() answers True for a value not seen before."""
    assert SeenHashes().add(12345) is True


def test_a_value_seen_before_is_reported_old() -> None:
    """add() answers False for a value already added."""
    seen = SeenHashes()
    seen.add(12345)
    assert seen.add(12345) is False


def test_membership_survives_the_table_growing_many_times() -> None:
    """50,000 random 64-bit values (from a table sized for 4): each new once, then each old."""
    rng = random.Random(7)
    values = list({rng.getrandbits(64) - 2**63 for _ in range(50_000)})
    seen = SeenHashes(capacity=4)
    firsts = [seen.add(v) for v in values]
    again = [seen.add(v) for v in values]
    assert (firsts.count(True), again.count(False), len(seen)) == (len(values),) * 3


def test_values_that_share_their_low_bits_are_kept_apart() -> None:
    """Values equal modulo the table size probe to different slots, and none is lost."""
    values = [7 + k * 2**20 for k in range(300)]
    seen = SeenHashes(capacity=4)
    for v in values:
        seen.add(v)
    assert [seen.add(v) for v in values] == [False] * 300


def test_zero_is_a_value_like_any_other() -> None:
    """The hash 0 (the empty slot's mark) is remembered: a second add of it is old."""
    seen = SeenHashes()
    seen.add(0)
    assert seen.add(0) is False


def test_negative_values_are_remembered() -> None:
    """hash() is signed: a negative value is added and then reported old."""
    seen = SeenHashes()
    seen.add(-(2**63))
    assert seen.add(-(2**63)) is False


def test_the_count_is_the_number_of_distinct_values() -> None:
    """len() counts each distinct value once."""
    seen = SeenHashes()
    for v in (1, 2, 2, 3, 3, 3):
        seen.add(v)
    assert len(seen) == 3
