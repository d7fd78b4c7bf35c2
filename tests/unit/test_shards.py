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


def fake_read(index: dict[str, list[tuple[str, str]]], reverse: bool, keep: set[str] | None = None) -> Any:
    """A shard read as DynamoDB answers one query page: `room` items looked at (in index order,
    after the start key), those the filter keeps (`keep`: all) returned, and the last one looked
    at as where the reading stopped when the partition has more."""

    def read(partition: str, start: dict[str, Any] | None, room: int) -> tuple[list[Any], Any]:
        rows = index[partition][::-1] if reverse else index[partition]
        if start is not None:
            rows = rows[rows.index((start["sort"], start["key"])) + 1 :]
        looked = rows[:room]
        kept = [((s, k), {"sort": s, "key": k}, k) for s, k in looked if keep is None or k in keep]
        stop = looked[-1] if len(rows) > room else None
        return kept, ({"sort": stop[0], "key": stop[1]}, stop) if stop else None

    return read


def read_all(read: Any, limit: int, reverse: bool, pages: int) -> list[str]:
    seen: list[str] = []
    cursor: str | None = None
    for _ in range(pages):
        page, cursor = shards.page("t#s", read, cursor, limit, reverse=reverse)
        assert len(page) <= limit
        seen += page
        if cursor is None:
            return seen
    raise AssertionError(f"the list did not end in {pages} pages")


@settings(max_examples=60, deadline=None)
@given(items=items_strategy, limit=st.integers(1, 7), reverse=st.booleans())
def test_pages_over_the_shards_list_every_item_once_in_order(
    items: list[tuple[str, str]], limit: int, reverse: bool
) -> None:
    seen = read_all(fake_read(fake_index(items), reverse), limit, reverse, len(items) + 2)
    assert seen == [k for _, k in sorted(items, reverse=reverse)]


@settings(max_examples=100, deadline=None)
@given(data=st.data(), items=items_strategy, limit=st.integers(1, 7), reverse=st.booleans())
def test_a_filter_that_drops_whole_reads_neither_ends_the_list_early_nor_breaks_its_order(
    data: st.DataObject, items: list[tuple[str, str]], limit: int, reverse: bool
) -> None:
    keep = set(data.draw(st.lists(st.sampled_from([k for _, k in items]), unique=True)) if items else [])
    seen = read_all(fake_read(fake_index(items), reverse, keep), limit, reverse, 2 * len(items) + 2)
    assert seen == [k for _, k in sorted(items, reverse=reverse) if k in keep]


def test_a_cursor_of_another_list_is_refused() -> None:
    index = fake_index([(f"{i:04d}", f"k{i}") for i in range(40)])
    _, cursor = shards.page("t#s", fake_read(index, False), None, 3)
    with pytest.raises(InvalidInput) as raised:
        shards.page("t#other", fake_read(index, False), cursor, 3)
    assert raised.value.code == "invalid_cursor"


def test_first_takes_the_earliest_over_every_shard() -> None:
    index = fake_index([(f"{i:04d}", f"k{i}") for i in range(40)])
    first = shards.first("t#s", lambda p: index[p][:5], lambda row: row, 5)
    assert [k for _, k in first] == ["k0", "k1", "k2", "k3", "k4"]


def test_a_broken_cursor_is_a_bad_request() -> None:
    with pytest.raises(InvalidInput):
        shards.page("t#s", lambda p, s, room: ([], None), "not-a-cursor!", 10)
