"""Binding rules: first touch wins, no self-binding, no cycles, never a fourth level."""

from __future__ import annotations

from collections.abc import Mapping

from hypothesis import given, settings
from hypothesis import strategies as st

from chalicelib import referral
from chalicelib.referral import BindStatus, Node, RejectReason


def load_from(uplines: Mapping[str, tuple[str, ...]]):
    return lambda uid: Node(uid, uplines[uid]) if uid in uplines else None


def ancestry(uplines: dict[str, tuple[str, ...]], uid: str) -> referral.Ancestry:
    return referral.walk_ancestry(Node(uid, uplines[uid]), load_from(uplines))


def test_upline_below_keeps_three_levels() -> None:
    assert referral.upline_below(Node("d", ("c", "b", "a"))) == ("d", "c", "b")
    assert referral.upline_below(Node("a")) == ("a",)


def test_node_refuses_a_fourth_level() -> None:
    try:
        Node("x", ("a", "b", "c", "d"))
    except ValueError:
        return
    raise AssertionError("a four-level upline was accepted")


def test_scan_binds_an_unbound_user_below_the_sharer() -> None:
    uplines = {"alice": (), "bob": ("alice",), "carol": ()}
    decision = referral.decide_scan(Node("carol"), Node("bob", ("alice",)), ancestry(uplines, "bob"))
    assert decision == referral.Decision(BindStatus.BOUND, upline=("bob", "alice"))


def test_first_touch_wins() -> None:
    uplines = {"alice": (), "bob": ("alice",), "zed": ()}
    decision = referral.decide_scan(Node("bob", ("alice",)), Node("zed"), ancestry(uplines, "zed"))
    assert decision.status is BindStatus.ALREADY_BOUND
    assert decision.upline == ("alice",)


def test_self_binding_is_rejected() -> None:
    decision = referral.decide_scan(Node("alice"), Node("alice"), ancestry({"alice": ()}, "alice"))
    assert decision.reason is RejectReason.SELF_BINDING


def test_a_cycle_through_three_users_is_rejected() -> None:
    # alice <- bob <- carol; alice (a root) opens carol's code.
    uplines = {"alice": (), "bob": ("alice",), "carol": ("bob", "alice")}
    decision = referral.decide_scan(Node("alice"), Node("carol", ("bob", "alice")), ancestry(uplines, "carol"))
    assert decision.status is BindStatus.REJECTED
    assert decision.reason is RejectReason.CYCLE


def test_a_cycle_deeper_than_three_levels_is_rejected() -> None:
    # root <- u1 <- u2 <- u3 <- u4 <- u5: u5's upline no longer names root, the walk does.
    chain = ["root", "u1", "u2", "u3", "u4", "u5"]
    uplines = {uid: tuple(reversed(chain[max(0, i - 3) : i])) for i, uid in enumerate(chain)}
    assert "root" not in uplines["u5"]
    decision = referral.decide_scan(Node("root"), Node("u5", uplines["u5"]), ancestry(uplines, "u5"))
    assert decision.reason is RejectReason.CYCLE


def test_walk_reads_one_node_per_three_generations() -> None:
    chain = [f"u{i}" for i in range(10)]
    uplines = {uid: tuple(reversed(chain[max(0, i - 3) : i])) for i, uid in enumerate(chain)}
    walked = ancestry(uplines, "u9")
    assert walked.ancestors == tuple(reversed(chain[:9]))
    assert [hop.id for hop in walked.hops] == ["u9", "u6", "u3", "u0"]  # u0 read to learn it is a root


def test_walk_stops_at_a_missing_node_and_at_a_loop() -> None:
    assert referral.walk_ancestry(Node("x", ("a", "b", "c")), lambda _: None).ancestors == ("a", "b", "c")
    looped = {"x": ("a", "b", "x")}
    assert referral.walk_ancestry(Node("x", looped["x"]), load_from(looped)).complete


def test_a_tree_deeper_than_the_walk_limit_is_refused() -> None:
    def endless(uid: str) -> Node:
        n = int(uid[1:])
        return Node(uid, (f"n{n + 1}", f"n{n + 2}", f"n{n + 3}"))

    walked = referral.walk_ancestry(endless("n0"), endless)
    assert not walked.complete
    decision = referral.decide_scan(Node("new"), endless("n0"), walked)
    assert decision.reason is RejectReason.TREE_TOO_DEEP


def test_rebind_to_the_same_parent_is_refused() -> None:
    uplines = {"alice": (), "bob": ("alice",)}
    decision = referral.decide_rebind(Node("bob", ("alice",)), Node("alice"), ancestry(uplines, "alice"))
    assert decision.reason is RejectReason.SAME_PARENT


def test_propagated_upline_only_for_direct_children_that_changed() -> None:
    parent = Node("bob", ("zed",))
    assert referral.propagated_upline(parent, Node("carol", ("bob", "alice"))) == ("bob", "zed")
    assert referral.propagated_upline(parent, Node("carol", ("bob", "zed"))) is None
    assert referral.propagated_upline(parent, Node("dan", ("someone",))) is None


# --- property: any sequence of scans and operator moves keeps the tree sound --------------

USERS = [f"u{i}" for i in range(8)]
ops = st.lists(
    st.tuples(st.sampled_from(["scan", "rebind"]), st.sampled_from(USERS), st.sampled_from(USERS)),
    max_size=60,
)


def propagate(uplines: dict[str, tuple[str, ...]], moved: str) -> None:
    """What the users stream does: each changed user's direct children follow, level by level."""
    queue = [moved]
    while queue:
        parent = queue.pop()
        for child, upline in list(uplines.items()):
            wanted = referral.propagated_upline(Node(parent, uplines[parent]), Node(child, upline))
            if wanted is not None:
                uplines[child] = wanted
                queue.append(child)


def assert_sound(uplines: dict[str, tuple[str, ...]]) -> None:
    for uid, upline in uplines.items():
        assert len(upline) <= referral.MAX_LEVELS
        assert uid not in upline, "self in own upline"
        if upline:
            parent = upline[0]
            assert upline == referral.upline_below(Node(parent, uplines[parent])), "stale upline"
        seen, node = {uid}, uid
        while uplines[node]:
            node = uplines[node][0]
            assert node not in seen, "cycle"
            seen.add(node)


@settings(max_examples=300)
@given(ops)
def test_any_sequence_of_binds_and_rebinds_keeps_three_levels_no_cycles_no_self(
    sequence: list[tuple[str, str, str]],
) -> None:
    uplines: dict[str, tuple[str, ...]] = dict.fromkeys(USERS, ())
    for op, uid, parent in sequence:
        before = uplines[uid]
        user, target = Node(uid, uplines[uid]), Node(parent, uplines[parent])
        walked = ancestry(uplines, parent)
        if op == "scan":
            decision = referral.decide_scan(user, target, walked)
        else:
            decision = (
                referral.decide_rebind(user, target, walked) if before else referral.decide_scan(user, target, walked)
            )
        if decision.status is BindStatus.BOUND:
            uplines[uid] = decision.upline
            propagate(uplines, uid)
        elif op == "scan":
            assert uplines[uid] == before, "a scan changed a binding it did not make"
        assert_sound(uplines)
