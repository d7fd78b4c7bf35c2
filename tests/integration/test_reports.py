"""Every report counter equals a brute-force recount (issue 12 §1), after a seeded random workload
of bindings, payments, receipts, partial and full refunds and rebinds, with every stream record
of the tenant delivered once more (a replayed batch) on DynamoDB Local. Each run has a tenant of
its own, so the recount covers the whole tenant."""

from __future__ import annotations

import contextlib
import json
import random
from collections import defaultdict
from typing import Any

import pytest

from chalicelib import counters
from chalicelib.clock import iso, parse_iso, utcnow
from chalicelib.entities import AuditEvent, Principal, Product, Role, Tenant
from chalicelib.errors import DomainError, InvalidInput, NotAllowed, StateConflict
from chalicelib.events import users_stream
from chalicelib.services import commissions, logins, orders, plans, referrals, reports, shares, team
from chalicelib.store import get_store
from chalicelib.store.audit import verify_chain
from chalicelib.store.models import AuditModel, LedgerModel, OrderModel, ShareModel, StatsModel, UserModel
from tests.stack import Stack, unique

ZONE = "Asia/Shanghai"
Counters = dict[tuple[str, str], dict[str, int]]


def _tenant() -> str:
    tenant = unique("wxrep").replace("-", "")
    get_store().tenants.put(Tenant(tenant, "reports"), utcnow())
    return tenant


def _product(tenant: str, price: int) -> str:
    pid = unique("p").replace("-", "_")
    now = utcnow()
    event = AuditEvent(entity=f"product:{pid}", action="product.created", actor="system:test", data={})
    get_store().products.create(Product(tenant, pid, pid, price, True, None, now, now), event)
    return pid


def _workload(stack: Stack, tenant: str, seed: int) -> list[Principal]:
    rng = random.Random(seed)
    owner = Principal(tenant=tenant, subject="owner", role=Role.OWNER)
    plans.activate(owner, plans.create(owner, {"rates_bps": [1500, 800, 500], "cap_bps": 2800})["version"])
    people = [Principal(tenant, logins.login(f"dev-{unique('r')}", tenant).user.id, Role.USER) for _ in range(8)]
    codes = [shares.create(p, None, rng.choice(["poster", "moments", None])).code for p in people]
    for _ in range(12):
        with contextlib.suppress(DomainError):
            referrals.scan(rng.choice(people), rng.choice(codes))
    stack.drain()
    products = [_product(tenant, rng.randint(100, 50_000)) for _ in range(3)]
    for round_ in range(2):
        for _ in range(6):
            _order(rng, owner, rng.choice(people), products, rng.choice([*codes, None]))
        if round_ == 0:
            for _ in range(3):  # operators move users (and their downlines) elsewhere
                with contextlib.suppress(StateConflict, DomainError):
                    referrals.rebind(owner, rng.choice(people).subject, rng.choice(people).subject, "test")
            stack.drain()
    stack.drain()
    return people


def _order(rng: random.Random, owner: Principal, buyer: Principal, products: list[str], code: str | None) -> None:
    lines = [(pid, rng.randint(1, 3)) for pid in rng.sample(products, rng.randint(1, 2))]
    order = orders.place(buyer, lines, code, None)
    orders.sandbox_pay_success(buyer, order.id)
    if rng.random() < 0.5:
        orders.confirm_receipt(buyer, order.id)
    for _ in range(rng.choice([0, 0, 1, 2])):
        left = get_store().orders.get(owner.tenant, order.id).refundable_fen  # type: ignore[union-attr]
        if left:
            amount = left if rng.random() < 0.4 else max(1, left * rng.randint(1, 999) // 1000)
            orders.refund(owner, order.id, amount, "test")


def _replay(stack: Stack, tenant: str) -> None:
    """Deliver every stream record of the tenant again, as a retried batch would."""

    def mine(record: dict[str, Any]) -> bool:
        image = record["dynamodb"].get("NewImage") or {}
        return image.get("tenant", {}).get("S") == tenant

    order_records = [r for r in stack.stream_records("orders") if mine(r)]
    assert commissions.process_stream_batch(order_records) == {"batchItemFailures": []}
    user_records = [r for r in stack.stream_records("users") if mine(r)]
    assert users_stream.process_records(user_records)["batchItemFailures"] == []
    stack.drain()


# --- the brute-force recount ----------------------------------------------------------------


def _add(expected: Counters, scope: str, period: str, name: str, delta: int) -> None:
    expected.setdefault((scope, period), {})
    expected[(scope, period)][name] = expected[(scope, period)].get(name, 0) + delta


def _recount(tenant: str) -> Counters:
    expected: Counters = {}
    day = lambda at: counters.day_of(parse_iso(at), ZONE)  # noqa: E731
    _recount_users(tenant, expected, day)
    order_rows = {o.order_id: o for o in OrderModel.scan(OrderModel.tenant == tenant)}
    channels = {s.code: s.channel for s in ShareModel.scan(ShareModel.tenant == tenant)}
    sources = {}
    first_paid: dict[str, str] = {}
    for o in order_rows.values():
        if not o.paid_at:
            continue
        snap = json.loads(o.attribution)
        code = snap.get("share_code")
        lines = [(x["product_id"], int(x["paid_fen"])) for x in json.loads(o.lines)]
        source = counters.Sources.of(code, channels.get(code) if code else None, snap.get("upline") or (), lines)
        sources[o.order_id] = source
        d = day(o.paid_at)
        _add(expected, "day", d, "orders", 1)
        _add(expected, "day", d, "paid_fen", int(o.amount_fen))
        deltas: Counters = {}
        source.count_order(deltas, d)
        source.add(deltas, d, "paid_fen", int(o.amount_fen), by_product=True)
        for (scope, period), values in deltas.items():
            for name, delta in values.items():
                _add(expected, scope, period, name, delta)
        first_paid[o.buyer] = min(first_paid.get(o.buyer, o.paid_at), o.paid_at)
        for refund in json.loads(o.refunds or "{}").values():
            if refund["state"] != "failed" and not refund.get("late_payment"):
                _add(expected, "day", day(refund["requested_at"]), "refunds_fen", int(refund["amount_fen"]))
    for paid_at in first_paid.values():
        _add(expected, "day", day(paid_at), "first_orders", 1)
    _recount_ledger(tenant, expected, order_rows, sources, day)
    return {key: {n: v for n, v in values.items() if v} for key, values in expected.items() if any(values.values())}


def _recount_users(tenant: str, expected: Counters, day: Any) -> None:
    for user in UserModel.scan(UserModel.tenant == tenant):
        upline = [str(x) for x in (user.upline or ())]
        for level, promoter in enumerate(upline, start=1):
            _add(expected, f"p#{promoter}", "all", f"team_{level}", 1)
        if user.promoter is not False:
            _add(expected, "day", day(user.created_at), "new_promoters", 1)
    _recount_history(tenant, expected, day)
    # every scan, binding or not, is counted on its share (the workload runs within one day)
    scans = sum(int(share.scans or 0) for share in ShareModel.scan(ShareModel.tenant == tenant))
    _add(expected, "day", day(iso(utcnow())), "scans", scans)


def _recount_history(tenant: str, expected: Counters, day: Any) -> None:
    """Who joined whose team in which month, and the day's bindings, from the users' audit trail."""
    history: dict[str, list[Any]] = defaultdict(list)
    for rec in AuditModel.scan((AuditModel.tenant == tenant) & AuditModel.entity.startswith("user:")):
        history[rec.entity].append(rec)
    for records in history.values():
        upline: list[str] = []
        for rec in sorted(records, key=lambda r: r.sk):
            data = json.loads(rec.data)
            new = {"user.bound": data.get("upline"), "user.bind_reverted": []}.get(rec.action, data.get("to"))
            if rec.action == "user.bound":
                _add(expected, "day", day(rec.at), "new_bindings", 1)
            elif rec.action == "user.bind_reverted":
                _add(expected, "day", day(rec.at), "new_bindings", -1)
            if new is None:
                continue
            for level, promoter in enumerate(new, start=1):
                if level > len(upline) or upline[level - 1] != promoter:
                    month = counters.month_of(parse_iso(rec.at), ZONE)
                    _add(expected, f"p#{promoter}", month, f"team_{level}", 1)
            upline = list(new)


def _recount_ledger(
    tenant: str, expected: Counters, order_rows: dict[str, Any], sources: dict[str, Any], day: Any
) -> None:
    groups: dict[tuple[str, int, str], list[Any]] = defaultdict(list)
    by_event: dict[tuple[str, str, str], int] = defaultdict(int)
    for line in LedgerModel.scan(LedgerModel.tenant == tenant):
        groups[(line.promoter, int(line.level), line.order_id)].append(line)
        by_event[(line.order_id, line.event, day(line.created_at))] += int(line.amount_fen)
        _add(expected, "day", day(line.created_at), f"commission_fen_{line.level}", int(line.amount_fen))
    for (promoter, level, order_id), lines in groups.items():
        created = next(x for x in lines if x.event in ("paid", "received"))
        order = order_rows[order_id]
        net = int(order.amount_fen) - int(order.refunded_fen or 0)
        month = counters.month_of(parse_iso(created.created_at), ZONE)
        _add(expected, f"p#{promoter}", month, f"commission_fen_{level}", sum(int(x.amount_fen) for x in lines))
        _add(expected, f"p#{promoter}", month, f"sales_fen_{level}", net)
        _add(expected, f"p#{promoter}", month, f"orders_{level}", int(net > 0))
    for (order_id, _, d), amount in by_event.items():
        deltas: Counters = {}
        sources[order_id].add(deltas, d, "commission_fen", amount)
        for (scope, period), values in deltas.items():
            for name, delta in values.items():
                _add(expected, scope, period, name, delta)


def _stored(tenant: str) -> Counters:
    from chalicelib.store.stats import counts_of

    found: Counters = {}
    for item in StatsModel.scan(StatsModel.pk.startswith(f"{tenant}#")):
        scope = item.pk.split("#", 1)[1]
        if scope.startswith(("buyer#", "l1sales#")):
            continue  # first-order markers and the ladder's counters are not reports
        values = {n: v for n, v in counts_of(item).items() if v}
        if values:
            found[(scope, item.period)] = values
    return found


# --- the tests ------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", [7, 2026])
def test_every_counter_equals_a_brute_force_recount_after_replays(stack: Stack, seed: int) -> None:
    # Given a random workload on a tenant of its own, and every stream record delivered twice
    tenant = _tenant()
    people = _workload(stack, tenant, seed)
    _replay(stack, tenant)
    # Then every counter equals what the ledger, the orders and the users say
    stored, expected = _stored(tenant), _recount(tenant)
    assert stored == expected
    assert any(scope.startswith("p#") for scope, _ in stored)  # the workload did earn and bind
    # and /v1/me's team counts, the promoter's month and the daily totals read those counters
    for person in people:
        totals = expected.get((f"p#{person.subject}", "all"), {})
        assert team.me(person)["team_counts"] == {k: totals.get(f"team_{k}", 0) for k in ("1", "2", "3")}
        mine = reports.my_stats(person, None)
        assert {k: v["total"] for k, v in mine["team"].items()} == team.me(person)["team_counts"]
    owner = Principal(tenant=tenant, subject="owner", role=Role.OWNER)
    daily = reports.daily(owner, None, None)
    today = next(row for row in daily["days"] if row["date"] == counters.day_of(utcnow(), ZONE))
    day_counts = expected.get(("day", today["date"]), {})
    assert today["paid_fen"] == day_counts.get("paid_fen", 0) == daily["totals"]["paid_fen"]
    funnel = reports.funnel(owner, None, None)
    assert funnel["bindings"] == day_counts.get("new_bindings", 0)
    assert funnel["first_orders"] == day_counts.get("first_orders", 0)
    top = reports.sources(owner, None, None, "promoter", 5)["items"]
    assert [row["paid_fen"] for row in top] == sorted((row["paid_fen"] for row in top), reverse=True)


def test_another_tenants_operator_sees_nothing_of_this_tenant(stack: Stack) -> None:
    tenant = _tenant()
    _workload(stack, tenant, 11)
    other = Principal(tenant=_tenant(), subject="owner", role=Role.OWNER)
    daily = reports.daily(other, None, None)
    assert all(v == 0 for k, v in daily["totals"].items() if k != "commission_fen")
    assert set(daily["totals"]["commission_fen"].values()) == {0}
    for by in counters.SOURCE_KINDS:
        assert reports.sources(other, None, None, by, 100) == {"items": []}
    assert reports.funnel(other, None, None) == {"scans": 0, "bindings": 0, "first_orders": 0}
    # while the tenant's own operator sees its business
    assert reports.daily(Principal(tenant, "owner", Role.OWNER), None, None)["totals"]["orders"] > 0


def test_reports_refuse_bad_ranges_and_promoters(stack: Stack) -> None:
    owner = stack.principal("owner", Role.OWNER)
    for first, last in (("2026-13-01", None), ("2026-11-02", "2026-11-01"), ("2025-01-01", "2026-01-02")):
        with pytest.raises(InvalidInput):
            reports.daily(owner, first, last)
    with pytest.raises(InvalidInput):
        reports.sources(owner, None, None, "weather", 10)
    with pytest.raises(InvalidInput):
        reports.my_stats(stack.principal("u"), "2026-13")
    with pytest.raises(NotAllowed):
        reports.daily(stack.principal("u"), None, None)
    assert reports.daily(owner, "2025-01-01", "2026-01-01")["days"][-1]["date"] == "2026-01-01"


# --- the recount tool (`make recount`) --------------------------------------------------------


def _bump(tenant: str, scope: str, period: str, **values: int) -> None:
    StatsModel(f"{tenant}#{scope}", period).update(actions=[getattr(StatsModel, n).add(v) for n, v in values.items()])


def test_the_recount_finds_no_drift_then_names_and_repairs_each_changed_counter(stack: Stack, capsys: Any) -> None:
    from chalicelib.services import recount
    from devtools import recount as tool

    # Given two tenants' workloads, every stream record delivered twice, and the counters agreeing
    tenant, other = _tenant(), _tenant()
    _workload(stack, tenant, 11)
    _workload(stack, other, 12)
    _replay(stack, tenant)
    assert recount.drift(tenant).differences == {}
    assert _stored(tenant) == _recount(tenant)
    # When counters are changed behind the app's back: one too high, one item gone, one invented,
    # a ladder counter off (and another tenant's counter too)
    stored = _stored(tenant)
    today = counters.day_of(utcnow(), ZONE)
    promoter_month = next(key for key in stored if key[0].startswith("p#") and key[1] != "all")
    ladder = next(item for item in StatsModel.scan(StatsModel.pk.startswith(f"{tenant}#l1sales#")) if item.sales_fen)
    _bump(tenant, "day", today, paid_fen=7)
    StatsModel(f"{tenant}#{promoter_month[0]}", promoter_month[1]).delete()
    _bump(tenant, "src#channel", f"{today}#invented", orders=3)
    _bump(tenant, ladder.pk.removeprefix(f"{tenant}#"), ladder.period, sales_fen=100)
    _bump(other, "day", today, paid_fen=5)
    # Then the check names exactly those, and exits 1
    assert tool.main(["--tenant", tenant]) == 1
    (shown,) = [row for row in map(json.loads, capsys.readouterr().out.splitlines()) if "differences" in row]
    assert {(d["scope"], d["period"]): d["add"] for d in shown["differences"]} == {
        ("day", today): {"paid_fen": -7},
        promoter_month: stored[promoter_month],
        ("src#channel", f"{today}#invented"): {"orders": -3},
        (ladder.pk.removeprefix(f"{tenant}#"), ladder.period): {"sales_fen": -100},
    }
    # When an operator repairs this tenant
    assert tool.main(["--tenant", tenant, "--fix", "--actor", "ops:tester"]) == 0
    # Then nothing differs, every counter equals the brute-force recount, and the repair is audited
    assert recount.drift(tenant).differences == {}
    assert _stored(tenant) == _recount(tenant)
    (record,) = AuditModel.query(f"{tenant}#stats")
    assert (record.action, record.actor) == ("stats.recounted", "ops:tester")
    assert len(json.loads(record.data)["added"]) == 4
    # and a second repair chains its record to the first, through the guard that holds the head
    _bump(tenant, "day", today, orders=2)
    assert tool.main(["--tenant", tenant, "--fix"]) == 0
    records = list(AuditModel.query(f"{tenant}#stats"))
    assert [r.actor for r in records] == ["ops:tester", "system:recount"] and verify_chain(records)
    assert StatsModel.get(f"{tenant}#recount", "chain").ref == records[-1].hash
    assert _stored(tenant) == _recount(tenant)
    # and the other tenant's counter is still as it was changed
    assert recount.drift(other).differences == {("day", today): {"paid_fen": -5}}
