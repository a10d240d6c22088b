"""The knobs of one training run and what it returns: plain data, cheap to import (no torch).

``mmgraph train pt|it`` derives its options from :class:`TrainConfig` (:mod:`core.options`): every field is a flag,
its ``description`` the flag's help, so a field added here is on the command line too.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: learning rates by stage when none is given (LLaVA: 1e-3 for pre-training the projector, lower for tuning)
DEFAULT_LR = {"pt": 1e-3, "it": 2e-4}


class TrainConfig(BaseModel):
    """Knobs of one training run (plain data; saved as ``train.json`` in the output folder)."""

    model_config = ConfigDict(extra="forbid")

    stage: Literal["pt", "it"] = Field(
        "pt",
        description="MM PT (pt: pairs) or MM IT (it: conversations); decides the default learning rate.",
    )
    epochs: int = Field(
        1, ge=1, description="Passes over the data; a number of steps, when given, sets the run's length instead."
    )
    max_steps: int | None = Field(
        None, ge=1, description="Length of the run (and its LR schedule) in steps; default epochs x steps per epoch."
    )
    stop_after: int | None = Field(
        None,
        ge=1,
        description="Stop after this many steps in this invocation, leaving a checkpoint to resume (time-sliced jobs).",
    )
    batch_size: int = Field(8, ge=1, description="Global batch size, split across processes.")
    lr: float | None = Field(
        None,
        gt=0,
        description="Learning rate of the projectors and signal rows; none: by stage ("
        + ", ".join(f"{stage} {lr:g}" for stage, lr in DEFAULT_LR.items())
        + ").",
    )
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay of the projectors (never of signal rows).")
    warmup_ratio: float = Field(
        0.03, ge=0, le=1, description="Share of the run's steps over which the learning rate warms up linearly."
    )
    schedule: Literal["cosine", "constant"] = Field(
        "cosine", description="Learning rate after the warm-up: cosine decay to zero, or constant."
    )
    grad_clip: float | None = Field(
        1.0, gt=0, description="Clip the norm of the trainable parameters' gradients to this (none: no clipping)."
    )
    lm_weight: float = Field(1.0, ge=0, description="Weight of the LM loss on the assistant tokens.")
    align_weight: float = Field(
        1.0,
        ge=0,
        description="Weight of the alignment loss between the output projectors and the generators' text features.",
    )
    diffusion_weight: float = Field(
        0.0,
        ge=0,
        description="Weight of the optional latent-diffusion loss through the "
        "frozen generator (0: off); needs output target files.",
    )
    lora: bool = Field(False, description="Also train LoRA adapters on the LLM, at their own learning rate.")
    lora_r: int = Field(8, ge=1, description="Rank of the LoRA adapters.")
    lora_alpha: int = Field(16, ge=1, description="LoRA scale numerator: the adapters' update is scaled by alpha / r.")
    lora_dropout: float = Field(0.0, ge=0, lt=1, description="Dropout on the LoRA adapters' inputs.")
    lora_targets: str | list[str] = Field(
        "all-linear", description="LLM modules that get LoRA adapters: all-linear, or a JSON list of module names."
    )
    lora_lr: float = Field(2e-4, gt=0, description="Learning rate of the LoRA adapters.")
    seed: int = Field(0, description="Seed of the data order, the LoRA initialisation and the diffusion noise.")
    save_every: int = Field(0, ge=0, description="Checkpoint every N steps (0: only when stopping / at the end).")
    cache_dir: str | None = Field(None, description="Feature cache root; default $MMGRAPH_HOME/cache/features.")
    cache_batch_size: int = Field(
        16, ge=1, description="Files or captions per encoder call while filling the feature caches."
    )
    device: str = Field("auto", description="Where to train: auto (a GPU when there is one), cpu or cuda.")
    mixed_precision: Literal["auto", "no", "bf16", "fp16"] = Field(
        "auto", description="Autocast precision: auto is bf16 on a GPU and no on a CPU."
    )
    gradient_checkpointing: bool | None = Field(
        None,
        description="Recompute the frozen LLM's activations in the backward pass (less memory, more compute); "
        "none: on when training on a GPU.",
    )
    compile: bool = Field(
        False,
        description="Run the frozen LLM's forward (and so its backward) through "
        "torch.compile: fused norms, rotary and gating kernels, fewer saved "
        "activations; a one-off compilation, then faster steps on a GPU.",
    )
    group_by_length: bool = Field(
        False,
        description="Batch samples of similar token length together (shuffled "
        "mega-batches of 50 batches, each sorted by length): less "
        "padding, the same samples per epoch.",
    )
    micro_batches: int = Field(
        1,
        ge=1,
        description="Cut each step's batch (per process) into this many micro-batches "
        "of similar token length and accumulate their gradients: the "
        "same samples and, up to float rounding, the same step, with "
        "less padding (on a CPU, where padded tokens cost full price).",
    )
    progress: bool = Field(True, description="Progress bars, the freeze audit and status lines (main process).")

    def resolved_lr(self) -> float:
        return self.lr if self.lr is not None else DEFAULT_LR[self.stage]


@dataclass
class TrainResult:
    """What :meth:`Trainer.run` returns: the output folder, the steps done and every step's logged losses."""

    out: Path
    steps: int
    history: list[dict] = field(default_factory=list)
    finished: bool = True
    main_process: bool = True

    def losses(self, key: str = "loss") -> list[float]:
        return [h[key] for h in self.history if key in h]


__all__ = ["DEFAULT_LR", "TrainConfig", "TrainResult"]
