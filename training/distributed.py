"""The accelerate glue of the training loop: one process on the CPU or a GPU, several with DDP.

Several processes come from ``torchrun`` / ``accelerate launch``; each takes its share of every global batch,
and the step's losses are averaged over them for the log.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from accelerate import Accelerator
from accelerate.utils import DistributedDataParallelKwargs

from core.errors import ConfigError


def make_accelerator(device: str, mixed_precision: str) -> Accelerator:
    """The Accelerator of a run on ``device`` (auto | cpu | cuda); ``mixed_precision`` auto is bf16 on a GPU."""
    cuda = torch.cuda.is_available() and device != "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' was asked for but no CUDA device is available")
    precision = mixed_precision if mixed_precision != "auto" else ("bf16" if cuda else "no")
    # Batches without an output (or without a modality) leave some projectors unused: DDP must allow it.
    return Accelerator(
        cpu=not cuda,
        mixed_precision=precision,
        kwargs_handlers=[DistributedDataParallelKwargs(find_unused_parameters=True)],
    )


def reduce_losses(
    acc: Accelerator, loss: torch.Tensor, parts: dict[str, torch.Tensor], generators: Sequence[str]
) -> dict[str, float]:
    """Average the step's losses over processes (an alignment or diffusion term only over processes that had
    one); ``align_loss`` is the sum of the per-generator alignment losses."""
    names = ["lm_loss"] + [f"align/{g}" for g in generators] + [f"diffusion/{g}" for g in generators]
    values = torch.zeros(2 * (len(names) + 1), device=acc.device)
    values[0], values[1] = loss.float(), 1.0
    for i, name in enumerate(names, start=1):
        if name in parts:
            values[2 * i], values[2 * i + 1] = parts[name].float(), 1.0
    if acc.num_processes > 1:
        values = acc.reduce(values, reduction="sum")
    out: dict[str, float] = {}
    for i, name in enumerate(["loss"] + names):
        if values[2 * i + 1] > 0:
            out[name] = float(values[2 * i] / values[2 * i + 1])
    aligns = [v for k, v in out.items() if k.startswith("align/")]
    if aligns:
        out["align_loss"] = sum(aligns)
    return out


__all__ = ["make_accelerator", "reduce_losses"]
