"""Independent judges of generated tinyworld media: small CNN classifiers that read a thing's attributes back.

``mmgraph eval`` asks the system to *generate* pictures, clips and sounds ("draw a red circle") and must then
decide whether the output shows what was asked. It does so with the three classifiers of this module:

- :class:`PictureJudge` -- a 32x32 RGB picture -> colour, shape, position, size;
- :class:`ClipJudge` -- a video (any number of frames >= 2, resampled uniformly to 8, each resized to 32x32)
  -> colour, shape, direction; the frames are stacked as channels so the first layers see the motion;
- :class:`SoundJudge` -- a waveform (16 kHz, padded or trimmed to one second) -> pitch, waveform, beeps, from a
  log-mel spectrogram it computes itself with :func:`torch.stft`.

**Why independent.** A judge that shared weights, features or training data with the system it grades could
agree with the system's mistakes (a shared encoder that confuses orange with red would "see" orange where the
generator drew red, and score it correct). So the judges use none of the system's components: they are trained
from scratch, on their own freshly rendered samples (their own seed, 1000 by default, distinct from every other
seed of the project), with their own preprocessing; their weights live in their own directory.

**Why heavy augmentation.** Generated media are not clean renders: small diffusion models give blurry, noisy
images with slightly-off colours, videos of 4 or 16 frames, and audio reconstructed with Griffin-Lim from a mel
spectrogram (smeared spectra, phase artefacts, noise). The judges are trained on renders corrupted in those ways
(noise, blur, colour jitter, small shifts, chroma subsampling, frame-count changes and partial motion for
pictures and clips; gain, noise, time shifts, low-pass and a Griffin-Lim phase reconstruction from a smeared
magnitude for sounds), so that a wrong verdict means a wrong medium rather than an unusual one.
:func:`evaluate` measures accuracy both on clean held-out renders and on a fixed *heavy* corruption.

Use::

    python -m tinyworld.judges /path/to/judges          # train all three (a few minutes on one CPU thread)

    judges = Judges.load("/path/to/judges")
    judges.picture(image)                  # {"colour": "red", "shape": "circle", ...}
    judges.judge("audio", wav_bytes)       # {"pitch": "high", "waveform": "sine", "beeps": 2}

Each judge is saved as ``<name>.safetensors`` (weights) plus ``<name>.json`` (architecture, class names,
training settings and measured accuracy); nothing is pickled.
"""

from __future__ import annotations

import argparse
import functools
import json
import math
import random
import sys
import time
from abc import ABC, abstractmethod
from fractions import Fraction
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from safetensors.torch import load_file, save_file
from torch import Tensor, nn
from tqdm import tqdm

from core.config import MediaLimits
from modalities.media import decode_audio, decode_image, decode_video
from tinyworld.world import SAMPLE_RATE, Clip, Picture, Sound, Thing
from training.meter import metered
from training.optim import adamw

FORMAT = "mmgraph-tinyworld-judge"
VERSION = 1
SIDE = 32  #: side (pixels) every picture and video frame is resized to
FRAMES = 8  #: frames every video is resampled to
SECONDS = 1.0  #: every sound is padded or trimmed to this length
KINDS = {"image": "picture", "video": "clip", "audio": "sound"}  #: medium kind -> judge name
STEPS = 500  #: default optimiser steps per judge
BATCH_SIZE = 64  #: default training batch
EVAL_SAMPLES = 1200  #: default held-out renders per judge and condition (clean, noisy)

#: offsets added to the base seed so the three judges (and train / held-out data) never share a random stream
_STREAMS = {"picture": 0, "clip": 1, "sound": 2}


def _stream(seed: int, offset: int) -> int:
    """The seed of one random stream: ``10 * seed + offset`` (offset < 10), folded into torch's seed range."""
    return (10 * int(seed) + offset) % 2**63


# ------------------------------------------------------------------------------------------------------------------
# models
# ------------------------------------------------------------------------------------------------------------------
def _block(cin: int, cout: int, *, stride: int = 1, pool: int = 2, kernel: int = 3, dims: int = 2) -> nn.Sequential:
    """Convolution (``dims``-D, no bias), batch norm, ReLU, then max pooling by ``pool`` (1: none)."""
    conv, norm, maxpool = (
        (nn.Conv2d, nn.BatchNorm2d, nn.MaxPool2d) if dims == 2 else (nn.Conv1d, nn.BatchNorm1d, nn.MaxPool1d)
    )
    layers = [
        conv(cin, cout, kernel, stride=stride, padding=kernel // 2, bias=False),
        norm(cout),
        nn.ReLU(inplace=True),
    ]
    return nn.Sequential(*layers, maxpool(pool)) if pool > 1 else nn.Sequential(*layers)


def _image_trunk(channels: int, widths: tuple[int, ...]) -> nn.Sequential:
    """A stride-2 convolution (32 -> 16 pixels), then blocks that halve the map: 16 -> 8 -> 4 pixels. The last
    map keeps its spatial layout (flattened, not pooled), so the hidden layer knows *where* things are."""
    chans = (channels, *widths)
    return nn.Sequential(
        _block(chans[0], chans[1], stride=2, pool=1), *(_block(a, b) for a, b in zip(chans[1:], chans[2:]))
    )


class _Judge(nn.Module, ABC):
    """A convolutional trunk, one shared hidden layer and one linear head per attribute.

    ``forward`` returns ``{attribute: logits (B, classes)}``; :meth:`decide` turns logits into attribute values.
    Subclasses set :attr:`name` and :attr:`thing`, build the trunk from their architecture arguments (which
    :meth:`config` returns, so :func:`load_judge` can rebuild the same module) and turn raw inputs into the
    trunk's input in :meth:`features`.
    """

    name: ClassVar[str]
    thing: ClassVar[type[Thing]]

    def __init__(self, trunk: nn.Module, example: Tensor, hidden: int, attributes: dict[str, list] | None) -> None:
        super().__init__()
        if attributes is None:
            attributes = {a: list(self.thing.choices(a)) for a in self.thing.attributes}
        self.attributes: dict[str, list] = {a: list(v) for a, v in attributes.items()}
        self.trunk = trunk.eval()
        with torch.no_grad():  # eval mode: the shape probe must not touch batch-norm statistics
            features = trunk(example).flatten(1).shape[1]
        self.hidden_layer = nn.Sequential(nn.Flatten(), nn.Linear(features, hidden), nn.ReLU(inplace=True))
        self.heads = nn.ModuleDict({a: nn.Linear(hidden, len(v)) for a, v in self.attributes.items()})
        self.train()

    @abstractmethod
    def features(self, x: Tensor) -> Tensor:
        """A batch of inputs -> the trunk's input tensor."""

    def forward(self, x: Tensor) -> dict[str, Tensor]:
        h = self.hidden_layer(self.trunk(self.features(x)))
        return {a: head(h) for a, head in self.heads.items()}

    def decide(self, logits: dict[str, Tensor]) -> list[dict[str, Any]]:
        """One ``{attribute: value}`` per batch row (the arg-max class of each head)."""
        picks = {a: logits[a].argmax(-1).tolist() for a in self.attributes}
        rows = len(next(iter(picks.values())))
        return [{a: self.attributes[a][picks[a][i]] for a in self.attributes} for i in range(rows)]

    def labels(self, things: list[Thing]) -> dict[str, Tensor]:
        """Class indices of ``things``' attributes, one tensor per head."""
        return {a: torch.tensor([v.index(getattr(t, a)) for t in things]) for a, v in self.attributes.items()}

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """The constructor arguments saved next to the weights."""

    def parameter_count(self) -> int:
        return sum(p.numel() for p in self.parameters())


class PictureJudge(_Judge):
    """32x32 RGB picture in [0, 1], ``(B, 3, 32, 32)`` -> colour, shape, position, size."""

    name = "picture"
    thing = Picture

    def __init__(
        self, widths: tuple[int, ...] = (24, 32, 48), hidden: int = 128, attributes: dict[str, list] | None = None
    ) -> None:
        super().__init__(_image_trunk(3, widths), torch.zeros(1, 3, SIDE, SIDE), hidden, attributes)
        self.widths, self.hidden_size = tuple(widths), hidden

    def features(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (3, SIDE, SIDE):
            raise ValueError(f"PictureJudge expects (B, 3, {SIDE}, {SIDE}), got {tuple(x.shape)}")
        return x * 2.0 - 1.0

    def config(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "hidden": self.hidden_size}


class ClipJudge(_Judge):
    """8 frames of 32x32 RGB in [0, 1], ``(B, 8, 3, 32, 32)`` -> colour, shape, direction.

    The frames are stacked as 24 channels, plus the 7 differences of consecutive frames (21 more channels), so
    the motion is visible to the very first convolution.
    """

    name = "clip"
    thing = Clip

    def __init__(
        self,
        widths: tuple[int, ...] = (24, 32, 48),
        hidden: int = 128,
        frames: int = FRAMES,
        attributes: dict[str, list] | None = None,
    ) -> None:
        channels = 3 * frames + 3 * (frames - 1)
        super().__init__(_image_trunk(channels, widths), torch.zeros(1, channels, SIDE, SIDE), hidden, attributes)
        self.widths, self.hidden_size, self.frames = tuple(widths), hidden, frames

    def features(self, x: Tensor) -> Tensor:
        if x.shape[1:] != (self.frames, 3, SIDE, SIDE):
            raise ValueError(f"ClipJudge expects (B, {self.frames}, 3, {SIDE}, {SIDE}), got {tuple(x.shape)}")
        b, t, c, h, w = x.shape
        x = x * 2.0 - 1.0
        diffs = (x[:, 1:] - x[:, :-1]) * 2.0
        return torch.cat([x.reshape(b, t * c, h, w), diffs.reshape(b, (t - 1) * c, h, w)], 1)

    def config(self) -> dict[str, Any]:
        return {"widths": list(self.widths), "hidden": self.hidden_size, "frames": self.frames}


def mel_filterbank(n_fft: int, n_mels: int, sample_rate: int, fmin: float, fmax: float) -> Tensor:
    """Triangular filters evenly spaced on the mel scale, ``(n_mels, n_fft // 2 + 1)``, each summing to one.

    A filter narrower than an FFT bin would be empty; it takes the bin nearest its centre instead.
    """
    mel = lambda f: 2595.0 * np.log10(1.0 + np.asarray(f) / 700.0)  # noqa: E731
    hz = lambda m: 700.0 * (10.0 ** (np.asarray(m) / 2595.0) - 1.0)  # noqa: E731
    edges = hz(np.linspace(mel(fmin), mel(fmax), n_mels + 2))
    freqs = np.linspace(0, sample_rate / 2, n_fft // 2 + 1)
    lower, centre, upper = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    weights = np.maximum(0.0, np.minimum((freqs - lower) / (centre - lower), (upper - freqs) / (upper - centre)))
    for i in np.nonzero(weights.sum(1) == 0)[0]:
        weights[i, np.abs(freqs - centre[i, 0]).argmin()] = 1.0
    return torch.tensor(weights / weights.sum(1, keepdims=True), dtype=torch.float32)


class SoundJudge(_Judge):
    """One second of 16 kHz audio, ``(B, 16000)`` -> pitch, waveform, beeps.

    Features: log-mel power (``n_mels`` bands, one frame every ``hop`` samples) relative to the clip's loudest
    cell and floored ``floor_db`` below it, so gain does not matter. The trunk is a time-delay network: 1-D
    convolutions over time with the mel bands as channels, so the first layer sees the whole spectrum at once
    (harmonic patterns tell the waveform) while pooling over time follows the beeps.
    """

    name = "sound"
    thing = Sound

    def __init__(
        self,
        widths: tuple[int, ...] = (64, 96, 96),
        hidden: int = 128,
        n_fft: int = 512,
        hop: int = 256,
        n_mels: int = 64,
        fmin: float = 100.0,
        fmax: float = 8000.0,
        floor_db: float = 70.0,
        attributes: dict[str, list] | None = None,
    ) -> None:
        chans = (n_mels, *widths)
        trunk = nn.Sequential(
            *(_block(a, b, kernel=5 if i == 0 else 3, dims=1) for i, (a, b) in enumerate(zip(chans, chans[1:])))
        )
        frames = int(SECONDS * SAMPLE_RATE) // hop + 1
        super().__init__(trunk, torch.zeros(1, n_mels, frames), hidden, attributes)
        self.widths, self.hidden_size = tuple(widths), hidden
        self.n_fft, self.hop, self.n_mels = n_fft, hop, n_mels
        self.fmin, self.fmax, self.floor_db = fmin, fmax, floor_db
        self.register_buffer("mel", mel_filterbank(n_fft, n_mels, SAMPLE_RATE, fmin, fmax), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)

    def features(self, x: Tensor) -> Tensor:
        if x.ndim != 2 or x.shape[1] != int(SECONDS * SAMPLE_RATE):
            raise ValueError(f"SoundJudge expects (B, {int(SECONDS * SAMPLE_RATE)}), got {tuple(x.shape)}")
        spec = torch.stft(x, self.n_fft, self.hop, window=self.window, return_complex=True)
        power = self.mel @ spec.abs().square()  # (B, n_mels, frames)
        logs = torch.log(power + 1e-12)
        floor = self.floor_db / 10.0 * math.log(10.0)
        logs = (logs - logs.amax((1, 2), keepdim=True)).clamp(min=-floor)
        return logs / floor * 2.0 + 1.0  # [-1, 1]

    def config(self) -> dict[str, Any]:
        return {
            "widths": list(self.widths),
            "hidden": self.hidden_size,
            "n_fft": self.n_fft,
            "hop": self.hop,
            "n_mels": self.n_mels,
            "fmin": self.fmin,
            "fmax": self.fmax,
            "floor_db": self.floor_db,
        }


JUDGES: dict[str, type[_Judge]] = {"picture": PictureJudge, "clip": ClipJudge, "sound": SoundJudge}


# ------------------------------------------------------------------------------------------------------------------
# preprocessing (shared by training and inference, so both see the same tensors)
# ------------------------------------------------------------------------------------------------------------------
def _rgb(image: Image.Image) -> np.ndarray:
    """``(32, 32, 3)`` uint8 pixels of ``image``, converted to RGB and resized (bilinear) if needed."""
    if not isinstance(image, Image.Image):
        raise TypeError(f"expected a PIL image, got {type(image).__name__}")
    if image.mode != "RGB":
        image = image.convert("RGB")
    if image.size != (SIDE, SIDE):
        image = image.resize((SIDE, SIDE), Image.BILINEAR)
    return np.asarray(image)


def picture_array(image: Image.Image) -> np.ndarray:
    """A PIL image as a ``(3, 32, 32)`` float32 array in [0, 1] (converted to RGB, resized if needed)."""
    return _rgb(image).transpose(2, 0, 1).astype(np.float32) / 255.0


def frame_indices(total: int, count: int = FRAMES) -> list[int]:
    """``count`` indices spread uniformly over ``range(total)`` (first and last included; repeats when
    ``total < count``)."""
    return [int(i) for i in np.floor(np.linspace(0, total - 1, count) + 0.5)]


def clip_array(frames: list[Image.Image], count: int = FRAMES) -> np.ndarray:
    """Frames as a ``(count, 3, 32, 32)`` float32 array in [0, 1], resampled uniformly to ``count`` frames."""
    if isinstance(frames, Image.Image) or not hasattr(frames, "__len__"):
        raise TypeError(f"expected a list of PIL images, got {type(frames).__name__}")
    if len(frames) < 2:
        raise ValueError(f"a video needs at least 2 frames to show motion, got {len(frames)}")
    indices = frame_indices(len(frames), count)
    pixels = {i: _rgb(frames[i]) for i in set(indices)}
    return np.stack([pixels[i] for i in indices]).transpose(0, 3, 1, 2).astype(np.float32) / 255.0


def sound_array(samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Mono float32 samples at 16 kHz, padded with silence or trimmed to one second.

    Multichannel input ``(N, channels)`` is averaged; other rates are resampled (polyphase, anti-aliased).
    """
    samples = np.asarray(samples, dtype=np.float32)
    if samples.ndim == 2:
        samples = samples.mean(1)
    if samples.ndim != 1:
        raise ValueError(f"audio must have shape (N,) or (N, channels), got {samples.shape}")
    if samples.size == 0:
        raise ValueError("audio is empty (0 samples)")
    if not np.all(np.isfinite(samples)):
        raise ValueError("audio contains NaN or infinite samples")
    if int(sample_rate) != sample_rate or sample_rate <= 0:
        raise ValueError(f"sample_rate must be a positive integer, got {sample_rate!r}")
    if sample_rate != SAMPLE_RATE:
        from scipy.signal import resample_poly  # noqa: PLC0415 - heavy (scipy), only for sounds at other rates

        ratio = Fraction(SAMPLE_RATE, int(sample_rate))
        samples = resample_poly(samples, ratio.numerator, ratio.denominator).astype(np.float32)
    length = int(SECONDS * SAMPLE_RATE)
    return np.pad(samples[:length], (0, max(0, length - samples.size)))


# ------------------------------------------------------------------------------------------------------------------
# augmentation and corruption
# ------------------------------------------------------------------------------------------------------------------
def _uniform(gen: torch.Generator, shape: tuple[int, ...], low: float, high: float) -> Tensor:
    return low + (high - low) * torch.rand(shape, generator=gen)


def _chance(gen: torch.Generator, shape: tuple[int, ...], p: float) -> Tensor:
    return (torch.rand(shape, generator=gen) < p).float()


def _on_some(x: Tensor, gen: torch.Generator, p: float, transform) -> Tensor:
    """Apply ``transform`` to a random subset of the batch rows (each with probability ``p``); the rest pass."""
    chosen = torch.nonzero(torch.rand(x.shape[0], generator=gen) < p).flatten()
    if len(chosen) == 0:
        return x
    x = x.clone()
    x[chosen] = transform(x[chosen])
    return x


def _blur(x: Tensor, sigma: Tensor, radius: int = 3) -> Tensor:
    """Gaussian blur of ``(B, T, C, H, W)`` with one ``sigma`` per batch row (0 leaves it unchanged)."""
    b, t, c, h, w = x.shape
    r = torch.arange(-radius, radius + 1, dtype=torch.float32)
    kernel = torch.exp(-r.square() / (2 * sigma.clamp(min=1e-3)[:, None].square()))
    kernel = (kernel / kernel.sum(1, keepdim=True)).repeat_interleave(t * c, 0)  # (B*T*C, k)
    flat = F.pad(x.reshape(1, b * t * c, h, w), (radius,) * 4, mode="replicate")
    flat = F.conv2d(flat, kernel[:, None, :, None], groups=b * t * c)
    flat = F.conv2d(flat, kernel[:, None, None, :], groups=b * t * c)
    return flat.reshape(b, t, c, h, w)


def _chroma_subsample(x: Tensor) -> Tensor:
    """What yuv420p (MP4, JPEG) does to colour: chroma at half resolution, luma kept."""
    b, t, c, h, w = x.shape
    r, g, bl = x.unbind(2)
    y = 0.299 * r + 0.587 * g + 0.114 * bl
    chroma = torch.stack([r - y, bl - y], 2).reshape(b * t, 2, h, w)
    chroma = F.interpolate(F.avg_pool2d(chroma, 2), size=(h, w), mode="bilinear", align_corners=False)
    cr, cb = chroma.reshape(b, t, 2, h, w).unbind(2)
    r, bl = y + cr, y + cb
    return torch.stack([r, (y - 0.299 * r - 0.114 * bl) / 0.587, bl], 2)


def augment_frames(x: Tensor, gen: torch.Generator, *, shift: int = 1, heavy: bool = False) -> Tensor:
    """Corrupt ``(B, T, 3, H, W)`` frames in [0, 1] the way generated pictures and videos are corrupted.

    Training (``heavy=False``) draws every strength at random per sample: a translation of up to ``shift``
    pixels (white fill, the same for all frames), contrast / brightness / per-channel colour jitter and partial
    desaturation, Gaussian blur (sigma up to 1.6), chroma subsampling, white noise (std up to 0.25, fresh per
    frame) and blotchy low-frequency noise. ``heavy=True`` is the fixed evaluation corruption: blur sigma 1.2,
    white noise std 0.15, mild colour jitter, no shift.
    """
    b, t, c, h, w = x.shape
    one = (b, 1, 1, 1, 1)
    if heavy:
        x = x + _uniform(gen, (b, 1, c, 1, 1), -0.05, 0.05) + _uniform(gen, one, -0.05, 0.05)
        x = _blur(x, torch.full((b,), 1.2))
        return (x + 0.15 * torch.randn(x.shape, generator=gen)).clamp(0.0, 1.0)
    if shift:
        padded = F.pad(x.reshape(b, t * c, h, w), (shift,) * 4, value=1.0)
        offsets = torch.randint(0, 2 * shift + 1, (b, 2), generator=gen).tolist()
        x = torch.stack([padded[i, :, dy : dy + h, dx : dx + w] for i, (dy, dx) in enumerate(offsets)]).reshape(x.shape)
    # contrast k, brightness, per-channel gain g and offset as one affine map; then partial desaturation
    k, g = _uniform(gen, one, 0.8, 1.2), _uniform(gen, (b, 1, c, 1, 1), 0.92, 1.08)
    bias = (0.5 - 0.5 * k + _uniform(gen, one, -0.1, 0.1)) * g + _uniform(gen, (b, 1, c, 1, 1), -0.06, 0.06)
    x = torch.addcmul(bias, x, k * g)
    grey = _uniform(gen, one, 0.0, 0.25)
    x = torch.addcmul(x.mean(2, keepdim=True) * grey, x, 1.0 - grey)
    x = _blur(x, _uniform(gen, (b,), 0.0, 1.6) * _chance(gen, (b,), 0.75))
    x = _on_some(x, gen, 0.3, _chroma_subsample)
    x = x + torch.randn(x.shape, generator=gen) * _uniform(gen, one, 0.0, 0.25) * _chance(gen, one, 0.8)
    x = _on_some(
        x,
        gen,
        0.3,
        lambda some: (
            some
            + _uniform(gen, (len(some), 1, 1, 1, 1), 0.0, 0.08)
            * F.interpolate(
                torch.randn((len(some) * t, c, 8, 8), generator=gen), size=(h, w), mode="bilinear", align_corners=False
            ).reshape(some.shape)
        ),
    )  # blotchy low-frequency noise
    return x.clamp(0.0, 1.0)


_GL_FFT, _GL_HOP = 512, 128


@functools.lru_cache(maxsize=1)
def _gl_mel() -> tuple[Tensor, Tensor]:
    """64 mel bands over the Griffin-Lim STFT, and the map back to linear bins that keeps flat spectra flat."""
    mel = mel_filterbank(_GL_FFT, 64, SAMPLE_RATE, 0.0, SAMPLE_RATE / 2)
    return mel, mel.T / (mel.T @ mel.sum(1, keepdim=True)).clamp(min=1e-6)


def _phase_scramble(x: Tensor, gen: torch.Generator, iterations: int, smear: int, jitter: float) -> Tensor:
    """What a mel-spectrogram vocoder does to a sound: keep only a smeared magnitude, then rebuild a phase with
    ``iterations`` Griffin-Lim steps from random phase (0: random phase as it is).

    The magnitude goes through a 64-band mel projection and back (smearing frequency), a moving average over
    ``smear`` frames (smearing time) and log-normal noise of std ``jitter`` (a diffusion model's errors).
    """
    window = torch.hann_window(_GL_FFT)
    stft = lambda s: torch.stft(s, _GL_FFT, _GL_HOP, window=window, return_complex=True)  # noqa: E731
    istft = lambda z: torch.istft(z, _GL_FFT, _GL_HOP, window=window, length=x.shape[-1])  # noqa: E731
    mel, back = _gl_mel()
    mag = back @ (mel @ stft(x).abs())  # (B, F, T)
    if smear > 1:
        mag = F.avg_pool1d(F.pad(mag, (smear // 2, smear - 1 - smear // 2), mode="replicate"), smear, stride=1)
    if jitter > 0:
        mag = mag * torch.exp(jitter * torch.randn(mag.shape, generator=gen))
    spec = torch.polar(mag, _uniform(gen, tuple(mag.shape), -math.pi, math.pi))
    for _ in range(iterations):
        spec = mag * torch.sgn(stft(istft(spec)))  # keep the magnitude, take the consistent phase
    return istft(spec)


def _low_pass(x: Tensor, cutoff: Tensor) -> Tensor:
    """Smooth (logistic) low-pass at ``cutoff`` Hz per row."""
    spectrum = torch.fft.rfft(x)
    freqs = torch.fft.rfftfreq(x.shape[-1], 1.0 / SAMPLE_RATE)
    gain = torch.sigmoid((cutoff[:, None] - freqs[None]) / 150.0)
    return torch.fft.irfft(spectrum * gain, n=x.shape[-1])


def _add_noise(x: Tensor, gen: torch.Generator, snr_db: Tensor) -> Tensor:
    rms = x.square().mean(1, keepdim=True).sqrt().clamp(min=1e-4)
    return x + torch.randn(x.shape, generator=gen) * rms * 10.0 ** (-snr_db[:, None] / 20.0)


def _shift(x: Tensor, shifts: list[int]) -> Tensor:
    """Delay (positive) or advance (negative) each row by its shift, filling with silence."""
    out = torch.zeros_like(x)
    n = x.shape[-1]
    for i, s in enumerate(shifts):
        if s >= 0:
            out[i, s:] = x[i, : n - s]
        else:
            out[i, : n + s] = x[i, -s:]
    return out


def augment_sounds(x: Tensor, gen: torch.Generator, *, heavy: bool = False) -> Tensor:
    """Corrupt ``(B, 16000)`` waveforms the way generated (vocoded) sounds are corrupted.

    Training (``heavy=False``), each at random per sample: a time shift of up to 50 ms; with probability 0.4 a
    Griffin-Lim reconstruction (0-2 iterations, 1-5 frames of time smear and a magnitude jitter of up to 0.4,
    drawn once per batch) from a mel-smeared magnitude; a low-pass at 3.5-7.5 kHz (probability 0.3); a gain of
    0.1-2 (log-uniform; the result is clipped to [-1, 1]); white noise at 0-40 dB SNR (probability 0.85).
    ``heavy=True`` is the fixed evaluation corruption: a shift of up to 30 ms, Griffin-Lim (2 iterations,
    3-frame smear, magnitude jitter 0.2), a gain of 0.3-1.5 and white noise at 0 dB SNR (as loud as the sound).
    """
    b = x.shape[0]
    if heavy:
        x = _shift(x, torch.randint(-480, 481, (b,), generator=gen).tolist())
        x = _phase_scramble(x, gen, 2, 3, 0.2)
        x = x * _uniform(gen, (b, 1), 0.3, 1.5)
        return _add_noise(x, gen, torch.full((b,), 0.0)).clamp(-1.0, 1.0)
    x = _shift(x, torch.randint(-800, 801, (b,), generator=gen).tolist())
    iterations, smear = int(torch.randint(0, 3, (1,), generator=gen)), int(torch.randint(1, 6, (1,), generator=gen))
    jitter = float(_uniform(gen, (1,), 0.0, 0.4)) * float(_chance(gen, (1,), 0.5))
    x = _on_some(x, gen, 0.4, lambda some: _phase_scramble(some, gen, iterations, smear, jitter))
    x = _on_some(x, gen, 0.3, lambda some: _low_pass(some, _uniform(gen, (len(some),), 3500.0, 7500.0)))
    x = x * torch.exp(_uniform(gen, (b, 1), math.log(0.1), math.log(2.0)))
    noisy = _add_noise(x, gen, _uniform(gen, (b,), 0.0, 40.0))
    return torch.where(_chance(gen, (b, 1), 0.85).bool(), noisy, x).clamp(-1.0, 1.0)


# ------------------------------------------------------------------------------------------------------------------
# data
# ------------------------------------------------------------------------------------------------------------------
#: frame counts clips are rendered with in training (then resampled to 8, as generated 4- or 16-frame videos are)
_TRAIN_FRAME_COUNTS = (2, 3, 4, 6, 8, 8, 12, 16)


def _render_seed(rng: random.Random, held_out: bool) -> int:
    """Training renders use even seeds, held-out renders odd ones: the two sets never share a sample."""
    return 2 * rng.randrange(2**30) + int(held_out)


def make_batch(
    name: str, size: int, rng: random.Random, gen: torch.Generator, mode: str = "train"
) -> tuple[Tensor, list[Thing]]:
    """A batch of freshly rendered things for judge ``name`` and the model inputs made from them.

    ``mode``: ``train`` (augmented training renders), ``clean`` (held-out renders as they are) or ``noisy``
    (held-out renders with the fixed heavy corruption; clips are also rendered with 4 or 16 frames).
    """
    if mode not in ("train", "clean", "noisy"):
        raise ValueError(f"mode must be train, clean or noisy, got {mode!r}")
    held_out, train = mode != "train", mode == "train"
    cls = JUDGES[name].thing
    things = [cls.sample(rng) for _ in range(size)]
    seeds = [_render_seed(rng, held_out) for _ in things]
    if name == "picture":
        x = torch.from_numpy(np.stack([picture_array(t.render(s)) for t, s in zip(things, seeds)]))[:, None]
        if mode != "clean":
            x = augment_frames(x, gen, shift=1, heavy=not train)
        return x[:, 0], things
    if name == "clip":
        clips = []
        for thing, seed in zip(things, seeds):
            count = rng.choice(_TRAIN_FRAME_COUNTS) if train else FRAMES if mode == "clean" else rng.choice((4, 16))
            frames = thing.render(seed, frames=count)
            if train and count >= 6 and rng.random() < 0.3:  # only part of the motion
                keep = rng.randint(math.ceil(0.6 * count), count)
                first = rng.randint(0, count - keep)
                frames = frames[first : first + keep]
            clips.append(clip_array(frames))
        x = torch.from_numpy(np.stack(clips))
        if mode != "clean":
            x = augment_frames(x, gen, shift=2 if train else 0, heavy=not train)
        return x, things
    x = torch.from_numpy(np.stack([t.render(s) for t, s in zip(things, seeds)]))
    if mode != "clean":
        x = augment_sounds(x, gen, heavy=not train)
    return x, things


# ------------------------------------------------------------------------------------------------------------------
# training and evaluation
# ------------------------------------------------------------------------------------------------------------------
def train_judge(
    name: str,
    *,
    steps: int,
    batch_size: int,
    seed: int = 1000,
    lr: float = 3e-3,
    progress: bool = True,
    device: str = "cpu",
) -> _Judge:
    """Train one judge from scratch on freshly rendered, augmented samples (AdamW, one-cycle schedule, the sum
    of the heads' cross-entropies with a little label smoothing). Deterministic for a given seed and thread
    count. ``device``: where it trains (the samples are rendered on the CPU); the judge comes back on the CPU."""
    if steps < 1 or batch_size < 2:
        raise ValueError(f"steps must be >= 1 and batch_size >= 2, got {steps} and {batch_size}")
    stream = _stream(seed, _STREAMS[name])
    with torch.random.fork_rng(devices=[]):  # seeded initialisation without touching the caller's global RNG
        torch.manual_seed(stream)
        model = JUDGES[name]().to(device)
    rng, gen = random.Random(stream), torch.Generator().manual_seed(stream)
    optimiser = adamw(model.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimiser, max_lr=lr, total_steps=steps, pct_start=0.15)
    model.train()
    bar = tqdm(range(steps), desc=f"{name} judge", disable=not progress, leave=True, dynamic_ncols=True)
    for _ in metered(bar, f"{name} judge"):
        x, things = make_batch(name, batch_size, rng, gen, "train")
        logits, labels = model(x.to(device)), model.labels(things)
        loss = sum(F.cross_entropy(logits[a], labels[a].to(device), label_smoothing=0.05) for a in model.attributes)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
        bar.set_postfix(loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.cpu().eval()


@torch.inference_mode()
def evaluate(
    model: _Judge, *, samples: int = 1000, seed: int = 1000, noisy: bool = False, batch_size: int = 250
) -> dict[str, float]:
    """Accuracy per attribute of ``model`` on ``samples`` held-out renders (never seen in training), clean or with
    the fixed heavy corruption (:func:`augment_frames` / :func:`augment_sounds` with ``heavy=True``)."""
    stream = _stream(seed, _STREAMS[model.name] + 5 + int(noisy))  # not a training stream; seeds are odd anyway
    rng, gen = random.Random(stream), torch.Generator().manual_seed(stream)
    was_training = model.training
    model.eval()
    correct = dict.fromkeys(model.attributes, 0)
    done = 0
    while done < samples:
        n = min(batch_size, samples - done)
        x, things = make_batch(model.name, n, rng, gen, "noisy" if noisy else "clean")
        logits, labels = model(x), model.labels(things)
        for a in model.attributes:
            correct[a] += int((logits[a].argmax(-1) == labels[a]).sum())
        done += n
    model.train(was_training)
    return {a: c / samples for a, c in correct.items()}


def save_judge(model: _Judge, out: str | Path, **extra: Any) -> Path:
    """Write ``<name>.safetensors`` and ``<name>.json`` (architecture, classes and ``extra``) into ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    weights = {k: v.detach().contiguous() for k, v in model.state_dict().items()}
    save_file(weights, str(out / f"{model.name}.safetensors"))
    config = {
        "format": FORMAT,
        "version": VERSION,
        "judge": model.name,
        "class": type(model).__name__,
        "architecture": model.config(),
        "attributes": model.attributes,
        "parameters": model.parameter_count(),
        **extra,
    }
    (out / f"{model.name}.json").write_text(json.dumps(config, indent=2) + "\n")
    return out / f"{model.name}.json"


def load_judge(path: str | Path, name: str) -> _Judge:
    """Rebuild judge ``name`` from ``path/<name>.json`` and load ``path/<name>.safetensors`` (strictly)."""
    path = Path(path)
    config_file, weights_file = path / f"{name}.json", path / f"{name}.safetensors"
    for file in (config_file, weights_file):
        if not file.is_file():
            raise FileNotFoundError(
                f"no {name} judge in {path}: {file.name} is missing "
                f"(train the judges with `python -m tinyworld.judges {path}`)"
            )
    config = json.loads(config_file.read_text())
    if config.get("format") != FORMAT or config.get("judge") != name:
        raise ValueError(f"{config_file} is not a tinyworld {name} judge config")
    if config.get("version") != VERSION:
        raise ValueError(f"{config_file} has judge format version {config.get('version')}, expected {VERSION}")
    model = JUDGES[name](**config["architecture"], attributes=config["attributes"])
    model.load_state_dict(load_file(str(weights_file)), strict=True)
    return model.eval()


def train_judges(
    out: str | Path,
    *,
    steps: int = STEPS,
    batch_size: int = BATCH_SIZE,
    seed: int = 1000,
    progress: bool = True,
    eval_samples: int = EVAL_SAMPLES,
    device: str = "cpu",
) -> dict[str, dict[str, float]]:
    """Train the picture, clip and sound judges (``steps`` optimiser steps of ``batch_size`` each), save them
    into ``out`` and return the held-out accuracy on clean renders, ``{judge: {attribute: accuracy}}``.

    Each judge's JSON config also records its accuracy under the heavy corruption, its parameter count and its
    training settings and time. ``eval_samples`` held-out renders are used per judge and condition. ``device``:
    where the judges train (they are evaluated and saved on the CPU).
    """
    results: dict[str, dict[str, float]] = {}
    for name in JUDGES:
        start, cpu = time.perf_counter(), time.process_time()
        model = train_judge(name, steps=steps, batch_size=batch_size, seed=seed, progress=progress, device=device)
        seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
        clean = evaluate(model, samples=eval_samples, seed=seed)
        noisy = evaluate(model, samples=eval_samples, seed=seed, noisy=True)
        training = {
            "steps": steps,
            "batch_size": batch_size,
            "seed": seed,
            "seconds": round(seconds, 2),
            "cpu_seconds": round(cpu, 2),
            "threads": torch.get_num_threads(),
        }
        save_judge(model, out, training=training, accuracy={"samples": eval_samples, "clean": clean, "noisy": noisy})
        results[name] = clean
    return results


# ------------------------------------------------------------------------------------------------------------------
# inference
# ------------------------------------------------------------------------------------------------------------------
class Judges:
    """The three trained judges, ready to classify media.

    Inputs are preprocessed exactly as in training (:func:`picture_array`, :func:`clip_array`,
    :func:`sound_array`); outputs are ``{attribute: value}`` with the world's own values (``beeps`` an int).
    """

    def __init__(self, picture: PictureJudge, clip: ClipJudge, sound: SoundJudge) -> None:
        self.models: dict[str, _Judge] = {"picture": picture.eval(), "clip": clip.eval(), "sound": sound.eval()}

    @classmethod
    def load(cls, path: str | Path) -> Judges:
        """Load the judges saved by :func:`train_judges` into ``path``."""
        return cls(**{name: load_judge(path, name) for name in JUDGES})

    @torch.inference_mode()
    def _decide(self, name: str, x: np.ndarray) -> dict[str, Any]:
        model = self.models[name]
        return model.decide(model(torch.from_numpy(x)[None]))[0]

    def picture(self, image: Image.Image) -> dict[str, str]:
        """Colour, shape, position and size of the shape in ``image`` (any size; resized to 32x32)."""
        return self._decide("picture", picture_array(image))

    def clip(self, frames: list[Image.Image]) -> dict[str, str]:
        """Colour, shape and direction of the moving shape in ``frames`` (at least 2; resampled to 8)."""
        return self._decide("clip", clip_array(frames, self.models["clip"].frames))

    def sound(self, samples: np.ndarray, sample_rate: int = SAMPLE_RATE) -> dict[str, object]:
        """Pitch, waveform and number of beeps (an int) of ``samples`` (mono or ``(N, channels)``)."""
        return self._decide("sound", sound_array(samples, sample_rate))

    def judge(self, kind: str, data: bytes) -> dict[str, object]:
        """Decode one encoded medium (``image``: PNG, JPEG, ...; ``video``: MP4, GIF, ...; ``audio``: WAV, ...)
        with :mod:`modalities.media` under the default :class:`~core.config.MediaLimits` and classify it.
        Undecodable media raise the typed media errors (all ``ValueError``)."""
        if kind not in KINDS:
            raise ValueError(f"unknown media kind {kind!r}; the judges take {sorted(KINDS)}")
        limits = MediaLimits()
        if kind == "image":
            return self.picture(decode_image(data, limits))
        if kind == "video":
            return self.clip(decode_video(data, limits, num_frames=self.models["clip"].frames))
        return self.sound(decode_audio(data, limits))


# ------------------------------------------------------------------------------------------------------------------
# command line
# ------------------------------------------------------------------------------------------------------------------
def accuracy_table(path: str | Path) -> str:
    """The saved judges' clean and noisy held-out accuracy per attribute, parameters and training time."""
    rows = [f"{'judge':<8} {'attribute':<10} {'clean':>7} {'noisy':>7}"]
    for name in JUDGES:
        config = json.loads((Path(path) / f"{name}.json").read_text())
        acc = config["accuracy"]
        for attribute in acc["clean"]:
            rows.append(f"{name:<8} {attribute:<10} {acc['clean'][attribute]:>7.2%} {acc['noisy'][attribute]:>7.2%}")
        training = config["training"]
        rows.append(
            f"{name:<8} ({config['parameters']:,} parameters; {training['steps']} steps of "
            f"{training['batch_size']} trained in {training['seconds']:.1f} s wall, "
            f"{training['cpu_seconds']:.1f} s CPU; {acc['samples']} held-out samples per condition)"
        )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tinyworld.judges", description="Train the tinyworld judges (picture, clip, sound) into OUT."
    )
    parser.add_argument("out", help="directory to write <judge>.safetensors and <judge>.json into")
    parser.add_argument("--steps", type=int, default=STEPS, help=f"optimiser steps per judge (default {STEPS})")
    parser.add_argument("--batch-size", type=int, default=BATCH_SIZE, help=f"samples per step (default {BATCH_SIZE})")
    parser.add_argument("--seed", type=int, default=1000, help="base seed (default 1000)")
    parser.add_argument(
        "--eval-samples",
        type=int,
        default=EVAL_SAMPLES,
        help=f"held-out samples per judge and condition (default {EVAL_SAMPLES})",
    )
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    start, cpu = time.perf_counter(), time.process_time()
    train_judges(
        args.out,
        steps=args.steps,
        batch_size=args.batch_size,
        seed=args.seed,
        progress=not args.no_progress,
        eval_samples=args.eval_samples,
    )
    print(accuracy_table(args.out))
    print(
        f"total (training and evaluation) {time.perf_counter() - start:.1f} s wall, "
        f"{time.process_time() - cpu:.1f} s CPU on {args.threads} thread(s); judges saved in {args.out}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
