"""Locust users for the load test of ``mmgraph serve`` (:mod:`benchmarks.load` runs them: ``mmgraph bench load``).

Each user sends the mixed turns of :mod:`benchmarks.workload` to ``POST /v1/chat/completions``, one after another:
the users share one counter, so request ``i`` of the whole test is turn ``i`` of the workload, and every image
question carries a picture rendered for that request alone. After an answer a user asks again at once; after a 429
it waits 0.2-0.6 s (not the whole Retry-After: the point is to keep the queue over its capacity).

Every request is classified and written as one JSON line to ``$MMGRAPH_LOAD_RECORDS``
(``{"start", "kind", "status", "latency_s", "outcome", "retry_after", "error"}``):

* ``served`` -- a 200 whose reply is whole (:func:`benchmarks.workload.problem`);
* ``refused`` -- a 429, with ``retry_after`` the header's value (null when it is missing); locust counts it under
  the name ``429 queue full``, as a success when it carries a Retry-After in seconds and a failure otherwise;
* ``error`` -- anything else: another status, a broken or incomplete reply, a connection error.

Run it through ``mmgraph bench load`` (which starts the server, samples its memory and reads these lines), or by hand
against a running server: ``locust -f benchmarks/locustfile.py --headless -u 6 -r 6 -t 60s --host URL``.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import time
from typing import IO, Any

from locust import HttpUser, task

from benchmarks.workload import MODEL, REFUSED_NAME, problem, turn

_counter = itertools.count()
_records: IO[str] | None = None


def record(entry: dict[str, Any]) -> None:
    """Append one request's line to ``$MMGRAPH_LOAD_RECORDS`` (greenlets share one OS thread: lines do not mix)."""
    global _records
    path = os.environ.get("MMGRAPH_LOAD_RECORDS")
    if not path:
        return
    if _records is None:
        _records = open(path, "a", buffering=1, encoding="utf-8")  # open for the process's life
    _records.write(json.dumps(entry) + "\n")


class MixedTurns(HttpUser):
    """One client of the chat backend: the workload's turns, back to back."""

    model = os.environ.get("MMGRAPH_LOAD_MODEL", MODEL)
    request_timeout = float(os.environ.get("MMGRAPH_LOAD_TIMEOUT", "300"))

    def on_start(self) -> None:
        self.refused = False

    def wait_time(self) -> float:
        return random.uniform(0.2, 0.6) if self.refused else 0.0

    @task
    def chat(self) -> None:
        index = next(_counter)
        kind, body = turn(index, image_seed=index, model=self.model)
        entry: dict[str, Any] = {"start": time.time(), "kind": kind, "retry_after": None, "error": None}
        began = time.perf_counter()
        with self.client.post(
            "/v1/chat/completions", json=body, name=kind, catch_response=True, timeout=self.request_timeout
        ) as response:
            entry["latency_s"] = time.perf_counter() - began
            entry["status"] = response.status_code
            self.refused = response.status_code == 429
            if response.status_code == 200:
                try:
                    entry["error"] = problem(kind, response.json())
                except ValueError as exc:
                    entry["error"] = f"the reply is not JSON: {exc}"
            elif response.status_code != 429:
                detail = response.text[:200] if response.status_code else str(response.error)
                entry["error"] = f"HTTP {response.status_code}: {detail}"
            entry["outcome"] = "refused" if self.refused else "error" if entry["error"] else "served"
            if self.refused:
                entry["retry_after"] = response.headers.get("Retry-After")
                response.request_meta["name"] = REFUSED_NAME
                if not (entry["retry_after"] or "").isdigit():  # a refusal must say when to come back
                    response.failure(f"a 429 without a Retry-After in seconds: {entry['retry_after']!r}")
                else:
                    response.success()
            elif entry["error"]:
                response.failure(entry["error"])
            else:
                response.success()
        record(entry)
