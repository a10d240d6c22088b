"""The tinyworld: a synthetic multimodal world small enough to learn on a CPU, rich enough to test every path.

Three kinds of things, each a frozen dataclass of discrete attributes that renders deterministically from a seed:

- :class:`Picture` -- one shape (colour, shape, position, size) on a white background, ``size x size`` pixels;
- :class:`Clip` -- a shape (colour, shape) moving in a direction over ``frames`` frames;
- :class:`Sound` -- ``beeps`` tones of one pitch and waveform in a one-second clip at 16 kHz.

and the text about them (:mod:`tinyworld.text`). Rendering uses only numpy and PIL; a little jitter (position,
colour, phase, timing) keeps every sample distinct while the attributes stay unambiguous: the tests read every
attribute back from rendered media with plain measurements (centroids, areas, spectra, envelopes).

**Augmented renders.** ``encode(thing, seed, augment=True)`` (and :func:`augmented`, :func:`as_received`) draw the
same thing far more loosely, with this renderer's own drawing code: other sizes and resolutions, positions off the
grid, tinted / graded / noisy backgrounds, anti-aliasing by supersampling and JPEG for pictures; other frame counts,
speeds, frame rates, start positions and GIFs for clips; beeps of 0.04-0.55 s with other gaps, onsets, amplitudes,
noise, sample rates (8-48 kHz) and stereo for sounds. Every parameter's range is in :data:`AUGMENT`; the labels stay
the world's (:func:`colour_label`, :data:`POSITION_RADIUS`, :data:`MIN_GAP`). The recipe uses it with
``RecipeConfig.augment`` (off by default). The eval's second renderer (:mod:`tinyworld.painter`) draws within these
ranges with code of its own.
"""

from __future__ import annotations

import io
import math
import random
from dataclasses import asdict, dataclass, fields
from typing import Any, ClassVar

import numpy as np
import soundfile as sf
from PIL import Image, ImageDraw

from core.config import MediaLimits
from modalities.media import decode_audio, decode_image, decode_video, encode_gif, encode_mp4, encode_png, encode_wav

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

#: What the world's labels mean beyond the anchors above, for renders that move away from them (augmented renders,
#: the eval's second renderer): a shape is "in the top left" while its box centre is within this fraction of the side
#: of the top-left anchor, on each axis (the anchors are 0.22 apart, so no centre is near two of them).
POSITION_RADIUS = 0.1
#: two tones are two beeps when the silence between them lasts at least this long (seconds)
MIN_GAP = 0.04


def colour_label(rgb) -> str:
    """The world colour an RGB triple shows: the nearest of :data:`COLOURS` (Euclidean RGB distance)."""
    r, g, b = (float(c) for c in rgb)
    return min(
        COLOURS,
        key=lambda name: (COLOURS[name][0] - r) ** 2 + (COLOURS[name][1] - g) ** 2 + (COLOURS[name][2] - b) ** 2,
    )


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

# ------------------------------------------------------------------------------------------------------------------
# augmented renders
# ------------------------------------------------------------------------------------------------------------------
#: The ranges every parameter of an augmented render is drawn from, per kind (uniformly; integers where the name says
#: so). Shared names with :data:`tinyworld.painter.RANGES` mean the same quantity, and these ranges contain the
#: painter's (tests/test_tinyworld_painter.py checks it), so training with augmentation covers what the eval's
#: second renderer draws.
AUGMENT: dict[str, dict[str, tuple[float, float]]] = {
    "image": {
        "side": (24, 128),  # pixels of the square output (int)
        "offset": (-POSITION_RADIUS, POSITION_RADIUS),  # box centre minus its anchor, fraction of the side, per axis
        "scale": (0.85, 1.18),  # box side over the size's nominal side
        "colour_shift": (0.0, 48.0),  # RGB distance of the fill from its anchor colour (label kept)
        "background": (160, 255),  # background grey level (int)
        "tint": (-18, 18),  # added to each background channel (int)
        "gradient": (0.0, 40.0),  # background levels across the picture, peak to peak
        "noise": (0.0, 6.0),  # pixel noise, standard deviation in levels
        "supersample": (1, 4),  # drawn at this many times the side, then box-filtered down (int; 1: aliased)
        "jpeg_quality": (25, 95),  # int; a share of the pictures is JPEG (``jpeg``), the rest PNG
    },
    "video": {
        "side": (24, 96),
        "frames": (3, 20),  # int
        "fps": (3, 30),  # int
        "travel": (0.2, 0.65),  # distance covered over the clip, fraction of the side
        "shape_side": (0.2, 0.45),  # the shape's box, fraction of the side
        "colour_shift": (0.0, 48.0),
        "background": (160, 255),
        "tint": (-18, 18),
        "noise": (0.0, 6.0),
        "supersample": (1, 4),
    },
    "audio": {
        "beep": (0.04, 0.55),  # seconds of each tone
        "gap": (0.04, 0.4),  # seconds of silence between tones (at least MIN_GAP)
        "onset": (0.0, 0.35),  # seconds before the first tone
        "amplitude": (0.05, 0.95),  # peak of the tones
        "noise": (0.0, 0.12),  # white noise, standard deviation as a fraction of the amplitude
        "detune": (-0.05, 0.05),  # relative offset of the frequency from its pitch
        "sample_rate": (8000, 48000),  # Hz, one of SAMPLE_RATES
        "channels": (1, 2),
    },
}
#: sample rates an augmented (or painted) sound file may have
SAMPLE_RATES = (8000, 11025, 16000, 22050, 24000, 32000, 44100, 48000)
#: longest augmented sound: the tiny Whisper encoder reads 2 s
MAX_SECONDS = 1.95
#: share of augmented pictures saved as JPEG, of augmented clips saved as GIF
JPEG_SHARE, GIF_SHARE = 0.5, 0.3


def _uniform(rng: random.Random, kind: str, name: str) -> float:
    low, high = AUGMENT[kind][name]
    return rng.uniform(low, high)


def _integer(rng: random.Random, kind: str, name: str) -> int:
    low, high = AUGMENT[kind][name]
    return rng.randint(int(low), int(high))


def augment_params(thing: Thing, seed: int) -> dict[str, Any]:
    """The parameters of ``thing``'s augmented render from ``seed``: every entry of :data:`AUGMENT` for its kind,
    plus the choices (file format, gradient direction, per-tone jitter) that have no range."""
    rng = random.Random(f"augment-{thing.kind}-{seed}")
    kind = thing.kind
    if kind == "audio":
        p: dict[str, Any] = {
            name: _uniform(rng, kind, name) for name in ("beep", "onset", "amplitude", "noise", "detune")
        }
        p["gaps"] = [max(MIN_GAP, _uniform(rng, kind, "gap")) for _ in range(2)]
        p["gap"] = p["gaps"][0]
        p["sample_rate"] = rng.choice(SAMPLE_RATES)
        p["channels"] = _integer(rng, kind, "channels")
        p["fill_seed"] = rng.randrange(2**31)
        return p
    p = {"side": _integer(rng, kind, "side"), "colour_shift": _uniform(rng, kind, "colour_shift")}
    p["background"] = _integer(rng, kind, "background")
    p["tint"] = [_integer(rng, kind, "tint") for _ in range(3)]
    p["noise"] = _uniform(rng, kind, "noise")
    p["supersample"] = _integer(rng, kind, "supersample")
    if kind == "image":
        p["offset"] = [_uniform(rng, kind, "offset") for _ in range(2)]
        p["scale"] = _uniform(rng, kind, "scale")
        p["gradient"] = _uniform(rng, kind, "gradient")
        p["gradient_angle"] = rng.uniform(0, 2 * math.pi)
        p["jpeg_quality"] = _integer(rng, kind, "jpeg_quality")
        p["jpeg"] = rng.random() < JPEG_SHARE
    else:
        for name in ("frames", "fps"):
            p[name] = _integer(rng, kind, name)
        p["travel"] = _uniform(rng, kind, "travel")
        p["shape_side"] = _uniform(rng, kind, "shape_side")
        p["gif"] = rng.random() < GIF_SHARE
    p["fill_seed"] = rng.randrange(2**31)
    return p


def _shifted_colour(colour: str, distance: float, rng: random.Random) -> tuple[int, int, int]:
    """``colour``'s anchor moved by up to ``distance`` in RGB, in a random direction, keeping its label."""
    anchor = np.array(COLOURS[colour], dtype=np.float64)
    for _ in range(100):
        direction = np.array([rng.gauss(0, 1) for _ in range(3)])
        direction /= max(np.linalg.norm(direction), 1e-9)
        rgb = np.clip(anchor + direction * distance * rng.random(), 0, 255)
        if colour_label(rgb) == colour:
            return tuple(int(round(c)) for c in rgb)
    return COLOURS[colour]


def _background(p: dict, side: int) -> np.ndarray:
    """Float ``(side, side, 3)``: grey level plus tint, a linear gradient (pictures) and pixel noise."""
    level = np.array([p["background"] + t for t in p["tint"]], dtype=np.float64)
    image = np.broadcast_to(level, (side, side, 3)).astype(np.float64)
    if p.get("gradient"):
        ys, xs = np.mgrid[0:side, 0:side] / max(side - 1, 1) - 0.5
        ramp = xs * math.cos(p["gradient_angle"]) + ys * math.sin(p["gradient_angle"])
        image = image + (ramp / max(np.ptp(ramp), 1e-9) * p["gradient"])[..., None]
    return image


def _drawn(shape: str, centre: tuple[float, float], box: float, fill, side: int, p: dict, rng: np.random.Generator):
    """One frame of the augmented renderer: the shape drawn with :func:`draw_shape` at ``supersample`` times the
    resolution, box-filtered down, over :func:`_background`, with pixel noise."""
    k = int(p["supersample"])
    mask = Image.new("L", (side * k, side * k), 0)
    draw_shape(ImageDraw.Draw(mask), shape, (centre[0] * k, centre[1] * k), box * k, 255)
    if k > 1:
        mask = mask.resize((side, side), Image.BOX)
    alpha = np.asarray(mask, dtype=np.float64)[..., None] / 255.0
    image = _background(p, side) * (1 - alpha) + np.array(fill, dtype=np.float64) * alpha
    image = image + rng.normal(0, p["noise"], image.shape)
    return Image.fromarray(np.clip(np.round(image), 0, 255).astype(np.uint8))


def _augmented_picture(picture: Picture, p: dict) -> Image.Image:
    side = p["side"]
    rng = random.Random(p["fill_seed"])
    box = SIZES[picture.size] * side * p["scale"]
    half = box / 2
    fx, fy = POSITIONS[picture.position]
    centre = tuple(
        float(np.clip((f + o) * side, half, side - half)) for f, o in zip((fx, fy), p["offset"])
    )  # inside the frame
    fill = _shifted_colour(picture.colour, p["colour_shift"], rng)
    return _drawn(picture.shape, centre, box, fill, side, p, np.random.default_rng(p["fill_seed"]))


def _augmented_clip(clip: Clip, p: dict) -> list[Image.Image]:
    side, frames = p["side"], p["frames"]
    rng = random.Random(p["fill_seed"])
    noise = np.random.default_rng(p["fill_seed"])
    dx, dy = DIRECTIONS[clip.direction]
    box = p["shape_side"] * side
    travel = min(p["travel"] * side, side - box - 2)
    margin = box / 2 + 1
    start = []
    for d in (dx, dy):  # the path stays inside the frame; the cross axis anywhere it fits
        start.append(
            rng.uniform(margin, side - margin - travel)
            if d > 0
            else rng.uniform(margin + travel, side - margin)
            if d < 0
            else rng.uniform(margin, side - margin)
        )
    fill = _shifted_colour(clip.colour, p["colour_shift"], rng)
    out = []
    for i in range(frames):
        t = i / max(frames - 1, 1)
        centre = (start[0] + dx * travel * t, start[1] + dy * travel * t)
        out.append(_drawn(clip.shape, centre, box, fill, side, p, noise))
    return out


def _augmented_sound(sound: Sound, p: dict) -> np.ndarray:
    """Float32 ``(N,)`` or ``(N, 2)`` samples at ``p["sample_rate"]``, drawn with :func:`waveform` and linear fades."""
    rate = p["sample_rate"]
    rng = random.Random(p["fill_seed"])
    beep, gaps, onset = p["beep"], list(p["gaps"]), p["onset"]
    n = sound.beeps
    length = onset + n * beep + sum(gaps[: n - 1])
    if length > MAX_SECONDS - 0.05:  # squeeze tones and gaps (never under their minimum) to fit the window
        squeeze = (MAX_SECONDS - 0.05 - onset) / (n * beep + sum(gaps[: n - 1]))
        beep = max(AUGMENT["audio"]["beep"][0], beep * squeeze)
        gaps = [max(MIN_GAP, g * squeeze) for g in gaps]
        length = onset + n * beep + sum(gaps[: n - 1])
    seconds = min(MAX_SECONDS, max(1.0, length + 0.05))
    out = np.zeros(int(seconds * rate), dtype=np.float64)
    freq = PITCHES[sound.pitch] * (1 + p["detune"])
    start = onset
    for i in range(n):
        count = int(beep * rate)
        first = int(start * rate)
        t = np.arange(count) / rate
        fade = max(1, min(int(0.008 * rate), count // 4))
        envelope = np.ones(count)
        envelope[:fade] = np.linspace(0, 1, fade)
        envelope[-fade:] = np.linspace(1, 0, fade)
        tone = p["amplitude"] * waveform(sound.waveform, freq, t, rng.random()) * envelope
        out[first : first + count] += tone[: len(out) - first]
        start += beep + (gaps[i] if i < n - 1 else 0)
    noise = np.random.default_rng(rng.randrange(2**31)).normal(0, p["noise"] * p["amplitude"], out.shape)
    out = np.clip(out + noise, -1, 1).astype(np.float32)
    if p["channels"] == 2:
        out = np.stack([out, out * rng.uniform(0.6, 1.0)], axis=1)
    return out


def augmented(thing: Thing, seed: int) -> tuple[Any, dict[str, Any]]:
    """``thing`` rendered with augmentation from ``seed`` (:data:`AUGMENT`): a PIL image, a list of PIL frames or
    float32 samples (``(N,)``, or ``(N, 2)`` in stereo) at ``params["sample_rate"]``; and the parameters drawn."""
    p = augment_params(thing, seed)
    if isinstance(thing, Picture):
        return _augmented_picture(thing, p), p
    if isinstance(thing, Clip):
        return _augmented_clip(thing, p), p
    if isinstance(thing, Sound):
        return _augmented_sound(thing, p), p
    raise TypeError(f"cannot render {type(thing).__name__}")


def _augmented_bytes(thing: Thing, seed: int) -> bytes:
    medium, p = augmented(thing, seed)
    if isinstance(thing, Picture):
        if p["jpeg"]:
            buffer = io.BytesIO()
            medium.save(buffer, format="JPEG", quality=p["jpeg_quality"])
            return buffer.getvalue()
        return encode_png(medium)
    if isinstance(thing, Clip):
        return encode_gif(medium, fps=p["fps"]) if p["gif"] else encode_mp4(medium, fps=p["fps"])
    buffer = io.BytesIO()
    sf.write(buffer, medium, p["sample_rate"], format="WAV", subtype="PCM_16")
    return buffer.getvalue()


def encode(thing: Thing, seed: int = 0, *, augment: bool = False, **render) -> bytes:
    """Render ``thing`` and encode it as PNG / MP4 / WAV bytes (what a user would send). ``augment``: an augmented
    render (:func:`augmented`), saved as PNG or JPEG / MP4 or GIF / WAV at its own rate and channels."""
    if augment:
        if render:
            raise ValueError(f"an augmented render draws its own size and timing; drop {sorted(render)}")
        return _augmented_bytes(thing, seed)
    medium = thing.render(seed, **render)
    if isinstance(thing, Picture):
        return encode_png(medium)
    if isinstance(thing, Clip):
        return encode_mp4(medium, fps=8)
    return encode_wav(medium, SAMPLE_RATE)


def as_received(thing: Thing, seed: int, *, augment: bool = False, num_frames: int = 8) -> Any:
    """``thing`` as the system receives it: :func:`encode`, then decoded by :mod:`modalities.media` (a PIL image,
    ``num_frames`` PIL frames, or 16 kHz mono samples). Training sets built from this see the same bytes, codecs and
    resampling as a user's file."""
    data = encode(thing, seed, augment=augment)
    limits = MediaLimits()
    if isinstance(thing, Picture):
        return decode_image(data, limits)
    if isinstance(thing, Clip):
        return decode_video(data, limits, num_frames=num_frames)
    return decode_audio(data, limits)
