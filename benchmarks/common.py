"""Timing and memory helpers shared by the benchmarks."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import torch


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def peak_memory(device: torch.device, out: dict) -> Iterator[None]:
    """``out["peak_gib"]``: the CUDA allocator's peak over the block (None on a CPU, where torch keeps no count)."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        out["peak_gib"] = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None


def timed(fn: Callable[[], Any], device: torch.device, *, warmup: int, repeats: int) -> list[float]:
    """Seconds per call of ``fn`` over ``repeats`` calls after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    sync(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return times


def race_decoding(
    sides: Sequence[tuple[str, Callable[[int], Any]]], tokens: int, device: torch.device, *, repeats: int
) -> dict[str, dict[str, Any]]:
    """Each side's ``run(n)`` (a greedy reply of exactly ``n`` new tokens), timed: ``ttft`` (a run of one token),
    ``full`` (a run of ``tokens``), ``rate`` (``(tokens - 1) / (full - ttft)``: the steady tokens/s after the
    prefill) and ``peak_gib`` (CUDA only)."""
    results: dict[str, dict[str, Any]] = {}
    for name, run in sides:
        memory: dict[str, Any] = {}
        with torch.no_grad(), peak_memory(device, memory):
            first = median(timed(lambda run=run: run(1), device, warmup=1, repeats=repeats))
            full = median(timed(lambda run=run: run(tokens), device, warmup=1, repeats=repeats))
        results[name] = {"ttft": first, "full": full, "rate": (tokens - 1) / max(full - first, 1e-9), **memory}
    return results


def median(values: list[float]) -> float:
    ordered = sorted(values)
    mid = len(ordered) // 2
    return ordered[mid] if len(ordered) % 2 else 0.5 * (ordered[mid - 1] + ordered[mid])


@dataclass
class Row:
    """One line of a benchmark table: our figure, the baseline's, and their ratio (higher is better for ours)."""

    measure: str
    unit: str
    ours: float
    baseline: float
    higher_is_better: bool = True
    notes: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.higher_is_better:
            return self.ours / self.baseline if self.baseline else float("nan")
        return self.baseline / self.ours if self.ours else float("nan")

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "ratio": self.ratio}


def table(rows: list[Row], title: str) -> str:
    lines = [title, "", "| measure | ours | baseline | ratio (ours vs baseline) |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r.measure} | {r.ours:.4g} {r.unit} | {r.baseline:.4g} {r.unit} | {r.ratio:.2f}x |")
    return "\n".join(lines)
