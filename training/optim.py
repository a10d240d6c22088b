"""The optimiser every training loop of the project uses: AdamW, with torch's fused kernel where it can run.

Torch's default AdamW on the CPU updates one tensor at a time, a handful of small kernels per tensor. Models as
small as tinyworld's have hundreds of parameter tensors of a few thousand numbers each, so that loop is a noticeable
share of a training step (figures: docs/benchmarks.md, "Fused AdamW"). ``fused=True`` runs one kernel over all of
them, on the CPU as on CUDA, with the same update rule.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch

#: device types torch's fused AdamW kernel supports
FUSED_DEVICES = frozenset({"cpu", "cuda", "mps", "xpu"})
_fusing = [True]  # the stack of :func:`fusing` choices; the last one holds


def _tensors(params: list) -> list[torch.Tensor]:
    """The tensors of ``params``: plain tensors or param-group dicts."""
    found = []
    for item in params:
        found.extend(item["params"] if isinstance(item, dict) else [item])
    return found


def can_fuse(params: Iterable[torch.Tensor]) -> bool:
    """Whether torch's fused AdamW takes every tensor of ``params``: floating point, on one supported device type."""
    tensors = list(params)
    types = {p.device.type for p in tensors}
    return bool(tensors) and len(types) == 1 and types <= FUSED_DEVICES and all(p.is_floating_point() for p in tensors)


def adamw(params: Iterable[Any], **kwargs: Any) -> torch.optim.AdamW:
    """``torch.optim.AdamW(params, **kwargs)``, fused when :func:`can_fuse` allows (unless ``kwargs`` choose
    ``fused`` / ``foreach`` themselves, or :func:`fusing` is off). ``params``: tensors or param-group dicts, as for
    any torch optimiser."""
    params = [{**p, "params": list(p["params"])} if isinstance(p, dict) else p for p in params]
    if _fusing[-1] and "fused" not in kwargs and "foreach" not in kwargs and can_fuse(_tensors(params)):
        kwargs["fused"] = True
    return torch.optim.AdamW(params, **kwargs)


@contextmanager
def fusing(enabled: bool) -> Iterator[None]:
    """Within the block, :func:`adamw` fuses only if ``enabled``: ``with fusing(False):`` gives torch's default
    per-tensor AdamW, for side-by-side timings (``mmgraph bench optimizer``) and comparisons with older runs."""
    _fusing.append(bool(enabled))
    try:
        yield
    finally:
        _fusing.pop()
