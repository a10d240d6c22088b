"""A second renderer of the tinyworld, for the eval: the same things, drawn by code of its own.

The world's renderer (:mod:`tinyworld.world`) draws with PIL's ``ImageDraw`` on a white 32x32 canvas, moves shapes
8 frames over a fixed path, and synthesises fixed-timing beeps with naive waveforms and linear fades; the system
was trained on exactly that. The painter draws the same *labels* -- colour, shape, position, size, direction,
pitch, waveform, beep count, as the world defines them (:data:`~tinyworld.world.COLOURS` and
:func:`~tinyworld.world.colour_label`, the shapes' geometry, :data:`~tinyworld.world.POSITION_RADIUS`,
:data:`~tinyworld.world.MIN_GAP`) -- differently:

- **pictures** -- every shape is an inside-test on a ``k x k`` grid of sub-pixel samples per pixel (analytic
  coverage, i.e. anti-aliasing by supersampling), composited over a tinted, graded, noisy background, at 30-96
  pixels, off the grid positions, and saved as PNG or JPEG;
- **clips** -- 4-16 frames at 4-24 fps, other speeds, start points and shape sizes, saved as MP4 or GIF;
- **sounds** -- band-limited additive synthesis (harmonics up to the file's Nyquist frequency) with raised-cosine
  envelopes, beeps of 0.05-0.5 s, other gaps, onsets, amplitudes, mild noise, 8-48 kHz, mono or stereo WAV.

Every parameter is drawn from :data:`RANGES` (reported with each painting). The world's augmented renderer covers
these ranges (:data:`tinyworld.world.AUGMENT`); only the ranges are shared, never the drawing code.

    painting = paint(Picture("red", "circle", "top left", "small"), seed=3)
    painting.data, painting.mime, painting.params
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import dataclass
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from modalities.media import encode_gif, encode_mp4
from tinyworld.world import (
    COLOURS,
    DIRECTIONS,
    PITCHES,
    POSITION_RADIUS,
    POSITIONS,
    SIZES,
    Clip,
    Picture,
    Sound,
    Thing,
    colour_label,
)

#: Every parameter's range, per kind (uniform draws; integers where the world's :data:`~tinyworld.world.AUGMENT`
#: says so). A name shared with ``AUGMENT`` is the same quantity in the same unit.
RANGES: dict[str, dict[str, tuple[float, float]]] = {
    "image": {
        "side": (30, 96),
        "offset": (-0.9 * POSITION_RADIUS, 0.9 * POSITION_RADIUS),
        "scale": (0.9, 1.12),
        "colour_shift": (0.0, 40.0),
        "background": (175, 255),
        "tint": (-12, 12),
        "gradient": (0.0, 30.0),
        "noise": (0.0, 4.0),
        "supersample": (2, 4),
        "jpeg_quality": (35, 90),
    },
    "video": {
        "side": (28, 64),
        "frames": (4, 16),
        "fps": (4, 24),
        "travel": (0.25, 0.55),
        "shape_side": (0.26, 0.4),
        "colour_shift": (0.0, 40.0),
        "background": (175, 255),
        "tint": (-12, 12),
        "noise": (0.0, 3.0),
        "supersample": (2, 4),
    },
    "audio": {
        "beep": (0.05, 0.5),
        "gap": (0.05, 0.35),
        "onset": (0.0, 0.3),
        "amplitude": (0.1, 0.9),
        "noise": (0.0, 0.08),
        "detune": (-0.04, 0.04),
        "sample_rate": (8000, 48000),
        "channels": (1, 2),
    },
}
#: the file rates a painted sound may have
RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000)
#: the longest painted sound, seconds (the tiny Whisper encoder reads 2 s)
LONGEST = 1.9


@dataclass(frozen=True)
class Painting:
    """One painted medium: encoded bytes, their mime type, and the parameters drawn."""

    thing: Thing
    data: bytes
    mime: str
    params: dict[str, Any]


def _draw(rng: random.Random, kind: str, name: str) -> float:
    low, high = RANGES[kind][name]
    if isinstance(low, int) and isinstance(high, int):
        return rng.randint(low, high)
    return rng.uniform(low, high)


# ------------------------------------------------------------------------------------------------------------------
# pictures and clips: coverage by sub-pixel inside-tests
# ------------------------------------------------------------------------------------------------------------------
def _inside(shape: str, x: np.ndarray, y: np.ndarray, cx: float, cy: float, half: float) -> np.ndarray:
    """Whether points ``(x, y)`` lie inside ``shape`` whose axis-aligned box of half-side ``half`` is centred at
    ``(cx, cy)``: the square fills the box, the circle is inscribed, the triangle has its apex at the top middle and
    its base along the bottom, the cross has two bars a third of the side wide."""
    u, v = x - cx, y - cy
    if shape == "square":
        return (np.abs(u) <= half) & (np.abs(v) <= half)
    if shape == "circle":
        return u * u + v * v <= half * half
    if shape == "triangle":
        # the half-width grows linearly from 0 at the apex (v = -half) to half at the base (v = +half)
        return (v >= -half) & (v <= half) & (np.abs(u) <= (v + half) / 2)
    if shape == "cross":
        bar = half / 3
        return ((np.abs(u) <= bar) & (np.abs(v) <= half)) | ((np.abs(v) <= bar) & (np.abs(u) <= half))
    raise ValueError(f"the painter cannot draw {shape!r}")


def coverage(shape: str, side: int, cx: float, cy: float, box: float, samples: int) -> np.ndarray:
    """``(side, side)`` float in [0, 1]: the share of each pixel's ``samples x samples`` sub-pixel points inside the
    shape (pixel ``(i, j)`` spans ``[j, j + 1) x [i, i + 1)``)."""
    if samples < 1:
        raise ValueError(f"samples must be >= 1, got {samples}")
    offsets = (np.arange(samples) + 0.5) / samples
    grid = (np.arange(side)[:, None] + offsets[None, :]).reshape(-1)  # sub-pixel coordinates along one axis
    ys, xs = np.meshgrid(grid, grid, indexing="ij")
    inside = _inside(shape, xs, ys, cx, cy, box / 2).astype(np.float64)
    return inside.reshape(side, samples, side, samples).mean(axis=(1, 3))


def _paint_colour(colour: str, rng: random.Random, limit: float) -> np.ndarray:
    """A fill near ``colour``: its anchor moved in hue, saturation and value, kept within ``limit`` (RGB distance) and
    within its label."""
    anchor = np.array(COLOURS[colour], dtype=np.float64)
    for _ in range(200):
        scale = rng.uniform(0.88, 1.08)  # value
        towards_grey = rng.uniform(0.0, 0.2)  # saturation
        rgb = anchor * scale
        rgb = rgb + (rgb.mean() - rgb) * towards_grey
        rgb = rgb + np.array([rng.uniform(-10, 10) for _ in range(3)])  # hue wobble
        rgb = np.clip(rgb, 0, 255)
        if np.linalg.norm(rgb - anchor) <= limit and colour_label(rgb) == colour:
            return rgb
    return anchor


def _backdrop(side: int, params: dict[str, Any], noise: np.random.Generator) -> np.ndarray:
    level = params["background"] + np.array(params["tint"], dtype=np.float64)
    angle = params.get("gradient_angle", 0.0)
    axis = (np.arange(side) + 0.5) / side - 0.5
    ramp = np.cos(angle) * axis[None, :] + np.sin(angle) * axis[:, None]  # in about [-0.7, 0.7]
    ramp = ramp / max(float(ramp.max() - ramp.min()), 1e-9) * params.get("gradient", 0.0)
    return level[None, None, :] + ramp[..., None] + noise.normal(0.0, params["noise"], (side, side, 3))


def _frame(shape: str, fill: np.ndarray, cx: float, cy: float, box: float, params: dict, noise) -> np.ndarray:
    side = params["side"]
    alpha = coverage(shape, side, cx, cy, box, params["supersample"])[..., None]
    image = _backdrop(side, params, noise) * (1.0 - alpha) + fill[None, None, :] * alpha
    return np.clip(np.rint(image), 0, 255).astype(np.uint8)


def _picture(picture: Picture, rng: random.Random) -> Painting:
    kind = "image"
    params: dict[str, Any] = {name: _draw(rng, kind, name) for name in RANGES[kind] if name not in ("tint", "offset")}
    params["tint"] = [_draw(rng, kind, "tint") for _ in range(3)]
    params["offset"] = [_draw(rng, kind, "offset") for _ in range(2)]
    params["gradient_angle"] = rng.uniform(0.0, 2.0 * math.pi)
    params["format"] = rng.choice(("png", "jpeg"))
    side = params["side"]
    box = SIZES[picture.size] * params["scale"] * side
    anchor = POSITIONS[picture.position]
    cx, cy = (min(max((a + o) * side, box / 2), side - box / 2) for a, o in zip(anchor, params["offset"]))
    fill = _paint_colour(picture.colour, rng, params["colour_shift"])
    params["centre"] = [cx / side, cy / side]
    pixels = _frame(picture.shape, fill, cx, cy, box, params, np.random.default_rng(rng.randrange(2**32)))
    buffer = io.BytesIO()
    if params["format"] == "jpeg":
        Image.fromarray(pixels).save(buffer, format="JPEG", quality=int(params["jpeg_quality"]))
        return Painting(picture, buffer.getvalue(), "image/jpeg", params)
    Image.fromarray(pixels).save(buffer, format="PNG", optimize=True)
    return Painting(picture, buffer.getvalue(), "image/png", params)


def _clip(clip: Clip, rng: random.Random) -> Painting:
    kind = "video"
    params: dict[str, Any] = {name: _draw(rng, kind, name) for name in RANGES[kind] if name != "tint"}
    params["side"] += params["side"] % 2  # even sides: H.264 in yuv420p
    params["tint"] = [_draw(rng, kind, "tint") for _ in range(3)]
    params["format"] = rng.choice(("mp4", "mp4", "gif"))
    side, count = params["side"], params["frames"]
    box = params["shape_side"] * side
    distance = params["travel"] * side
    dx, dy = DIRECTIONS[clip.direction]
    low, high = box / 2 + 1.0, side - box / 2 - 1.0
    # the start point: far enough from the edge it heads to that the whole path stays in the frame
    x0 = rng.uniform(low, high - distance) if dx > 0 else rng.uniform(low + distance, high) if dx < 0 else None
    y0 = rng.uniform(low, high - distance) if dy > 0 else rng.uniform(low + distance, high) if dy < 0 else None
    x0 = rng.uniform(low, high) if x0 is None else x0
    y0 = rng.uniform(low, high) if y0 is None else y0
    fill = _paint_colour(clip.colour, rng, params["colour_shift"])
    noise = np.random.default_rng(rng.randrange(2**32))
    frames = []
    for i in range(count):
        progress = i / (count - 1)
        frames.append(
            _frame(clip.shape, fill, x0 + dx * distance * progress, y0 + dy * distance * progress, box, params, noise)
        )
    params["start"] = [x0 / side, y0 / side]
    if params["format"] == "gif":
        return Painting(clip, encode_gif(np.stack(frames), fps=int(params["fps"])), "image/gif", params)
    return Painting(clip, encode_mp4(np.stack(frames), fps=int(params["fps"])), "video/mp4", params)


# ------------------------------------------------------------------------------------------------------------------
# sounds: band-limited additive synthesis
# ------------------------------------------------------------------------------------------------------------------
def tone(waveform: str, frequency: float, seconds: float, rate: int, phase: float) -> np.ndarray:
    """One tone of ``waveform`` as a sum of harmonics below 0.45 x ``rate`` (so nothing aliases): a sine alone; odd
    harmonics at 1/k for a square; every harmonic at 1/k with alternating sign for a sawtooth. Peak about 1."""
    t = np.arange(int(round(seconds * rate))) / rate
    if waveform == "sine":
        ks, weights = [1], [1.0]
    elif waveform == "square":
        ks = [k for k in range(1, 200, 2) if k * frequency < 0.45 * rate]
        weights = [4 / (math.pi * k) for k in ks]
    elif waveform == "sawtooth":
        ks = [k for k in range(1, 200) if k * frequency < 0.45 * rate]
        weights = [2 / math.pi * (-1) ** (k + 1) / k for k in ks]
    else:
        raise ValueError(f"the painter cannot synthesise a {waveform!r} wave")
    out = np.zeros_like(t)
    for k, w in zip(ks, weights):
        out += w * np.sin(2 * math.pi * k * frequency * t + k * phase)
    return out / max(float(np.abs(out).max()), 1e-9)


def _sound(sound: Sound, rng: random.Random) -> Painting:
    kind = "audio"
    params: dict[str, Any] = {
        name: _draw(rng, kind, name) for name in ("beep", "onset", "amplitude", "noise", "detune", "channels")
    }
    frequency = PITCHES[sound.pitch] * (1 + params["detune"])
    # a file must carry a tone's third harmonic, or a square wave could not be told from a sine
    rates = [r for r in RATES if 3 * frequency < 0.45 * r]
    params["sample_rate"] = rate = rng.choice(rates)
    gaps = [_draw(rng, kind, "gap") for _ in range(sound.beeps - 1)]
    beeps = [params["beep"] * rng.uniform(0.9, 1.1) for _ in range(sound.beeps)]
    beeps = [min(max(b, RANGES[kind]["beep"][0]), RANGES[kind]["beep"][1]) for b in beeps]
    busy = params["onset"] + sum(beeps) + sum(gaps)
    tail = rng.uniform(0.05, 0.3)
    if busy + 0.05 > LONGEST:  # too long for the window: shorten tones and gaps alike, keeping their minimum
        squeeze = (LONGEST - 0.05 - params["onset"]) / (sum(beeps) + sum(gaps))
        beeps = [max(RANGES[kind]["beep"][0], b * squeeze) for b in beeps]
        gaps = [max(RANGES[kind]["gap"][0], g * squeeze) for g in gaps]
        busy = params["onset"] + sum(beeps) + sum(gaps)
    params["beep"], params["gap"] = beeps, gaps  # each tone's and each gap's seconds, as drawn
    total = min(LONGEST, max(0.5, busy + tail))
    out = np.zeros(int(round(total * rate)))
    start = params["onset"]
    for i, seconds in enumerate(beeps):
        burst = tone(sound.waveform, frequency, seconds, rate, rng.uniform(0, 2 * math.pi))
        ramp = max(2, int(rng.uniform(0.004, 0.015) * rate))
        ramp = min(ramp, len(burst) // 3)
        window = np.ones(len(burst))
        edge = 0.5 - 0.5 * np.cos(np.linspace(0, math.pi, ramp))  # raised cosine
        window[:ramp], window[len(burst) - ramp :] = edge, edge[::-1]
        first = int(round(start * rate))
        out[first : first + len(burst)] += (params["amplitude"] * burst * window)[: max(0, len(out) - first)]
        start += seconds + (gaps[i] if i < len(gaps) else 0.0)
    noise = np.random.default_rng(rng.randrange(2**32))
    out += noise.normal(0.0, params["noise"] * params["amplitude"], out.shape)
    if params["channels"] == 2:  # stereo: the same tones, the right channel quieter, each with its own noise
        right = out * rng.uniform(0.5, 1.0) + noise.normal(0.0, params["noise"] * params["amplitude"], out.shape)
        out = np.stack([out, right], axis=1)
    buffer = io.BytesIO()
    sf.write(buffer, np.clip(out, -1.0, 1.0).astype(np.float32), rate, format="WAV", subtype="PCM_16")
    return Painting(sound, buffer.getvalue(), "audio/wav", params)


_PAINTERS = {Picture: _picture, Clip: _clip, Sound: _sound}


def paint(thing: Thing, seed: int) -> Painting:
    """``thing`` painted from ``seed`` (deterministic): encoded bytes, their mime type and the parameters drawn."""
    painter = _PAINTERS.get(type(thing))
    if painter is None:
        raise TypeError(f"the painter draws pictures, clips and sounds, not {type(thing).__name__}")
    return painter(thing, random.Random(f"painter-{seed}-{thing!r}"))
