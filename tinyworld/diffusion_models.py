"""The diffusers models of the tinyworld's generators at toy size, and the pipelines they are saved as.

- configs: :data:`VAE_CONFIG` (``AutoencoderKL``, scale factor 4, 4 latent channels), :data:`UNET_2D_CONFIG`
  (image and audio UNets), :data:`UNET_3D_CONFIG` (video UNet), :data:`MOTION_CONFIG` (AnimateDiff motion
  modules) and the noise schedules :data:`SCHEDULE` / :data:`DDIM`;
- fresh models: :func:`make_vae`, :func:`make_unet_2d`, :func:`make_unet_3d`, and the video UNets grown from a 2D
  one, whose temporal layers start as identities: :func:`inflate_unet` (its twin's config: :func:`unet_2d_twin`)
  and :func:`motion_unet`;
- weight surgery and latents: :func:`centre_latents` folds a per-channel shift into a VAE, :func:`encode_latents`
  gives the scaled latents a UNet denoises;
- the frozen text side every UNet cross-attends to: a CLIP text folder as pipeline components
  (:func:`text_pipeline_parts`), its ``prompt_embeds`` (:func:`encode_captions`), a folder of that side alone
  (:func:`save_text_side`) and a random stand-in with the same layout (:func:`build_standin_text_encoder`);
- pipelines: :func:`load_vae`, :func:`sd_pipeline` (a ``StableDiffusionPipeline`` without safety checker).
"""

from __future__ import annotations

import inspect
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import diffusers
import torch
from diffusers import (
    AutoencoderKL,
    DDIMScheduler,
    MotionAdapter,
    StableDiffusionPipeline,
    UNet2DConditionModel,
    UNet3DConditionModel,
    UNetMotionModel,
)
from transformers import CLIPTextConfig, CLIPTextModel

from orchestrator.tiny import tiny_clip_tokenizer
from tinyworld import text as world_text
from tinyworld.diffusion_data import SIDE
from tinyworld.encoders import load_text_encoder

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


# ---------------------------------------------------------------------------------------------------------------
# fresh models
# ---------------------------------------------------------------------------------------------------------------
def make_vae(channels: int, **overrides: Any):
    """A fresh ``AutoencoderKL`` for ``channels``-channel inputs (:data:`VAE_CONFIG` updated with ``overrides``)."""
    config = {**VAE_CONFIG, **overrides}
    return AutoencoderKL(in_channels=channels, out_channels=channels, sample_size=SIDE, **config)


def make_unet_2d(latent_size: int, cross_attention_dim: int, **overrides: Any):
    """A fresh ``UNet2DConditionModel`` (:data:`UNET_2D_CONFIG` updated with ``overrides``) for 4-channel latents."""
    return UNet2DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=cross_attention_dim,
        **{**UNET_2D_CONFIG, **overrides},
    )


def make_unet_3d(latent_size: int, cross_attention_dim: int, **overrides: Any):
    """A fresh ``UNet3DConditionModel`` (:data:`UNET_3D_CONFIG` updated with ``overrides``) for 4-channel latents."""
    return UNet3DConditionModel(
        sample_size=latent_size,
        in_channels=4,
        out_channels=4,
        cross_attention_dim=cross_attention_dim,
        **{**UNET_3D_CONFIG, **overrides},
    )


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
    for module in unet_3d.modules():
        if type(module).__name__ == "TransformerTemporalModel":
            module.proj_out.weight.zero_()
            module.proj_out.bias.zero_()


def motion_unet(unet_2d: torch.nn.Module, **overrides: Any):
    """A ``UNetMotionModel`` made of ``unet_2d`` and fresh motion modules (``MotionAdapter`` of
    :data:`MOTION_CONFIG` updated with ``overrides``), which start as identities: the result denoises each frame
    exactly as ``unet_2d`` does. (AnimateDiff grows its video model from an image UNet the same way.)"""
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


# ---------------------------------------------------------------------------------------------------------------
# weight surgery and latents
# ---------------------------------------------------------------------------------------------------------------
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
# the frozen text side
# ---------------------------------------------------------------------------------------------------------------
def text_pipeline_parts(text_dir: str | Path) -> dict:
    """The frozen tokenizer and text encoder of ``text_dir`` as pipeline components."""
    tokenizer, text_encoder = load_text_encoder(text_dir)
    return {"tokenizer": tokenizer, "text_encoder": text_encoder}


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


def save_text_side(text_dir: str | Path, out: str | Path, pipeline_class: type) -> Path:
    """Save a ``pipeline_class`` folder holding only the frozen tokenizer and text encoder of ``text_dir`` (every
    other component ``null`` in ``model_index.json``): what a generator tool loads with ``conditioning_only=True``.
    The generators of :mod:`tinyworld.diffusion_training` cross-attend to exactly this text encoder, so its
    features are their conditioning, and MM PT / IT can train the output projectors on them while the UNets still
    train."""
    out = Path(out)
    text = text_pipeline_parts(text_dir)
    index: dict[str, Any] = {"_class_name": pipeline_class.__name__, "_diffusers_version": diffusers.__version__}
    for name, param in inspect.signature(pipeline_class.__init__).parameters.items():
        if name != "self" and param.kind is param.POSITIONAL_OR_KEYWORD and not isinstance(param.default, bool):
            index[name] = [None, None]  # a component this folder leaves out
    for name, component in text.items():
        component.save_pretrained(out / name)
        index[name] = [type(component).__module__.split(".")[0], type(component).__name__]
    (out / "model_index.json").write_text(json.dumps(index, indent=2) + "\n")
    return out


def build_standin_text_encoder(out: str | Path, seed: int = 0, *, hidden_size: int = 64, max_length: int = 16) -> Path:
    """A seeded random ``CLIPTextModel`` (``hidden_size``, ``max_length`` positions) with a BPE tokenizer trained on
    the world's corpus, saved to ``out``: a stand-in for the project's trained text encoder with the same layout."""
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


# ---------------------------------------------------------------------------------------------------------------
# pipelines
# ---------------------------------------------------------------------------------------------------------------
def load_vae(vae_dir: str | Path):
    return AutoencoderKL.from_pretrained(str(vae_dir)).eval().requires_grad_(False)


def sd_pipeline(text: dict, vae: Any, unet: Any):
    """A ``StableDiffusionPipeline`` (DDIM, no safety checker) from ``text`` (tokenizer, text encoder)."""
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
