"""Video generation: a frozen ModelScope-style ``TextToVideoSDPipeline`` driven by ``prompt_embeds`` -> MP4 / GIF.

Real checkpoints (e.g. ``ali-vilab/text-to-video-ms-1.7b``, ZeroScope) and ``@tiny/text-to-video-sd`` load through
the same ``TextToVideoSDPipeline.from_pretrained`` call. The conditioning is the CLIP text encoder's last hidden
state (``(77, 1024)`` for the real models). Frames are encoded as H.264 MP4 by default, or as an animated GIF
with ``format="gif"``.
"""

from __future__ import annotations

from typing import Any, Callable

import numpy as np
from diffusers import TextToVideoSDPipeline

from generators.base import ClipTextConditioning, GeneratorTool, LatentDiffusionLoss


def _mp4(frames: np.ndarray, fps: int) -> bytes:
    from modalities.media import encode_mp4

    return encode_mp4(frames, fps=fps)


def _gif(frames: np.ndarray, fps: int) -> bytes:
    from modalities.media import encode_gif

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
    pipeline_class = TextToVideoSDPipeline
    call_options = {"num_frames": None, "height": None, "width": None}
    output_options = {"fps": 8, "format": "mp4"}

    def _target_frames(self, data: bytes, limits: Any) -> list[Any]:
        from modalities.media import decode_video

        num_frames = int(self.cfg.options.get("num_frames") or self.pipeline.unet.config.get("num_frames", 16))
        return decode_video(data, limits, num_frames=num_frames)

    def _encode_output(self, sample: np.ndarray, options: dict[str, Any]) -> tuple[bytes, str, dict[str, Any]]:
        fmt, fps = str(options["format"]).lower(), int(options["fps"])
        if fmt not in VIDEO_FORMATS:
            raise ValueError(f"unknown video format {fmt!r}; known formats: {sorted(VIDEO_FORMATS)}")
        encode, mime = VIDEO_FORMATS[fmt]
        frames = (np.clip(sample, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)  # (F, H, W, 3) in [0, 1] -> uint8
        num_frames, height, width = frames.shape[:3]
        return encode(frames, fps), mime, {
            "width": width, "height": height, "size": [width, height], "frames": num_frames, "fps": fps,
            "seconds": num_frames / fps, "format": fmt,
        }
