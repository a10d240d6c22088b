"""Frozen vision towers for images: CLIP (LLaVA's choice) and SigLIP, and Llama 3.2 Vision's tiled encoder.

Both run a Hugging Face vision transformer with ``output_hidden_states=True`` and take the patch features of
one hidden layer (``cfg.feature_layer``; LLaVA-1.5 uses the penultimate one, ``-2``), dropping the CLS token
unless ``cfg.keep_cls``. The only differences between the two -- model class, whether there is a CLS token --
are class attributes of :class:`VisionTowerEncoder`.

Image processors are loaded with the PIL backend (``backend="pil"``): transformers 5's default "fast"
processors need torchvision, which mmgraph does not depend on.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    Blip2VisionModel,
    CLIPVisionModel,
    MllamaVisionModel,
    PreTrainedModel,
    SiglipVisionModel,
)
from transformers.models.llava_next.modeling_llava_next import image_size_to_num_patches

from core.config import ModalityConfig
from core.errors import ConfigError
from modalities.base import ModalityEncoder


class VisionTowerEncoder(ModalityEncoder):
    """A ViT image encoder: images -> patch features ``(B, 1, T, D)`` from one hidden layer.

    Subclasses set :attr:`model_class` (a transformers vision model class) and :attr:`has_cls`.
    """

    input_kind: ClassVar[str] = "image"
    model_class: ClassVar[type[PreTrainedModel]]
    has_cls: ClassVar[bool] = True

    def __init__(self, cfg: ModalityConfig, model: PreTrainedModel, processor: Any) -> None:
        super().__init__(cfg)
        self.model = model
        self.processor = processor
        layers = model.config.num_hidden_layers
        # hidden_states holds the embeddings plus one entry per layer: valid indices are -(L+1) .. L.
        if not -(layers + 1) <= cfg.feature_layer <= layers:
            raise ConfigError(
                f"feature_layer {cfg.feature_layer} is out of range for {cfg.model!r} with {layers} layers "
                f"(valid: {-(layers + 1)} .. {layers})"
            )
        self.feature_layer = cfg.feature_layer
        self.keep_cls = bool(cfg.keep_cls and self.has_cls)  # SigLIP has no CLS: keep_cls is a no-op

    @classmethod
    def load(cls, cfg: ModalityConfig, path: str) -> VisionTowerEncoder:
        model = cls.model_class.from_pretrained(path)
        processor = AutoImageProcessor.from_pretrained(path, backend="pil")
        return cls(cfg, model, processor)

    # -- sizes -----------------------------------------------------------------------------------------------
    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size)

    @property
    def num_patches(self) -> int:
        return (self.model.config.image_size // self.model.config.patch_size) ** 2

    @property
    def tokens_per_group(self) -> int:
        return self.num_patches + (1 if self.keep_cls else 0)

    # -- running ---------------------------------------------------------------------------------------------
    def preprocess(self, items: list[Image.Image]) -> dict[str, torch.Tensor]:
        """RGB PIL images -> ``{"pixel_values": (B, 3, H, W)}`` with the checkpoint's resize/crop/normalise."""
        batch = self.processor(images=[image.convert("RGB") for image in items], return_tensors="pt")
        return {"pixel_values": batch["pixel_values"]}

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (B, 3, H, W) -> features (B, 1, T, D)."""
        outputs = self.model(pixel_values=self._to_model(pixel_values), output_hidden_states=True)
        features = outputs.hidden_states[self.feature_layer]  # (B, [CLS] + N, D)
        if self.has_cls and not self.keep_cls:
            features = features[:, 1:]  # drop CLS: (B, N, D)
        return features.unsqueeze(1)  # (B, T, D) -> (B, G=1, T, D)

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "feature_layer": self.feature_layer, "cls": self.keep_cls}


class ClipVisionEncoder(VisionTowerEncoder):
    """CLIP ViT vision tower (``CLIPVisionModel``), e.g. ``openai/clip-vit-large-patch14-336`` as in LLaVA-1.5."""

    kind: ClassVar[str] = "clip_vision"
    model_class = CLIPVisionModel
    has_cls = True


class SiglipVisionEncoder(VisionTowerEncoder):
    """SigLIP vision tower (``SiglipVisionModel``); it has no CLS token, so every position is a patch."""

    kind: ClassVar[str] = "siglip_vision"
    model_class = SiglipVisionModel
    has_cls = False


class BlipVisionEncoder(VisionTowerEncoder):
    """BLIP-2's (and InstructBLIP's) ViT (``Blip2VisionModel``): every token of the final, post-layer-normed states,
    CLS included -- what the Q-Former cross-attends to."""

    kind: ClassVar[str] = "blip_vision"
    model_class = Blip2VisionModel
    has_cls = True

    @property
    def tokens_per_group(self) -> int:
        return self.num_patches + 1

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``pixel_values`` (B, 3, H, W) -> features (B, 1, 1 + N, D)."""
        return self.model(pixel_values=self._to_model(pixel_values)).last_hidden_state.unsqueeze(1)

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "feature_layer": "last", "cls": True}


class LlavaNextVisionEncoder(VisionTowerEncoder):
    """LLaVA-NeXT's any-resolution reading of an image with a CLIP tower: the image resized whole to one tile, plus
    the tiles of the grid resolution (``image_grid_pinpoints``) that fits it best, each through the tower.

    Features are ``(B, G, T, D + 3)`` with ``G`` the most tiles any image can take: each real tile's patch features
    (from ``feature_layer``, CLS dropped unless ``keep_cls``), then three channels -- 1.0 on a real tile (0.0 on the
    padding rows of an image with fewer tiles), and the image's original height and width -- which the
    ``llava_next`` projector reads to lay the tiles out as the image was (:class:`LlavaNextProjector`).
    """

    kind: ClassVar[str] = "llava_next_vision"
    model_class = CLIPVisionModel
    has_cls = True

    def __init__(self, cfg: ModalityConfig, model: PreTrainedModel, processor: Any) -> None:
        super().__init__(cfg, model, processor)
        self.pinpoints = [list(p) for p in processor.image_grid_pinpoints]
        self.tile = int(model.config.image_size)

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.hidden_size) + 3  # + real-tile flag, original height, original width

    @property
    def groups(self) -> int:
        """The most tiles an image can take: the whole image plus the largest grid."""
        return 1 + max((h // self.tile) * (w // self.tile) for h, w in self.pinpoints)

    def preprocess(self, items: list[Image.Image]) -> dict[str, torch.Tensor]:
        """RGB images -> ``pixel_values`` (B, tiles, 3, H, W) and ``image_sizes`` (B, 2) (height, width)."""
        batch = self.processor(images=[image.convert("RGB") for image in items], return_tensors="pt")
        return {"pixel_values": batch["pixel_values"], "image_sizes": torch.as_tensor(batch["image_sizes"])}

    @torch.no_grad()
    def forward(self, pixel_values: torch.Tensor, image_sizes: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        """-> features ``(B, G, T, D + 3)`` (see the class docstring)."""
        counts = [image_size_to_num_patches(size.tolist(), self.pinpoints, self.tile) for size in image_sizes]
        tiles = torch.cat([pixel_values[b, :n] for b, n in enumerate(counts)])  # (sum n, 3, H, W)
        states = self.model(pixel_values=self._to_model(tiles), output_hidden_states=True).hidden_states
        features = states[self.feature_layer]  # (sum n, [CLS] + N, D)
        if not self.keep_cls:
            features = features[:, 1:]
        out = features.new_zeros(len(counts), self.groups, features.shape[1], features.shape[2] + 3)
        for b, part in enumerate(features.split(counts)):  # (n, T, D) each
            out[b, : counts[b], :, :-3] = part
            out[b, : counts[b], :, -3] = 1.0
            out[b, :, :, -2:] = image_sizes[b].to(out.dtype)  # (height, width) on every row
        return out

    def cache_fields(self) -> dict[str, Any]:
        return {**super().cache_fields(), "pinpoints": self.pinpoints}


class MllamaVisionEncoder(ModalityEncoder):
    """Llama 3.2 Vision's tiled vision encoder (``MllamaVisionModel``): an image is resized to fit a grid of up to
    ``max_num_tiles`` square tiles, each tile encoded, then a global transformer over all of them; the features of
    the final layer and of chosen intermediate layers are concatenated per patch.

    Features are ``(B, 1, max_tiles * patches, D + 1)``: every tile's patches in order, and a last channel that is
    1.0 on the tiles the image really fills and 0.0 on the padding tiles an image of fewer tiles leaves. The
    ``masked_linear`` projector reads that channel as the cross-attention key mask (``InputProjector.token_mask``),
    so a text token never attends to a padding tile, as in the Hugging Face model.
    """

    input_kind: ClassVar[str] = "image"
    kind: ClassVar[str] = "mllama_vision"

    def __init__(self, cfg: ModalityConfig, model: PreTrainedModel, processor: Any) -> None:
        super().__init__(cfg)
        self.model = model
        self.processor = processor

    @classmethod
    def load(cls, cfg: ModalityConfig, path: str) -> MllamaVisionEncoder:
        model = MllamaVisionModel.from_pretrained(path)
        return cls(cfg, model, AutoImageProcessor.from_pretrained(path, backend="pil"))

    @property
    def hidden_size(self) -> int:
        return int(self.model.config.vision_output_dim) + 1  # + the real-tile flag

    @property
    def tokens_per_group(self) -> int:
        cfg = self.model.config
        patches = (cfg.image_size // cfg.patch_size) ** 2 + 1  # + a class token per tile
        return int(cfg.max_num_tiles) * patches

    def preprocess(self, items: list[Image.Image]) -> dict[str, torch.Tensor]:
        """RGB images -> tiles ``(B, 1, max_tiles, 3, H, W)``, their aspect-ratio ids ``(B, 1)`` and tile mask
        ``(B, 1, max_tiles)``, one image per item."""
        batch = self.processor(images=[[image.convert("RGB")] for image in items], return_tensors="pt")
        return {k: batch[k] for k in ("pixel_values", "aspect_ratio_ids", "aspect_ratio_mask")}

    @torch.no_grad()
    def forward(
        self, pixel_values: torch.Tensor, aspect_ratio_ids: torch.Tensor, aspect_ratio_mask: torch.Tensor
    ) -> torch.Tensor:
        """-> features ``(B, 1, max_tiles * patches, D + 1)`` (the last channel flags real tiles)."""
        out = self.model(
            pixel_values=self._to_model(pixel_values),
            aspect_ratio_ids=aspect_ratio_ids.to(self.device),
            aspect_ratio_mask=aspect_ratio_mask.to(self.device),
        ).last_hidden_state  # (B, 1, tiles, patches, D)
        b, _, tiles, patches, _ = out.shape
        real = aspect_ratio_mask.to(out.device, out.dtype).view(b, 1, tiles, 1, 1).expand(b, 1, tiles, patches, 1)
        return torch.cat([out, real], dim=-1).reshape(b, 1, tiles * patches, -1)  # (B, 1, tiles*patches, D + 1)
