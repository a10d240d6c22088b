"""Small synthetic input media (a coloured square, a tone, a moving square) for the demo, docs and tests."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image, ImageDraw

from modalities.media import SAMPLE_RATE, encode_mp4, encode_png, encode_wav


def square_image(
    colour: str = "red",
    size: int = 64,
    box: tuple[float, float, float, float] = (0.3, 0.3, 0.7, 0.7),
    background: str = "white",
) -> Image.Image:
    image = Image.new("RGB", (size, size), background)
    x0, y0, x1, y1 = (int(v * size) for v in box)
    ImageDraw.Draw(image).rectangle([x0, y0, x1, y1], fill=colour)
    return image


def tone(freq: float = 440.0, seconds: float = 1.0, sample_rate: int = 16000) -> np.ndarray:
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    return (0.5 * np.sin(2 * np.pi * freq * t)).astype(np.float32)


def moving_square(colour: str = "blue", frames: int = 8, size: int = 64) -> list[Image.Image]:
    out = []
    for i in range(frames):
        left = 0.05 + 0.5 * i / max(frames - 1, 1)
        out.append(square_image(colour, size, (left, 0.35, left + 0.3, 0.65)))
    return out


def png_bytes(**kwargs: Any) -> bytes:
    return encode_png(square_image(**kwargs))


def wav_bytes(**kwargs: Any) -> bytes:
    return encode_wav(tone(sample_rate=SAMPLE_RATE, **kwargs), SAMPLE_RATE)


def mp4_bytes(**kwargs: Any) -> bytes:
    return encode_mp4(moving_square(**kwargs), fps=8)
