"""Retry policies: the one home of how often a write is tried again and how long to wait first.

Every retry loop in the package names its policy where it loops:

    for attempt in CONFLICTS:          # at most CONFLICTS.tries attempts
        if write():
            return ...
        CONFLICTS.pause(attempt)       # the policy's wait before the next attempt
    raise StateConflict(...)

The loop keeps its own decisions (what counts as done, refused or worth another try, when to
read again); the policy holds only the numbers. Most loops are optimistic writes that re-read
and try again at once (`Retry.at_once`): the conditional write is the guard and the next read
sees the winner. Loops that contend on one hot item (an account, a coupon template) wait with
jitter so the writers spread out instead of colliding again (AWS's "full jitter" backoff).
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

_JITTER = random.SystemRandom()


@dataclass(frozen=True, slots=True)
class Retry:
    """At most `tries` attempts; the wait after attempt n (from 0) is at most
    `min(cap_s, first_s x 2**n)` ("doubling") or `min(cap_s, first_s x (n + 1))` ("linear"), of
    which the share `jitter` is random: 1 waits uniformly between 0 and that bound, 0 waits it all.
    """

    tries: int
    first_s: float = 0.0
    cap_s: float = math.inf
    growth: Literal["doubling", "linear"] = "doubling"
    jitter: float = 1.0

    def __post_init__(self) -> None:
        if self.tries < 1 or self.first_s < 0 or self.cap_s < 0 or not 0 <= self.jitter <= 1:
            raise ValueError(f"not a retry policy: {self}")

    @classmethod
    def at_once(cls, tries: int) -> Retry:
        """Try again without waiting (an optimistic write that re-reads first)."""
        return cls(tries)

    def __iter__(self) -> Iterator[int]:
        """The attempt numbers 0 .. tries - 1."""
        return iter(range(self.tries))

    def delay(self, attempt: int) -> float:
        """Seconds to wait after the failed attempt `attempt` (0 for the first)."""
        scale = 2**attempt if self.growth == "doubling" else attempt + 1
        bound = min(self.cap_s, self.first_s * scale)
        return bound * (1 - self.jitter + self.jitter * _JITTER.random())

    def delays(self) -> Iterator[float]:
        """The waits before the 2nd, 3rd ... attempt, for loops that count down a generator."""
        return (self.delay(attempt) for attempt in range(self.tries - 1))

    def pause(self, attempt: int) -> None:
        """Sleep `delay(attempt)` seconds before the next attempt; nothing after the last one (the
        loop gives up then: waiting would only delay its answer) or when the policy does not wait."""
        if attempt >= self.tries - 1:
            return
        seconds = self.delay(attempt)
        if seconds > 0:
            time.sleep(seconds)
