"""Tiny text-to-image, -video and -audio diffusion models for the tinyworld, trained from scratch on a CPU.

Everything is built from the real diffusers classes at toy size, so the results load through the ordinary generator
tools (:class:`~generators.image.StableDiffusionTool`, :class:`~generators.video.TextToVideoTool`,
:class:`~generators.audio.MelDiffusionTool`) exactly like a Hugging Face checkpoint:

1. :func:`train_vae` -- an ``AutoencoderKL`` (scale factor 4, 4 latent channels) on 32x32 world pictures and clip
   frames (``channels=3``) or on normalised log-mel spectrograms (``channels=1``, ``32 x 64``); its
   ``scaling_factor`` is set from the measured latent standard deviation.
2. :func:`train_image_generator` -- a ``UNet2DConditionModel`` on (picture, caption), saved as a complete
   ``StableDiffusionPipeline``.
3. :func:`train_video_generator` -- a ``UNet3DConditionModel`` (or AnimateDiff's ``UNetMotionModel``) on (clip,
   caption), grown from a 2D UNet trained on the clips' first frames, saved as a ``TextToVideoSDPipeline`` (or an
   ``AnimateDiffPipeline``) sharing the 3-channel VAE.
4. :func:`train_audio_generator` -- a ``UNet2DConditionModel`` on (sound -> mel, caption), saved as a
   ``StableDiffusionPipeline`` with the 1-channel VAE plus ``mel.json`` (:class:`~generators.audio.MelParams`).

Every UNet cross-attends to the last hidden state of a *frozen* CLIP text encoder (the folder ``text_dir``:
``CLIPTextModel`` + ``CLIPTokenizer`` at its top level), exactly like Stable Diffusion, so the system's output
projectors can drive them with ``prompt_embeds``. Training is the epsilon objective under a ``DDPMScheduler``
(Min-SNR-5 weighted, EMA weights saved), with 10 % empty captions for classifier-free guidance; the VAE's latents
are centred per channel inside its weights (:func:`centre_latents`) and scaled to unit variance. To make CPU
training fast, the data set is rendered once, VAE latents and text states are computed once (both frozen), and
the UNet then trains on cached tensors.

The module also holds the measurements used to check the generators (:func:`read_picture`, :func:`read_clip`,
:func:`read_sound`: colour, shape, direction, pitch and beep count read back with centroids, masks, spectra and
envelopes) and the evaluations built on them (:func:`evaluate_image` ...).

``python -m tinyworld.diffusion OUT --text-dir DIR`` trains everything into ``OUT`` and prints the metrics.
"""

from __future__ import annotations

import argparse
import io
import itertools
import json
import math
import random
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image, ImageDraw

from generators.audio import MelParams
from tinyworld import text as world_text
from tinyworld.recipe import refresh_threads
from tinyworld.world import COLOURS, DIRECTIONS, PITCHES, SAMPLE_RATE, SHAPES, Clip, Picture, Sound, draw_shape
from training.meter import metered
from training.optim import adamw

SIDE = 32  # pixels of a picture / frame side
FRAMES = 8  # frames of a clip
EMPTY = ""  # the unconditional caption of classifier-free guidance

#: noise schedule shared by the training DDPMScheduler and the saved DDIMScheduler (Stable Diffusion's)
SCHEDULE = dict(num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear")
DDIM = dict(**SCHEDULE, clip_sample=False, set_alpha_to_one=False, steps_offset=1, prediction_type="epsilon")

#: AutoencoderKL: three levels (scale factor 4), 4 latent channels
VAE_CONFIG = dict(
    latent_channels=4,
    block_out_channels=(16, 32, 32),
    layers_per_block=1,
    norm_num_groups=8,
    down_block_types=("DownEncoderBlock2D",) * 3,
    up_block_types=("UpDecoderBlock2D",) * 3,
)
#: UNet2DConditionModel of the image and audio generators (8x8 / 8x16 latents); cross-attention on the low level
#: (linear attention projections, as in the 3D blocks, so a 2D UNet's weights inflate into a 3D one)
UNET_2D_CONFIG = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=4,
    norm_num_groups=16,
    down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
    up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
    use_linear_projection=True,
)
#: UNet3DConditionModel of the video generator (8 frames of 8x8 latents)
UNET_3D_CONFIG = dict(
    block_out_channels=(32, 64),
    layers_per_block=1,
    attention_head_dim=8,
    norm_num_groups=16,
    down_block_types=("DownBlock3D", "CrossAttnDownBlock3D"),
    up_block_types=("CrossAttnUpBlock3D", "UpBlock3D"),
)

#: AnimateDiff motion modules of the video generator (``MotionAdapter``): one temporal transformer after each
#: resnet / attention of the image UNet's blocks and one in the middle, 4 heads, sinusoidal frame positions
MOTION_CONFIG = dict(
    motion_layers_per_block=1, motion_num_attention_heads=4, motion_max_seq_length=32, use_motion_mid_block=True
)
#: the video generator's architectures (``train_video_generator(architecture=...)``) and their generator kinds
VIDEO_ARCHITECTURES = {"motion": "animatediff", "unet3d": "text_to_video_sd"}

#: default training lengths: (steps, batch size) per component
DEFAULTS: dict[str, tuple[int, int]] = {
    "vae_rgb": (800, 16),
    "vae_mel": (600, 16),
    "image": (1200, 64),
    "video_frames": (1000, 64),  # stage 1 of the video generator: first frames, 2D
    "video": (400, 16),  # stage 2: whole clips, 3D
    "audio": (800, 64),
}
#: default data-set sizes (rendered once, seeded)
SAMPLES: dict[str, int] = {"pictures": 2400, "clips": 1152, "sounds": 1080}
#: probability of each caption form while training: (request caption, full caption)
CAPTION_FORMS = (0.7, 0.3)
CFG_DROPOUT = 0.1


def _progress(iterable, *, desc: str, enabled: bool, total: int | None = None):
    from tqdm.auto import tqdm

    return tqdm(iterable, desc=desc, disable=not enabled, total=total, leave=False, dynamic_ncols=True)


# ---------------------------------------------------------------------------------------------------------------
# the frozen text encoder
# ---------------------------------------------------------------------------------------------------------------
def build_standin_text_encoder(out: str | Path, seed: int = 0, *, hidden_size: int = 64, max_length: int = 16) -> Path:
    """A seeded random ``CLIPTextModel`` (``hidden_size``, ``max_length`` positions) with a BPE tokenizer trained on
    the world's corpus, saved to ``out``: a stand-in for the project's trained text encoder with the same layout."""
    from transformers import CLIPTextConfig, CLIPTextModel

    from orchestrator.tiny import tiny_clip_tokenizer

    out = Path(out)
    tokenizer = tiny_clip_tokenizer(max_length, corpus=world_text.corpus(), num_merges=300)
    torch.manual_seed(seed)
    config = CLIPTextConfig(
        vocab_size=len(tokenizer),
        hidden_size=hidden_size,
        intermediate_size=2 * hidden_size,
        num_hidden_layers=2,
        num_attention_heads=4,
        max_position_embeddings=max_length,
        projection_dim=hidden_size,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    CLIPTextModel(config).eval().save_pretrained(out)
    tokenizer.save_pretrained(out)
    return out


@torch.no_grad()
def encode_captions(pipeline: Any, captions: Sequence[str], batch_size: int = 128) -> torch.Tensor:
    """``prompt_embeds`` ``(N, L, D)`` of ``captions`` computed by the pipeline's own ``encode_prompt``: exactly the
    tensors the generator tool (and hence the output projector) feeds the UNet at generation time."""
    out = []
    for start in range(0, len(captions), batch_size):
        chunk = list(captions[start : start + batch_size])
        embeds, _ = pipeline.encode_prompt(chunk, torch.device("cpu"), 1, False)
        out.append(embeds.float())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# data: rendered once, seeded, every attribute combination equally often
# ---------------------------------------------------------------------------------------------------------------
def _balanced(cls, n: int, seed: int) -> list:
    """``n`` things of ``cls`` cycling through every attribute combination, each cycle shuffled with ``seed``."""
    names = list(cls.options)
    combos = [cls(**dict(zip(names, values))) for values in itertools.product(*(cls.choices(x) for x in names))]
    rng = random.Random(seed)
    things: list = []
    while len(things) < n:
        cycle = list(combos)
        rng.shuffle(cycle)
        things += cycle
    return things[:n]


def render_pictures(n: int, seed: int = 0) -> tuple[np.ndarray, list[Picture]]:
    """``n`` pictures: uint8 ``(n, 32, 32, 3)`` and the :class:`Picture` each shows."""
    things = _balanced(Picture, n, seed)
    pixels = np.stack([np.asarray(t.render(seed * 1_000_003 + i, side=SIDE)) for i, t in enumerate(things)])
    return pixels, things


def render_clips(n: int, seed: int = 0) -> tuple[np.ndarray, list[Clip]]:
    """``n`` clips: uint8 ``(n, 8, 32, 32, 3)`` and the :class:`Clip` each shows."""
    things = _balanced(Clip, n, seed)
    frames = [
        np.stack([np.asarray(f) for f in t.render(seed * 1_000_003 + i, side=SIDE, frames=FRAMES)])
        for i, t in enumerate(things)
    ]
    return np.stack(frames), things


def render_sounds(n: int, seed: int = 0) -> tuple[np.ndarray, list[Sound]]:
    """``n`` one-second sounds: float32 ``(n, 16000)`` and the :class:`Sound` each is."""
    things = _balanced(Sound, n, seed)
    return np.stack([t.render(seed * 1_000_003 + i) for i, t in enumerate(things)]), things


def _pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def _mels_to_tensor(mels: np.ndarray) -> torch.Tensor:
    """normalised mels ``(N, n_mels, frames)`` in [0, 1] -> ``(N, 1, n_mels, frames)`` in [-1, 1]."""
    return torch.from_numpy(np.asarray(mels, dtype=np.float32))[:, None] * 2.0 - 1.0


def vae_training_data(channels: int, samples: int, seed: int) -> torch.Tensor:
    """What the VAE learns to reconstruct, in [-1, 1]: pictures plus clip frames ``(N, 3, 32, 32)`` for
    ``channels=3``, normalised log-mel spectrograms ``(N, 1, 32, 64)`` for ``channels=1``."""
    if channels == 3:
        pictures, _ = render_pictures(samples, seed)
        clips, _ = render_clips(max(1, samples // (2 * FRAMES)), seed + 1)
        frames = clips.reshape(-1, SIDE, SIDE, 3)  # (n, F, H, W, 3) -> (n * F, H, W, 3)
        return _pixels_to_tensor(np.concatenate([pictures, frames]))
    if channels == 1:
        waves, _ = render_sounds(samples, seed)
        return _mels_to_tensor(MelParams().mel(waves))
    raise ValueError(f"channels must be 3 (pictures, frames) or 1 (mel spectrograms), got {channels}")


# ---------------------------------------------------------------------------------------------------------------
# shared training machinery
# ---------------------------------------------------------------------------------------------------------------
def _lr_at(step: int, steps: int, lr: float, warmup: int) -> float:
    """Linear warm-up over ``warmup`` steps, then cosine decay to 5 % of ``lr``."""
    if step < warmup:
        return lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return lr * (0.05 + 0.95 * 0.5 * (1.0 + math.cos(math.pi * progress)))


def _window_means(history: list[float]) -> tuple[float, float]:
    """Mean loss of the first and the last 10 % of the steps (at least one step each)."""
    k = max(1, len(history) // 10)
    return float(np.mean(history[:k])), float(np.mean(history[-k:]))


def count_parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


class _EMA:
    """Exponential moving average of a module's parameters (decay warmed up as ``(1 + n) / (10 + n)``)."""

    def __init__(self, module: torch.nn.Module, decay: float) -> None:
        self.decay = decay
        self.shadow = [p.detach().clone() for p in module.parameters()]
        self.updates = 0

    @torch.no_grad()
    def update(self, module: torch.nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        for shadow, param in zip(self.shadow, module.parameters()):
            shadow.lerp_(param.detach(), 1.0 - decay)

    @torch.no_grad()
    def copy_to(self, module: torch.nn.Module) -> None:
        for shadow, param in zip(self.shadow, module.parameters()):
            param.copy_(shadow)


# ---------------------------------------------------------------------------------------------------------------
# 1. the VAE
# ---------------------------------------------------------------------------------------------------------------
def make_vae(channels: int, **overrides: Any):
    """A fresh ``AutoencoderKL`` for ``channels``-channel inputs (:data:`VAE_CONFIG` updated with ``overrides``)."""
    from diffusers import AutoencoderKL

    config = {**VAE_CONFIG, **overrides}
    return AutoencoderKL(in_channels=channels, out_channels=channels, sample_size=SIDE, **config)


def train_vae(
    out: str | Path,
    *,
    channels: int,
    steps: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
    samples: int | None = None,
    lr: float = 2e-3,
    kl_weight: float = 1e-6,
    config: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Train an ``AutoencoderKL`` on world pictures and frames (``channels=3``) or mel spectrograms
    (``channels=1``) with L1 + L2 reconstruction plus ``kl_weight`` x KL (per latent value), centre its latents
    per channel (:func:`centre_latents`), set ``scaling_factor`` to ``1 / std`` of the centred latents of the
    data set and save it to ``out`` (``save_pretrained``).

    ``samples``: data-set size (default: 2400 pictures + 1200 clip frames, or 1080 sounds); ``config``: overrides
    of :data:`VAE_CONFIG`. Returns metrics: ``loss_first``/``loss_last`` (mean training loss of the first / last
    10 % of the steps), ``recon_before``/``recon_after`` (L1 on a fixed batch in [-1, 1], before and after
    training), ``recon_l1`` (mean L1 over the whole set), ``latent_channel_means`` (before centring),
    ``latent_std``, ``scaling_factor``, ``parameters``, ``seconds``.
    """
    started = time.time()
    torch.manual_seed(seed)
    default = SAMPLES["pictures"] if channels == 3 else SAMPLES["sounds"]
    data = vae_training_data(channels, samples or default, seed)  # (N, C, H, W) in [-1, 1]
    vae = make_vae(channels, **(config or {})).to(device)
    optimiser = adamw(vae.parameters(), lr=lr, weight_decay=0.0)
    generator = torch.Generator().manual_seed(seed)
    fixed = data[torch.randperm(len(data), generator=generator)[:64]]

    recon_before = reconstruction_l1(vae, fixed)
    history: list[float] = []
    vae.train()
    name = f"vae ({channels} ch)"
    for step in metered(_progress(range(steps), desc=name, enabled=progress), name):
        for group in optimiser.param_groups:
            group["lr"] = _lr_at(step, steps, lr, warmup=min(50, steps // 10 + 1))
        batch = data[torch.randint(0, len(data), (batch_size,), generator=generator)].to(device)
        posterior = vae.encode(batch).latent_dist
        recon = vae.decode(posterior.sample()).sample
        kl = posterior.kl().mean() / posterior.mean[0].numel()  # per latent value
        loss = (recon - batch).abs().mean() + (recon - batch).pow(2).mean() + kl_weight * kl
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        history.append(loss.item())
    vae.eval().requires_grad_(False)

    # centre the latents per channel, then scale them to unit variance for the diffusion model
    with torch.no_grad():
        latents = torch.cat(
            [vae.encode(data[i : i + 256].to(device)).latent_dist.mean.cpu() for i in range(0, len(data), 256)]
        )  # (N, 4, H / 4, W / 4)
    vae.cpu()
    channel_means = latents.mean(dim=(0, 2, 3))  # (4,)
    centre_latents(vae, channel_means)
    std = float((latents - channel_means[None, :, None, None]).std())
    vae.register_to_config(scaling_factor=1.0 / std)
    recon_l1 = sum(
        reconstruction_l1(vae, data[i : i + 256]) * len(data[i : i + 256]) for i in range(0, len(data), 256)
    ) / len(data)
    vae.save_pretrained(str(out))
    first, last = _window_means(history)
    return {
        "loss_first": first,
        "loss_last": last,
        "recon_before": recon_before,
        "recon_after": reconstruction_l1(vae, fixed),
        "recon_l1": recon_l1,
        "latent_channel_means": channel_means.tolist(),
        "latent_std": std,
        "scaling_factor": 1.0 / std,
        "parameters": count_parameters(vae),
        "steps": steps,
        "batch_size": batch_size,
        "samples": len(data),
        "seconds": time.time() - started,
    }


@torch.no_grad()
def reconstruction_l1(vae: Any, batch: torch.Tensor) -> float:
    """Mean L1 of ``vae``'s reconstruction (from the posterior mean) of ``batch`` (in [-1, 1])."""
    training = vae.training
    vae.eval()
    batch = batch.to(vae.device, vae.dtype)
    error = float((vae.decode(vae.encode(batch).latent_dist.mean).sample - batch).abs().mean())
    vae.train(training)
    return error


@torch.no_grad()
def centre_latents(vae: Any, mean: torch.Tensor) -> None:
    """Fold a per-channel shift into ``vae``'s 1x1 ``quant_conv`` / ``post_quant_conv`` so that its latents
    are ``z - mean`` while every reconstruction stays exactly the same.

    Stable Diffusion pipelines only *scale* latents (``scaling_factor``), so centring has to live in the weights:
    the encoder's mean channels get ``bias -= mean`` and the decoder's first layer ``W (z - mean) + b'`` with
    ``b' = b + W mean``."""
    channels = mean.numel()
    vae.quant_conv.bias[:channels] -= mean.to(vae.quant_conv.bias)  # the first half of the moments is the mean
    weight = vae.post_quant_conv.weight[:, :, 0, 0]  # (C_out, C_in) of the 1x1 conv
    vae.post_quant_conv.bias += weight @ mean.to(weight)


@torch.no_grad()
def encode_latents(vae: Any, pixels: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """``(N, C, H, W)`` in [-1, 1] -> scaled latent means ``(N, 4, H / 4, W / 4)`` (what the UNet denoises)."""
    out = []
    for start in range(0, len(pixels), batch_size):
        chunk = pixels[start : start + batch_size].to(vae.device, vae.dtype)
        out.append((vae.encode(chunk).latent_dist.mean * vae.config.scaling_factor).float().cpu())
    return torch.cat(out)


# ---------------------------------------------------------------------------------------------------------------
# 2-4. the denoisers
# ---------------------------------------------------------------------------------------------------------------
def _caption_table(things: Sequence[Any], forms: Sequence[Callable[[Any], str]]) -> tuple[list[str], torch.Tensor]:
    """Unique captions (the empty caption first) and ``(N, len(forms))`` indices of each thing's caption forms."""
    captions = [EMPTY]
    index: dict[str, int] = {EMPTY: 0}
    rows = []
    for thing in things:
        row = []
        for form in forms:
            caption = form(thing)
            if caption not in index:
                index[caption] = len(captions)
                captions.append(caption)
            row.append(index[caption])
        rows.append(row)
    return captions, torch.tensor(rows, dtype=torch.long)


def train_denoiser(
    unet: torch.nn.Module,
    latents: torch.Tensor,
    states: torch.Tensor,
    caption_ids: torch.Tensor,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    lr: float = 1e-3,
    form_probs: Sequence[float] = (1.0,),
    cfg_dropout: float = CFG_DROPOUT,
    ema_decay: float = 0.995,
    snr_gamma: float | None = 5.0,
    noisy_gamma: float | None = None,
    min_timestep: int = 0,
    lr_scale: Callable[[str], float] | None = None,
    condition_per_frame: bool = False,
    progress: bool = True,
    desc: str = "unet",
    device: str = "cpu",
) -> dict:
    """Train ``unet`` with the epsilon objective on cached tensors, then load its EMA weights.

    Args:
        latents: clean scaled latents ``(N, C, ...)``.
        states: text-encoder states ``(U, L, D)`` of the unique captions; row 0 is the empty caption.
        caption_ids: ``(N, K)`` rows of ``states`` for each sample's ``K`` caption forms; each step draws one form
            per sample with ``form_probs`` and replaces it by the empty caption with probability ``cfg_dropout``.
        snr_gamma: Min-SNR-gamma weighting of the per-sample noise MSE, ``min(SNR, gamma) / SNR`` (Hang et al.
            2023): the nearly clean timesteps, which teach little about layout, colour or motion, weigh less.
            ``None``: the plain mean.
        noisy_gamma: if set, the noisy timesteps (SNR < 1) weigh ``min(1 / SNR, noisy_gamma)`` instead of 1 -- up
            to the weight of an ``x0`` objective there, where the layout (and a clip's motion) is decided.
        min_timestep: train on timesteps ``[min_timestep, T)`` only (fixed-batch losses use all of them).
        lr_scale: parameter name -> multiplier of ``lr`` (0 freezes the parameter); default 1 for all.
        condition_per_frame: video latents ``(N, C, F, h, w)`` for a UNet that takes one text condition per frame
            (``UNetMotionModel``): each sample's states are repeated over its frames, as ``AnimateDiffPipeline`` does.

    Returns ``loss_first``/``loss_last`` (mean weighted loss of the first / last 10 % of the steps) and
    ``loss_before``/``loss_after``: the plain noise MSE on a fixed batch with fixed noise and timesteps, before
    training and with the final (EMA) weights.
    """
    from diffusers import DDPMScheduler

    scheduler = DDPMScheduler(**SCHEDULE, clip_sample=False, prediction_type="epsilon")
    alphas = scheduler.alphas_cumprod.to(device)  # (T,)
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    unet.to(device).train()
    latents, states = latents.to(device), states.to(device)
    probs = torch.tensor(form_probs, dtype=torch.float)

    def noisy_batch(idx: torch.Tensor, gen: torch.Generator, dropout: float, t_min: int = 0):
        b = len(idx)
        form = torch.multinomial(probs, b, replacement=True, generator=gen)  # (B,) caption form per sample
        caption = caption_ids[idx, form]
        caption = torch.where(torch.rand(b, generator=gen) < dropout, torch.zeros_like(caption), caption)
        x0 = latents[idx.to(device)]
        noise = torch.randn(x0.shape, generator=gen).to(device)
        t = torch.randint(t_min, scheduler.config.num_train_timesteps, (b,), generator=gen).to(device)
        a = alphas[t].view(-1, *([1] * (x0.dim() - 1)))  # (B,) -> (B, 1, 1, 1[, 1]) broadcast over the latent
        cond = states[caption.to(device)]  # (B, L, D)
        if condition_per_frame:
            cond = cond.repeat_interleave(x0.shape[2], dim=0)  # (B, L, D) -> (B * F, L, D), frame-major per sample
        return a.sqrt() * x0 + (1 - a).sqrt() * noise, t, cond, noise

    def weights(t: torch.Tensor) -> torch.Tensor:
        snr = alphas[t] / (1 - alphas[t])  # (B,)
        weight = torch.clamp(snr, max=snr_gamma) / snr if snr_gamma is not None else torch.ones_like(snr)
        if noisy_gamma is not None:
            weight = weight * torch.clamp(1.0 / snr, min=1.0, max=noisy_gamma)
        return weight

    fixed_gen = torch.Generator().manual_seed(seed + 12345)
    fixed = noisy_batch(
        torch.randint(0, len(latents), (min(128, 4 * batch_size),), generator=fixed_gen), fixed_gen, 0.0
    )

    loss_before = _fixed_loss(unet, fixed)
    groups: dict[float, list[torch.nn.Parameter]] = {}
    for name, param in unet.named_parameters():
        scale = 1.0 if lr_scale is None else float(lr_scale(name))
        param.requires_grad_(scale > 0)
        if scale > 0:
            groups.setdefault(scale, []).append(param)
    optimiser = adamw([{"params": ps, "scale": scale} for scale, ps in groups.items()], lr=lr, weight_decay=0.01)
    trainable = [p for ps in groups.values() for p in ps]
    ema = _EMA(unet, ema_decay)
    history: list[float] = []
    for step in metered(_progress(range(steps), desc=desc, enabled=progress), desc):
        if step % 25 == 0:
            refresh_threads()  # in a recipe worker: take up cores that finished steps left free
        for group in optimiser.param_groups:
            group["lr"] = group["scale"] * _lr_at(step, steps, lr, warmup=min(100, steps // 10 + 1))
        idx = torch.randint(0, len(latents), (batch_size,), generator=generator)
        x, t, cond, noise = noisy_batch(idx, generator, cfg_dropout, min_timestep)
        error = (unet(x, t, encoder_hidden_states=cond).sample - noise).pow(2)
        loss = (error.flatten(1).mean(1) * weights(t)).mean()  # (B, ...) -> (B,) weighted -> scalar
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(trainable, 1.0)
        optimiser.step()
        ema.update(unet)
        history.append(loss.item())
    ema.copy_to(unet)
    unet.eval().requires_grad_(False).cpu()
    first, last = _window_means(history)
    return {
        "loss_first": first,
        "loss_last": last,
        "loss_before": loss_before,
        "loss_after": _fixed_loss(unet, fixed),
        "steps": steps,
        "batch_size": batch_size,
    }


@torch.no_grad()
def _fixed_loss(unet: Any, batch: tuple) -> float:
    """Plain noise MSE of ``unet`` (in eval mode) on a fixed ``(noisy, t, states, noise)`` batch."""
    training = unet.training
    unet.eval()
    device = next(unet.parameters()).device
    x, t, cond, noise = (b.to(device) for b in batch)
    loss = float((unet(x, t, encoder_hidden_states=cond).sample - noise).pow(2).mean())
    unet.train(training)
    return loss


def _text_pipeline_parts(text_dir: str | Path) -> dict:
    """The frozen tokenizer and text encoder of ``text_dir`` as pipeline components."""
    from tinyworld.encoders import load_text_encoder

    tokenizer, text_encoder = load_text_encoder(text_dir)
    return {"tokenizer": tokenizer, "text_encoder": text_encoder}


def save_text_side(text_dir: str | Path, out: str | Path, pipeline_class: type) -> Path:
    """Save a ``pipeline_class`` folder holding only the frozen tokenizer and text encoder of ``text_dir`` (every
    other component ``null`` in ``model_index.json``): what a generator tool loads with ``conditioning_only=True``.
    The generators trained here cross-attend to exactly this text encoder, so its features are their conditioning,
    and MM PT / IT can train the output projectors on them while the UNets still train."""
    import inspect

    import diffusers

    out = Path(out)
    text = _text_pipeline_parts(text_dir)
    index: dict[str, Any] = {"_class_name": pipeline_class.__name__, "_diffusers_version": diffusers.__version__}
    for name, param in inspect.signature(pipeline_class.__init__).parameters.items():
        if name != "self" and param.kind is param.POSITIONAL_OR_KEYWORD and not isinstance(param.default, bool):
            index[name] = [None, None]  # a component this folder leaves out
    for name, component in text.items():
        component.save_pretrained(out / name)
        index[name] = [type(component).__module__.split(".")[0], type(component).__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def _load_vae(vae_dir: str | Path):
    from diffusers import AutoencoderKL

    return AutoencoderKL.from_pretrained(str(vae_dir)).eval().requires_grad_(False)


def make_unet_2d(latent_size: int, cross_attention_dim: int, **overrides: Any):
    """A fresh ``UNet2DConditionModel`` (:data:`UNET_2D_CONFIG` updated with ``overrides``) for 4-channel latents."""
    from diffusers import UNet2DConditionModel

    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=cross_attention_dim,
        **{**UNET_2D_CONFIG, **overrides},
    )


def make_unet_3d(latent_size: int, cross_attention_dim: int, **overrides: Any):
    """A fresh ``UNet3DConditionModel`` (:data:`UNET_3D_CONFIG` updated with ``overrides``) for 4-channel latents."""
    from diffusers import UNet3DConditionModel

    return UNet3DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=cross_attention_dim,
        **{**UNET_3D_CONFIG, **overrides},
    )


def _sd_pipeline(text: dict, vae: Any, unet: Any):
    """A ``StableDiffusionPipeline`` (DDIM, no safety checker) from ``text`` (tokenizer, text encoder)."""
    from diffusers import DDIMScheduler, StableDiffusionPipeline

    return StableDiffusionPipeline(
        vae=vae,
        unet=unet,
        scheduler=DDIMScheduler(**DDIM),
        safety_checker=None,
        feature_extractor=None,
        image_encoder=None,
        requires_safety_checker=False,
        **text,
    )


def _finish(out: str | Path, pipeline: Any, metrics: dict, started: float, unet: Any) -> dict:
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    pipeline.save_pretrained(str(out))
    metrics.update(parameters=count_parameters(unet), seconds=time.time() - started)
    return metrics


def train_image_generator(
    text_dir: str | Path,
    vae_dir: str | Path,
    out: str | Path,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
    samples: int | None = None,
    lr: float = 2e-3,
    config: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Train a ``UNet2DConditionModel`` on (picture, caption) and save a ``StableDiffusionPipeline`` to ``out``.

    Captions are mostly request captions (``a red circle``: position and size free) and otherwise full captions
    (:data:`CAPTION_FORMS`); 10 % are empty for classifier-free guidance. ``samples``: pictures rendered (default
    2400); ``config``: overrides of :data:`UNET_2D_CONFIG`. Returns the :func:`train_denoiser` metrics plus
    ``parameters``, ``samples``, ``seconds``.
    """
    started = time.time()
    vae = _load_vae(vae_dir)
    pictures, things = render_pictures(samples or SAMPLES["pictures"], seed)
    latents = encode_latents(vae, _pixels_to_tensor(pictures))  # (N, 4, 8, 8)
    text = _text_pipeline_parts(text_dir)
    torch.manual_seed(seed)
    unet = make_unet_2d(latents.shape[-1], text["text_encoder"].config.hidden_size, **(config or {}))
    pipeline = _sd_pipeline(text, vae, unet)
    captions, caption_ids = _caption_table(things, (world_text.request_caption, world_text.caption))
    states = encode_captions(pipeline, captions)  # (U, L, D)
    metrics = train_denoiser(
        unet,
        latents,
        states,
        caption_ids,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        form_probs=CAPTION_FORMS,
        progress=progress,
        desc="image unet",
        device=device,
    )
    metrics["samples"] = len(latents)
    return _finish(out, pipeline, metrics, started, unet)


def train_video_generator(
    text_dir: str | Path,
    vae_dir: str | Path,
    out: str | Path,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
    samples: int | None = None,
    lr: float = 2e-3,
    config: dict | None = None,
    pretrain_steps: int | None = None,
    pretrain_batch_size: int | None = None,
    pretrain_frames: Sequence[int] = (0,),
    temporal_lr_scale: float = 5.0,
    spatial_lr_scale: float = 1.0,
    architecture: str = "unet3d",
    motion: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Train a video UNet on (8-frame clip, ``a blue square moving up``) and save a text-to-video pipeline (with
    the 3-channel VAE of ``vae_dir``) to ``out``.

    ``architecture`` (:data:`VIDEO_ARCHITECTURES`):

    * ``"unet3d"`` (default) -- ModelScope: a ``UNet3DConditionModel`` (temporal convolutions after every resnet,
      and temporal attention without frame positions, so only the convolutions' zero padding tells the frames
      apart), saved as a ``TextToVideoSDPipeline`` (kind ``text_to_video_sd``);
    * ``"motion"`` -- AnimateDiff: the image UNet with motion modules (``UNetMotionModel``, temporal attention with
      sinusoidal frame positions, :data:`MOTION_CONFIG` updated with ``motion``), saved as an
      ``AnimateDiffPipeline`` (kind ``animatediff``). At this size it learns motion far more slowly: from the same
      2D UNet and 400 clip steps, clips moved in the asked direction 37 % of the time against 77 % for
      ``"unet3d"`` (60 requests, analytic reader; docs/tinyworld.md).

    Two stages, as video models are usually grown from image models:

    1. the 2D UNet (:func:`unet_2d_twin` of :data:`UNET_3D_CONFIG` updated with ``config``) learns single frames --
       by default only each clip's *first* frame -- with the clip's caption (``pretrain_steps`` x
       ``pretrain_batch_size``, default :data:`DEFAULTS` ``video_frames``). This is cheap and teaches colour, shape
       and, since a clip starts at the edge it moves away from, makes the cross-attention read the direction words
       (where the shape starts);
    2. its weights go into the video UNet with every temporal layer starting as an identity (:func:`inflate_unet`,
       :func:`motion_unet`), which learns whole clips -- the motion -- for ``steps`` x ``batch_size``, its temporal
       layers at ``temporal_lr_scale`` x ``lr`` and the rest at ``spatial_lr_scale`` x ``lr``.

    ``samples``: clips rendered (default 1152); ``pretrain_frames``: the frame indices stage 1 learns from;
    ``pretrain_steps=0`` skips stage 1 (the video UNet then trains from scratch with one learning rate). Returns
    the clip stage's :func:`train_denoiser` metrics plus ``pretrain`` (the frame stage's), ``architecture``,
    ``parameters``, ``seconds``."""
    from diffusers import AnimateDiffPipeline, DDIMScheduler, TextToVideoSDPipeline

    if architecture not in VIDEO_ARCHITECTURES:
        raise ValueError(f"unknown video architecture {architecture!r}; known: {sorted(VIDEO_ARCHITECTURES)}")
    started = time.time()
    vae = _load_vae(vae_dir)
    clips, things = render_clips(samples or SAMPLES["clips"], seed)
    n = len(clips)
    frames = _pixels_to_tensor(clips.reshape(n * FRAMES, SIDE, SIDE, 3))  # (n, F, H, W, 3) -> (n * F, 3, H, W)
    frame_latents = encode_latents(vae, frames)  # (n * F, 4, h, w)
    latents = frame_latents.reshape(n, FRAMES, *frame_latents.shape[1:])  # (n, F, 4, h, w)
    latents = latents.permute(0, 2, 1, 3, 4).contiguous()  # (n, 4, F, h, w): the pipeline's video latents
    text = _text_pipeline_parts(text_dir)
    width = text["text_encoder"].config.hidden_size
    config = {**UNET_3D_CONFIG, **(config or {})}
    torch.manual_seed(seed)
    unet_3d = make_unet_3d(latents.shape[-1], width, **config) if architecture == "unet3d" else None
    twin = make_unet_2d(latents.shape[-1], width, **unet_2d_twin(config))
    captions, caption_ids = _caption_table(things, (world_text.request_caption,))
    states = encode_captions(_sd_pipeline(text, vae, twin), captions)

    # 1. frames as images: the 2D twin of the UNet
    pretrain_steps = DEFAULTS["video_frames"][0] if pretrain_steps is None else pretrain_steps
    pretrain_batch_size = pretrain_batch_size or DEFAULTS["video_frames"][1]
    pretrain = {}
    if pretrain_steps > 0:
        chosen = list(pretrain_frames)
        frame_latents = latents[:, :, chosen].permute(0, 2, 1, 3, 4).flatten(0, 1)  # (n * k, 4, h, w)
        pretrain = train_denoiser(
            twin,
            frame_latents,
            states,
            caption_ids.repeat_interleave(len(chosen), dim=0),
            steps=pretrain_steps,
            batch_size=pretrain_batch_size,
            seed=seed,
            lr=lr,
            progress=progress,
            desc="video frames",
            device=device,
        )
    # 2. whole clips: the video UNet starts as the twin on every frame
    if architecture == "motion":
        unet = motion_unet(twin, **(motion or {}))
        pipeline = AnimateDiffPipeline(vae=vae, unet=unet, motion_adapter=None, scheduler=DDIMScheduler(**DDIM), **text)
    else:
        unet = unet_3d
        if pretrain_steps > 0:
            inflate_unet(unet, twin)
        pipeline = TextToVideoSDPipeline(vae=vae, unet=unet, scheduler=DDIMScheduler(**DDIM), **text)

    def lr_scale(name: str) -> float:
        if pretrain_steps <= 0:
            return 1.0
        temporal = name.startswith("transformer_in") or ".temp_" in name or ".motion_modules." in name
        return temporal_lr_scale if temporal else spatial_lr_scale

    metrics = train_denoiser(
        unet,
        latents,
        states,
        caption_ids,
        steps=steps,
        batch_size=batch_size,
        seed=seed + 1,
        lr=lr,
        lr_scale=lr_scale,
        condition_per_frame=architecture == "motion",
        progress=progress,
        desc="video unet",
        device=device,
    )
    metrics.update(samples=n, pretrain=pretrain, architecture=architecture)
    return _finish(out, pipeline, metrics, started, unet)


def motion_unet(unet_2d: torch.nn.Module, **overrides: Any):
    """A ``UNetMotionModel`` made of ``unet_2d`` and fresh motion modules (``MotionAdapter`` of
    :data:`MOTION_CONFIG` updated with ``overrides``), which start as identities: the result denoises each frame
    exactly as ``unet_2d`` does. (AnimateDiff grows its video model from an image UNet the same way.)"""
    from diffusers import MotionAdapter, UNetMotionModel

    channels = tuple(unet_2d.config.block_out_channels)
    adapter = MotionAdapter(
        block_out_channels=channels,
        motion_norm_num_groups=unet_2d.config.norm_num_groups,
        **{**MOTION_CONFIG, **overrides},
    )
    unet = UNetMotionModel.from_unet2d(unet_2d, adapter)
    with torch.no_grad():  # each motion module adds proj_out(...) to a residual: a zero proj_out is an identity
        for module in unet.modules():
            if type(module).__name__ == "AnimateDiffTransformer3D":
                module.proj_out.weight.zero_()
                module.proj_out.bias.zero_()
    return unet


def unet_2d_twin(config_3d: dict) -> dict:
    """The ``UNet2DConditionModel`` config whose weights :func:`inflate_unet` loads into a 3D UNet of
    ``config_3d``: the same channels, 2D blocks, linear attention projections (as the 3D blocks have), and the
    same attention heads -- the 3D blocks give a block of ``C`` channels ``C / attention_head_dim`` heads of
    ``attention_head_dim`` channels, the 2D blocks ``attention_head_dim`` heads, so the twin gets a per-block
    tuple."""
    twin = {k: v for k, v in config_3d.items() if k not in ("down_block_types", "up_block_types")}
    twin["down_block_types"] = tuple(b.replace("3D", "2D") for b in config_3d["down_block_types"])
    twin["up_block_types"] = tuple(b.replace("3D", "2D") for b in config_3d["up_block_types"])
    twin["use_linear_projection"] = True
    head = int(config_3d["attention_head_dim"])
    twin["attention_head_dim"] = tuple(c // head for c in config_3d["block_out_channels"])
    return twin


@torch.no_grad()
def inflate_unet(unet_3d: torch.nn.Module, unet_2d: torch.nn.Module) -> None:
    """Load a 2D UNet's weights into a ``UNet3DConditionModel`` of the same layout and make every temporal layer
    an identity, so the 3D UNet starts out denoising each frame exactly as the 2D one does.

    The temporal convolutions already start as identities (diffusers zero-initialises their last layer); the
    temporal transformers (``transformer_in``, ``temp_attentions``) add ``proj_out(...)`` to a residual, so
    zeroing ``proj_out`` does the same for them."""
    result = unet_3d.load_state_dict(unet_2d.state_dict(), strict=False)
    if result.unexpected_keys:
        raise ValueError(f"2D weights without a place in the 3D UNet: {result.unexpected_keys[:5]}")
    for name, module in unet_3d.named_modules():
        if type(module).__name__ == "TransformerTemporalModel":
            module.proj_out.weight.zero_()
            module.proj_out.bias.zero_()


def train_audio_generator(
    text_dir: str | Path,
    vae_dir: str | Path,
    out: str | Path,
    *,
    steps: int,
    batch_size: int,
    seed: int,
    progress: bool = True,
    samples: int | None = None,
    lr: float = 2e-3,
    config: dict | None = None,
    device: str = "cpu",
) -> dict:
    """Train a ``UNet2DConditionModel`` on (sound -> normalised log-mel, caption) and save a
    ``StableDiffusionPipeline`` with the 1-channel VAE of ``vae_dir`` plus ``mel.json`` to ``out``, the folder
    :class:`~generators.audio.MelDiffusionTool` loads.

    Captions: request captions (``two high beeps``) and full ones (``two high sine beeps``) as in
    :data:`CAPTION_FORMS`. ``samples``: sounds rendered (default 1080)."""
    started = time.time()
    mel = MelParams()
    vae = _load_vae(vae_dir)
    waves, things = render_sounds(samples or SAMPLES["sounds"], seed)
    latents = encode_latents(vae, _mels_to_tensor(mel.mel(waves)))  # (N, 4, n_mels / 4, frames / 4)
    text = _text_pipeline_parts(text_dir)
    torch.manual_seed(seed)
    unet = make_unet_2d(latents.shape[-2], text["text_encoder"].config.hidden_size, **(config or {}))
    pipeline = _sd_pipeline(text, vae, unet)
    captions, caption_ids = _caption_table(things, (world_text.request_caption, world_text.caption))
    states = encode_captions(pipeline, captions)
    metrics = train_denoiser(
        unet,
        latents,
        states,
        caption_ids,
        steps=steps,
        batch_size=batch_size,
        seed=seed,
        lr=lr,
        form_probs=CAPTION_FORMS,
        progress=progress,
        desc="audio unet",
        device=device,
    )
    metrics["samples"] = len(latents)
    metrics = _finish(out, pipeline, metrics, started, unet)
    mel.save(out)
    return metrics


# ---------------------------------------------------------------------------------------------------------------
# measurements: attributes read back from media
# ---------------------------------------------------------------------------------------------------------------
def foreground(image: np.ndarray, threshold: int = 100) -> np.ndarray:
    """Boolean ``(H, W)`` mask of the pixels of ``image`` (uint8 ``(H, W, 3)``) far from the white background: some
    channel is at least ``threshold`` below 255 (every world colour has such a channel)."""
    return (255 - image.astype(np.int16).min(axis=-1)) >= threshold


def nearest_colour(image: np.ndarray, mask: np.ndarray) -> str | None:
    """The world colour nearest (RGB distance) to the median colour of the ``mask`` pixels, or None if empty."""
    if not mask.any():
        return None
    median = np.median(image[mask].astype(np.float32), axis=0)  # (3,)
    return min(COLOURS, key=lambda name: float(np.sum((median - np.array(COLOURS[name])) ** 2)))


def _template(shape: str, centre: tuple[float, float], side: float, size: tuple[int, int]) -> np.ndarray:
    canvas = Image.new("L", size, 0)
    draw_shape(ImageDraw.Draw(canvas), shape, centre, side, 255)
    return np.asarray(canvas) > 0


def nearest_shape(mask: np.ndarray) -> str | None:
    """The world shape whose rendered template best overlaps ``mask`` (IoU), searching the template's side and
    centre around the mask's bounding box; None for an empty mask."""
    ys, xs = np.nonzero(mask)
    if len(xs) < 4:
        return None
    x0, x1, y0, y1 = xs.min(), xs.max() + 1, ys.min(), ys.max() + 1  # the box's pixel edges
    centre = ((x0 + x1) / 2, (y0 + y1) / 2)
    extent = max(x1 - x0, y1 - y0)
    size = (mask.shape[1], mask.shape[0])
    best, best_iou = None, -1.0
    for shape in SHAPES:
        for side in np.arange(extent - 2.0, extent + 1.01, 0.5):
            for dx, dy in itertools.product((-0.5, 0.0, 0.5), repeat=2):
                template = _template(shape, (centre[0] + dx, centre[1] + dy), float(side), size)
                iou = (template & mask).sum() / max(1, (template | mask).sum())
                if iou > best_iou:
                    best, best_iou = shape, float(iou)
    return best


def read_picture(image: np.ndarray | Image.Image) -> dict:
    """``{"colour", "shape"}`` of a generated or rendered picture (None where nothing is drawn)."""
    image = (
        np.asarray(Image.fromarray(np.asarray(image)).convert("RGB")) if not isinstance(image, np.ndarray) else image
    )
    mask = foreground(image)
    return {"colour": nearest_colour(image, mask), "shape": nearest_shape(mask)}


def read_clip(frames: np.ndarray | Sequence[Image.Image]) -> dict:
    """``{"colour", "shape", "direction"}`` of a clip (uint8 ``(F, H, W, 3)`` or PIL frames): colour over all
    frames, shape by majority over frames, direction from the foreground centroid's travel (first to last frame;
    None if under 2 pixels)."""
    frames = np.stack([np.asarray(f.convert("RGB")) if isinstance(f, Image.Image) else np.asarray(f) for f in frames])
    masks = np.stack([foreground(f) for f in frames])  # (F, H, W)
    colour = nearest_colour(frames.reshape(-1, 3)[None], masks.reshape(1, -1)) if masks.any() else None
    shapes = [s for s in (nearest_shape(m) for m in masks) if s is not None]
    shape = max(set(shapes), key=shapes.count) if shapes else None
    centroids = []
    for m in masks:
        ys, xs = np.nonzero(m)
        if len(xs):
            centroids.append((xs.mean(), ys.mean()))
    direction = None
    if len(centroids) >= 2:
        k = max(1, len(centroids) // 4)  # average the first and last quarter of the frames
        dx, dy = np.mean(centroids[-k:], axis=0) - np.mean(centroids[:k], axis=0)
        if max(abs(dx), abs(dy)) >= 2.0:
            step = (int(np.sign(dx)), 0) if abs(dx) > abs(dy) else (0, int(np.sign(dy)))
            direction = next(name for name, d in DIRECTIONS.items() if d == step)
    return {"colour": colour, "shape": shape, "direction": direction}


def read_sound(wave: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict:
    """``{"pitch", "beeps", "frequency"}`` of a sound: the spectral peak's nearest world pitch (log-frequency
    distance) and the number of bursts in the 10 ms RMS envelope (above 30 % of its peak, gaps under 40 ms closed,
    bursts under 40 ms dropped)."""
    wave = np.asarray(wave, dtype=np.float64)
    if not np.any(wave):
        return {"pitch": None, "beeps": 0, "frequency": 0.0}
    spectrum = np.abs(np.fft.rfft(wave * np.hanning(len(wave))))
    spectrum[: int(100 * len(wave) / sample_rate)] = 0  # ignore DC and rumble below 100 Hz
    frequency = float(np.argmax(spectrum) * sample_rate / len(wave))
    pitch = min(PITCHES, key=lambda p: abs(math.log(max(frequency, 1.0) / PITCHES[p])))
    hop = sample_rate // 100
    frames = len(wave) // hop
    envelope = np.sqrt(np.mean(wave[: frames * hop].reshape(frames, hop) ** 2, axis=1))  # (frames,) 10 ms RMS
    envelope = np.convolve(envelope, np.ones(3) / 3, mode="same")
    on = envelope > 0.3 * envelope.max()
    # close short gaps, then drop short bursts
    closed = on.copy()
    for start, stop in _runs(~on):
        if stop - start < 4 and start > 0 and stop < len(on):
            closed[start:stop] = True
    runs = [r for r in _runs(closed) if r[1] - r[0] >= 4]
    return {"pitch": pitch, "beeps": len(runs), "frequency": frequency}


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """``[start, stop)`` of each run of True in a 1-d boolean array."""
    padded = np.concatenate([[False], flags, [False]]).astype(np.int8)
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


# ---------------------------------------------------------------------------------------------------------------
# evaluations through the generator tools
# ---------------------------------------------------------------------------------------------------------------
def _tool(kind: str, folder: str | Path, steps: int, guidance: float, options: dict):
    from core.config import GeneratorConfig
    from generators import GENERATORS

    cfg = GeneratorConfig(
        kind=kind, model=str(folder), num_inference_steps=steps, guidance_scale=guidance, options=options
    )
    return GENERATORS.get(kind).from_config(cfg, seed=0)


def _evaluate(
    tool: Any,
    things: Sequence[Any],
    read: Callable[[bytes], dict],
    attributes: Sequence[str],
    judges: Any = None,
    kind: str = "",
) -> dict:
    if judges is not None:  # the eval's judges read the media instead of the analytic reader
        read = lambda data: judges.judge(kind, data)  # noqa: E731
    hits = {a: 0 for a in attributes}
    together = 0
    seconds = 0.0
    failures = []
    for i, thing in enumerate(things):
        conditioning = tool.encode_text([world_text.request_caption(thing)])
        started = time.time()
        media = tool.generate(conditioning, seed=i)
        seconds += time.time() - started
        found = read(media.data)
        right = {a: str(found[a]) == str(getattr(thing, a)) for a in attributes}
        for a in attributes:
            hits[a] += right[a]
        together += all(right.values())
        if not all(right.values()) and len(failures) < 8:
            failures.append(
                {"wanted": world_text.request_caption(thing), "found": {a: str(found[a]) for a in attributes}}
            )
    n = len(things)
    return {
        "samples": n,
        "accuracy": together / n,
        **{f"{a}_accuracy": hits[a] / n for a in attributes},
        "seconds_per_sample": seconds / n,
        "failures": failures,
    }


def _request_things(cls, n: int, attributes: Sequence[str], seed: int) -> list:
    """``n`` things cycling through every combination of ``attributes`` (the others random)."""
    rng = random.Random(seed)
    combos = list(itertools.product(*(cls.choices(a) for a in attributes)))
    return [cls.sample(rng, **dict(zip(attributes, combos[i % len(combos)]))) for i in range(n)]


def evaluate_image(
    folder: str | Path, *, samples: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0, judges: Any = None
) -> dict:
    """Generate ``samples`` pictures from request captions (every colour x shape) through
    :class:`~generators.image.StableDiffusionTool` and read colour and shape back: with the analytic reader
    (:func:`read_picture`), or with ``judges`` (:class:`tinyworld.judges.Judges`, what ``mmgraph eval`` uses)."""
    tool = _tool("stable_diffusion", folder, steps, guidance, {"height": SIDE, "width": SIDE})

    def read(data: bytes) -> dict:
        return read_picture(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))

    return _evaluate(
        tool, _request_things(Picture, samples, ("colour", "shape"), seed), read, ("colour", "shape"), judges, "image"
    )


def video_kind(folder: str | Path) -> str:
    """The generator kind of a saved video pipeline (``animatediff`` | ``text_to_video_sd``), from its
    ``model_index.json``."""
    pipeline = json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]
    kinds = {"AnimateDiffPipeline": "animatediff", "TextToVideoSDPipeline": "text_to_video_sd"}
    if pipeline not in kinds:
        raise ValueError(f"{folder} holds a {pipeline}, not a video pipeline of {sorted(kinds)}")
    return kinds[pipeline]


def evaluate_video(
    folder: str | Path, *, samples: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0, judges: Any = None
) -> dict:
    """Generate ``samples`` 8-frame clips (every colour x shape x direction, cycled) through
    the folder's video tool (:func:`video_kind`) and read colour, shape and direction back: from lossless GIFs with
    the analytic reader (:func:`read_clip`), or, given ``judges``, from the tool's MP4 with the judges."""
    options = {"num_frames": FRAMES, "height": SIDE, "width": SIDE}
    tool = _tool(
        video_kind(folder), folder, steps, guidance, options if judges is not None else {**options, "format": "gif"}
    )

    def read(data: bytes) -> dict:
        gif = Image.open(io.BytesIO(data))
        frames = []
        for i in range(getattr(gif, "n_frames", 1)):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
        return read_clip(frames)

    return _evaluate(
        tool,
        _request_things(Clip, samples, ("colour", "shape", "direction"), seed),
        read,
        ("colour", "shape", "direction"),
        judges,
        "video",
    )


def evaluate_audio(
    folder: str | Path, *, samples: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0, judges: Any = None
) -> dict:
    """Generate ``samples`` sounds from request captions (every pitch x beep count) through
    :class:`~generators.audio.MelDiffusionTool` and read pitch and beep count back from the WAV (analytic reader,
    or ``judges``)."""
    import soundfile as sf

    tool = _tool("mel_diffusion", folder, steps, guidance, {})

    def read(data: bytes) -> dict:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32")
        return read_sound(wave, rate)

    return _evaluate(
        tool, _request_things(Sound, samples, ("pitch", "beeps"), seed), read, ("pitch", "beeps"), judges, "audio"
    )


# ---------------------------------------------------------------------------------------------------------------
# everything
# ---------------------------------------------------------------------------------------------------------------
def train_all(
    out: str | Path,
    text_dir: str | Path,
    *,
    seed: int = 0,
    scale: float = 1.0,
    progress: bool = True,
    evaluate: bool = True,
    eval_samples: int = 48,
    device: str = "cpu",
) -> dict:
    """Train both VAEs and the three generators into ``out`` (``vae-rgb``, ``vae-mel``, ``image``, ``video``,
    ``audio``) with :data:`DEFAULTS` (steps multiplied by ``scale``), optionally evaluate each generator, and
    write ``out/metrics.json``. Returns the metrics."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    steps = {name: max(1, round(s * scale)) for name, (s, _) in DEFAULTS.items()}
    batch = {name: b for name, (_, b) in DEFAULTS.items()}
    common = dict(seed=seed, progress=progress, device=device)
    metrics: dict[str, Any] = {}

    def record(name: str, result: dict) -> None:
        metrics[name] = result
        (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
        print(f"{name}: {json.dumps(_brief(result))}", flush=True)

    record(
        "vae_rgb", train_vae(out / "vae-rgb", channels=3, steps=steps["vae_rgb"], batch_size=batch["vae_rgb"], **common)
    )
    record(
        "vae_mel", train_vae(out / "vae-mel", channels=1, steps=steps["vae_mel"], batch_size=batch["vae_mel"], **common)
    )
    record(
        "image",
        train_image_generator(
            text_dir, out / "vae-rgb", out / "image", steps=steps["image"], batch_size=batch["image"], **common
        ),
    )
    record(
        "video",
        train_video_generator(
            text_dir,
            out / "vae-rgb",
            out / "video",
            steps=steps["video"],
            batch_size=batch["video"],
            pretrain_steps=steps["video_frames"],
            pretrain_batch_size=batch["video_frames"],
            **common,
        ),
    )
    record(
        "audio",
        train_audio_generator(
            text_dir, out / "vae-mel", out / "audio", steps=steps["audio"], batch_size=batch["audio"], **common
        ),
    )
    metrics["train_seconds"] = sum(m["seconds"] for m in metrics.values() if isinstance(m, dict))
    if evaluate:
        record("eval_image", evaluate_image(out / "image", samples=eval_samples))
        record("eval_video", evaluate_video(out / "video", samples=eval_samples))
        record("eval_audio", evaluate_audio(out / "audio", samples=eval_samples))
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _brief(result: dict) -> dict:
    return {k: (round(v, 4) if isinstance(v, float) else v) for k, v in result.items() if k != "failures"}


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tinyworld.diffusion", description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path, help="folder for vae-rgb, vae-mel, image, video, audio and metrics.json")
    parser.add_argument(
        "--text-dir",
        type=Path,
        default=None,
        help="frozen text encoder folder (CLIPTextModel + CLIPTokenizer); default: build a random "
        "stand-in into OUT/text-standin",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--scale", type=float, default=1.0, help="multiply every default step count (quick runs)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's choice)")
    parser.add_argument("--eval-samples", type=int, default=48)
    parser.add_argument("--no-eval", action="store_true", help="skip the generation checks")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    text_dir = args.text_dir
    if text_dir is None:
        text_dir = build_standin_text_encoder(args.out / "text-standin", seed=args.seed)
    metrics = train_all(
        args.out,
        text_dir,
        seed=args.seed,
        scale=args.scale,
        progress=not args.quiet,
        evaluate=not args.no_eval,
        eval_samples=args.eval_samples,
        device=args.device,
    )
    print(json.dumps(metrics, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
