"""Checkpoints of a training run, in safetensors and JSON only (nothing is pickled).

``OUT/checkpoint/`` holds the trainable weights (``trainable.safetensors``, as :meth:`MMSystem.save_trainable`
writes them) and ``optimizer.safetensors``: the optimizer's tensors and the CPU RNG state, with the optimizer's
scalars, the scheduler's state, the step and the run's shape (steps, samples, batch size) as JSON metadata.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

CHECKPOINT_DIR = "checkpoint"
OPTIMIZER_FILE = "optimizer.safetensors"


def save_training_state(path: Path, optimizer, scheduler, step: int, meta: dict) -> None:
    """Write the optimizer, scheduler and RNG state at ``step`` (plus ``meta``) to ``path / OPTIMIZER_FILE``."""
    state = optimizer.state_dict()
    tensors: dict[str, torch.Tensor] = {"rng.cpu": torch.get_rng_state()}
    scalars: dict[str, dict[str, Any]] = {}
    for index, entry in state["state"].items():
        for key, value in entry.items():
            if torch.is_tensor(value):
                tensors[f"state.{index}.{key}"] = value.detach().cpu().contiguous()
            else:
                scalars.setdefault(str(index), {})[key] = value
    info = {
        "step": step,
        "param_groups": state["param_groups"],
        "scalars": scalars,
        "scheduler": {k: v for k, v in scheduler.state_dict().items() if k != "lr_lambdas"},
        **meta,
    }
    save_file(tensors, str(path / OPTIMIZER_FILE), metadata={"trainer": json.dumps(info)})


def load_training_state(path: Path, optimizer, scheduler) -> dict:
    """Restore what :func:`save_training_state` wrote into ``optimizer``, ``scheduler`` and the CPU RNG; returns
    the saved step and metadata."""
    with safe_open(str(path / OPTIMIZER_FILE), framework="pt") as handle:
        info = json.loads(handle.metadata()["trainer"])
        tensors = {k: handle.get_tensor(k) for k in handle.keys()}
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("state."):
            _, index, name = key.split(".", 2)
            state.setdefault(int(index), {})[name] = value
    for index, values in info["scalars"].items():
        state.setdefault(int(index), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": info["param_groups"]})
    scheduler.load_state_dict({**scheduler.state_dict(), **info["scheduler"]})
    torch.set_rng_state(tensors["rng.cpu"])
    return info


def write_checkpoint(out: Path, system, optimizer, scheduler, step: int, meta: dict) -> Path:
    """``out / CHECKPOINT_DIR``: the system's trainable weights and the training state, written to a temporary
    folder first and swapped in, so an interrupted write never leaves a half checkpoint."""
    folder = out / CHECKPOINT_DIR
    tmp = out / f".{CHECKPOINT_DIR}.tmp"
    if tmp.exists():
        shutil.rmtree(tmp)
    system.save_trainable(tmp)
    save_training_state(tmp, optimizer, scheduler, step, meta)
    if folder.exists():
        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


__all__ = ["CHECKPOINT_DIR", "OPTIMIZER_FILE", "save_training_state", "load_training_state", "write_checkpoint"]
