"""Report read latency for a promoter with a large team against one with 10, one run (issue 12).

Both promoters get a real team in the users table (written directly, level-1 members with the
team index keys a binding sets) and the counters the users stream would have left (`team_1` in
`p#<uid>`/`all`, this month's counters). The measured read is what a promoter's pages call:
`/v1/me` (profile and team counts) and `/v1/me/stats` (the month), through the services, in
interleaved rounds. For contrast, the COUNT query `/v1/me` made before counters is timed too.
Target: large / small ≤ 1.2.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

from bench.binding import _setup, fresh_ddb_local

TARGET = 1.2
TENANT = "wxbench000000001"


def run(team: int, rounds: int = 200) -> dict[str, Any]:
    with fresh_ddb_local() as endpoint:
        _setup(endpoint)
        return _measure(team, rounds)


def _promoter(uid: str, size: int) -> None:
    """A promoter, `size` level-1 members written directly, and the counters they imply."""
    from chalicelib import counters
    from chalicelib.clock import iso, utcnow
    from chalicelib.entities import AuditEvent, User
    from chalicelib.store import get_store
    from chalicelib.store.models import StatsModel, UserModel

    now = utcnow()
    get_store().users.create(
        User(TENANT, uid, f"o-{uid}", uid, now), AuditEvent(f"user:{uid}", "user.created", "b", {})
    )
    with UserModel.batch_write() as batch:
        for i in range(size):
            member = f"{uid}-m{i:06d}"
            batch.save(
                UserModel(
                    pk=f"{TENANT}#{member}", tenant=TENANT, uid=member, openid=f"o-{member}", name=member,
                    created_at=iso(now), promoter=True, upline=[uid], l1k=f"{TENANT}#{uid}", bound_at=iso(now),
                    bound_via="bench", version=2,
                )
            )  # fmt: skip
    month = counters.month_of(now, "Asia/Shanghai")
    for period in (counters.ALL, month):
        item = StatsModel(f"{TENANT}#{counters.promoter_scope(uid)}", period)
        item.update(actions=[StatsModel.team_1.add(size), StatsModel.orders_1.add(size // 10 + 1)])


def _timed(call: Any) -> float:
    start = time.perf_counter()
    call()
    return (time.perf_counter() - start) * 1000


def _measure(team: int, rounds: int) -> dict[str, Any]:
    from chalicelib.entities import Principal, Role
    from chalicelib.services import reports
    from chalicelib.services import team as team_service
    from chalicelib.store import get_store

    started = time.perf_counter()
    _promoter("big", team)
    _promoter("small", 10)
    setup_s = time.perf_counter() - started
    people = {name: Principal(TENANT, name, Role.USER) for name in ("big", "small")}
    if team_service.me(people["big"])["team_counts"]["1"] != team:
        raise RuntimeError("the large team's counters were not read back")
    if reports.my_stats(people["small"], None)["team"]["1"]["total"] != 10:
        raise RuntimeError("the small team's counters were not read back")

    def read(principal: Principal) -> None:
        team_service.me(principal)
        reports.my_stats(principal, None)

    samples: dict[str, list[float]] = {"big": [], "small": []}
    for _ in range(10):  # warm up connections and caches
        read(people["big"])
        read(people["small"])
    for i in range(rounds):
        order = ("big", "small") if i % 2 == 0 else ("small", "big")
        for name in order:
            samples[name].append(_timed(lambda name=name: read(people[name])))
    count_ms = {}
    for name in ("big", "small"):
        count_ms[name] = statistics.median(
            _timed(lambda name=name: get_store().users.team_count(TENANT, name, 1)) for _ in range(3)
        )
    big, small = statistics.median(samples["big"]), statistics.median(samples["small"])
    ratio = big / small
    return {
        "team_large": team,
        "team_small": 10,
        "rounds": rounds,
        "read_ms_median_large": round(big, 3),
        "read_ms_median_small": round(small, 3),
        "read_ms_p95_large": round(sorted(samples["big"])[int(rounds * 0.95) - 1], 3),
        "read_ms_p95_small": round(sorted(samples["small"])[int(rounds * 0.95) - 1], 3),
        "ratio": round(ratio, 3),
        "target": f"<= {TARGET}",
        "ok": ratio <= TARGET,
        "before_counters_count_query_ms": {k: round(v, 1) for k, v in count_ms.items()},
        "setup_s": round(setup_s, 1),
    }
