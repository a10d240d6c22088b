"""Tiny random-weight encoders for tests and the ``tiny-random`` preset (``@tiny/clip-vision`` etc.).

Each builder creates a real transformers model of the class a released checkpoint uses, at a toy size, with
seeded weights, and saves it together with its preprocessor config, so the encoders in this package load it
back with plain ``from_pretrained(path)``. They are registered in :data:`orchestrator.tiny.TINY_BUILDERS` and
called through :func:`orchestrator.tiny.resolve_model`; nothing is downloaded.

Sizes: vision towers take 32x32 images in 8x8 patches (16 patches), width 32, 2 layers, 2 heads; the Whisper
encoder has width 32, 2 layers, 80 mel bins and ``max_source_positions=100``, i.e. it takes 2 s clips.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch

TINY_IMAGE_SIZE = 32
TINY_PATCH_SIZE = 8
TINY_WIDTH = 32
TINY_LAYERS = 2
TINY_HEADS = 2

_TOWER = dict(
    image_size=TINY_IMAGE_SIZE,
    patch_size=TINY_PATCH_SIZE,
    hidden_size=TINY_WIDTH,
    intermediate_size=2 * TINY_WIDTH,
    num_hidden_layers=TINY_LAYERS,
    num_attention_heads=TINY_HEADS,
)


def _seeded_build(seed: int, make_model: Callable[[], Any]) -> Any:
    """Build a model with ``torch.manual_seed(seed)`` without disturbing the caller's RNG state."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make_model()


def build_clip_vision(path: Path, seed: int) -> None:
    """A tiny ``CLIPVisionModel`` plus a PIL ``CLIPImageProcessor`` (resize shortest edge, centre crop)."""
    from transformers import CLIPImageProcessorPil, CLIPVisionConfig, CLIPVisionModel

    config = CLIPVisionConfig(**_TOWER, projection_dim=TINY_WIDTH)
    model = _seeded_build(seed, lambda: CLIPVisionModel(config))
    model.save_pretrained(path)
    CLIPImageProcessorPil(
        size={"shortest_edge": TINY_IMAGE_SIZE},
        crop_size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE},
    ).save_pretrained(path)


def build_siglip_vision(path: Path, seed: int) -> None:
    """A tiny ``SiglipVisionModel`` plus a PIL ``SiglipImageProcessor`` (resize to a square)."""
    from transformers import SiglipImageProcessorPil, SiglipVisionConfig, SiglipVisionModel

    config = SiglipVisionConfig(**_TOWER)
    model = _seeded_build(seed, lambda: SiglipVisionModel(config))
    model.save_pretrained(path)
    SiglipImageProcessorPil(size={"height": TINY_IMAGE_SIZE, "width": TINY_IMAGE_SIZE}).save_pretrained(path)


def build_whisper_encoder(path: Path, seed: int) -> None:
    """A tiny ``WhisperModel`` (a one-layer decoder rides along so the folder loads like a released checkpoint).

    A matching ``WhisperFeatureExtractor`` config (80 mel bins, 2 s chunks) is saved for tools that want it;
    :class:`modalities.audio.WhisperAudioEncoder` computes its mels with openai-whisper.
    """
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    max_source_positions = 100  # 200 mel frames of 10 ms = 2 s of audio
    config = WhisperConfig(
        vocab_size=64,
        d_model=TINY_WIDTH,
        encoder_layers=TINY_LAYERS,
        encoder_attention_heads=TINY_HEADS,
        encoder_ffn_dim=2 * TINY_WIDTH,
        decoder_layers=1,
        decoder_attention_heads=TINY_HEADS,
        decoder_ffn_dim=2 * TINY_WIDTH,
        num_mel_bins=80,
        max_source_positions=max_source_positions,
        max_target_positions=32,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
        decoder_start_token_id=1,
        suppress_tokens=None,
        begin_suppress_tokens=None,
    )
    model = _seeded_build(seed, lambda: WhisperModel(config))
    model.save_pretrained(path)
    WhisperFeatureExtractor(
        feature_size=80, sampling_rate=16000, hop_length=160, chunk_length=2 * max_source_positions // 100
    ).save_pretrained(path)
