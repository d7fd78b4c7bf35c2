"""Binding rules (分销关系绑定): pure functions over uplines, no I/O.

A user's upline is the tuple ``(l1, l2, l3)`` of the promoters above them, copied from the
parent when the binding is made. It never holds more than three ids, so a fourth level of
commission cannot exist anywhere: there is nowhere to store it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum

MAX_LEVELS = 3
MAX_HOPS = 200  # ancestors walked three at a time: 600 generations, far beyond any real tree


class BindStatus(StrEnum):
    BOUND = "bound"
    ALREADY_BOUND = "already_bound"
    REJECTED = "rejected"


class RejectReason(StrEnum):
    SELF_BINDING = "self_binding"
    CYCLE = "cycle"
    SAME_PARENT = "same_parent"
    TREE_TOO_DEEP = "tree_too_deep"


@dataclass(frozen=True, slots=True)
class Node:
    """What the rules need to know about a user: their id and their upline."""

    id: str
    upline: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if len(self.upline) > MAX_LEVELS:
            raise ValueError("an upline holds at most three levels")

    @property
    def parent(self) -> str | None:
        """The level-1 upline, if any."""
        return self.upline[0] if self.upline else None


@dataclass(frozen=True, slots=True)
class Decision:
    """The outcome of a scan or a rebind: the new upline when it binds."""

    status: BindStatus
    upline: tuple[str, ...] = ()
    reason: RejectReason | None = None


@dataclass(frozen=True, slots=True)
class Ancestry:
    """Every ancestor of a node, nearest first, and the nodes read to learn them (the hops)."""

    ancestors: tuple[str, ...]
    hops: tuple[Node, ...]
    complete: bool = True


def upline_below(parent: Node) -> tuple[str, ...]:
    """The upline a direct child of `parent` receives: the parent, then its first two levels."""
    return (parent.id, *parent.upline)[:MAX_LEVELS]


def next_hop(node: Node) -> str | None:
    """The ancestor to read next when walking up: the level-3 id when the upline is full."""
    return node.upline[-1] if len(node.upline) == MAX_LEVELS else None


def walk_ancestry(start: Node, load: Callable[[str], Node | None]) -> Ancestry:
    """All ancestors of `start`, reading one node per three generations through `load`.

    A node missing from `load` ends the walk (its ancestors are unknown and treated as none).
    """
    ancestors: list[str] = list(start.upline)
    hops: list[Node] = [start]
    seen = {start.id}
    node = start
    for _ in range(MAX_HOPS):
        hop_id = next_hop(node)
        if hop_id is None or hop_id in seen:
            return Ancestry(tuple(ancestors), tuple(hops))
        loaded = load(hop_id)
        if loaded is None:
            return Ancestry(tuple(ancestors), tuple(hops))
        seen.add(hop_id)
        hops.append(loaded)
        ancestors.extend(loaded.upline)
        node = loaded
    return Ancestry(tuple(ancestors), tuple(hops), complete=False)


def decide_scan(user: Node, sharer: Node, sharer_ancestry: Ancestry) -> Decision:
    """A scan of `sharer`'s code by `user`: first touch wins, no self-binding, no cycles."""
    if user.upline:
        return Decision(BindStatus.ALREADY_BOUND, upline=user.upline)
    return _decide_parent(user, sharer, sharer_ancestry)


def decide_rebind(user: Node, new_parent: Node, parent_ancestry: Ancestry) -> Decision:
    """An operator moving `user` under `new_parent`: same rules, and a real change is required."""
    if user.parent == new_parent.id:
        return Decision(BindStatus.REJECTED, reason=RejectReason.SAME_PARENT)
    return _decide_parent(user, new_parent, parent_ancestry)


def _decide_parent(user: Node, parent: Node, ancestry: Ancestry) -> Decision:
    if user.id == parent.id:
        return Decision(BindStatus.REJECTED, reason=RejectReason.SELF_BINDING)
    if user.id in ancestry.ancestors:
        return Decision(BindStatus.REJECTED, reason=RejectReason.CYCLE)
    if not ancestry.complete:
        return Decision(BindStatus.REJECTED, reason=RejectReason.TREE_TOO_DEEP)
    return Decision(BindStatus.BOUND, upline=upline_below(parent))


def propagated_upline(parent: Node, child: Node) -> tuple[str, ...] | None:
    """After `parent`'s upline changed, the upline its direct child must now hold, or None."""
    if child.parent != parent.id:
        return None
    wanted = upline_below(parent)
    return None if wanted == child.upline else wanted
