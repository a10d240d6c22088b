"""Seconds per step of the training loops: what a run records and what a plan predicts a longer run from.

Every training loop of the project iterates through :func:`metered`::

    for step in metered(range(steps), "video unet"):
        ...

Each call appends one record to this process's list (:func:`collected`): the loop's name, its steps, its
seconds on the clock, and its mean seconds per step for each torch thread count it ran with (the first
``warmup`` steps after a start or a thread change left out). The tinyworld recipe keeps the records of every
step in ``recipe.json``, and ``mmgraph train world --plan`` runs each loop a few steps under :func:`probing` --
half of them on one thread, half on more -- to predict how long the full recipe takes on this machine.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

import torch

T = TypeVar("T")

_RECORDS: list[dict] = []
_PROBE_THREADS: tuple[int, ...] = ()


def reset() -> None:
    """Forget the records of this process (the recipe does it before each step)."""
    _RECORDS.clear()


def collected() -> list[dict]:
    """The records of the loops run since :func:`reset`: ``{"name", "steps", "seconds", "per_step": {"threads":
    seconds}}`` (the thread counts as strings, as JSON keeps them)."""
    return [dict(r) for r in _RECORDS]


@contextlib.contextmanager
def probing(threads: Iterable[int]):
    """Within the block, each metered loop with a length runs its steps in equal parts on each of ``threads``
    (e.g. ``(1, 2)``: the first half on one thread, the second on two) and restores the caller's count after."""
    global _PROBE_THREADS
    counts = tuple(int(t) for t in threads)
    if not counts or min(counts) < 1:
        raise ValueError(f"probing needs thread counts >= 1, got {counts}")
    previous, _PROBE_THREADS = _PROBE_THREADS, counts
    try:
        yield
    finally:
        _PROBE_THREADS = previous


def metered(iterable: Iterable[T], name: str, *, warmup: int = 2) -> Iterator[T]:
    """Yield the items of ``iterable`` and time each iteration (the loop body included) into a new record."""
    total = len(iterable) if hasattr(iterable, "__len__") else None  # type: ignore[arg-type]
    record: dict = {"name": name, "steps": 0, "seconds": 0.0, "per_step": {}}
    _RECORDS.append(record)
    times: dict[int, list[float]] = {}
    restore = torch.get_num_threads()
    probe = _PROBE_THREADS if total else ()
    start = last = time.perf_counter()
    threads, fresh = torch.get_num_threads(), 0  # fresh: steps since the start or the last thread change

    def close_step(now: float) -> None:
        if record["steps"] and fresh > warmup:
            times.setdefault(threads, []).append(now - last)

    try:
        for i, item in enumerate(iterable):
            now = time.perf_counter()
            close_step(now)
            if probe:
                wanted = probe[min(i * len(probe) // total, len(probe) - 1)]
                if wanted != torch.get_num_threads():
                    torch.set_num_threads(wanted)
            if torch.get_num_threads() != threads:  # a probe, or a recipe worker granted more cores
                threads, fresh = torch.get_num_threads(), 0
            record["steps"] = i + 1
            fresh += 1
            last = time.perf_counter()
            yield item
        close_step(time.perf_counter())
    finally:
        record["seconds"] = round(time.perf_counter() - start, 3)
        # thread counts as strings: the record reads back from JSON as it was written
        record["per_step"] = {str(t): round(sum(v) / len(v), 5) for t, v in sorted(times.items())}
        if probe:
            torch.set_num_threads(restore)
