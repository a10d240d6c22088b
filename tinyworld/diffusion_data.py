"""What the tinyworld's VAEs and diffusion generators learn from: balanced renders and their captions.

Every data set is rendered once, seeded, with every attribute combination equally often (:func:`render_pictures`,
:func:`render_clips`, :func:`render_sounds`), and turned into the tensors the models read: pixels in [-1, 1]
(:func:`pixels_to_tensor`), normalised log-mel spectrograms in [-1, 1] (:func:`mels_to_tensor`), the VAEs' mixed
training set (:func:`vae_training_data`) and each thing's caption forms as rows of a caption table
(:func:`caption_table`, the empty caption of classifier-free guidance first).
"""

from __future__ import annotations

import itertools
import random
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import torch

from generators.audio import MelParams
from tinyworld.world import Clip, Picture, Sound

SIDE = 32  # pixels of a picture / frame side
FRAMES = 8  # frames of a clip
EMPTY = ""  # the unconditional caption of classifier-free guidance

#: default data-set sizes (rendered once, seeded)
SAMPLES: dict[str, int] = {"pictures": 2400, "clips": 1152, "sounds": 1080}
#: probability of each caption form while training: (request caption, full caption)
CAPTION_FORMS = (0.7, 0.3)


def _balanced(cls, n: int, seed: int) -> list:
    """``n`` things of ``cls`` cycling through every attribute combination, each cycle shuffled with ``seed``."""
    names = list(cls.options)
    combos = [cls(**dict(zip(names, values))) for values in itertools.product(*(cls.choices(x) for x in names))]
    rng = random.Random(seed)
    things: list = []
    while len(things) < n:
        cycle = list(combos)
        rng.shuffle(cycle)
        things += cycle
    return things[:n]


def render_pictures(n: int, seed: int = 0) -> tuple[np.ndarray, list[Picture]]:
    """``n`` pictures: uint8 ``(n, 32, 32, 3)`` and the :class:`Picture` each shows."""
    things = _balanced(Picture, n, seed)
    pixels = np.stack([np.asarray(t.render(seed * 1_000_003 + i, side=SIDE)) for i, t in enumerate(things)])
    return pixels, things


def render_clips(n: int, seed: int = 0) -> tuple[np.ndarray, list[Clip]]:
    """``n`` clips: uint8 ``(n, 8, 32, 32, 3)`` and the :class:`Clip` each shows."""
    things = _balanced(Clip, n, seed)
    frames = [
        np.stack([np.asarray(f) for f in t.render(seed * 1_000_003 + i, side=SIDE, frames=FRAMES)])
        for i, t in enumerate(things)
    ]
    return np.stack(frames), things


def render_sounds(n: int, seed: int = 0) -> tuple[np.ndarray, list[Sound]]:
    """``n`` one-second sounds: float32 ``(n, 16000)`` and the :class:`Sound` each is."""
    things = _balanced(Sound, n, seed)
    return np.stack([t.render(seed * 1_000_003 + i) for i, t in enumerate(things)]), things


def pixels_to_tensor(pixels: np.ndarray) -> torch.Tensor:
    """uint8 ``(N, H, W, 3)`` -> float ``(N, 3, H, W)`` in [-1, 1]."""
    return torch.from_numpy(pixels).permute(0, 3, 1, 2).float() / 127.5 - 1.0


def mels_to_tensor(mels: np.ndarray) -> torch.Tensor:
    """normalised mels ``(N, n_mels, frames)`` in [0, 1] -> ``(N, 1, n_mels, frames)`` in [-1, 1]."""
    return torch.from_numpy(np.asarray(mels, dtype=np.float32))[:, None] * 2.0 - 1.0


def vae_training_data(channels: int, samples: int, seed: int) -> torch.Tensor:
    """What the VAE learns to reconstruct, in [-1, 1]: pictures plus clip frames ``(N, 3, 32, 32)`` for
    ``channels=3``, normalised log-mel spectrograms ``(N, 1, 32, 64)`` for ``channels=1``."""
    if channels == 3:
        pictures, _ = render_pictures(samples, seed)
        clips, _ = render_clips(max(1, samples // (2 * FRAMES)), seed + 1)
        frames = clips.reshape(-1, SIDE, SIDE, 3)  # (n, F, H, W, 3) -> (n * F, H, W, 3)
        return pixels_to_tensor(np.concatenate([pictures, frames]))
    if channels == 1:
        waves, _ = render_sounds(samples, seed)
        return mels_to_tensor(MelParams().mel(waves))
    raise ValueError(f"channels must be 3 (pictures, frames) or 1 (mel spectrograms), got {channels}")


def caption_table(things: Sequence[Any], forms: Sequence[Callable[[Any], str]]) -> tuple[list[str], torch.Tensor]:
    """Unique captions (the empty caption first) and ``(N, len(forms))`` indices of each thing's caption forms."""
    captions = [EMPTY]
    index: dict[str, int] = {EMPTY: 0}
    rows = []
    for thing in things:
        row = []
        for form in forms:
            caption = form(thing)
            if caption not in index:
                index[caption] = len(captions)
                captions.append(caption)
            row.append(index[caption])
        rows.append(row)
    return captions, torch.tensor(rows, dtype=torch.long)
