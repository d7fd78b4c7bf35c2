"""Login throttling: fixed windows counted in DynamoDB, so every Lambda instance sees the same
count. Failed admin logins are limited per username and per address (a wrong guess costs the
guesser, and after the limit even the right password waits: it cannot be probed); mini-program
logins are limited per address. Pure rules here; the counters live in the store (nonces table,
TTL)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True, slots=True)
class Limit:
    name: str
    attempts: int
    window_seconds: int

    def window(self, now: datetime) -> tuple[int, datetime]:
        """(the window's number, when it ends) for `now`."""
        number = int(now.timestamp()) // self.window_seconds
        return number, datetime.fromtimestamp((number + 1) * self.window_seconds, UTC)

    def key(self, subject: str, now: datetime) -> str:
        return f"{self.name}#{subject}#{self.window(now)[0]}"

    def retry_after(self, now: datetime) -> int:
        return max(1, int((self.window(now)[1] - now).total_seconds()))


ADMIN_PER_USER = Limit("admin-user", attempts=10, window_seconds=15 * 60)
ADMIN_PER_IP = Limit("admin-ip", attempts=50, window_seconds=15 * 60)
LOGIN_PER_IP = Limit("login-ip", attempts=600, window_seconds=60)  # carrier NAT puts many users on one address
