"""Per-user request rate limits at the gateway (a token bucket per user, per gateway replica).

A replica admits ``rate`` calls per second per user on average, bursts of up to ``burst``;
past that a call fails RESOURCE_EXHAUSTED with the limit and the wait in its details
(retriable: the client may try again after ``retry_after_s``). Buckets of users who have
been quiet are dropped, so memory stays bounded by the active users.
"""

from __future__ import annotations

import threading
import time

from shared.errors import ResourceExhausted


class RateLimiter:
    def __init__(self, rate_per_s: float, burst: int, *, max_users: int = 100_000) -> None:
        self.rate = rate_per_s
        self.burst = max(1, burst)
        self._max_users = max_users
        self._buckets: dict[str, tuple[float, float]] = {}  # user -> (tokens, last refill time)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.rate > 0

    def check(self, user_id: str, now: float | None = None) -> None:
        """Takes one token of ``user_id``'s bucket, or raises ResourceExhausted."""
        if not self.enabled:
            return
        now = time.monotonic() if now is None else now
        with self._lock:
            tokens, last = self._buckets.get(user_id, (float(self.burst), now))
            tokens = min(float(self.burst), tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[user_id] = (tokens, now)
                wait = (1.0 - tokens) / self.rate
                raise ResourceExhausted(
                    f"more than {self.rate:g} requests/s for this user; retry in {wait:.2f}s",
                    reason="RATE_LIMITED",
                    metadata={
                        "limit_per_s": f"{self.rate:g}",
                        "burst": str(self.burst),
                        "retry_after_s": f"{wait:.3f}",
                    },
                    retriable=True,
                )
            self._buckets[user_id] = (tokens - 1.0, now)
            if len(self._buckets) > self._max_users:
                self._forget_idle(now)

    def _forget_idle(self, now: float) -> None:
        # A bucket refilled to the brim holds no state worth keeping.
        full_after = self.burst / self.rate
        self._buckets = {u: (t, last) for u, (t, last) in self._buckets.items() if now - last < full_after}
