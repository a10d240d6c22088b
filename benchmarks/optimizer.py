"""Fused AdamW vs torch's default AdamW: whole training steps of the tinyworld recipe's models.

Both sides train the same model on the same data, seed and batch size; only the optimiser differs:

* baseline -- ``torch.optim.AdamW`` as torch builds it by default on the CPU: a loop over the parameter tensors
  (:func:`training.optim.fusing` ``(False)``);
* ours -- :func:`training.optim.adamw`: the same update in torch's fused kernel.

Workloads, at the recipe's model sizes and batch sizes:

* ``image UNet`` / ``video UNet`` / ``RGB VAE`` -- a training step (forward, backward, clipping, AdamW) of the
  image generator's ``UNet2DConditionModel`` (8x8 latents, batch 64), the video generator's
  ``UNet3DConditionModel`` (8 frames of 8x8 latents, batch 16) and the picture ``AutoencoderKL`` (batch 16), on
  random inputs of the recipe's shapes (a step costs the same whatever the numbers are). Two copies of the model,
  one per optimiser, step in turn, so drift in the machine's speed hits both sides alike; the median step counts;
* ``text LM`` -- the recipe's own :func:`training.lm.train_text_lm` on :func:`tinyworld.language.text_dialogues`
  (batch 32) with the packaged LLM;
* ``MM PT`` / ``MM IT`` -- the :class:`~training.Trainer` on freshly rendered rows (batch 32 / 16,
  IT with LoRA) with the packaged ``tiny-world`` system, as the recipe's ``pt`` and ``it`` steps run them.

The first rows time ``optimizer.step()`` alone on each model's parameters (random gradients); the others time
whole training steps. The text LM, PT and IT rows run the baseline first, then ours, and report the mean step.
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path
from statistics import mean

import torch
from transformers import AutoModelForCausalLM

from benchmarks.common import Row, median
from benchmarks.grouping import _StepClock
from core.hub import resolve_model
from tinyworld.data import write_datasets
from tinyworld.diffusion_models import UNET_3D_CONFIG, make_unet_2d, make_unet_3d, make_vae
from tinyworld.language import llm_config, text_dialogues
from training import TrainConfig, Trainer
from training.lm import train_text_lm
from training.optim import adamw, fusing


def _interleaved_step_seconds(build, batch: tuple, loss_fn, *, steps: int, warmup: int) -> dict[bool, float]:
    """Median seconds of a training step (forward, backward, clipping to norm 1, AdamW) of two copies of one model,
    one with each optimiser, stepped in turn (the order swapping every round) so that drift in the machine's speed
    hits both sides alike."""
    models, optimisers = {}, {}
    for fused in (False, True):
        torch.manual_seed(0)
        models[fused] = build().train()
        with fusing(fused):
            optimisers[fused] = adamw(models[fused].parameters(), lr=1e-4, weight_decay=0.01)
    times: dict[bool, list[float]] = {False: [], True: []}
    for round_ in range(warmup + steps):
        for fused in (False, True) if round_ % 2 else (True, False):
            model, optimiser = models[fused], optimisers[fused]
            start = time.perf_counter()
            loss = loss_fn(model, *batch)
            optimiser.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimiser.step()
            if round_ >= warmup:
                times[fused].append(time.perf_counter() - start)
    return {fused: median(t) for fused, t in times.items()}


def bench_generator_steps(*, steps: int, warmup: int = 2) -> list[Row]:
    """The diffusion models' training steps at the recipe's sizes and batch sizes, on random inputs (a step costs
    the same whatever the numbers are)."""
    gen = torch.Generator().manual_seed(0)

    def denoise(unet, x, t, states):
        return unet(x, t, encoder_hidden_states=states).sample.square().mean()

    def reconstruct(vae, x):
        return (vae(x).sample - x).abs().mean()

    cases = [
        (
            "image UNet",
            "8x8 latents, batch 64",
            lambda: make_unet_2d(8, 64),
            (
                torch.randn(64, 4, 8, 8, generator=gen),
                torch.randint(0, 1000, (64,), generator=gen),
                torch.randn(64, 16, 64, generator=gen),
            ),
            denoise,
            steps,
        ),
        (
            "video UNet",
            "8 frames of 8x8 latents, batch 16",
            lambda: make_unet_3d(8, 64, **UNET_3D_CONFIG),
            (
                torch.randn(16, 4, 8, 8, 8, generator=gen),
                torch.randint(0, 1000, (16,), generator=gen),
                torch.randn(16, 16, 64, generator=gen),
            ),
            denoise,
            max(steps // 4, 3),
        ),
        (
            "RGB VAE",
            "32x32 pictures, batch 16",
            lambda: make_vae(3),
            (torch.randn(16, 3, 32, 32, generator=gen),),
            reconstruct,
            steps,
        ),
    ]
    rows = []
    for name, size, build, batch, loss_fn, n in cases:
        s = _interleaved_step_seconds(build, batch, loss_fn, steps=n, warmup=warmup)
        rows.append(Row(f"{name} training step, recipe size ({size})", "steps/s", 1 / s[True], 1 / s[False]))
    return rows


def bench_text_lm(*, steps: int, batch_size: int = 32, warmup: int = 3) -> Row:
    config = llm_config(resolve_model("@tinyworld/llm"))
    data = text_dialogues(2000, seed=0)
    per_step = {}
    with tempfile.TemporaryDirectory() as tmp:
        for fused in (False, True):
            clock = _StepClock()
            with fusing(fused):
                train_text_lm(
                    config,
                    data,
                    Path(tmp) / str(fused),
                    steps=steps + warmup,
                    batch_size=batch_size,
                    progress=False,
                    losses=clock,
                )
            per_step[fused] = clock.seconds_per_step(warmup)
    return Row(
        f"text LM training step, tinyworld LLM (batch {batch_size})", "steps/s", 1 / per_step[True], 1 / per_step[False]
    )


def bench_projector_stages(*, steps: int, rows: int = 400, warmup: int = 3) -> list[Row]:
    out: list[Row] = []
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        data = write_datasets(tmp / "data", pt=rows, it=rows, seed=0, progress=False)
        for stage, batch in (("pt", 32), ("it", 16)):
            per_step = {}
            for fused in (False, True):
                train = TrainConfig(
                    stage=stage,
                    max_steps=steps + warmup,
                    batch_size=batch,
                    lr=1e-3,
                    lora=stage == "it",
                    cache_dir=str(tmp / "cache"),
                    device="cpu",
                    progress=False,
                )
                with fusing(fused):
                    result = Trainer(
                        "tiny-world", data[stage], tmp / f"{stage}-{fused}", train=train, overwrite=True
                    ).run()
                per_step[fused] = mean([batch / h["samples_per_s"] for h in result.history[warmup:]])
            out.append(
                Row(
                    f"MM {stage.upper()} training step, tiny-world (batch {batch})",
                    "steps/s",
                    1 / per_step[True],
                    1 / per_step[False],
                )
            )
    return out


def bench_update_alone(*, repeats: int = 20) -> list[Row]:
    """``optimizer.step()`` alone on the recipe's models' parameters: where the difference comes from."""
    torch.manual_seed(0)
    models = {
        "image UNet": make_unet_2d(8, 64),
        "video UNet": make_unet_3d(8, 64, **UNET_3D_CONFIG),
        "RGB VAE": make_vae(3),
        "tinyworld LLM": AutoModelForCausalLM.from_pretrained(resolve_model("@tinyworld/llm")),
    }
    rows = []
    for name, model in models.items():
        params = list(model.parameters())
        for p in params:
            p.grad = torch.randn_like(p)
        seconds = {}
        for fused in (False, True):
            with fusing(fused):
                optimiser = adamw(params, lr=1e-4)
            for _ in range(3):
                optimiser.step()
            times = []
            for _ in range(repeats):
                start = time.perf_counter()
                optimiser.step()
                times.append(time.perf_counter() - start)
            seconds[fused] = median(times)
        rows.append(
            Row(
                f"AdamW update alone, {name} ({len(params)} tensors, "
                f"{sum(p.numel() for p in params) / 1e6:.2f} M numbers)",
                "ms",
                seconds[True] * 1e3,
                seconds[False] * 1e3,
                higher_is_better=False,
            )
        )
    return rows


def bench_optimizer(*, steps: int = 20) -> list[Row]:
    """Training steps per second of the recipe's models with fused AdamW vs torch's default AdamW."""
    return [
        *bench_update_alone(),
        *bench_generator_steps(steps=steps),
        bench_text_lm(steps=steps),
        *bench_projector_stages(steps=steps),
    ]
