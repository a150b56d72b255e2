"""When to restart a shard that exited, and when to give up on it (pure; clock injected).

Exponential backoff from 0.1 s doubling to 30 s; a shard that stayed up for a
whole intensity window starts over at 0.1 s. More than `max_restarts`
restarts within `window` seconds marks the shard failed (as an Erlang/OTP
supervisor's restart intensity does) until the next reload.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

INITIAL_DELAY_S = 0.1
MAX_DELAY_S = 30.0


@dataclass(frozen=True, slots=True)
class Decision:
    """Restart after `delay_s`, or stop: `failed` with the reason."""

    delay_s: float
    restarts: int
    failed: bool = False
    reason: str = ""


class RestartPolicy:
    """Backoff and intensity bookkeeping for one shard."""

    def __init__(self, max_restarts: int, window_s: float) -> None:
        self.max_restarts = max_restarts
        self.window_s = window_s
        self._recent: deque[float] = deque()
        self._delay = INITIAL_DELAY_S
        self._started_at: float | None = None
        self.total = 0

    def started(self, now: float) -> None:
        """The shard was (re)started at `now`."""
        self._started_at = now

    def exited(self, now: float) -> Decision:
        """The shard exited at `now`: when to restart it, or that it has failed."""
        if self._started_at is not None and now - self._started_at >= self.window_s:
            self._delay = INITIAL_DELAY_S  # it had been healthy for a whole window
        while self._recent and now - self._recent[0] > self.window_s:
            self._recent.popleft()
        if len(self._recent) >= self.max_restarts:
            return Decision(
                0.0,
                self.total,
                failed=True,
                reason=(
                    f"exited {len(self._recent) + 1} times in {self.window_s:g} s "
                    f"(restart_intensity allows {self.max_restarts}); "
                    "not restarting until `ifmem reload`"
                ),
            )
        self._recent.append(now)
        self.total += 1
        delay = self._delay
        self._delay = min(self._delay * 2, MAX_DELAY_S)
        return Decision(delay, self.total)

    def reset(self) -> None:
        """Forget history (a reload gives a failed shard a fresh start)."""
        self._recent.clear()
        self._delay = INITIAL_DELAY_S
        self.total = 0


def heartbeat_overdue(last_heard: float, now: float, timeout_s: float) -> bool:
    """True when a shard last heard from at `last_heard` has been silent too long."""
    return now - last_heard > timeout_s
