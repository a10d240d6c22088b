"""Image generation: a frozen Stable Diffusion pipeline driven by ``prompt_embeds`` -> PNG.

Real checkpoints (e.g. ``stable-diffusion-v1-5/stable-diffusion-v1-5``) and ``@tiny/stable-diffusion`` load
through the same ``StableDiffusionPipeline.from_pretrained`` call. The conditioning is the CLIP text encoder's
last hidden state, ``prompt_embeds`` of ``(77, 768)`` for SD-1.5 and ``(77, 1024)`` for SD-2.x.
"""

from __future__ import annotations

from typing import Any

from diffusers import StableDiffusionPipeline
from PIL import Image

from generators.base import ClipTextConditioning, GeneratorTool, LatentDiffusionLoss
from generators.stepping import SteppedDenoising
from modalities.media import decode_image, encode_png


class StableDiffusionTool(SteppedDenoising, LatentDiffusionLoss, ClipTextConditioning, GeneratorTool):
    """Text-to-image with ``StableDiffusionPipeline`` (no safety checker); ``options``: ``height``, ``width``
    (default: the UNet's sample size times the VAE scale factor)."""

    modality = "image"
    default_signal_prefix = "IMG"
    pipeline_class = StableDiffusionPipeline
    call_options = {"height": None, "width": None}
    output_type = "pil"
    load_kwargs = {"safety_checker": None, "requires_safety_checker": False}

    def _target_frames(self, data: bytes, limits: Any) -> list[Image.Image]:
        return [decode_image(data, limits)]

    def _encode_output(self, sample: Image.Image, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        return (
            encode_png(sample),
            "image/png",
            {"width": sample.width, "height": sample.height, "size": [sample.width, sample.height], "format": "png"},
        )
