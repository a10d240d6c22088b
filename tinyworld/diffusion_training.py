"""Train the tinyworld's VAEs and text-to-image, -video and -audio diffusion generators from scratch on a CPU.

Everything is built from the real diffusers classes at toy size (:mod:`tinyworld.diffusion_models`), so the
results load through the ordinary generator tools (:class:`~generators.image.StableDiffusionTool`,
:class:`~generators.video.TextToVideoTool`, :class:`~generators.audio.MelDiffusionTool`) exactly like a Hugging Face
checkpoint:

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
(:func:`train_denoiser`: Min-SNR-5 weighted, EMA weights saved), with 10 % empty captions for classifier-free
guidance; the VAE's latents are centred per channel inside its weights
(:func:`~tinyworld.diffusion_models.centre_latents`) and scaled to unit variance. To make CPU training fast, the
data set is rendered once (:mod:`tinyworld.diffusion_data`), VAE latents and text states are computed once (both
frozen), and the UNet then trains on cached tensors.

``python -m tinyworld.diffusion_training OUT --text-dir DIR`` trains everything into ``OUT`` (:func:`train_all`),
checks each generator (:mod:`tinyworld.diffusion_eval`) and prints the metrics.
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from diffusers import AnimateDiffPipeline, DDIMScheduler, DDPMScheduler, TextToVideoSDPipeline
from tqdm.auto import tqdm

from generators.audio import MelParams
from tinyworld import text as world_text
from tinyworld.diffusion_data import (
    CAPTION_FORMS,
    FRAMES,
    SAMPLES,
    SIDE,
    caption_table,
    mels_to_tensor,
    pixels_to_tensor,
    render_clips,
    render_pictures,
    render_sounds,
    vae_training_data,
)
from tinyworld.diffusion_eval import evaluate_audio, evaluate_image, evaluate_video
from tinyworld.diffusion_models import (
    DDIM,
    SCHEDULE,
    UNET_3D_CONFIG,
    VIDEO_ARCHITECTURES,
    build_standin_text_encoder,
    centre_latents,
    encode_captions,
    encode_latents,
    inflate_unet,
    load_vae,
    make_unet_2d,
    make_unet_3d,
    make_vae,
    motion_unet,
    sd_pipeline,
    text_pipeline_parts,
    unet_2d_twin,
)
from tinyworld.threads import refresh_threads
from training.meter import metered
from training.optim import adamw

#: default training lengths: (steps, batch size) per component
DEFAULTS: dict[str, tuple[int, int]] = {
    "vae_rgb": (800, 16),
    "vae_mel": (600, 16),
    "image": (1200, 64),
    "video_frames": (1000, 64),  # stage 1 of the video generator: first frames, 2D
    "video": (400, 16),  # stage 2: whole clips, 3D
    "audio": (800, 64),
}
#: share of training captions replaced by the empty one (classifier-free guidance)
CFG_DROPOUT = 0.1


# ---------------------------------------------------------------------------------------------------------------
# shared training machinery
# ---------------------------------------------------------------------------------------------------------------
def _progress(iterable, *, desc: str, enabled: bool, total: int | None = None):
    return tqdm(iterable, desc=desc, disable=not enabled, total=total, leave=False, dynamic_ncols=True)


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
# 1. the VAEs
# ---------------------------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------------------------
# 2-4. the denoisers
# ---------------------------------------------------------------------------------------------------------------
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
    vae = load_vae(vae_dir)
    pictures, things = render_pictures(samples or SAMPLES["pictures"], seed)
    latents = encode_latents(vae, pixels_to_tensor(pictures))  # (N, 4, 8, 8)
    text = text_pipeline_parts(text_dir)
    torch.manual_seed(seed)
    unet = make_unet_2d(latents.shape[-1], text["text_encoder"].config.hidden_size, **(config or {}))
    pipeline = sd_pipeline(text, vae, unet)
    captions, caption_ids = caption_table(things, (world_text.request_caption, world_text.caption))
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

    ``architecture`` (:data:`~tinyworld.diffusion_models.VIDEO_ARCHITECTURES`):

    * ``"unet3d"`` (default) -- ModelScope: a ``UNet3DConditionModel`` (temporal convolutions after every resnet,
      and temporal attention without frame positions, so only the convolutions' zero padding tells the frames
      apart), saved as a ``TextToVideoSDPipeline`` (kind ``text_to_video_sd``);
    * ``"motion"`` -- AnimateDiff: the image UNet with motion modules (``UNetMotionModel``, temporal attention with
      sinusoidal frame positions, :data:`MOTION_CONFIG` updated with ``motion``), saved as an
      ``AnimateDiffPipeline`` (kind ``animatediff``). At this size it learns motion far more slowly than
      ``"unet3d"`` (measured in docs/tinyworld.md).

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
    if architecture not in VIDEO_ARCHITECTURES:
        raise ValueError(f"unknown video architecture {architecture!r}; known: {sorted(VIDEO_ARCHITECTURES)}")
    started = time.time()
    vae = load_vae(vae_dir)
    clips, things = render_clips(samples or SAMPLES["clips"], seed)
    n = len(clips)
    frames = pixels_to_tensor(clips.reshape(n * FRAMES, SIDE, SIDE, 3))  # (n, F, H, W, 3) -> (n * F, 3, H, W)
    frame_latents = encode_latents(vae, frames)  # (n * F, 4, h, w)
    latents = frame_latents.reshape(n, FRAMES, *frame_latents.shape[1:])  # (n, F, 4, h, w)
    latents = latents.permute(0, 2, 1, 3, 4).contiguous()  # (n, 4, F, h, w): the pipeline's video latents
    text = text_pipeline_parts(text_dir)
    width = text["text_encoder"].config.hidden_size
    config = {**UNET_3D_CONFIG, **(config or {})}
    torch.manual_seed(seed)
    unet_3d = make_unet_3d(latents.shape[-1], width, **config) if architecture == "unet3d" else None
    twin = make_unet_2d(latents.shape[-1], width, **unet_2d_twin(config))
    captions, caption_ids = caption_table(things, (world_text.request_caption,))
    states = encode_captions(sd_pipeline(text, vae, twin), captions)

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
    vae = load_vae(vae_dir)
    waves, things = render_sounds(samples or SAMPLES["sounds"], seed)
    latents = encode_latents(vae, mels_to_tensor(mel.mel(waves)))  # (N, 4, n_mels / 4, frames / 4)
    text = text_pipeline_parts(text_dir)
    torch.manual_seed(seed)
    unet = make_unet_2d(latents.shape[-2], text["text_encoder"].config.hidden_size, **(config or {}))
    pipeline = sd_pipeline(text, vae, unet)
    captions, caption_ids = caption_table(things, (world_text.request_caption, world_text.caption))
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
    parser = argparse.ArgumentParser(prog="python -m tinyworld.diffusion_training", description=__doc__.splitlines()[0])
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
