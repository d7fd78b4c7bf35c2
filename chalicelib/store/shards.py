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


def page(
    prefix: str,
    query: Callable[[str, dict[str, Any] | None], tuple[list[tuple[Any, dict[str, Any], T]], bool]],
    cursor: str | None,
    limit: int,
    *,
    reverse: bool = False,
) -> tuple[list[T], str | None]:
    """One page over every shard in sort order, with a cursor that remembers where each shard is.

    `query(partition, start_key)` returns up to `limit` (sort value, item key, row) of that
    partition after `start_key`, and whether the partition has more."""
    positions = decode_positions(cursor)
    candidates: list[tuple[Any, str, dict[str, Any], T]] = []
    more: dict[str, bool] = {}
    with ThreadPoolExecutor(max_workers=SHARDS) as pool:
        partitions = [p for p in keys(prefix) if positions.get(p) != "done"]

        def read(partition: str) -> tuple[str, list[tuple[Any, dict[str, Any], T]], bool]:
            start = positions.get(partition)
            rows, has_more = query(partition, start if isinstance(start, dict) else None)
            return partition, rows, has_more

        for partition, rows, has_more in pool.map(read, partitions):
            more[partition] = has_more
            candidates += [(sort, partition, item_key, row) for sort, item_key, row in rows]
    candidates.sort(key=lambda c: c[0], reverse=reverse)
    taken = candidates[:limit]
    after = dict(positions)
    for _, partition, item_key, _ in taken:
        after[partition] = item_key
    for partition in more:
        used = sum(1 for c in candidates if c[1] == partition)
        took = sum(1 for c in taken if c[1] == partition)
        if took == used and not more[partition]:
            after[partition] = "done"
    finished = all(after.get(p) == "done" for p in keys(prefix))
    return [row for *_, row in taken], None if finished or not taken else encode_positions(after)


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
