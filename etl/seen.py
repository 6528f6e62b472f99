"""The ids a run has already taken, as an exact set of their 64-bit hashes in 16-32 bytes each.

A run fetches each id once however often it is given (issue 10), so the feeder remembers every
id it has taken. A Python ``set`` of the hashes costs ~75 bytes an id (an int object each, and
the set's own table): 7.5 MB per 100,000 ids, the largest part of a run's memory that grows with
its size. :class:`SeenHashes` keeps the same hashes in one ``array('q')`` table, open addressing
with linear probing, never more than half full. Two ids with the same 64-bit hash count as one
(about one chance in 10^9 for a million ids), as they did in the set.
"""

from __future__ import annotations

from array import array


class SeenHashes:
    """A growing set of 64-bit integers (``hash()`` of the ids); ``add`` says if it was new."""

    __slots__ = ("_count", "_mask", "_table")

    def __init__(self, capacity: int = 1024) -> None:
        size = 2
        while size < 2 * capacity:
            size *= 2
        self._table = array("q", bytes(8 * size))
        self._mask = size - 1
        self._count = 0

    def __len__(self) -> int:
        return self._count

    def add(self, value: int) -> bool:
        """Remember ``value``; False when it was remembered already."""
        key = value or 1  # 0 marks an empty slot: the hash 0 shares its slot with 1
        table, mask = self._table, self._mask
        slot = key & mask
        while (held := table[slot]) != 0:
            if held == key:
                return False
            slot = (slot + 1) & mask
        table[slot] = key
        self._count += 1
        if 2 * self._count > len(table):
            self._grow()
        return True

    def _grow(self) -> None:
        old = self._table
        size = 2 * len(old)
        table = array("q", bytes(8 * size))
        mask = size - 1
        for key in old:
            if key:
                slot = key & mask
                while table[slot] != 0:
                    slot = (slot + 1) & mask
                table[slot] = key
        self._table, self._mask = table, mask
