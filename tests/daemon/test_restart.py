"""RestartPolicy and heartbeat_overdue: backoff, intensity and hang detection, on a fake clock."""

from __future__ import annotations

import time

import pytest
from freezegun import freeze_time
from ifmemd.restart import INITIAL_DELAY_S, MAX_DELAY_S, RestartPolicy, heartbeat_overdue


def crash_loop(policy: RestartPolicy, times: int, start: float = 1000.0, up_for: float = 0.0):
    """Start and exit the shard `times` times, `up_for` seconds each; the decisions made."""
    now = start
    decisions = []
    for _ in range(times):
        policy.started(now)
        now += up_for
        decision = policy.exited(now)
        decisions.append(decision)
        now += decision.delay_s
    return decisions


def test_backoff_doubles_from_a_tenth_of_a_second_and_is_capped_at_30_s() -> None:
    policy = RestartPolicy(max_restarts=100, window_s=10_000)
    delays = [d.delay_s for d in crash_loop(policy, 13)]
    assert delays == pytest.approx(
        [0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 6.4, 12.8, 25.6, 30.0, 30.0, 30.0, 30.0]
    )
    assert INITIAL_DELAY_S == 0.1
    assert MAX_DELAY_S == 30.0


def test_restarts_are_counted() -> None:
    policy = RestartPolicy(max_restarts=10, window_s=60)
    decisions = crash_loop(policy, 4)
    assert [d.restarts for d in decisions] == [1, 2, 3, 4]
    assert not any(d.failed for d in decisions)
    assert policy.total == 4


def test_a_shard_healthy_for_a_whole_window_starts_over_at_the_initial_delay() -> None:
    policy = RestartPolicy(max_restarts=5, window_s=60)
    quick = crash_loop(policy, 3)  # 0.1, 0.2, 0.4
    assert quick[-1].delay_s == pytest.approx(0.4)
    now = 2000.0
    policy.started(now)
    decision = policy.exited(now + 60)  # up exactly one window
    assert not decision.failed
    assert decision.delay_s == pytest.approx(INITIAL_DELAY_S)
    # ...and doubles again from there.
    policy.started(now + 60.1)
    assert policy.exited(now + 60.2).delay_s == pytest.approx(0.2)


def test_a_shard_up_for_less_than_a_window_keeps_backing_off() -> None:
    policy = RestartPolicy(max_restarts=50, window_s=60)
    crash_loop(policy, 3)  # next delay would be 0.8
    policy.started(5000.0)
    assert policy.exited(5000.0 + 59.9).delay_s == pytest.approx(0.8)


def test_more_restarts_than_the_intensity_allows_marks_the_shard_failed() -> None:
    policy = RestartPolicy(max_restarts=3, window_s=60)
    decisions = crash_loop(policy, 4)
    assert [d.failed for d in decisions] == [False, False, False, True]
    failed = decisions[-1]
    # The message names both counts and the way out.
    assert "exited 4 times in 60 s" in failed.reason
    assert "restart_intensity allows 3" in failed.reason
    assert "`ifmem reload`" in failed.reason
    assert failed.restarts == 3
    # A failed shard stays failed: the next exit says so again, without counting a restart.
    assert policy.exited(1010.0).failed
    assert policy.total == 3


def test_zero_restarts_allowed_fails_on_the_first_exit() -> None:
    policy = RestartPolicy(max_restarts=0, window_s=60)
    decision = crash_loop(policy, 1)[0]
    assert decision.failed
    assert "exited 1 times in 60 s" in decision.reason


def test_restarts_older_than_the_window_no_longer_count() -> None:
    policy = RestartPolicy(max_restarts=3, window_s=60)
    crash_loop(policy, 3, start=1000.0)  # exits at about 1000, 1000.1, 1000.3
    policy.started(1000.7)
    # 61 s after the first three exits they have all left the window.
    later = policy.exited(1061.0)
    assert not later.failed
    assert later.restarts == 4


def test_exits_at_the_edge_of_the_window_still_count() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=10)
    policy.started(0.0)
    assert not policy.exited(0.0).failed
    policy.started(0.1)
    assert not policy.exited(0.1).failed
    policy.started(0.3)
    # The first exit is exactly one window old: still inside it.
    assert policy.exited(10.0).failed


def test_reset_forgets_history() -> None:
    policy = RestartPolicy(max_restarts=2, window_s=60)
    assert crash_loop(policy, 3)[-1].failed
    policy.reset()
    assert policy.total == 0
    decision = crash_loop(policy, 1, start=1001.0)[0]
    assert not decision.failed
    assert decision.delay_s == pytest.approx(INITIAL_DELAY_S)


@pytest.mark.parametrize(
    ("silent_for", "overdue"),
    [(0.0, False), (0.999, False), (1.0, False), (1.0001, True), (5.0, True)],
)
def test_heartbeat_overdue_only_after_more_than_the_timeout(
    silent_for: float, overdue: bool
) -> None:
    assert heartbeat_overdue(100.0, 100.0 + silent_for, 1.0) is overdue


def test_a_clock_that_went_backwards_is_not_a_hang() -> None:
    assert heartbeat_overdue(100.0, 99.0, 1.0) is False


def test_backoff_on_the_real_monotonic_clock_frozen() -> None:
    with freeze_time("2030-01-01 00:00:00") as frozen:
        policy = RestartPolicy(max_restarts=5, window_s=60)
        policy.started(time.monotonic())
        frozen.tick(0.5)
        assert policy.exited(time.monotonic()).delay_s == pytest.approx(0.1)
        policy.started(time.monotonic())
        frozen.tick(0.5)
        assert policy.exited(time.monotonic()).delay_s == pytest.approx(0.2)
        # A whole minute of health: back to the start.
        policy.started(time.monotonic())
        frozen.tick(60)
        decision = policy.exited(time.monotonic())
        assert decision.delay_s == pytest.approx(0.1)
        assert decision.restarts == 3
        last_heard = time.monotonic()
        frozen.tick(1.0)
        assert not heartbeat_overdue(last_heard, time.monotonic(), 1.0)
        frozen.tick(0.01)
        assert heartbeat_overdue(last_heard, time.monotonic(), 1.0)
