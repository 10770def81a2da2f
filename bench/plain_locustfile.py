"""Plain Locust, for bench/load_rate.py: FastHttpUser at the target as fast as it goes."""

from locust import FastHttpUser, constant, task


class PlainUser(FastHttpUser):
    wait_time = constant(0)

    @task
    def get(self):
        self.client.get("/healthz")
