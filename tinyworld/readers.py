"""Attributes read back from media with plain measurements: the analytic readers of tinyworld pictures, clips and
sounds, used to check the diffusion generators (:mod:`tinyworld.diffusion_eval`) without any trained model.

- :func:`read_picture` -- colour (median foreground colour, nearest world colour) and shape (best-overlapping
  rendered template, :func:`nearest_shape`);
- :func:`read_clip` -- colour and shape over the frames, direction from the foreground centroid's travel;
- :func:`read_sound` -- pitch from the spectral peak, beep count from bursts of the RMS envelope.

The trained, independent alternative that ``mmgraph eval`` uses is :mod:`tinyworld.judges`.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw

from tinyworld.world import COLOURS, DIRECTIONS, PITCHES, SAMPLE_RATE, SHAPES, draw_shape


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
