"""The one retry helper (issue 11 §3): attempts counted, waits bounded, jittered and capped as named."""

from __future__ import annotations

import math
import time

import pytest

from chalicelib.retry import Retry


def test_a_policy_yields_its_attempt_numbers() -> None:
    assert list(Retry.at_once(3)) == [0, 1, 2]
    assert list(Retry(tries=1, first_s=1.0)) == [0]


def test_at_once_never_waits(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the module chalicelib.retry sleeps through
    policy = Retry.at_once(4)
    for attempt in policy:
        policy.pause(attempt)
    assert slept == []
    assert list(policy.delays()) == [0.0, 0.0, 0.0]


def test_fixed_doubling_waits_without_jitter() -> None:
    policy = Retry(tries=4, first_s=0.05, jitter=0)
    assert [policy.delay(n) for n in range(4)] == [0.05, 0.1, 0.2, 0.4]
    assert list(policy.delays()) == [0.05, 0.1, 0.2]  # the waits before the 2nd, 3rd and 4th attempt


def test_full_jitter_stays_under_the_doubling_bound_and_the_cap() -> None:
    policy = Retry(tries=12, first_s=0.01, cap_s=0.5)
    for attempt in range(12):
        bound = min(0.5, 0.01 * 2**attempt)
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0 <= w <= bound for w in waits)
        assert max(waits) > bound / 2  # random over the whole range, not a fixed share of it


def test_linear_growth_with_partial_jitter_keeps_a_floor() -> None:
    policy = Retry(tries=12, first_s=0.025, growth="linear", jitter=0.8)
    for attempt in range(12):
        waits = [policy.delay(attempt) for _ in range(200)]
        assert all(0.005 * (attempt + 1) <= w <= 0.025 * (attempt + 1) for w in waits)


def test_pause_sleeps_the_delay(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)  # the module chalicelib.retry sleeps through
    Retry(tries=3, first_s=0.05, jitter=0).pause(1)
    assert slept == [0.1]


def test_no_pause_after_the_last_attempt(monkeypatch: pytest.MonkeyPatch) -> None:
    slept: list[float] = []
    monkeypatch.setattr(time, "sleep", slept.append)
    policy = Retry(tries=3, first_s=0.05, jitter=0)
    for attempt in policy:
        policy.pause(attempt)
    assert slept == [0.05, 0.1]  # before the 2nd and 3rd attempts, none after the 3rd


@pytest.mark.parametrize(
    "kwargs",
    [{"tries": 0}, {"tries": 2, "first_s": -1}, {"tries": 2, "jitter": 1.5}, {"tries": 2, "cap_s": -0.1}],
)
def test_nonsense_policies_are_refused(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError, match="not a retry policy"):
        Retry(**kwargs)  # type: ignore[arg-type]


def test_an_uncapped_policy_is_unbounded() -> None:
    assert Retry(tries=2).cap_s == math.inf
