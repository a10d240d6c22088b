"""A second, hand-written judge of tinyworld media: attributes measured, not learnt.

``mmgraph eval`` judges generated media with the trained classifiers of :mod:`tinyworld.judges`. Classifiers can
share blind spots with the models they grade (both learnt from the world's renderer), so the eval asks this judge
too, and a generation row's sample passes only when both agree with the request. Nothing here is trained and no
world template is drawn to compare against; every attribute is a measurement:

- **background and shape mask** -- the background is a plane fitted to the border pixels (so tints and gradients
  are modelled); a pixel is foreground by its colour distance from that plane, thresholded at half the distance of
  the shape's core (the 50 % coverage line of an anti-aliased edge), keeping the largest connected region;
- **colour** -- the hue (and, for the two reds of the world, value) of the median core pixel, nearest of the world
  colours' hues;
- **shape** -- moments of the soft coverage: the rows' skew (an apex-up triangle's mass sits low) and the
  kurtosis of the projections on the axes against that on the diagonals (a square projects flat on the axes and
  peaked on the diagonals, a cross the other way round, a circle the same everywhere);
- **position, size** -- the mask's bounding-box centre and side, nearest world anchor / nominal size;
- **direction** -- a least-squares line through the per-frame centroids: the axis and sign of the larger travel;
- **beeps** -- runs of a hysteresis-thresholded energy envelope (5 ms hops, 15 ms windows), gaps and runs shorter
  than 25 ms ignored;
- **pitch** -- the strongest spectral peak between 150 and 3000 Hz inside the beeps (Hann window, zero padded,
  parabolic interpolation), nearest world pitch in log frequency;
- **waveform** -- the amplitudes of the 2nd and 3rd harmonics relative to the fundamental (sine: neither; square:
  the 3rd, about 1/3; sawtooth: the 2nd, about 1/2).

    judge = AnalyticJudge()
    judge.judge("image", png_bytes)   # {"colour": "red", "shape": "circle", "position": "top left", "size": "small"}
"""

from __future__ import annotations

import colorsys
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from PIL import Image
from scipy import ndimage

from core.config import MediaLimits
from modalities.media import decode_audio, decode_image, decode_video
from tinyworld.world import COLOURS, DIRECTIONS, PITCHES, POSITIONS, SAMPLE_RATE, SIZES

#: frames a video is read with (uniformly sampled; all of them when it has fewer)
VIDEO_FRAMES = 16
KINDS = ("image", "video", "audio")


# ------------------------------------------------------------------------------------------------------------------
# pictures
# ------------------------------------------------------------------------------------------------------------------
def _as_array(image: Image.Image | np.ndarray) -> np.ndarray:
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"), dtype=np.float64)
    array = np.asarray(image, dtype=np.float64)
    if array.ndim != 3 or array.shape[2] != 3:
        raise ValueError(f"a picture must be (H, W, 3) RGB, got shape {array.shape}")
    return array


def background_plane(pixels: np.ndarray, ring: int = 2) -> np.ndarray:
    """``(H, W, 3)``: per channel, the plane ``a + b x + c y`` fitted (least squares, median-filtered) to the
    outermost ``ring`` pixels of ``pixels``."""
    h, w, _ = pixels.shape
    ys, xs = np.mgrid[0:h, 0:w]
    border = np.zeros((h, w), dtype=bool)
    border[:ring], border[-ring:], border[:, :ring], border[:, -ring:] = True, True, True, True
    design = np.stack([np.ones(border.sum()), xs[border], ys[border]], axis=1)
    values = pixels[border]  # (B, 3)
    # a shape touching the border must not drag the fit: fit, drop the pixels far from it, fit again
    coefficients, *_ = np.linalg.lstsq(design, values, rcond=None)
    residual = np.linalg.norm(values - design @ coefficients, axis=1)
    keep = residual <= max(np.median(residual) * 3, 8.0)
    if keep.sum() >= 6:
        coefficients, *_ = np.linalg.lstsq(design[keep], values[keep], rcond=None)
    full = np.stack([np.ones(h * w), xs.reshape(-1), ys.reshape(-1)], axis=1)
    return (full @ coefficients).reshape(h, w, 3)


def shape_mask(pixels: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Three ``(H, W)`` masks of the one shape in ``pixels``: the hard mask (the largest connected region at half the
    core's distance from the background: the 50 % coverage line of an anti-aliased edge), the core (pixels at 70 % of
    the core distance or more, for colour) and the soft coverage in [0, 1] (distance ramped from 15 % to 100 % of the
    core's, near the hard mask only). All empty when nothing stands out."""
    distance = np.linalg.norm(pixels - background_plane(pixels), axis=2)
    strong = float(np.percentile(distance, 99.5))
    empty = np.zeros(distance.shape, dtype=bool)
    if strong < 40.0:  # nothing differs from the background by more than noise and compression do
        return empty, empty, np.zeros(distance.shape)
    core_level = float(np.median(distance[distance >= 0.6 * strong]))
    mask = distance >= 0.5 * core_level
    labels, count = ndimage.label(mask)
    sizes = ndimage.sum(mask, labels, index=range(1, count + 1))
    mask = labels == 1 + int(np.argmax(sizes))
    near = ndimage.binary_dilation(mask, iterations=2)
    soft = np.clip((distance - 0.15 * core_level) / (0.85 * core_level), 0.0, 1.0) * near
    return mask, mask & (distance >= 0.7 * core_level), soft


def _hue(rgb: Sequence[float]) -> tuple[float, float, float]:
    return colorsys.rgb_to_hsv(*(float(c) / 255.0 for c in rgb))


#: the world colours' hues (0-1)
_HUES = {name: _hue(rgb)[0] for name, rgb in COLOURS.items()}


def colour_of(pixels: np.ndarray, core: np.ndarray) -> str | None:
    """The world colour whose hue is nearest (on the hue circle) to the median core pixel's."""
    if not core.any():
        return None
    hue = _hue(np.median(pixels[core], axis=0))[0]
    return min(_HUES, key=lambda name: min(abs(hue - _HUES[name]), 1 - abs(hue - _HUES[name])))


def moments(weights: np.ndarray) -> dict[str, float]:
    """Shape descriptors of a coverage map, invariant to position and scale: ``skew`` (third standardised moment
    of the rows; an apex-up triangle's mass sits low: -0.57), ``kurtosis_axes`` and ``kurtosis_diagonals`` (fourth
    standardised moments of the projections on the x / y axes and on the two diagonals, averaged)."""
    total = float(weights.sum())
    ys, xs = np.mgrid[0 : weights.shape[0], 0 : weights.shape[1]] + 0.5
    x = xs - (weights * xs).sum() / total
    y = ys - (weights * ys).sum() / total

    def standardised(values: np.ndarray, order: int) -> float:
        variance = float((weights * values**2).sum() / total)
        return float((weights * values**order).sum() / total) / max(variance, 1e-12) ** (order / 2)

    u, v = (x + y) / math.sqrt(2), (x - y) / math.sqrt(2)
    return {
        "skew": standardised(y, 3),
        "kurtosis_axes": (standardised(x, 4) + standardised(y, 4)) / 2,
        "kurtosis_diagonals": (standardised(u, 4) + standardised(v, 4)) / 2,
    }


def shape_of(soft: np.ndarray) -> str | None:
    """Square, circle, triangle or cross from the coverage's :func:`moments`. The ideal shapes' values, in closed
    form: skew -0.57 for the triangle, 0 for the rest; kurtosis on the diagonals minus on the axes +0.6 for the square
    (flat projections on the axes, peaked on the diagonals), 0 for the circle, -0.84 for the cross (the other way
    round). Blur pulls each towards a Gaussian's (0 and 0), so the thresholds sit about halfway."""
    if soft.sum() < 4:
        return None
    m = moments(soft)
    if m["skew"] < -0.2:
        return "triangle"
    spread = m["kurtosis_diagonals"] - m["kurtosis_axes"]
    return "square" if spread > 0.25 else "cross" if spread < -0.3 else "circle"


def _box(mask: np.ndarray) -> tuple[float, float, float, float]:
    ys, xs = np.nonzero(mask)
    return float(xs.min()), float(xs.max() + 1), float(ys.min()), float(ys.max() + 1)


def judge_picture(image: Image.Image | np.ndarray) -> dict[str, str | None]:
    """Colour, shape, position and size of the one shape in ``image`` (any size; None where nothing stands out)."""
    pixels = _as_array(image)
    mask, core, soft = shape_mask(pixels)
    if not mask.any():
        return {"colour": None, "shape": None, "position": None, "size": None}
    h, w = mask.shape
    x0, x1, y0, y1 = _box(mask)
    centre = ((x0 + x1) / 2 / w, (y0 + y1) / 2 / h)
    extent = max((x1 - x0) / w, (y1 - y0) / h)
    return {
        "colour": colour_of(pixels, core),
        "shape": shape_of(soft),
        "position": min(POSITIONS, key=lambda p: math.dist(POSITIONS[p], centre)),
        "size": min(SIZES, key=lambda s: abs(math.log(SIZES[s] / max(extent, 1e-6)))),
    }


def judge_clip(frames: Sequence[Image.Image] | np.ndarray) -> dict[str, str | None]:
    """Colour (median over every frame's core), shape (most frames' vote) and direction (the centroid track's
    least-squares travel; None when it moves under 1.5 pixels) of a clip of at least 2 frames."""
    arrays = [_as_array(f) for f in frames]
    if len(arrays) < 2:
        raise ValueError(f"a clip needs at least 2 frames to show motion, got {len(arrays)}")
    colours, shapes, track = [], [], []
    for t, pixels in enumerate(arrays):
        mask, core, soft = shape_mask(pixels)
        if not mask.any():
            continue
        colours.append(np.median(pixels[core], axis=0) if core.any() else np.median(pixels[mask], axis=0))
        shape = shape_of(soft)
        if shape is not None:
            shapes.append(shape)
        ys, xs = np.nonzero(mask)
        track.append((t, xs.mean(), ys.mean()))
    colour = None
    if colours:
        fake = np.stack(colours)[None]  # (1, T, 3): one "image" of the frames' median colours
        colour = colour_of(fake, np.ones(fake.shape[:2], dtype=bool))
    shape = max(sorted(set(shapes)), key=shapes.count) if shapes else None
    direction = None
    if len(track) >= 2:
        t, x, y = (np.array(v, dtype=np.float64) for v in zip(*track))
        span = t.max() - t.min()
        vx, vy = (np.polyfit(t, v, 1)[0] * span for v in (x, y))
        if max(abs(vx), abs(vy)) >= 1.5:
            step = (int(np.sign(vx)), 0) if abs(vx) >= abs(vy) else (0, int(np.sign(vy)))
            direction = next(name for name, d in DIRECTIONS.items() if d == step)
    return {"colour": colour, "shape": shape, "direction": direction}


# ------------------------------------------------------------------------------------------------------------------
# sounds
# ------------------------------------------------------------------------------------------------------------------
def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    padded = np.concatenate([[0], flags.astype(np.int8), [0]])
    edges = np.flatnonzero(np.diff(padded))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def beep_spans(samples: np.ndarray, rate: int) -> list[tuple[int, int]]:
    """``[start, stop)`` sample spans of the beeps: an RMS envelope in 5 ms hops over 15 ms windows, on above 35 %
    of the way from the noise floor (10th percentile) to the peak, off below 18 % (hysteresis); gaps under 25 ms
    closed (the world's beeps are at least :data:`~tinyworld.world.MIN_GAP` apart, and a Griffin-Lim waveform
    flickers within a tone), runs under 25 ms dropped."""
    hop = max(1, rate // 200)
    count = len(samples) // hop
    if count < 3:
        return []
    frames = samples[: count * hop].reshape(count, hop)
    power = np.convolve(np.mean(frames**2, axis=1), np.ones(3) / 3, mode="same")  # 15 ms windows
    energy = np.sqrt(power)
    floor, peak = float(np.percentile(energy, 10)), float(energy.max())
    if peak <= 1e-4 or peak < 2.0 * floor:
        return []
    high, low = floor + 0.35 * (peak - floor), floor + 0.18 * (peak - floor)
    on, state = np.zeros(count, dtype=bool), False
    for i, e in enumerate(energy):  # hysteresis
        state = e >= high if not state else e >= low
        on[i] = state
    short = 5  # 25 ms in 5 ms hops
    for a, b in _runs(~on):
        if b - a < short and a > 0 and b < count:
            on[a:b] = True
    return [(a * hop, b * hop) for a, b in _runs(on) if b - a >= short]


def _spectrum(segment: np.ndarray, rate: int) -> tuple[np.ndarray, np.ndarray]:
    size = 1 << max(14, int(math.ceil(math.log2(len(segment) * 4))))
    magnitude = np.abs(np.fft.rfft(segment * np.hanning(len(segment)), n=size))
    return magnitude, np.fft.rfftfreq(size, 1.0 / rate)


def _peak(magnitude: np.ndarray, freqs: np.ndarray, low: float, high: float) -> tuple[float, float]:
    """Frequency (parabolic interpolation) and height of the highest peak in ``[low, high]`` Hz."""
    band = np.flatnonzero((freqs >= low) & (freqs <= high))
    if len(band) == 0:
        return 0.0, 0.0
    i = int(band[np.argmax(magnitude[band])])
    if 0 < i < len(magnitude) - 1:
        a, b, c = magnitude[i - 1], magnitude[i], magnitude[i + 1]
        denominator = a - 2 * b + c
        shift = 0.5 * (a - c) / denominator if denominator else 0.0
        return float(freqs[i] + shift * (freqs[1] - freqs[0])), float(b)
    return float(freqs[i]), float(magnitude[i])


def judge_sound(samples: np.ndarray, rate: int) -> dict[str, Any]:
    """Pitch, waveform and beep count of ``samples`` (mono ``(N,)`` or ``(N, channels)``, any rate); also the measured
    ``frequency`` and harmonic ratios ``h2``, ``h3``."""
    samples = np.asarray(samples, dtype=np.float64)
    if samples.ndim == 2:
        samples = samples.mean(axis=1)
    if samples.ndim != 1 or samples.size == 0:
        raise ValueError(f"audio must be non-empty samples of shape (N,) or (N, channels), got {samples.shape}")
    if not isinstance(rate, (int, np.integer)) or rate <= 0:
        raise ValueError(f"sample rate must be a positive integer, got {rate!r}")
    spans = beep_spans(samples, int(rate))
    result: dict[str, Any] = {"pitch": None, "waveform": None, "beeps": len(spans), "frequency": 0.0}
    if not spans:
        return result
    inside = np.concatenate([samples[a:b] for a, b in spans])
    magnitude, freqs = _spectrum(inside, int(rate))
    frequency, height = _peak(magnitude, freqs, 150.0, min(3000.0, 0.45 * rate))
    result["frequency"] = frequency
    result["pitch"] = min(PITCHES, key=lambda p: abs(math.log(max(frequency, 1.0) / PITCHES[p])))
    ratios = []
    for k in (2, 3):
        if k * frequency * 1.03 >= 0.5 * rate:
            ratios.append(0.0)  # above Nyquist: the file cannot hold it
            continue
        _, h = _peak(magnitude, freqs, k * frequency * 0.97, k * frequency * 1.03)
        ratios.append(h / max(height, 1e-12))
    result["h2"], result["h3"] = ratios
    result["waveform"] = "sawtooth" if ratios[0] > 0.25 else "square" if ratios[1] > 0.15 else "sine"
    return result


# ------------------------------------------------------------------------------------------------------------------
# the judge
# ------------------------------------------------------------------------------------------------------------------
class AnalyticJudge:
    """Reads encoded media (the same ``judge(kind, data)`` call as :class:`tinyworld.judges.Judges`)."""

    def __init__(self, limits: MediaLimits | None = None) -> None:
        self.limits = limits or MediaLimits()

    def judge(self, kind: str, data: bytes) -> dict[str, Any]:
        """Decode one medium with :mod:`modalities.media` under the limits (``image``: PNG, JPEG, ...; ``video``:
        MP4, GIF, ..., :data:`VIDEO_FRAMES` frames; ``audio``: WAV, ..., mixed to mono at 16 kHz) and measure its
        attributes. Undecodable media raise the media errors (``ValueError``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown media kind {kind!r}; the analytic judge takes {list(KINDS)}")
        if kind == "image":
            return judge_picture(decode_image(data, self.limits))
        if kind == "video":
            return judge_clip(decode_video(data, self.limits, num_frames=VIDEO_FRAMES))
        return judge_sound(decode_audio(data, self.limits), SAMPLE_RATE)  # mono, resampled to 16 kHz
