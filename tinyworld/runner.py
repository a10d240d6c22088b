"""Run the tinyworld recipe's steps into a run folder: one after another, or side by side in worker processes.

:func:`run` skips the steps whose outputs exist (an interrupted run resumes), runs the rest (:mod:`tinyworld.steps`)
and records each step's seconds, metrics and training loops in ``OUT/recipe.json``. With ``jobs > 1`` the steps
run in spawned worker processes, scheduled over the step table (:data:`~tinyworld.config.STEP_TABLE`) by
:func:`schedule`: the ready steps that head the longest chains (:func:`chain_lengths`) first, the cores of a slot
left idle handed to the steps still running (:mod:`tinyworld.threads`). :mod:`tinyworld.plan` lays out a planned
run with the same :func:`schedule`.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import shutil
import time
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait
from pathlib import Path

import torch

from tinyworld.config import STEP_TABLE, RecipeConfig
from tinyworld.steps import STEPS, Context
from tinyworld.threads import THREADS_FILE
from training import meter


def _run_step(
    name: str, out: Path, config: RecipeConfig, progress: bool, threads: int | None, grant: str | None = None
) -> tuple[float, dict, list[dict]]:
    """Run one step (in this process or a worker); returns ``(seconds, metrics, loops)``, ``loops`` being the
    :mod:`~training.meter` records of its training loops. ``grant``: the file through which the
    scheduler may raise the step's thread count while it runs (:func:`~tinyworld.threads.refresh_threads`)."""
    meter.reset()
    if threads:
        torch.set_num_threads(threads)
    if grant:
        os.environ[THREADS_FILE] = grant
    start = time.perf_counter()
    metrics = STEPS[name].fn(Context(out, config, progress))
    return time.perf_counter() - start, metrics, meter.collected()


def run(
    out: str | Path,
    config: RecipeConfig | None = None,
    *,
    only: list[str] | None = None,
    overwrite: bool = False,
    progress: bool = True,
    log: Callable[[str], None] = print,
    jobs: int = 1,
) -> dict:
    """Run the recipe into ``out``; returns the ``recipe.json`` record ``{"config", "steps": {step: {"seconds",
    "metrics", "loops"}}, "total_seconds", "runs": [{"jobs", "threads", "config", "wall_seconds", "steps",
    "timeline"}, ...]}`` (``timeline``: step -> [start, end] seconds into that run; the top ``config`` is the latest
    run's, each run's own is in ``runs``, since ``--only`` can rerun some steps with other settings). ``loops``: the
    seconds per step of the step's training loops (:mod:`training.meter`), which :mod:`tinyworld.plan`
    predicts from.

    ``jobs > 1`` runs independent steps side by side in that many worker processes (the LLM trains while the
    encoders, VAEs and generators do): a step starts once the steps it reads
    (:attr:`~tinyworld.config.StepSpec.after`) are done, the steps at the head of the longest chains first
    (:func:`chain_lengths`). Each worker gets ``threads / (steps running or ready)`` torch threads, at least one;
    ``threads`` defaults to the machine's cores when ``jobs > 1``. Small models use cores far better as separate
    processes than as threads of one. ``total_seconds`` sums the steps' own times; ``wall_seconds`` is what a run
    took on the clock.
    """
    config = config or RecipeConfig()
    out = Path(out)
    if overwrite and out.exists():
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    record_path = out / "recipe.json"
    record = json.loads(record_path.read_text()) if record_path.exists() else {}
    record["config"] = config.model_dump()
    todo = []
    for name, spec in STEPS.items():
        if only and name not in only:
            continue
        if (out / spec.output).exists() and name in record.get("steps", {}):
            log(f"[{name}] done before ({record['steps'][name]['seconds']:.0f} s), skipped")
            continue
        todo.append(name)
    started = time.perf_counter()
    timeline: dict[str, list[float]] = {}  # step -> [start, end], seconds since this run started

    def begun(name: str) -> None:
        timeline[name] = [round(time.perf_counter() - started, 1)]

    def finished(name: str, seconds: float, metrics: dict, loops: list[dict]) -> None:
        timeline[name].append(round(time.perf_counter() - started, 1))
        if record_path.exists():  # another run of this folder (``--only`` other steps) may have written meanwhile
            record["steps"] = {**json.loads(record_path.read_text()).get("steps", {}), **record.get("steps", {})}
        record.setdefault("steps", {})[name] = {"seconds": round(seconds, 1), "metrics": metrics, "loops": loops}
        record["total_seconds"] = round(sum(s["seconds"] for s in record["steps"].values()), 1)
        record_path.write_text(json.dumps(record, indent=2, default=str))
        log(f"[{name}] {seconds:.0f} s  {json.dumps(metrics, default=str)[:300]}")

    if jobs <= 1:
        for name in todo:
            log(f"[{name}] ...")
            begun(name)
            finished(name, *_run_step(name, out, config, progress, config.threads))
    else:
        _run_parallel(todo, out, config, progress, jobs, log, begun, finished)
    if todo:
        record.setdefault("runs", []).append(
            {
                "jobs": jobs,
                "threads": config.threads,
                "config": config.model_dump(),
                "steps": todo,
                "wall_seconds": round(time.perf_counter() - started, 1),
                "timeline": timeline,
            }
        )
        record_path.write_text(json.dumps(record, indent=2, default=str))
    weights = out / "weights"
    if weights.exists():
        shutil.copy(record_path, weights / "recipe.json")
    return record


def chain_lengths() -> dict[str, int]:
    """Step -> the number of steps on the longest chain that starts with it and follows what reads what (``it``: 1,
    ``pt``: 2, ``encoders``: 3 through PT and IT, ``vae``: 2 through a generator). The parallel scheduler starts
    the longest chains first, ties in recipe order: the LLM and the encoders, then the data and the VAEs."""
    readers: dict[str, list[str]] = {name: [] for name in STEP_TABLE}
    for name, spec in STEP_TABLE.items():
        for before in spec.after:
            readers[before].append(name)
    lengths: dict[str, int] = {}

    def length(name: str) -> int:
        if name not in lengths:
            lengths[name] = 1 + max((length(r) for r in readers[name]), default=0)
        return lengths[name]

    return {name: length(name) for name in STEP_TABLE}


def _run_parallel(
    todo: list[str],
    out: Path,
    config: RecipeConfig,
    progress: bool,
    jobs: int,
    log: Callable[[str], None],
    begun: Callable[[str], None],
    finished: Callable[[str, float, dict, list], None],
) -> None:
    """Schedule ``todo`` over ``jobs`` spawned worker processes, each step once its ``after`` steps are done."""
    cores = config.threads or os.cpu_count() or 1
    grants = out / "work" / "threads"
    grants.mkdir(parents=True, exist_ok=True)
    granted: dict[str, int] = {}  # running step -> threads
    waiting, running = list(todo), {}
    with ProcessPoolExecutor(jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
        while waiting or running:
            starts, raised = schedule(waiting, granted, jobs, cores)
            for name, threads in starts:
                log(f"[{name}] ... ({threads} thread{'s' * (threads > 1)})")
                begun(name)
                granted[name] = threads
                (grants / name).write_text(str(threads))
                running[pool.submit(_run_step, name, out, config, progress, threads, str(grants / name))] = name
                waiting.remove(name)
            for name, threads in raised.items():
                log(f"[{name}] now {threads} threads")
                granted[name] = threads
                (grants / name).write_text(str(threads))
            done, _ = wait(running, return_when=FIRST_COMPLETED)
            for future in done:
                name = running.pop(future)
                granted.pop(name)
                finished(name, *future.result())


def schedule(
    waiting: list[str], granted: dict[str, int], jobs: int, cores: int
) -> tuple[list[tuple[str, int]], dict[str, int]]:
    """The parallel scheduler's decision at one moment, shared by the real run and :func:`tinyworld.plan.simulate`.

    ``waiting``: steps not started, in recipe order; ``granted``: running step -> its threads. Returns the steps
    to start now with their threads -- the ready ones (nothing they read is waiting or running) at the head of the
    longest chains first (:func:`chain_lengths`), as many as free slots, each ``cores / min(jobs, steps running
    or ready)`` threads -- and the running steps whose threads rise: when a slot stays idle, its cores go to the
    running steps."""
    chain = chain_lengths()  # longest chains first; ties in recipe order
    busy = set(waiting) | set(granted)
    ready = sorted((n for n in waiting if not busy.intersection(STEP_TABLE[n].after)), key=lambda n: -chain[n])
    starts: list[tuple[str, int]] = []
    for name in ready[: max(jobs - len(granted), 0)]:
        starts.append((name, max(1, cores // min(jobs, len(granted) + len(starts) + len(ready)))))
    running = len(granted) + len(starts)
    share = max(1, cores // max(running, 1))
    raised = {name: share for name, threads in [*granted.items(), *starts] if share > threads}
    return starts, raised
