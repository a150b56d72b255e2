"""Per-sensor rate limiting for the ingest service (a token bucket)."""

import time

READINGS_PER_SECOND = 50


class TokenBucket:
    """Allows `rate` events a second with bursts up to `rate`."""

    def __init__(self, rate: int = READINGS_PER_SECOND) -> None:
        self.rate = rate
        self.tokens = float(rate)
        self.updated = time.monotonic()

    def allow(self) -> bool:
        """True if one more reading may pass now; False means answer HTTP 429."""
        now = time.monotonic()
        self.tokens = min(self.rate, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens >= 1:
            self.tokens -= 1
            return True
        return False


def retry_after_seconds(bucket: TokenBucket) -> int:
    """The Retry-After header value for a rejected reading."""
    return max(1, int((1 - bucket.tokens) / bucket.rate) + 1)
