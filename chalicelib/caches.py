"""Process caches: one registry, so whoever changes the environment forgets them all at once.

A Lambda execution environment keeps module state between invocations; the package caches
there what is costly to build or read again: the settings, the store, the WeChat clients, tenants,
share codes, plan versions, recent upline walks. Each cache registers itself where it is defined,
either as a function memoized with `cached` (an `lru_cache` that registers its `cache_clear`) or
as a mapping handed to `register`. `clear_all()` empties every registered cache: tests and the
local tools call it after pointing the app at other tables, never reaching into private names.

Memoized pure functions of their arguments (a parsed key, a dummy password hash) are not caches
of the environment and stay plain `lru_cache`.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

if TYPE_CHECKING:
    from functools import _lru_cache_wrapper

T = TypeVar("T")


class Clearable(Protocol):
    def clear(self) -> None: ...


C = TypeVar("C", bound=Clearable)

_mappings: dict[str, Clearable] = {}
_functions: dict[str, _lru_cache_wrapper[Any]] = {}


def register(name: str, cache: C) -> C:
    """Register a cache that has `clear()` (a dict, an OrderedDict) under `name`, by convention
    `<module>.<variable>` (`caches.register(f"{__name__}._cache", {})`); return it."""
    _mappings[name] = cache
    return cache


def cached(maxsize: int | None = 128) -> Callable[[Callable[..., T]], _lru_cache_wrapper[T]]:
    """`functools.lru_cache(maxsize)` whose cache is registered under the function's dotted name."""

    def decorate(function: Callable[..., T]) -> _lru_cache_wrapper[T]:
        wrapper = lru_cache(maxsize=maxsize)(function)
        _functions[f"{function.__module__}.{function.__qualname__}"] = wrapper
        return wrapper

    return decorate


def registered() -> dict[str, object]:
    """Every registered cache by name (a mapping, or a memoized function)."""
    return {**_mappings, **_functions}


def clear_all() -> None:
    """Empty every registered cache (after the environment, the tables or the clock changed)."""
    for function in list(_functions.values()):
        function.cache_clear()
    for mapping in list(_mappings.values()):
        mapping.clear()
