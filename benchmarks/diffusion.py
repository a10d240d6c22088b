"""Image generation: a raw diffusers ``StableDiffusionPipeline`` call vs mmgraph's image generator node.

Both sides share one set of modules (UNet, VAE, text encoder) with random weights, and denoise the same
``prompt_embeds`` (what an output projector hands the generator) from the same seeded noise, with DDIM and
classifier-free guidance:

* baseline -- ``pipeline(prompt_embeds=..., negative_prompt_embeds=..., num_inference_steps=N,
  guidance_scale=g, generator=..., output_type="pil")``, as a diffusers user would call it;
* ours -- :meth:`generators.image.StableDiffusionTool.generate`: conditioning checks, the cached empty-prompt
  negatives, the same pipeline call, and the PNG encoding the node returns. ``compile=True`` builds the tool with
  ``GeneratorConfig(compile=True)`` (:func:`generators.base.compile_denoiser`).

Sizes: ``tiny`` (16 x 16 latents, for CPUs and the tests) and ``sd15``: Stable Diffusion 1.5's UNet (block widths
320, 640, 1280, 1280; cross-attention 768; 64 x 64 latents) and VAE (512 x 512 images). The text encoder is a 2-layer,
768-wide CLIP: only the empty negative prompt goes through it, once.
"""

from __future__ import annotations

import io
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from diffusers import AutoencoderKL, DDIMScheduler, StableDiffusionPipeline, UNet2DConditionModel
from PIL import Image
from transformers import CLIPTextConfig, CLIPTextModel

from benchmarks.common import Row, median, peak_memory, timed
from core.config import GeneratorConfig
from generators.image import StableDiffusionTool
from orchestrator.tiny import tiny_clip_tokenizer

#: sizes as plain data: UNet and VAE widths, latent side, text width
SD_SIZES: dict[str, dict[str, Any]] = {
    "tiny": dict(
        unet=(16, 32),
        unet_layers=1,
        head_dim=8,
        groups=8,
        latent=16,
        vae=(16, 32),
        text_width=32,
        text_layers=2,
        text_heads=4,
    ),
    "sd15": dict(
        unet=(320, 640, 1280, 1280),
        unet_layers=2,
        head_dim=8,
        groups=32,
        latent=64,
        vae=(128, 256, 512, 512),
        text_width=768,
        text_layers=2,
        text_heads=12,
    ),
}


@dataclass
class DiffusionTwins:
    size: str
    baseline: Any  # StableDiffusionPipeline
    ours: Any  # StableDiffusionTool over a second pipeline object holding the same modules
    prompt_embeds: torch.Tensor  # (1, 77, D): the conditioning both sides denoise
    negative: torch.Tensor  # (1, 77, D): the empty prompt's features
    steps: int
    guidance: float

    @property
    def device(self) -> torch.device:
        return self.baseline.device


def build_sd_twins(
    size: str = "tiny",
    *,
    device: str | torch.device = "cpu",
    dtype: torch.dtype = torch.float32,
    steps: int = 30,
    guidance: float = 7.5,
    compile: bool = False,
    seed: int = 0,
) -> DiffusionTwins:
    if size not in SD_SIZES:
        raise ValueError(f"unknown diffusion size {size!r}; sizes: {', '.join(SD_SIZES)}")
    s = SD_SIZES[size]
    levels = len(s["unet"])
    with torch.random.fork_rng(devices=[]), torch.device(device):
        torch.manual_seed(seed)
        tokenizer = tiny_clip_tokenizer()
        text = CLIPTextModel(
            CLIPTextConfig(
                vocab_size=len(tokenizer),
                hidden_size=s["text_width"],
                intermediate_size=4 * s["text_width"],
                num_hidden_layers=s["text_layers"],
                num_attention_heads=s["text_heads"],
                max_position_embeddings=tokenizer.model_max_length,
                bos_token_id=tokenizer.bos_token_id,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
            )
        )
        unet = UNet2DConditionModel(
            sample_size=s["latent"],
            in_channels=4,
            out_channels=4,
            layers_per_block=s["unet_layers"],
            block_out_channels=s["unet"],
            attention_head_dim=s["head_dim"],
            norm_num_groups=s["groups"],
            cross_attention_dim=s["text_width"],
            down_block_types=("CrossAttnDownBlock2D",) * (levels - 1) + ("DownBlock2D",),
            up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * (levels - 1),
        )
        vae = AutoencoderKL(
            in_channels=3,
            out_channels=3,
            latent_channels=4,
            block_out_channels=s["vae"],
            layers_per_block=2,
            norm_num_groups=s["groups"],
            down_block_types=("DownEncoderBlock2D",) * len(s["vae"]),
            up_block_types=("UpDecoderBlock2D",) * len(s["vae"]),
            sample_size=s["latent"] * 2 ** (len(s["vae"]) - 1),
        )
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )
    baseline = StableDiffusionPipeline(
        vae=vae,
        text_encoder=text.eval(),
        tokenizer=tokenizer,
        unet=unet.eval(),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
    )
    baseline.to(device=device, dtype=dtype)
    for module in (vae, text, unet):
        module.requires_grad_(False)
    baseline.set_progress_bar_config(disable=True)
    # ours: a second pipeline object over the same modules, so compiling ours leaves the baseline's UNet alone
    pipeline = StableDiffusionPipeline(**baseline.components, requires_safety_checker=False)
    pipeline.set_progress_bar_config(disable=True)
    cfg = GeneratorConfig(
        kind="stable_diffusion",
        model=f"sd-twin:{size}",
        num_inference_steps=steps,
        guidance_scale=guidance,
        compile=compile,
    )
    ours = StableDiffusionTool(pipeline, cfg, seed=seed)
    g = torch.Generator().manual_seed(seed + 1)
    prompt = torch.randn(1, tokenizer.model_max_length, s["text_width"], generator=g).to(device, dtype)
    negative = ours.negative_conditioning()["prompt_embeds"]
    return DiffusionTwins(size, baseline, ours, prompt, negative, steps, guidance)


def baseline_image(twins: DiffusionTwins, seed: int = 0):
    generator = torch.Generator(device="cpu").manual_seed(seed)
    with torch.no_grad():
        return twins.baseline(
            prompt_embeds=twins.prompt_embeds,
            negative_prompt_embeds=twins.negative,
            num_inference_steps=twins.steps,
            guidance_scale=twins.guidance,
            generator=generator,
            output_type="pil",
        ).images[0]


def our_image(twins: DiffusionTwins, seed: int = 0):
    return twins.ours.generate({"prompt_embeds": twins.prompt_embeds}, seed=seed)


def max_pixel_diff(twins: DiffusionTwins, seed: int = 0) -> int:
    """Largest difference (0-255) between the two sides' images from the same seed: 0 when both run eagerly."""
    theirs = np.asarray(baseline_image(twins, seed).convert("RGB"), dtype=np.int16)
    ours = np.asarray(Image.open(io.BytesIO(our_image(twins, seed).data)).convert("RGB"), dtype=np.int16)
    return int(np.abs(theirs - ours).max())


def bench_generate(
    size: str = "tiny",
    *,
    repeats: int = 3,
    device: str = "cpu",
    dtype: torch.dtype = torch.float32,
    compile: bool = False,
    twins: DiffusionTwins | None = None,
) -> list[Row]:
    """Seconds per image (and peak memory) of one guided image generation, baseline vs ours."""
    twins = twins or build_sd_twins(size, device=device, dtype=dtype, compile=compile)
    dev = twins.device
    memory: dict[str, dict] = {"hf": {}, "ours": {}}
    with peak_memory(dev, memory["hf"]):
        theirs = median(timed(lambda: baseline_image(twins), dev, warmup=1, repeats=repeats))
    with peak_memory(dev, memory["ours"]):
        ours = median(timed(lambda: our_image(twins), dev, warmup=2, repeats=repeats))  # 2: compile, then record
    notes = {
        "size": size,
        "device": str(dev),
        "dtype": str(dtype).replace("torch.", ""),
        "steps": twins.steps,
        "guidance": twins.guidance,
        "compile": twins.ours.cfg.compile,
        "weights": "random",
        "max_pixel_diff": max_pixel_diff(twins),
    }
    which = ", ".join(
        [size, f"{twins.steps} DDIM steps", f"guidance {twins.guidance:g}"] + ["compiled"] * notes["compile"]
    )
    rows = [
        Row(f"image generation ({which})", "ms/image", 1e3 * ours, 1e3 * theirs, higher_is_better=False, notes=notes)
    ]
    if memory["hf"]["peak_gib"] is not None:
        rows.append(
            Row(
                f"image generation peak memory ({size})",
                "GiB",
                memory["ours"]["peak_gib"],
                memory["hf"]["peak_gib"],
                higher_is_better=False,
                notes={k: v for k, v in notes.items() if k != "max_pixel_diff"},
            )
        )
    return rows
