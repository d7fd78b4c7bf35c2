"""Sharded index partitions: items spread over the shards, read back merged in index order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib.errors import InvalidInput
from chalicelib.store import shards
from tests.envutil import environ

pytestmark = pytest.mark.unit


@pytest.fixture(autouse=True, scope="module")
def signing_key() -> Iterator[None]:
    """Cursors are signed with a key derived from the JWT secret."""
    from chalicelib.settings import get_settings

    env = {"TABLE_PREFIX": "unit", "JWT_SECRET": "unit-secret-0123456789abcdef", "WECHAT_MODE": "sandbox"}
    with environ(env):
        get_settings.cache_clear()
        yield
    get_settings.cache_clear()


def fake_index(items: list[tuple[str, str]]) -> dict[str, list[tuple[str, str]]]:
    """(sort value, item key) items in their partitions, each sorted like a DynamoDB index."""
    partitions: dict[str, list[tuple[str, str]]] = {p: [] for p in shards.keys("t#s")}
    for sort, key in items:
        partitions[shards.key("t#s", key)].append((sort, key))
    return {p: sorted(rows) for p, rows in partitions.items()}


items_strategy = st.lists(
    st.tuples(st.text("0123456789", min_size=4, max_size=4), st.text("abcdef", min_size=1, max_size=6)),
    unique_by=lambda x: x[1],
    max_size=60,
)


def test_an_item_always_lands_in_the_same_shard() -> None:
    assert shards.key("wx#frozen", "wx#u1#o1#1#paid") == shards.key("wx#frozen", "wx#u1#o1#1#paid")
    assert {shards.shard_of(f"item{i}") for i in range(200)} == set(range(shards.SHARDS))


@settings(max_examples=60, deadline=None)
@given(items=items_strategy, limit=st.integers(1, 7), reverse=st.booleans())
def test_pages_over_the_shards_list_every_item_once_in_order(
    items: list[tuple[str, str]], limit: int, reverse: bool
) -> None:
    index = fake_index(items)

    def query(partition: str, start: dict[str, Any] | None) -> tuple[list[tuple[Any, dict[str, Any], str]], bool]:
        rows = index[partition][::-1] if reverse else index[partition]
        if start is not None:
            at = rows.index((start["sort"], start["key"]))
            rows = rows[at + 1 :]
        page = rows[:limit]
        return [((s, k), {"sort": s, "key": k}, k) for s, k in page], len(rows) > limit

    seen: list[str] = []
    cursor: str | None = None
    for _ in range(len(items) + 2):
        page, cursor = shards.page("t#s", query, cursor, limit, reverse=reverse)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            break
    expected = [k for _, k in sorted(items, reverse=reverse)]
    assert seen == expected


def test_first_takes_the_earliest_over_every_shard() -> None:
    index = fake_index([(f"{i:04d}", f"k{i}") for i in range(40)])
    first = shards.first("t#s", lambda p: index[p][:5], lambda row: row, 5)
    assert [k for _, k in first] == ["k0", "k1", "k2", "k3", "k4"]


def test_a_broken_cursor_is_a_bad_request() -> None:
    with pytest.raises(InvalidInput):
        shards.page("t#s", lambda p, s: ([], False), "not-a-cursor!", 10)
