"""Video generation: a frozen text-to-video pipeline driven by ``prompt_embeds`` -> MP4 / GIF.

Two families, one tool each:

* ``text_to_video_sd`` -- ModelScope's ``TextToVideoSDPipeline`` (``UNet3DConditionModel``: temporal convolutions
  and temporal attention inside the UNet). Real checkpoints (e.g. ``ali-vilab/text-to-video-ms-1.7b``, ZeroScope)
  and ``@tiny/text-to-video-sd`` load through ``TextToVideoSDPipeline.from_pretrained``.
* ``animatediff`` -- ``AnimateDiffPipeline`` (``UNetMotionModel``: an image UNet whose blocks carry motion modules,
  temporal attention with sinusoidal frame positions). Real checkpoints (a Stable Diffusion 1.5 UNet with an
  AnimateDiff motion adapter, saved as one pipeline) and ``@tiny/animatediff`` load through
  ``AnimateDiffPipeline.from_pretrained``.

The conditioning is the CLIP text encoder's last hidden state (``(77, 1024)`` for the real models). Frames are
encoded as H.264 MP4 by default, or as an animated GIF with ``format="gif"``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import numpy as np
import torch
from diffusers import AnimateDiffPipeline, TextToVideoSDPipeline

from generators.base import ClipTextConditioning, GeneratorTool, LatentDiffusionLoss
from modalities.media import decode_video, encode_gif, encode_mp4


def _mp4(frames: np.ndarray, fps: int) -> bytes:
    return encode_mp4(frames, fps=fps)


def _gif(frames: np.ndarray, fps: int) -> bytes:
    return encode_gif(frames, fps=fps)


#: ``format`` option -> (encoder(frames, fps) -> bytes, mime type)
VIDEO_FORMATS: dict[str, tuple[Callable[[np.ndarray, int], bytes], str]] = {
    "mp4": (_mp4, "video/mp4"),
    "gif": (_gif, "image/gif"),
}


class TextToVideoTool(LatentDiffusionLoss, ClipTextConditioning, GeneratorTool):
    """Text-to-video with ``TextToVideoSDPipeline``; ``options``: ``num_frames`` (default 16, the pipeline's),
    ``height``, ``width``, ``fps`` (default 8) and ``format`` (``mp4`` | ``gif``)."""

    modality = "video"
    default_signal_prefix = "VID"
    pipeline_class: ClassVar[type[Any]] = TextToVideoSDPipeline  # AnimateDiffTool puts its own
    call_options = {"num_frames": None, "height": None, "width": None}
    output_options = {"fps": 8, "format": "mp4"}

    def _target_frames(self, data: bytes, limits: Any) -> list[Any]:
        num_frames = int(self.cfg.options.get("num_frames") or self.pipeline.unet.config.get("num_frames", 16))
        return decode_video(data, limits, num_frames=num_frames)

    def _encode_output(self, sample: np.ndarray, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        fmt, fps = str(options["format"]).lower(), int(options["fps"])
        if fmt not in VIDEO_FORMATS:
            raise ValueError(f"unknown video format {fmt!r}; known formats: {sorted(VIDEO_FORMATS)}")
        encode, mime = VIDEO_FORMATS[fmt]
        frames = (np.clip(sample, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (F, H, W, 3) in [0, 1] -> uint8
        num_frames, height, width = frames.shape[:3]
        return (
            encode(frames, fps),
            mime,
            {
                "width": width,
                "height": height,
                "size": [width, height],
                "frames": num_frames,
                "fps": fps,
                "seconds": num_frames / fps,
                "format": fmt,
            },
        )


class AnimateDiffTool(TextToVideoTool):
    """Text-to-video with ``AnimateDiffPipeline`` (``UNetMotionModel``); the options of :class:`TextToVideoTool`.

    Its UNet is an image UNet run on every frame, so it takes one text condition per frame: the pipeline repeats
    the prompt over the frames, and so does :meth:`denoiser_conditioning` for the training-time diffusion loss."""

    pipeline_class = AnimateDiffPipeline

    def denoiser_conditioning(self, prompt: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        frames = latents.shape[2]  # latents (N, C, F, h, w)
        return prompt.repeat_interleave(frames, dim=0)  # (N, L, D) -> (N * F, L, D): frame-major, as the UNet reads
