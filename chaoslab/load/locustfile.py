"""Locust user for chaoslab's open (arrival-rate) model. Runs only inside the Locust child.

Configuration comes as JSON in the file named by $CHAOSLAB_LOAD_CONFIG. Arrivals are
scheduled at fixed times t0 + k/rate, shared by all users (one gevent hub: no locking
needed); `concurrency` users bound the requests in flight. Each request's latency is
measured from its due time, so a stalled target cannot hide its stall behind a generator
that waited for it (coordinated omission): a request sent late carries its lateness.

Output: $CHAOSLAB_LOAD_CONFIG's `records` file gets a line `start <t0>` once every user is
connected, then one TSV line per request: due, sent, end (epoch s), status, name, error.
"""

import json
import os
import random
import time

import gevent
from locust import FastHttpUser, events, task
from locust.exception import StopUser

with open(os.environ["CHAOSLAB_LOAD_CONFIG"]) as _fh:
    CONFIG = json.load(_fh)
RATE = float(CONFIG["rate"])
DURATION = float(CONFIG["duration"])
MAX_REQUESTS = int(CONFIG["max_requests"])
REQUESTS = CONFIG["requests"]
WEIGHTS = [r["weight"] for r in REQUESTS]


class Schedule:
    def __init__(self):
        self.t0 = None
        self.k = 0
        self.connected = 0
        # Open for the whole life of the Locust process; flushed by _flusher and on quit.
        self.out = open(CONFIG["records"], "a", buffering=1 << 16)  # noqa: SIM115

    def next_due(self):
        if self.t0 is None:
            return None
        if self.k >= MAX_REQUESTS:
            return None
        due = self.t0 + self.k / RATE
        if due >= self.t0 + DURATION:
            return None
        self.k += 1
        return due

    def user_connected(self, total):
        self.connected += 1
        if self.connected == total and self.t0 is None:
            self.t0 = time.time() + 0.5
            self.out.write(f"start\t{self.t0:.6f}\n")
            self.out.flush()


SCHEDULE = Schedule()


def _flusher():
    while True:
        gevent.sleep(0.2)
        SCHEDULE.out.flush()


@events.test_start.add_listener
def _on_start(environment, **_kw):
    gevent.spawn(_flusher)


@events.quitting.add_listener
def _on_quit(environment, **_kw):
    SCHEDULE.out.flush()


class ArrivalUser(FastHttpUser):
    # The schedule paces requests; Locust must not add its own wait.
    def wait_time(self):
        return 0

    network_timeout = float(CONFIG.get("timeout", 10.0))
    connection_timeout = float(CONFIG.get("timeout", 10.0))

    def on_start(self):
        # One untimed request per user opens its connection (and TLS session) before t0.
        for _ in range(50):
            try:
                with self.client.get("/healthz", name="warmup", catch_response=True) as r:
                    if r.status_code == 200:
                        break
            except Exception:
                pass
            gevent.sleep(0.1)
        SCHEDULE.user_connected(int(CONFIG["concurrency"]))

    @task
    def fire(self):
        while SCHEDULE.t0 is None:
            gevent.sleep(0.01)
        due = SCHEDULE.next_due()
        if due is None:
            raise StopUser()
        wait = due - time.time()
        if wait > 0:
            gevent.sleep(wait)
        req = random.choices(REQUESTS, WEIGHTS)[0]
        sent = time.time()
        status, error = 0, ""
        try:
            with self.client.get(req["path"], name=req["name"], catch_response=True) as resp:
                status = resp.status_code or 0
                if status != 200:
                    error = (
                        f"http-{status}"
                        if status
                        else type(resp.error).__name__
                        if resp.error
                        else "no-response"
                    )
                    resp.failure(error)
                else:
                    resp.success()
        except Exception as exc:
            error = type(exc).__name__
        end = time.time()
        SCHEDULE.out.write(f"{due:.6f}\t{sent:.6f}\t{end:.6f}\t{status}\t{req['name']}\t{error}\n")
