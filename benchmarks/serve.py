"""Serving throughput: the real ``mmgraph serve`` under 1 to 16 concurrent OpenAI clients against one client alone.

``mmgraph bench serve`` starts ``mmgraph serve`` (the default tiny-world system) as a child process on 127.0.0.1 and
a free port, waits for ``GET /health``, and drives it through the official ``openai`` client with the mixed
workload of :mod:`benchmarks.workload` (an image question, a text question, an image generation, cycling). For the
same set of ``--requests`` turns it measures, in one run:

* the serial baseline: one client sends the turns one after another;
* ``--clients`` concurrent clients (threads, each with its own ``openai.OpenAI``): they take the next turn of the
  set as soon as their last one is answered, until the set is done.

Each client times its own requests (the ``create`` call, from sending to the parsed reply). Throughput is answered
turns over the wall time from the first request sent to the last reply received. Before timing, three untimed
turns (one of each kind) warm the server up. Every image question sends a picture the server has not seen, so no
run is helped by the server's media and feature caches. The server's queue is sized so that no client is refused
(``--queue-size`` = the most clients): a refusal would count as a failed turn. Afterwards the server is stopped
(SIGTERM, then SIGKILL after 30 s) and nothing of it is left running.

Targets (docs/benchmarks.md): at 8 clients, at least 3x the serial throughput, with a p50 latency no worse than
2x a lone request's (the serial run's p50).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np

from benchmarks.common import Row
from benchmarks.workload import KINDS, problem, turn

#: what ``mmgraph bench serve`` runs by default
DEFAULT_REQUESTS = 16
DEFAULT_CLIENTS = (1, 4, 8, 16)
#: the targets of docs/benchmarks.md: throughput at this many clients over serial, and its p50 over a lone request's
TARGET_CLIENTS, TARGET_SPEEDUP, TARGET_LATENCY = 8, 3.0, 2.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of process ``pid`` and its waited-for children, in seconds (/proc/<pid>/stat)."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "; fields[11:15]: utime stime cutime cstime
    return sum(int(v) for v in fields[11:15]) / os.sysconf("SC_CLK_TCK")


def own_cpu_seconds() -> float:
    """CPU time of this process (the benchmark's clients), user + system, in seconds."""
    t = os.times()
    return t.user + t.system


def get_json(url: str, timeout: float = 10.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


class ServerProcess:
    """``with ServerProcess(queue_size=2) as server: server.url`` -- ``mmgraph serve`` as a child process in a
    session of its own, on 127.0.0.1 and a free port, with its thread database, artifacts and home in a temporary
    folder, until the block ends.

    ``server.rss()`` reads the process's resident memory from /proc; after the block, ``server.returncode`` is its
    exit status and :meth:`leftovers` lists any process still in its session (none, normally)."""

    def __init__(self, *extra: str, queue_size: int | None = None, startup_timeout: float = 180.0) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.extra = [*extra, *(["--queue-size", str(queue_size)] if queue_size is not None else [])]
        self.startup_timeout = startup_timeout
        self.proc: subprocess.Popen[bytes] | None = None
        self.returncode: int | None = None
        self.graceful: bool | None = None  # after stop: the server logged the end of uvicorn's graceful shutdown
        self._folder: tempfile.TemporaryDirectory[str] | None = None

    @property
    def pid(self) -> int:
        if self.proc is None:
            raise RuntimeError("the server is not started")
        return self.proc.pid

    @property
    def log(self) -> Path:
        if self._folder is None:
            raise RuntimeError("the server is not started")
        return Path(self._folder.name) / "server.log"

    def __enter__(self) -> ServerProcess:
        self._folder = tempfile.TemporaryDirectory(prefix="mmgraph-bench-serve-")
        home = Path(self._folder.name)
        cmd = [sys.executable, "-m", "mmgraph.cli", "serve", "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--db", str(home / "threads.sqlite"), "--artifacts", str(home / "artifacts")]
        cmd += ["--log-level", "info", *self.extra]
        env = {**os.environ, "MMGRAPH_HOME": str(home), "HF_HUB_OFFLINE": "1"}
        with self.log.open("wb") as out:  # a file, not a pipe: a full pipe would stall the server
            self.proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self._wait_ready()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def _wait_ready(self) -> None:
        deadline = time.monotonic() + self.startup_timeout
        while True:
            try:
                if self.health().get("status") == "ok":
                    return
            except (OSError, ValueError):
                pass
            if self.proc is None or self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mmgraph serve did not start on {self.url}:\n{self.log.read_text()[-4000:]}")
            time.sleep(0.2)

    def health(self) -> dict[str, Any]:
        return get_json(f"{self.url}/health")

    def model(self) -> str:
        return get_json(f"{self.url}/v1/models")["data"][0]["id"]

    def wait_idle(self, timeout: float = 60.0) -> dict[str, Any]:
        """``/health``'s queue once nothing runs or waits (or as it is when ``timeout`` runs out)."""
        deadline = time.monotonic() + timeout
        while True:
            queue = self.health()["queue"]
            if (queue["running"] == 0 and queue["waiting"] == 0) or time.monotonic() > deadline:
                return queue
            time.sleep(0.1)

    def rss(self) -> int:
        """The server's resident memory in bytes (VmRSS of /proc/<pid>/status)."""
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
        raise RuntimeError(f"no VmRSS for process {self.pid}")

    def cpu_seconds(self) -> float:
        """CPU time the server has used so far, all its threads, user and system (/proc/<pid>/stat), in seconds."""
        return process_cpu_seconds(self.pid)

    def leftovers(self) -> list[int]:
        """Processes still running in the server's session (it was started as the leader of a new one)."""
        found = []
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:  # the process ended while we looked
                continue
            if int(fields[3]) == self.pid and fields[0] != "Z":  # fields[3]: the session id; Z: a zombie
                found.append(int(stat.parent.name))
        return found

    def stop(self, timeout: float = 30.0) -> int:
        """SIGTERM (uvicorn's graceful shutdown), SIGKILL to the session after ``timeout``; the exit status (uvicorn
        raises the SIGTERM it caught again once it has shut down, so a clean stop is ``-SIGTERM``)."""
        if self.proc is None:
            raise RuntimeError("the server is not started")
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.returncode = self.proc.returncode
        self.graceful = f"Finished server process [{self.proc.pid}]" in self.log.read_text(errors="replace")
        return self.returncode

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, traceback: TracebackType | None
    ) -> None:
        try:
            if self.proc is not None:
                self.stop()
        finally:
            if self._folder is not None:
                self._folder.cleanup()


@dataclass
class Run:
    """One measured pass over the set of turns: ``clients`` 0 is the serial baseline."""

    clients: int
    wall_s: float
    latencies: list[float] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)  # the kind of turn of each latency
    server_cpu_s: float = 0.0  # CPU time the server used during the run
    client_cpu_s: float = 0.0  # CPU time the clients (this process) used during the run

    @property
    def answered(self) -> int:
        return len(self.latencies) - len(self.failures)

    def cpu_per_turn(self) -> tuple[float, float]:
        """Server and client CPU seconds per answered turn."""
        n = max(self.answered, 1)
        return self.server_cpu_s / n, self.client_cpu_s / n

    @property
    def name(self) -> str:
        return "serial" if self.clients == 0 else f"{self.clients} client{'s' if self.clients > 1 else ''}"

    @property
    def throughput(self) -> float:
        """Answered turns per second (failed ones do not count)."""
        return self.answered / self.wall_s

    def percentile(self, q: float) -> float:
        return float(np.percentile(self.latencies, q))

    def kind_p50(self) -> dict[str, float]:
        """The median latency of each kind of turn."""
        by: dict[str, list[float]] = {}
        for kind, latency in zip(self.kinds, self.latencies):
            by.setdefault(kind, []).append(latency)
        return {kind: float(np.median(by[kind])) for kind in KINDS if kind in by}


def _one(client: Any, kind: str, body: dict[str, Any], openai: Any) -> tuple[float, str | None, str]:
    """Send one turn; its latency in seconds, what went wrong (None: a whole answer) and its kind."""
    start = time.perf_counter()
    try:
        reply = client.chat.completions.create(**body)
    except openai.APIError as exc:
        return time.perf_counter() - start, f"{kind}: {type(exc).__name__}: {exc}", kind
    latency = time.perf_counter() - start
    return latency, problem(kind, reply.model_dump()), kind


def measure(url: str, model: str, requests: int, clients: int, *, first_seed: int, timeout: float = 300.0) -> Run:
    """Send the workload's turns 0..requests-1 (image questions rendered with seeds from ``first_seed``) with
    ``clients`` concurrent clients, or one after another from this thread when ``clients`` is 0."""
    import openai  # noqa: PLC0415 - the dev extra's client, needed by this benchmark alone

    turns = [turn(i, image_seed=first_seed + i, model=model) for i in range(requests)]

    def client() -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=timeout)

    if clients == 0:
        lone = client()
        results = []
        start = time.perf_counter()
        for kind, body in turns:
            results.append(_one(lone, kind, body, openai))
        wall = time.perf_counter() - start
        lone.close()
    else:
        pending = iter(turns)
        lock = threading.Lock()
        results = []
        ready = threading.Barrier(clients + 1)

        def work() -> None:
            own = client()
            ready.wait()
            while True:
                with lock:
                    item = next(pending, None)
                if item is None:
                    break
                result = _one(own, *item, openai)
                with lock:
                    results.append(result)
            own.close()

        threads = [threading.Thread(target=work, name=f"bench-client-{i}") for i in range(clients)]
        for thread in threads:
            thread.start()
        ready.wait()
        start = time.perf_counter()
        for thread in threads:
            thread.join()
        wall = time.perf_counter() - start
    failures = [r[1] for r in results if r[1] is not None]
    return Run(clients, wall, [r[0] for r in results], failures, [r[2] for r in results])


def bench_serve(
    *,
    requests: int = DEFAULT_REQUESTS,
    clients: Sequence[int] = DEFAULT_CLIENTS,
    server_args: Sequence[str] = (),
    timeout: float = 300.0,
) -> list[Row]:
    """The serial run and one run per entry of ``clients`` over the same ``requests`` turns, on one server; one
    throughput row per run (ours: that run, baseline: serial) and one p50-latency row per concurrent run (baseline:
    a lone request, the serial run's p50). Every figure of a run is in its throughput row's notes."""
    if requests < 1 or not clients or min(clients) < 1:
        raise ValueError("bench serve needs at least one request and client counts of at least 1")
    with ServerProcess(*server_args, queue_size=max(clients)) as server:
        model = server.model()
        warmup = measure(server.url, model, len(KINDS), 0, first_seed=10**6, timeout=timeout)
        if warmup.failures:
            raise RuntimeError(f"the warm-up turns failed: {warmup.failures}")
        runs = []
        for number, count in enumerate([0, *clients]):
            server_cpu, client_cpu = server.cpu_seconds(), own_cpu_seconds()
            run = measure(server.url, model, requests, count, first_seed=number * requests, timeout=timeout)
            run.server_cpu_s = server.cpu_seconds() - server_cpu
            run.client_cpu_s = own_cpu_seconds() - client_cpu
            runs.append(run)
        queue = server.wait_idle()
    leftovers = server.leftovers()
    serial = runs[0]
    lone = serial.percentile(50)
    common = {
        "bench": "serve",
        "requests": requests,
        "kinds": list(KINDS),
        "server_pid": server.pid,
        "server_port": server.port,
        "server_returncode": server.returncode,
        "server_graceful": server.graceful,
        "server_leftovers": leftovers,
        "queue_after": queue,
    }
    rows = []
    cores = os.cpu_count() or 1
    for run in runs:
        server_per_turn, client_per_turn = run.cpu_per_turn()
        notes = {
            **common,
            "server_cpu_s": run.server_cpu_s,
            "client_cpu_s": run.client_cpu_s,
            "server_cpu_per_turn_s": server_per_turn,
            "client_cpu_per_turn_s": client_per_turn,
            "server_cores_busy": run.server_cpu_s / run.wall_s,
            # the most turns/s this machine's cores could give at this run's CPU cost per turn, server and clients
            "cpu_ceiling_turns_s": cores / max(server_per_turn + client_per_turn, 1e-9),
            "cores": cores,
            "clients": run.clients,
            "turns": len(run.latencies),
            "failed": len(run.failures),
            "failures": run.failures[:5],
            "wall_s": run.wall_s,
            "throughput": run.throughput,
            "p50_s": run.percentile(50),
            "p99_s": run.percentile(99),
            "lone_p50_s": lone,
            "kind_p50_s": run.kind_p50(),
            "latencies_s": run.latencies,
        }
        name = (
            "serve throughput, serial (one client, one request after another)"
            if run.clients == 0
            else f"serve throughput, {run.name} at once vs serial"
        )
        rows.append(Row(name, "turns/s", run.throughput, serial.throughput, notes=notes))
    for run in runs[1:]:
        rows.append(
            Row(
                f"serve p50 latency, {run.name} vs a lone request",
                "s",
                run.percentile(50),
                lone,
                higher_is_better=False,
                notes={"bench": "serve", "clients": run.clients},
            )
        )
    return rows


def serve_table(rows: list[Row]) -> str:
    """The serve rows as one line per run (throughput, p50 and p99 latency, ratios), and the targets."""
    runs = [r for r in rows if r.notes.get("bench") == "serve" and "throughput" in r.notes]
    if not runs:
        return ""
    first = runs[0].notes
    lines = [
        f"mmgraph bench serve: {first['requests']} turns ({', '.join(first['kinds'])}, cycling) per run, one "
        "mmgraph serve (tiny-world) on 127.0.0.1",
        "",
        "| clients | turns | failed | throughput | vs serial | p50 latency | p99 latency | p50 vs lone request "
        "| server CPU / turn | server cores busy | client CPU / turn |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in runs:
        n = row.notes
        lines.append(
            f"| {'serial' if n['clients'] == 0 else n['clients']} | {n['turns']} | {n['failed']} | "
            f"{n['throughput']:.3g} turns/s | {row.ratio:.2f}x | {n['p50_s']:.3g} s | {n['p99_s']:.3g} s | "
            f"{n['p50_s'] / n['lone_p50_s']:.2f}x | {n['server_cpu_per_turn_s'] * 1e3:.0f} ms | "
            f"{n['server_cores_busy']:.2f} | {n['client_cpu_per_turn_s'] * 1e3:.0f} ms |"
        )
    target = next((r for r in runs if r.notes["clients"] == TARGET_CLIENTS), None)
    if target is not None:
        speedup, latency = target.ratio, target.notes["p50_s"] / target.notes["lone_p50_s"]
        met = speedup >= TARGET_SPEEDUP and latency <= TARGET_LATENCY
        lines += [
            "",
            f"target at {TARGET_CLIENTS} clients: >= {TARGET_SPEEDUP:g}x serial throughput with p50 <= "
            f"{TARGET_LATENCY:g}x a lone request: {speedup:.2f}x and {latency:.2f}x -> {'met' if met else 'not met'}",
            f"CPU bound at {TARGET_CLIENTS} clients: {target.notes['server_cpu_per_turn_s'] * 1e3:.0f} ms of server "
            f"and {target.notes['client_cpu_per_turn_s'] * 1e3:.0f} ms of client CPU per turn; {target.notes['cores']} "
            f"cores at that cost give at most {target.notes['cpu_ceiling_turns_s']:.3g} turns/s "
            f"({target.notes['cpu_ceiling_turns_s'] / runs[0].notes['throughput']:.2f}x serial)",
        ]
    lines.append("")
    for row in runs:
        kinds = ", ".join(f"{kind} {p50:.3g} s" for kind, p50 in row.notes["kind_p50_s"].items())
        lines.append(
            f"  median latency by kind, {'serial' if row.notes['clients'] == 0 else row.notes['clients']}: {kinds}"
        )
    for row in runs:
        for failure in row.notes["failures"]:
            lines.append(f"  failed ({row.notes['clients'] or 'serial'}): {failure}")
    return "\n".join(lines)
