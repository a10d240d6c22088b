"""The tinyworld: a synthetic multimodal world small enough to learn on a CPU, rich enough to test every path.

Three kinds of things, each a frozen dataclass of discrete attributes that renders deterministically from a seed:

- :class:`Picture` -- one shape (colour, shape, position, size) on a white background, ``size x size`` pixels;
- :class:`Clip` -- a shape (colour, shape) moving in a direction over ``frames`` frames;
- :class:`Sound` -- ``beeps`` tones of one pitch and waveform in a one-second clip at 16 kHz.

and the text about them (:mod:`tinyworld.text`). Rendering uses only numpy and PIL; a little jitter (position,
colour, phase, timing) keeps every sample distinct while the attributes stay unambiguous: the tests read every
attribute back from rendered media with plain measurements (centroids, areas, spectra, envelopes).
"""

from __future__ import annotations

import random
from dataclasses import asdict, dataclass, fields
from typing import ClassVar

import numpy as np
from PIL import Image, ImageDraw

from modalities.media import encode_mp4, encode_png, encode_wav

SAMPLE_RATE = 16000

COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (220, 30, 30),
    "green": (30, 170, 50),
    "blue": (30, 70, 220),
    "yellow": (235, 205, 20),
    "purple": (140, 40, 190),
    "orange": (245, 130, 20),
}
SHAPES = ("square", "circle", "triangle", "cross")
POSITIONS: dict[str, tuple[float, float]] = {  # centre of the shape, as fractions of the side
    "top left": (0.28, 0.28),
    "top right": (0.72, 0.28),
    "bottom left": (0.28, 0.72),
    "bottom right": (0.72, 0.72),
    "centre": (0.5, 0.5),
}
SIZES: dict[str, float] = {"small": 0.26, "large": 0.42}  # side of the shape's box, as a fraction of the side
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
PITCHES: dict[str, float] = {"low": 330.0, "middle": 660.0, "high": 1320.0}  # Hz
WAVEFORMS = ("sine", "square", "sawtooth")
BEEPS = (1, 2, 3)
BACKGROUND = (255, 255, 255)


def _choice(rng: random.Random, options) -> object:
    return rng.choice(list(options))


@dataclass(frozen=True)
class Thing:
    """Base of the world's things: sampling, attribute access, rendering with a seed."""

    kind: ClassVar[str]
    #: attribute -> its possible values; the dataclass fields, in the same order
    options: ClassVar[dict[str, object]]
    attributes: ClassVar[tuple[str, ...]]

    def __init_subclass__(cls, **kwargs) -> None:
        super().__init_subclass__(**kwargs)
        cls.attributes = tuple(cls.options)

    @classmethod
    def sample(cls, rng: random.Random, **fixed) -> Thing:
        """A random thing; ``fixed`` pins some attributes (``Picture.sample(rng, colour="red")``)."""
        values = {f.name: fixed[f.name] if f.name in fixed else _choice(rng, cls.choices(f.name)) for f in fields(cls)}
        return cls(**values)

    @classmethod
    def choices(cls, attribute: str):
        return cls.options[attribute]

    def as_dict(self) -> dict:
        return asdict(self)

    def __post_init__(self) -> None:
        for f in fields(self):
            value = getattr(self, f.name)
            if value not in self.choices(f.name):
                raise ValueError(
                    f"{type(self).__name__}.{f.name} must be one of {list(self.choices(f.name))}, got {value!r}"
                )


def _jittered(colour: str, rng: random.Random, amount: int = 12) -> tuple[int, int, int]:
    return tuple(int(np.clip(c + rng.randint(-amount, amount), 0, 255)) for c in COLOURS[colour])


def draw_shape(
    draw: ImageDraw.ImageDraw, shape: str, centre: tuple[float, float], side: float, fill: tuple[int, int, int]
) -> None:
    """Draw ``shape`` with its bounding box of ``side`` pixels centred at ``centre`` (pixels)."""
    cx, cy = centre
    h = side / 2
    box = [cx - h, cy - h, cx + h, cy + h]
    if shape == "square":
        draw.rectangle(box, fill=fill)
    elif shape == "circle":
        draw.ellipse(box, fill=fill)
    elif shape == "triangle":
        draw.polygon([(cx, cy - h), (cx + h, cy + h), (cx - h, cy + h)], fill=fill)
    elif shape == "cross":
        t = side / 6  # half the bar thickness: bars a third of the side wide
        draw.rectangle([cx - h, cy - t, cx + h, cy + t], fill=fill)
        draw.rectangle([cx - t, cy - h, cx + t, cy + h], fill=fill)
    else:
        raise ValueError(f"unknown shape {shape!r}; shapes: {SHAPES}")


@dataclass(frozen=True)
class Picture(Thing):
    """One shape on a white background."""

    colour: str
    shape: str
    position: str
    size: str

    kind: ClassVar[str] = "image"
    options: ClassVar[dict[str, object]] = {"colour": COLOURS, "shape": SHAPES, "position": POSITIONS, "size": SIZES}

    def render(self, seed: int = 0, side: int = 32) -> Image.Image:
        rng = random.Random(seed)
        image = Image.new("RGB", (side, side), BACKGROUND)
        fx, fy = POSITIONS[self.position]
        jitter = 0.04 * side
        centre = (fx * side + rng.uniform(-jitter, jitter), fy * side + rng.uniform(-jitter, jitter))
        draw_shape(
            ImageDraw.Draw(image),
            self.shape,
            centre,
            SIZES[self.size] * side * rng.uniform(0.92, 1.08),
            _jittered(self.colour, rng),
        )
        return image


@dataclass(frozen=True)
class Clip(Thing):
    """A shape moving in a straight line."""

    colour: str
    shape: str
    direction: str

    kind: ClassVar[str] = "video"
    options: ClassVar[dict[str, object]] = {"colour": COLOURS, "shape": SHAPES, "direction": DIRECTIONS}

    def render(self, seed: int = 0, side: int = 32, frames: int = 8) -> list[Image.Image]:
        rng = random.Random(seed)
        dx, dy = DIRECTIONS[self.direction]
        shape_side = 0.34 * side
        travel = 0.45 * side  # distance covered over the clip
        margin = shape_side / 2 + 1
        # start so that the whole path stays inside the frame; the cross axis is random
        along = lambda d: margin if d > 0 else side - margin if d < 0 else rng.uniform(margin, side - margin)  # noqa: E731
        start = (along(dx), along(dy))
        fill = _jittered(self.colour, rng)
        out = []
        for i in range(frames):
            t = i / max(frames - 1, 1)
            centre = (start[0] + dx * travel * t, start[1] + dy * travel * t)
            image = Image.new("RGB", (side, side), BACKGROUND)
            draw_shape(ImageDraw.Draw(image), self.shape, centre, shape_side, fill)
            out.append(image)
        return out


def waveform(kind: str, freq: float, t: np.ndarray, phase: float = 0.0) -> np.ndarray:
    """One of :data:`WAVEFORMS` at ``freq`` Hz over times ``t`` (seconds), in [-1, 1]."""
    cycles = freq * t + phase
    if kind == "sine":
        return np.sin(2 * np.pi * cycles)
    if kind == "square":
        return np.sign(np.sin(2 * np.pi * cycles))
    if kind == "sawtooth":
        return 2.0 * (cycles - np.floor(cycles + 0.5))
    raise ValueError(f"unknown waveform {kind!r}; waveforms: {WAVEFORMS}")


@dataclass(frozen=True)
class Sound(Thing):
    """``beeps`` tones of one pitch and waveform, in a one-second clip."""

    pitch: str
    waveform: str
    beeps: int

    kind: ClassVar[str] = "audio"
    options: ClassVar[dict[str, object]] = {"pitch": PITCHES, "waveform": WAVEFORMS, "beeps": BEEPS}

    def render(self, seed: int = 0, seconds: float = 1.0, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
        """Float32 samples in [-1, 1], shape ``(seconds * sample_rate,)``."""
        rng = random.Random(seed)
        out = np.zeros(int(seconds * sample_rate), dtype=np.float32)
        beep, gap = 0.16 * seconds, 0.12 * seconds
        start = rng.uniform(0.04, 0.1) * seconds
        freq = PITCHES[self.pitch] * rng.uniform(0.97, 1.03)
        fade = int(0.008 * sample_rate)
        for _ in range(self.beeps):
            n = int(beep * sample_rate)
            first = int(start * sample_rate)
            t = np.arange(n) / sample_rate
            tone = 0.5 * waveform(self.waveform, freq, t, rng.random())
            envelope = np.ones(n)
            envelope[:fade] = np.linspace(0, 1, fade)
            envelope[-fade:] = np.linspace(1, 0, fade)
            out[first : first + n] += (tone * envelope).astype(np.float32)[: len(out) - first]
            start += beep + gap
        return out


THINGS: dict[str, type[Thing]] = {"image": Picture, "video": Clip, "audio": Sound}


def encode(thing: Thing, seed: int = 0, **render) -> bytes:
    """Render ``thing`` and encode it as PNG / MP4 / WAV bytes (what a user would send)."""
    medium = thing.render(seed, **render)
    if isinstance(thing, Picture):
        return encode_png(medium)
    if isinstance(thing, Clip):
        return encode_mp4(medium, fps=8)
    return encode_wav(medium, SAMPLE_RATE)
