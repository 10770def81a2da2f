"""The load generator's alarm clock (chaoslab/load/clock.py): its users wake in due order,
never before their time, each once; one killed while it waits leaves the others on time."""

from __future__ import annotations

import itertools
import random
import time

import gevent
import pytest

from chaoslab.load.clock import AlarmClock


@pytest.fixture
def clock():  # type: ignore[no-untyped-def]
    c = AlarmClock()
    yield c
    c.close()


def test_users_wake_in_due_order_and_never_early(clock: AlarmClock) -> None:
    rng = random.Random(5)
    woke: list[tuple[float, float]] = []  # (due, woke)

    def user(wait: float) -> None:
        due = time.monotonic() + wait
        clock.sleep(wait)
        woke.append((due, time.monotonic()))

    waits = [rng.uniform(0.001, 0.2) for _ in range(200)] + [0.05] * 20  # 20 due together
    gevent.joinall([gevent.spawn(user, w) for w in waits], timeout=5)
    assert len(woke) == len(waits) == clock.wakeups
    assert all(at >= due for due, at in woke), min(at - due for due, at in woke)
    dues = [due for due, _ in woke]
    # woken in due order (a greenlet's due is read a few µs after the one spawned before it)
    assert all(b >= a - 1e-3 for a, b in itertools.pairwise(dues))


def test_a_user_killed_while_waiting_wakes_no_one_and_leaves_the_rest(clock: AlarmClock) -> None:
    woke: list[str] = []

    def user(name: str, wait: float) -> None:
        clock.sleep(wait)
        woke.append(name)

    first = gevent.spawn(user, "killed", 0.05)
    second = gevent.spawn(user, "kept", 0.1)
    gevent.sleep(0.01)
    first.kill()
    second.join(timeout=2)
    assert woke == ["kept"] and clock.wakeups == 1
    # nobody waits now: the clock no longer keeps the hub alive
    assert not clock._watcher.ref
    assert gevent.wait(timeout=1) is True


def test_nothing_to_wait_for_returns_at_once(clock: AlarmClock) -> None:
    clock.sleep(0)
    clock.sleep(-1.0)
    assert clock.wakeups == 0 and not clock._heap


def test_a_lone_waiter_killed_lets_the_hub_go_at_once(clock: AlarmClock) -> None:
    g = gevent.spawn(clock.sleep, 30.0)
    gevent.sleep(0.01)
    assert clock._watcher.ref
    g.kill()
    assert not clock._watcher.ref


def test_a_timer_that_fails_wakes_its_users_who_still_wait_their_time(
    clock: AlarmClock, monkeypatch: pytest.MonkeyPatch
) -> None:
    woke: list[tuple[float, float]] = []

    def user(wait: float) -> None:
        due = time.monotonic() + wait
        clock.sleep(wait)
        woke.append((due, time.monotonic()))

    users = [gevent.spawn(user, 0.02 * (i + 1)) for i in range(5)]
    gevent.sleep(0.005)
    arm = clock._arm

    def broken(at: float) -> None:  # the first re-arm after a wake-up fails, once
        monkeypatch.setattr(clock, "_arm", arm)
        raise OSError(22, "timerfd_settime")

    monkeypatch.setattr(clock, "_arm", broken)
    gevent.joinall(users, timeout=5)
    assert len(woke) == 5 and clock.failures == 1
    assert all(at >= due for due, at in woke)
