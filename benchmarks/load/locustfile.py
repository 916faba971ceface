"""Locust users for benchmarks.load: team members browsing dashboards and polling job status.

Each simulated user takes one seeded, logged-in session (LOAD_USERS_FILE) and behaves like
the browser pages do: the live job page polls its status fragment (htmx), mostly of the job
its team is running now (LOAD_CURRENT_FILE, kept by the feeder), and in between the user
opens the project dashboard, its job table, a job page or the project list. Request names
group the statistics per endpoint.
"""

from __future__ import annotations

import itertools
import json
import os
import random
from pathlib import Path
from urllib.parse import urlsplit

from locust import HttpUser, between, task

_DATA = json.loads(Path(os.environ["LOAD_USERS_FILE"]).read_text(encoding="utf-8"))
# project uuid -> the job the feeder started last (queued or running), rewritten as it goes.
_CURRENT = Path(os.environ["LOAD_CURRENT_FILE"])
_NEXT = itertools.count()
HTMX = {"HX-Request": "true"}
LOGIN_PATH = "/accounts/login/"


def _current_job(project: str) -> str | None:
    try:
        return json.loads(_CURRENT.read_text(encoding="utf-8")).get(project)
    except (OSError, ValueError):  # not written yet, or caught mid-replace
        return None


class TeamMember(HttpUser):
    wait_time = between(1, 3)

    def on_start(self) -> None:
        row = _DATA["users"][next(_NEXT) % len(_DATA["users"])]
        self.client.cookies.set(_DATA["cookie"], row["session"])
        self.project, self.jobs = row["project"], row["jobs"]
        self.rng = random.Random(row["session"])

    def _get(self, path: str, name: str, **kwargs) -> None:
        # 286 is htmx's "stop polling" answer for a finished job: a success. A lost session
        # would redirect to the (fast) login page, which must not pass for the page itself.
        with self.client.get(path, name=name, catch_response=True, **kwargs) as response:
            if response.url and urlsplit(response.url).path == LOGIN_PATH:
                response.failure("redirected to the login page")
            elif response.status_code in (200, 286):
                response.success()
            else:
                response.failure(f"HTTP {response.status_code}")

    @task(6)
    def job_status(self) -> None:
        # Mostly the team's running job, as its live page would; sometimes a finished one.
        job = _current_job(self.project) if self.rng.random() < 0.8 else None
        job = job or self.rng.choice(self.jobs)
        self._get(f"/jobs/{job}/status/", "job status", headers=HTMX)

    @task(3)
    def dashboard(self) -> None:
        self._get(f"/projects/{self.project}/", "project dashboard")

    @task(2)
    def jobs_table(self) -> None:
        self._get(f"/jobs/projects/{self.project}/", "job table fragment", headers=HTMX)

    @task(1)
    def job_page(self) -> None:
        self._get(f"/jobs/{self.rng.choice(self.jobs)}/", "job page")

    @task(1)
    def projects(self) -> None:
        self._get("/", "project list")
