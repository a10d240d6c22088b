"""Load and fault figures: ``mmgraph serve`` with a small queue under twice as many users as it holds, with locust.

``mmgraph bench load`` starts ``mmgraph serve`` (tiny-world, ``--queue-size``, default 2: with turns run one at a
time, one running and two waiting, a capacity of 3) as a child process and warms it up (one turn of each kind alone,
then twice the capacity of turns from as many clients as it holds). Then locust runs headless in a subprocess of its
own (locust patches the standard library with gevent; that stays out of this process), with ``--users`` users
(default twice the capacity ``/health`` reports) sending the mixed workload of :mod:`benchmarks.workload` for
``--seconds`` (:mod:`benchmarks.locustfile`). Users still inside a request when the time is up finish it
(``--stop-timeout``). Meanwhile the server's resident memory is read from /proc every second.

The report (:class:`LoadReport`): requests served, refused with 429 (and how many of those carried Retry-After),
errors other than 429 (target 0), latency percentiles, the server's memory over the run (the mean of the first
third of the samples against the last third: target flat), ``/health`` after the run (its queue back to 0 running,
0 waiting), and that the server and locust stopped with nothing left running.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.serve import ServerProcess, measure
from benchmarks.workload import KINDS

DEFAULT_SECONDS = 300
DEFAULT_QUEUE_SIZE = 2
MIB = 2**20
#: the locust users; run by locust in its own process, never imported here (locust monkey-patches with gevent)
LOCUSTFILE = Path(__file__).with_name("locustfile.py")


@dataclass
class LoadReport:
    """What one load test measured (:func:`run_load`)."""

    seconds: float  # the planned duration of the load
    users: int
    queue_size: int
    capacity: int  # what /health reports: turns that may run at once + queue_size waiting
    duration_s: float  # from starting locust to its exit (the load, users finishing their last request, reports)
    sent: int  # requests that got an answer or an error
    served: int
    served_by_kind: dict[str, int]
    refused: int  # 429s
    refused_with_retry_after: int
    errors: int  # anything but a whole 200 answer or a 429
    error_samples: list[str]
    served_p50_s: float
    served_p99_s: float
    served_max_s: float
    refused_p99_s: float
    rss_samples_mib: list[float] = field(repr=False)
    rss_first_third_mib: float
    rss_last_third_mib: float
    rss_growth_mib: float  # last third's mean minus the first third's
    rss_peak_mib: float
    health_after: dict[str, Any]  # GET /health once the load stopped and the queue drained
    server_returncode: int | None
    server_graceful: bool | None
    leftovers: list[int]  # processes of the server's session still running after it stopped
    locust_returncode: int | None
    locust_stats: dict[str, Any]  # locust's own counts by request name, to cross-check the records

    @property
    def served_per_s(self) -> float:
        return self.served / self.seconds

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "served_per_s": self.served_per_s}

    def table(self) -> str:
        retry = f"{self.refused_with_retry_after} of {self.refused} with Retry-After"
        kinds = ", ".join(f"{self.served_by_kind.get(k, 0)} {k}" for k in KINDS)
        rows = [
            ("load", f"{self.users} users, queue {self.queue_size} (capacity {self.capacity}), {self.seconds:g} s"),
            ("requests answered", f"{self.sent} in {self.duration_s:.0f} s"),
            ("served (200, whole reply)", f"{self.served} ({self.served_per_s:.2f}/s): {kinds}"),
            ("refused (429)", retry),
            ("errors other than 429", f"{self.errors} (target 0)"),
            ("latency of served turns", f"p50 {self.served_p50_s:.3g} s, p99 {self.served_p99_s:.3g} s, "
             f"max {self.served_max_s:.3g} s"),
            ("latency of 429s", f"p99 {self.refused_p99_s * 1e3:.3g} ms"),
            ("server RSS, first third -> last third", f"{self.rss_first_third_mib:.1f} -> "
             f"{self.rss_last_third_mib:.1f} MiB ({self.rss_growth_mib:+.1f} MiB; peak {self.rss_peak_mib:.1f} MiB, "
             f"{len(self.rss_samples_mib)} samples)"),
            ("/health afterwards", f"{self.health_after.get('status')}, queue {self.health_after.get('queue')}"),
            ("stopped", f"server exit {self.server_returncode} (graceful: {self.server_graceful}), locust exit "
             f"{self.locust_returncode}, processes left: {len(self.leftovers)}"),
        ]  # fmt: skip
        lines = ["mmgraph bench load: locust against mmgraph serve (tiny-world) on 127.0.0.1", ""]
        lines += ["| measure | value |", "|---|---|", *[f"| {k} | {v} |" for k, v in rows]]
        lines += [f"  error: {e}" for e in self.error_samples]
        return "\n".join(lines)


class _Sampler(threading.Thread):
    """Reads the server's RSS every ``every`` seconds until stopped."""

    def __init__(self, server: ServerProcess, every: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.server, self.every = server, every
        self.samples: list[int] = []
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                self.samples.append(self.server.rss())
            except OSError:  # the server is gone (the report's checks say so)
                return
            self.done.wait(self.every)


def _percentile(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def _locust_stats(path: Path) -> dict[str, Any]:
    """Locust's own counts by request name (its ``--json-file``)."""
    if not path.exists():
        return {}
    return {
        entry["name"]: {"requests": entry["num_requests"], "failures": entry["num_failures"]}
        for entry in json.loads(path.read_text())
    }


def run_load(
    *,
    seconds: float = DEFAULT_SECONDS,
    queue_size: int = DEFAULT_QUEUE_SIZE,
    users: int | None = None,
    server_args: Sequence[str] = (),
    stop_timeout: float = 120.0,
) -> LoadReport:
    """Start the server, load it with locust for ``seconds``, and report (module docstring). ``users`` defaults to
    twice the capacity the server reports on ``/health`` (requests running at once plus ``queue_size`` waiting)."""
    with tempfile.TemporaryDirectory(prefix="mmgraph-bench-load-") as tmp:
        folder = Path(tmp)
        records_path, stats_path = folder / "records.jsonl", folder / "locust.json"  # locust adds the .json
        with ServerProcess(*server_args, queue_size=queue_size) as server:
            model = server.model()
            capacity = server.health()["queue"]["capacity"]
            users = users or 2 * capacity
            # warm-up: one turn of each kind alone, then as many at once as the server holds, so that the threads
            # and allocator arenas concurrent requests bring are there before memory is sampled
            for clients, turns in ((0, len(KINDS)), (capacity, 2 * capacity)):
                warmup = measure(server.url, model, turns, clients, first_seed=10**6 + 1000 * clients)
                if warmup.failures:
                    raise RuntimeError(f"the warm-up turns failed: {warmup.failures}")
            cmd = [sys.executable, "-m", "locust", "-f", str(LOCUSTFILE), "--headless", "--only-summary"]
            cmd += ["--users", str(users), "--spawn-rate", str(users), "--run-time", f"{seconds:g}s"]
            cmd += ["--stop-timeout", f"{stop_timeout:g}", "--host", server.url, "--loglevel", "WARNING"]
            cmd += ["--json-file", str(stats_path.with_suffix(""))]
            env = {**os.environ, "MMGRAPH_LOAD_RECORDS": str(records_path), "MMGRAPH_LOAD_MODEL": model}
            sampler = _Sampler(server)
            sampler.start()
            began = time.monotonic()
            with (folder / "locust.log").open("wb") as log:
                locust = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
                try:
                    locust.wait(timeout=seconds + stop_timeout + 120)
                finally:  # past its time, or this process is interrupted: locust goes too
                    if locust.poll() is None:
                        locust.kill()
                        locust.wait()
                    sampler.done.set()
                    sampler.join()
            duration = time.monotonic() - began
            server.wait_idle(timeout=60)
            health = server.health()
        records = [json.loads(line) for line in records_path.read_text().splitlines()] if records_path.exists() else []
        stats = _locust_stats(stats_path)
        if not records:
            raise RuntimeError(f"locust recorded no request:\n{(folder / 'locust.log').read_text()[-4000:]}")
    by = Counter(r["outcome"] for r in records)
    served = [r for r in records if r["outcome"] == "served"]
    refused = [r for r in records if r["outcome"] == "refused"]
    errors = [r for r in records if r["outcome"] == "error"]
    rss = [s / MIB for s in sampler.samples]
    third = max(1, len(rss) // 3)
    first, last = float(np.mean(rss[:third])), float(np.mean(rss[-third:]))
    return LoadReport(
        seconds=seconds,
        users=users,
        queue_size=queue_size,
        capacity=capacity,
        duration_s=duration,
        sent=len(records),
        served=by["served"],
        served_by_kind=dict(Counter(r["kind"] for r in served)),
        refused=by["refused"],
        refused_with_retry_after=sum(1 for r in refused if (r["retry_after"] or "").isdigit()),
        errors=by["error"],
        error_samples=sorted({r["error"] for r in errors})[:5],
        served_p50_s=_percentile([r["latency_s"] for r in served], 50),
        served_p99_s=_percentile([r["latency_s"] for r in served], 99),
        served_max_s=max((r["latency_s"] for r in served), default=float("nan")),
        refused_p99_s=_percentile([r["latency_s"] for r in refused], 99),
        rss_samples_mib=rss,
        rss_first_third_mib=first,
        rss_last_third_mib=last,
        rss_growth_mib=last - first,
        rss_peak_mib=max(rss),
        health_after=health,
        server_returncode=server.returncode,
        server_graceful=server.graceful,
        leftovers=server.leftovers(),
        locust_returncode=locust.returncode,
        locust_stats=stats,
    )
