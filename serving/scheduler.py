"""A bounded queue in front of the models, and the bridge from the turn threads to the event loop.

Up to ``workers`` turns run at once (``ServerSettings.batch_size``), each on its own thread; their model calls meet
in the system's engine, which batches them (continuous batching, :mod:`orchestrator.engine`). With one worker, turns
run one at a time. ``queue_size`` more requests may wait; past that, :meth:`Scheduler.admit` answers 429 with a
Retry-After estimated from recent turn times. Each admitted :class:`Job` has a cancel flag: a client that goes away
sets it, and the running turn stops at its next decoding or denoising step (a job cancelled while still waiting
never starts). One job's exception is delivered to that job only.
"""

from __future__ import annotations

import asyncio
import math
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from serving.protocol import APIError

END = object()


class Job:
    """One admitted request: a cancel flag and a queue of ``("event", Event) | ("error", exc) | END`` items."""

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.cancel = threading.Event()
        self.items: asyncio.Queue = asyncio.Queue()
        self._loop = loop

    def put(self, item: Any) -> None:
        self._loop.call_soon_threadsafe(self.items.put_nowait, item)


class Scheduler:
    def __init__(self, queue_size: int, workers: int = 1) -> None:
        self.workers = workers
        self.capacity = workers + queue_size
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="mmgraph-turn")
        self._lock = threading.Lock()
        self._admitted = 0
        self._running = 0
        self._durations: deque[float] = deque([2.0], maxlen=16)

    def stats(self) -> dict:
        with self._lock:
            return {"running": self._running, "waiting": self._admitted - self._running, "capacity": self.capacity}

    def retry_after(self) -> int:
        """Seconds until a slot is likely free: the mean recent turn time times the rounds of turns ahead."""
        mean = sum(self._durations) / len(self._durations)
        rounds = math.ceil(max(self._admitted - self.capacity + 1, 1) / self.workers)
        return max(1, math.ceil(mean * rounds))

    def check(self) -> None:
        """Answer 429 now if the queue is full: called before a request's media are decoded, so that an overloaded
        server refuses cheaply (:meth:`admit` checks again when the request is ready)."""
        with self._lock:
            self._refuse_if_full()

    def admit(self) -> Job:
        with self._lock:
            self._refuse_if_full()
            self._admitted += 1
        return Job(asyncio.get_running_loop())

    def _refuse_if_full(self) -> None:
        if self._admitted >= self.capacity:
            raise APIError(
                429,
                f"the server is busy: {self._admitted} requests are running or waiting "
                f"(limit {self.capacity}); retry later",
                type="rate_limit_error",
                code="queue_full",
                headers={"Retry-After": str(self.retry_after())},
            )

    def start(self, job: Job, run: Callable[[threading.Event], Iterator[Any]]) -> None:
        """Run ``run(cancel)`` on the model thread, forwarding what it yields to the job's queue."""

        def work() -> None:
            began = time.perf_counter()
            try:
                if job.cancel.is_set():
                    return
                with self._lock:
                    self._running += 1
                try:
                    for event in run(job.cancel):
                        job.put(("event", event))
                        if job.cancel.is_set():
                            break
                finally:
                    with self._lock:
                        self._running -= 1
                    self._durations.append(time.perf_counter() - began)
            except BaseException as exc:  # delivered to this job only; the model thread lives on
                job.put(("error", exc))
            finally:
                with self._lock:
                    self._admitted -= 1
                job.put(END)

        try:
            self._executor.submit(work)
        except RuntimeError as exc:  # shutting down
            with self._lock:
                self._admitted -= 1
            raise APIError(503, "the server is shutting down", type="server_error", code="shutting_down") from exc

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)
