"""Sharded index partitions: `tenant#<name>#<n>` instead of one `tenant#<name>` key.

One GSI partition takes about 1,000 writes a second. The sparse "work to do" indexes (frozen
lines, paid orders waiting for receipt, orders waiting for WeChat, withdrawals by state) are
written on every order or line of a tenant, so a big tenant would throttle on one key. Each item
goes to one of `SHARDS` partitions by a hash of its own key (stable: an item never changes
shard), and readers query every shard at once and merge them by the index's sort key.
"""

from __future__ import annotations

import heapq
import itertools
import json
import zlib
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from chalicelib.errors import InvalidInput
from chalicelib.store.base import seal, unseal

SHARDS = 8
T = TypeVar("T")


def shard_of(item_key: str) -> int:
    return zlib.crc32(item_key.encode()) % SHARDS


def key(prefix: str, item_key: str) -> str:
    """The index partition of an item: `<prefix>#<n>` (prefix is e.g. `tenant#frozen`)."""
    return f"{prefix}#{shard_of(item_key)}"


def keys(prefix: str) -> list[str]:
    return [f"{prefix}#{n}" for n in range(SHARDS)]


def first(prefix: str, query: Callable[[str], Iterable[T]], sort_key: Callable[[T], Any], limit: int) -> list[T]:
    """The first `limit` items over every shard by `sort_key`: each shard's first page is read
    at the same time (`query(partition)` returns at most `limit` items, in index order)."""
    with ThreadPoolExecutor(max_workers=SHARDS) as pool:
        pages = list(pool.map(lambda partition: list(query(partition)), keys(prefix)))
    return list(itertools.islice(heapq.merge(*pages, key=sort_key), limit))


def merged(prefix: str, pages: Callable[[str], Iterator[T]], sort_key: Callable[[T], Any]) -> Iterator[T]:
    """Every item of every shard, in `sort_key` order, reading each shard lazily (flat memory)."""
    return heapq.merge(*(pages(partition) for partition in keys(prefix)), key=sort_key)


Row = tuple[Any, dict[str, Any], T]  # (sort value, the item's index key, what the page shows)
Stop = tuple[dict[str, Any], Any]  # (the last index key a read looked at, its sort value)
# A shard read: at most `room` rows after `start_key`, in index order, and where the reading
# stopped (None: the shard has no more). A read may return fewer rows than it looked at (a filter).
ShardRead = Callable[[str, dict[str, Any] | None, int], tuple[list[Row[T]], Stop | None]]
MAX_READS = 4  # reads of one shard per page, when a filter keeps too little of each


def page(
    prefix: str, read: ShardRead[T], cursor: str | None, limit: int, *, reverse: bool = False
) -> tuple[list[T], str | None]:
    """One page over every shard in sort order (descending with `reverse`), with a signed cursor
    that remembers where each shard is.

    Each shard reads (up to `MAX_READS` times) until it has `limit` rows or runs out, and remembers
    where its *reading* stopped, not only its last row: a filter may drop a whole read. A shard that
    stopped with more to read has not looked beyond its stop (its frontier), so a row of another
    shard beyond the nearest frontier waits for a later page and the merged order holds across
    pages. A page may thus hold fewer than `limit` rows (even none) while the cursor is set; every
    page moves at least one shard forward."""
    partitions = keys(prefix)
    positions = decode_positions(cursor)
    if any(p not in partitions for p in positions):
        raise InvalidInput("cursor does not belong to this list", code="invalid_cursor")
    live = [p for p in partitions if positions.get(p) != "done"]
    with ThreadPoolExecutor(max_workers=SHARDS) as pool:
        reads = dict(zip(live, pool.map(lambda p: _scan(read, p, positions.get(p), limit), live), strict=True))
    candidates = [(sort, p, item_key, row) for p, (rows, _) in reads.items() for sort, item_key, row in rows]
    frontiers = [stop[1] for _, stop in reads.values() if stop is not None]
    if frontiers:
        frontier = max(frontiers) if reverse else min(frontiers)
        candidates = [c for c in candidates if (c[0] >= frontier if reverse else c[0] <= frontier)]
    candidates.sort(key=lambda c: c[0], reverse=reverse)
    taken = candidates[:limit]
    after = dict(positions)
    for partition, (rows, stop) in reads.items():
        mine = [c for c in taken if c[1] == partition]
        if len(mine) == len(rows):  # all it read is used: continue where the reading stopped
            after[partition] = stop[0] if stop is not None else "done"
        elif mine:  # continue after the last row used (the others are read again)
            after[partition] = mine[-1][2]
    finished = all(after.get(p) == "done" for p in partitions)
    return [row for *_, row in taken], None if finished else encode_positions(after)


def _scan(read: ShardRead[T], partition: str, start: Any, limit: int) -> tuple[list[Row[T]], Stop | None]:
    if start is not None and not isinstance(start, dict):
        raise InvalidInput("cursor is not valid", code="invalid_cursor")
    found: list[Row[T]] = []
    stop: Stop | None = None
    for _ in range(MAX_READS):
        rows, stop = read(partition, start, limit - len(found))
        found += rows
        if stop is None or len(found) >= limit:
            break
        start = stop[0]
    return found, stop


def encode_positions(positions: dict[str, Any]) -> str:
    return seal(zlib.compress(json.dumps(positions, separators=(",", ":"), sort_keys=True).encode()))


def decode_positions(cursor: str | None) -> dict[str, Any]:
    """The shards' positions in a cursor made by `_encode` (signed: a crafted one is refused)."""
    if not cursor:
        return {}
    try:
        positions = json.loads(zlib.decompress(unseal(cursor)))
    except (ValueError, zlib.error, UnicodeDecodeError) as exc:
        raise InvalidInput("cursor is not valid", code="invalid_cursor") from exc
    if not isinstance(positions, dict):
        raise InvalidInput("cursor is not valid", code="invalid_cursor")
    return positions
