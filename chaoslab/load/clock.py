"""Waking the load generator's users at their requests' due times, to the tens of microseconds.

gevent's timers run on libev, which waits in epoll_wait with a timeout in whole milliseconds
and rounds it up: a user that sleeps until its request is due wakes up to a millisecond late
(0.55 ms at the median here), and an open-model request carries that lateness in its latency.
A timerfd has a nanosecond expiry, and epoll returns as soon as it is readable: one timerfd per
process, armed for the earliest waiting user, wakes every user due by then, then is armed for
the next. It costs two system calls a wake-up, no spinning (a spinning generator would look
busy to the saturation check, and be). Where timerfd is missing, gevent.sleep does the job.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import heapq
import itertools
import math
import os
import time
from typing import Any

import gevent
from gevent.hub import Waiter, get_hub

CLOCK_MONOTONIC = 1  # time.monotonic's clock on Linux
TFD_NONBLOCK = 0o4000
TFD_CLOEXEC = 0o2000000
TFD_TIMER_ABSTIME = 1


class _Timespec(ctypes.Structure):
    _fields_ = [("tv_sec", ctypes.c_long), ("tv_nsec", ctypes.c_long)]


class _Itimerspec(ctypes.Structure):
    _fields_ = [("it_interval", _Timespec), ("it_value", _Timespec)]


class AlarmClock:
    """`sleep(seconds)` for the greenlets of one gevent hub, woken by one timerfd."""

    def __init__(self) -> None:
        libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
        self._settime = libc.timerfd_settime
        self._settime.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.POINTER(_Itimerspec), ctypes.c_void_p]
        fd = libc.timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC)
        if fd < 0:
            raise OSError(ctypes.get_errno(), "timerfd_create")
        self._fd = fd
        self._heap: list[list[Any]] = []  # [monotonic due, order, waiter or None when done]
        self._order = itertools.count()
        self._armed = math.inf
        self._watcher = get_hub().loop.io(fd, 1)  # readable
        self._watcher.start(self._fire)
        self._watcher.ref = False  # keeps the hub alive only while a greenlet waits on it
        self._waiting = 0
        self.wakeups = 0
        self.failures = 0  # wake-ups that raised (each woke every waiting user at once)

    def sleep(self, seconds: float) -> None:
        if seconds <= 0:
            return
        waiter = Waiter()
        entry = [time.monotonic() + seconds, next(self._order), waiter]
        heapq.heappush(self._heap, entry)
        self._waiting += 1
        self._watcher.ref = True
        try:
            if entry[0] < self._armed:
                self._arm(entry[0])
            waiter.get()
        except OSError:  # the timer could not be set: gevent's own sleep, below
            self.failures += 1
        finally:  # woken, or killed while waiting (GreenletExit): the entry wakes no one
            entry[2] = None
            self._waiting -= 1
            if not self._waiting:
                self._watcher.ref = False
        left = entry[0] - time.monotonic()
        if left > 0:  # woken early by a failure (below): never sent before its time
            gevent.sleep(left)

    def close(self) -> None:
        self._watcher.stop()
        os.close(self._fd)

    def _arm(self, at: float) -> None:
        seconds = int(at)
        spec = _Itimerspec(_Timespec(0, 0), _Timespec(seconds, max(1, int((at - seconds) * 1e9))))
        if self._settime(self._fd, TFD_TIMER_ABSTIME, ctypes.byref(spec), None) != 0:
            raise OSError(ctypes.get_errno(), "timerfd_settime")
        self._armed = at

    def _fire(self) -> None:
        """In the hub: every greenlet due by now goes on, then the timer aims at the next.
        Never raises (gevent would stop the watcher, and every waiting user with it): on a
        failure the waiting users are woken, and sleep the rest of their time with gevent."""
        heap = self._heap
        try:
            with contextlib.suppress(BlockingIOError):  # the expiry count; none if spurious
                os.read(self._fd, 8)
            self._armed = math.inf
            now = time.monotonic()
            while heap and (heap[0][2] is None or heap[0][0] <= now):
                waiter = heapq.heappop(heap)[2]
                if waiter is not None:
                    self.wakeups += 1
                    waiter.switch(None)  # runs the greenlet until it waits again
            if heap and heap[0][0] < self._armed:
                self._arm(heap[0][0])
        except Exception:
            self.failures += 1
            self._armed = math.inf
            while heap:
                waiter = heapq.heappop(heap)[2]
                if waiter is not None:
                    waiter.switch(None)


def sleeper() -> Any:
    """The hub's sleep to a due time: an AlarmClock, or gevent.sleep where timerfd is missing."""
    try:
        return AlarmClock().sleep
    except (OSError, AttributeError):
        return gevent.sleep
