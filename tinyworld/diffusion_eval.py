"""Check a trained tinyworld generator folder on its own: request balanced held-out things through the folder's
generator tool and read the generated media back.

:func:`evaluate_image`, :func:`evaluate_video` and :func:`evaluate_audio` cycle through every combination of the
asked attributes (colour x shape, x direction for clips; pitch x beep count for sounds), condition the tool on the
request caption's text states (no LLM, no projector) and count what comes back right: read by the analytic readers
(:mod:`tinyworld.readers`), or by the trained judges (:class:`tinyworld.judges.Judges`) when they are given.
"""

from __future__ import annotations

import io
import itertools
import json
import random
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from PIL import Image

from core.config import GeneratorConfig
from generators import GENERATORS
from tinyworld import text as world_text
from tinyworld.diffusion_data import FRAMES, SIDE
from tinyworld.readers import read_clip, read_picture, read_sound
from tinyworld.world import Clip, Picture, Sound


def _tool(kind: str, folder: str | Path, steps: int, guidance: float, options: dict):
    cfg = GeneratorConfig(
        kind=kind, model=str(folder), num_inference_steps=steps, guidance_scale=guidance, options=options
    )
    return GENERATORS.get(kind).from_config(cfg, seed=0)


def _evaluate(
    tool: Any,
    things: Sequence[Any],
    read: Callable[[bytes], dict],
    attributes: Sequence[str],
    judges: Any = None,
    kind: str = "",
) -> dict:
    if judges is not None:  # the eval's judges read the media instead of the analytic reader
        read = lambda data: judges.judge(kind, data)  # noqa: E731
    hits = {a: 0 for a in attributes}
    together = 0
    seconds = 0.0
    failures = []
    for i, thing in enumerate(things):
        conditioning = tool.encode_text([world_text.request_caption(thing)])
        started = time.time()
        media = tool.generate(conditioning, seed=i)
        seconds += time.time() - started
        found = read(media.data)
        right = {a: str(found[a]) == str(getattr(thing, a)) for a in attributes}
        for a in attributes:
            hits[a] += right[a]
        together += all(right.values())
        if not all(right.values()) and len(failures) < 8:
            failures.append(
                {"wanted": world_text.request_caption(thing), "found": {a: str(found[a]) for a in attributes}}
            )
    n = len(things)
    return {
        "samples": n,
        "accuracy": together / n,
        **{f"{a}_accuracy": hits[a] / n for a in attributes},
        "seconds_per_sample": seconds / n,
        "failures": failures,
    }


def _request_things(cls, n: int, attributes: Sequence[str], seed: int) -> list:
    """``n`` things cycling through every combination of ``attributes`` (the others random)."""
    rng = random.Random(seed)
    combos = list(itertools.product(*(cls.choices(a) for a in attributes)))
    return [cls.sample(rng, **dict(zip(attributes, combos[i % len(combos)]))) for i in range(n)]


def evaluate_image(
    folder: str | Path, *, samples: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0, judges: Any = None
) -> dict:
    """Generate ``samples`` pictures from request captions (every colour x shape) through
    :class:`~generators.image.StableDiffusionTool` and read colour and shape back: with the analytic reader
    (:func:`read_picture`), or with ``judges`` (:class:`tinyworld.judges.Judges`, what ``mmgraph eval`` uses)."""
    tool = _tool("stable_diffusion", folder, steps, guidance, {"height": SIDE, "width": SIDE})

    def read(data: bytes) -> dict:
        return read_picture(np.asarray(Image.open(io.BytesIO(data)).convert("RGB")))

    return _evaluate(
        tool, _request_things(Picture, samples, ("colour", "shape"), seed), read, ("colour", "shape"), judges, "image"
    )


def video_kind(folder: str | Path) -> str:
    """The generator kind of a saved video pipeline (``animatediff`` | ``text_to_video_sd``), from its
    ``model_index.json``."""
    pipeline = json.loads((Path(folder) / "model_index.json").read_text())["_class_name"]
    kinds = {"AnimateDiffPipeline": "animatediff", "TextToVideoSDPipeline": "text_to_video_sd"}
    if pipeline not in kinds:
        raise ValueError(f"{folder} holds a {pipeline}, not a video pipeline of {sorted(kinds)}")
    return kinds[pipeline]


def evaluate_video(
    folder: str | Path, *, samples: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0, judges: Any = None
) -> dict:
    """Generate ``samples`` 8-frame clips (every colour x shape x direction, cycled) through
    the folder's video tool (:func:`video_kind`) and read colour, shape and direction back: from lossless GIFs with
    the analytic reader (:func:`read_clip`), or, given ``judges``, from the tool's MP4 with the judges."""
    options = {"num_frames": FRAMES, "height": SIDE, "width": SIDE}
    tool = _tool(
        video_kind(folder), folder, steps, guidance, options if judges is not None else {**options, "format": "gif"}
    )

    def read(data: bytes) -> dict:
        gif = Image.open(io.BytesIO(data))
        frames = []
        for i in range(getattr(gif, "n_frames", 1)):
            gif.seek(i)
            frames.append(np.asarray(gif.convert("RGB")))
        return read_clip(frames)

    return _evaluate(
        tool,
        _request_things(Clip, samples, ("colour", "shape", "direction"), seed),
        read,
        ("colour", "shape", "direction"),
        judges,
        "video",
    )


def evaluate_audio(
    folder: str | Path, *, samples: int = 48, steps: int = 25, guidance: float = 4.0, seed: int = 0, judges: Any = None
) -> dict:
    """Generate ``samples`` sounds from request captions (every pitch x beep count) through
    :class:`~generators.audio.MelDiffusionTool` and read pitch and beep count back from the WAV (analytic reader,
    or ``judges``)."""
    tool = _tool("mel_diffusion", folder, steps, guidance, {})

    def read(data: bytes) -> dict:
        wave, rate = sf.read(io.BytesIO(data), dtype="float32")
        return read_sound(wave, rate)

    return _evaluate(
        tool, _request_things(Sound, samples, ("pitch", "beeps"), seed), read, ("pitch", "beeps"), judges, "audio"
    )
