"""A plan's JSON body is parsed by one pydantic model (shape and types); what a plan may pay is
`commission.plan_errors`, in its own words."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from chalicelib.commission import Campaign, InactiveUpline, LadderTier, LevelAmount, ProductOverride, Trigger
from chalicelib.errors import InvalidInput
from chalicelib.services.plans import plan_from_body

FULL: dict[str, Any] = {
    "rates_bps": [1200, 600, 300],
    "cap_bps": 3000,
    "overrides": [{"product_id": "tea", "levels": [{"rate_bps": 1500}, {"fixed_fen": 200}]}],
    "ladder": [{"min_month_sales_fen": 100_000, "level1_rate_bps": 1500}],
    "campaigns": [
        {"name": "双11", "starts_at": "2026-11-11T00:00:00+08:00", "ends_at": "2026-11-12T00:00:00+08:00",
         "multiplier_bps": 20_000, "product_ids": ["tea"]},
    ],
    "self_purchase": True,
    "trigger": "received",
    "inactive_upline": "compress",
}  # fmt: skip


def test_every_part_of_a_plan_reaches_the_rule() -> None:
    plan = plan_from_body(FULL, version=4)
    assert (plan.version, plan.rates_bps, plan.cap_bps) == (4, (1200, 600, 300), 3000)
    assert plan.overrides == (ProductOverride("tea", (LevelAmount(1500, None), LevelAmount(None, 200))),)
    assert plan.ladder == (LadderTier(100_000, 1500),)
    assert plan.campaigns == (
        Campaign(
            "双11",
            datetime(2026, 11, 10, 16, tzinfo=UTC),
            datetime(2026, 11, 11, 16, tzinfo=UTC),
            20_000,
            frozenset({"tea"}),
        ),
    )
    assert (plan.self_purchase, plan.trigger, plan.inactive_upline) == (True, Trigger.RECEIVED, InactiveUpline.COMPRESS)
    assert (plan.settle_after_days, plan.timezone) == (7, "Asia/Shanghai")


@pytest.mark.parametrize(
    ("change", "where"),
    [
        ({"rates_bps": [1000, 1.5]}, "rates_bps.1"),  # a fraction of a basis point is not silently cut
        ({"cap_bps": None}, "cap_bps"),
        ({"trigger": "shipped"}, "trigger"),
        ({"self_purchase": "maybe"}, "self_purchase"),
        ({"overrides": [{"levels": []}]}, "overrides.0.product_id"),
        ({"campaigns": [{"name": "x"}]}, "campaigns.0.starts_at"),
    ],
)
def test_a_body_of_the_wrong_shape_names_each_wrong_field(change: dict[str, Any], where: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        plan_from_body({**FULL, **change})
    assert refused.value.code == "invalid_plan"
    assert any(detail.startswith(f"{where}:") for detail in refused.value.details)


def test_words_mean_what_they_say() -> None:
    # bool("false") was True when bodies were parsed by hand
    assert plan_from_body({**FULL, "self_purchase": "false"}).self_purchase is False


@pytest.mark.parametrize("body", [[1, 2], "plan", None, {"cap_bps": 100}])
def test_what_is_no_plan_at_all_is_refused_as_one(body: Any) -> None:
    with pytest.raises(InvalidInput) as refused:
        plan_from_body(body)
    assert refused.value.code == "invalid_plan"


def test_a_campaign_time_that_is_not_iso_8601_is_refused() -> None:
    campaign = {**FULL["campaigns"][0], "starts_at": "11/11 midnight"}
    with pytest.raises(InvalidInput) as refused:
        plan_from_body({**FULL, "campaigns": [campaign]})
    assert refused.value.code == "invalid_plan"


def test_fees_for_joining_are_refused_before_anything_else() -> None:
    with pytest.raises(InvalidInput) as refused:
        plan_from_body({"joining_fee": 9900})
    assert refused.value.code == "forbidden_fee"
