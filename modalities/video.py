"""Frozen video encoder: uniformly sampled frames, each through an image encoder (NExT-GPT / Video-LLaVA style).

The decoder (:func:`modalities.media.decode_video`) already samples ``cfg.num_frames`` frames uniformly over the
whole video; :meth:`VideoFrameEncoder.preprocess` makes every clip exactly ``num_frames`` long (repeating the
last frame of short clips, subsampling long ones uniformly) so batches are rectangular. The image encoder kind
is ``cfg.options["image_encoder"]`` (default ``clip_vision``) and is loaded from the same ``cfg.model``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image

from core.config import ModalityConfig
from core.errors import ConfigError
from modalities.base import ModalityEncoder
from modalities.media import uniform_indices
from modalities.registry import ENCODERS


def fit_frames(frames: list[Image.Image], count: int) -> list[Image.Image]:
    """Exactly ``count`` frames: uniform subsampling when too many, the last frame repeated when too few."""
    if not frames:
        raise ValueError("a video clip needs at least one frame")
    if len(frames) > count:
        return [frames[i] for i in uniform_indices(len(frames), count)]
    return list(frames) + [frames[-1]] * (count - len(frames))


class VideoFrameEncoder(ModalityEncoder):
    """Video clips (lists of PIL frames) -> per-frame image features ``(B, F, T, D)``."""

    input_kind: ClassVar[str] = "video"
    kind: ClassVar[str] = "video_frames"

    def __init__(self, cfg: ModalityConfig, image_encoder: ModalityEncoder) -> None:
        super().__init__(cfg)
        if image_encoder.input_kind != "image":
            raise ConfigError(
                f"video_frames needs an image encoder, but {type(image_encoder).__name__} takes "
                f"{image_encoder.input_kind!r} input"
            )
        self.image_encoder = image_encoder
        self.num_frames = cfg.num_frames

    @classmethod
    def load(cls, cfg: ModalityConfig, path: str) -> VideoFrameEncoder:
        image_kind = cfg.options.get("image_encoder", "clip_vision")
        return cls(cfg, ENCODERS.get(image_kind).load(cfg, path))

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return self.image_encoder.hidden_size

    @property
    def tokens_per_group(self) -> int:
        return self.image_encoder.tokens_per_group

    @property
    def groups(self) -> int:
        return self.num_frames

    # -- running ---------------------------------------------------------------------------------------------
    def preprocess(self, items: list[list[Image.Image]]) -> dict[str, torch.Tensor]:
        """Clips -> ``{"pixel_values": (B, F, 3, H, W)}`` with ``F = num_frames``."""
        flat = [frame for clip in items for frame in fit_frames(list(clip), self.num_frames)]
        pixels = self.image_encoder.preprocess(flat)["pixel_values"]  # (B * F, 3, H, W)
        return {"pixel_values": pixels.reshape(len(items), self.num_frames, *pixels.shape[1:])}  # (B, F, 3, H, W)

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (B, F, 3, H, W) -> features (B, F, T, D)."""
        batch, frames = pixel_values.shape[:2]
        features = self.image_encoder(pixel_values=pixel_values.flatten(0, 1))  # (B * F, 1, T, D)
        return features.reshape(batch, frames, *features.shape[2:])  # (B * F, 1, T, D) -> (B, F, T, D)

    def cache_fields(self) -> dict[str, Any]:
        inner = self.image_encoder.cache_fields()
        inner.pop("model", None)
        return {**super().cache_fields(), "frames": self.num_frames, "image": inner}
